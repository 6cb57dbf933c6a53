"""Model manager: an official-layout hub snapshot used offline, verify, convert, safe loading,
fail-fast downloads, what `models list` tells a new user, the speed probe."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from engine.cli.main import main
from engine.core.errors import ModelError
from engine.io.storage import human_bytes
from engine.models.hub import convert_to_safetensors, download
from engine.models.hub_cache import local_path
from engine.models.pins import pin, sha256_file, verify
from engine.models.presets import preset_files
from engine.models.sources import resolve_models

REPO_ROOT = Path(__file__).resolve().parents[1]


def _pin_all() -> None:
    for file in preset_files("official"):
        path = local_path(file)
        pin(file, path, sha256_file(path))


def test_complete_snapshot_loads_and_colorizes_offline(hub_snapshot, demo_data, tmp_path, capsys):
    chapter, refs = demo_data
    code = main(["colorize", str(chapter), "--refs", str(refs), "--out", str(tmp_path / "out"),
                 "--models", "official", "--steps", "1", "--size", "256x384", "--json"])
    assert code == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def test_missing_file_names_it_with_size_and_fetch_command(hub_snapshot):
    lora = local_path(next(f for f in preset_files() if f.path == "GraySD/unet_lora.bin"))
    lora.unlink()
    with pytest.raises(ModelError) as error:
        resolve_models("official")
    message = str(error.value)
    assert "(GraySD/unet_lora.bin): 95.9 MB to download" in message
    assert "colorflow models download" in message
    assert "1 official model file(s)" in message and "\n" not in message


def test_flipped_byte_fails_verify_naming_the_file(hub_snapshot, capsys):
    _pin_all()
    assert all(s.status == "ok" for s in verify())
    target = local_path(next(f for f in preset_files() if f.path == "GraySD/MultiResNetModel.bin"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    states = {s.file.path: s for s in verify()}
    assert states["GraySD/MultiResNetModel.bin"].status == "corrupt"
    assert "sha256" in states["GraySD/MultiResNetModel.bin"].detail
    assert all(s.status == "ok" for p, s in states.items() if p != "GraySD/MultiResNetModel.bin")
    assert main(["models", "verify"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"corrupt\s+TencentARC/ColorFlow/GraySD/MultiResNetModel.bin", out)
    assert "colorflow models download --repair" in out


def test_truncated_file_fails_verify_by_size(hub_snapshot):
    _pin_all()
    target = local_path(next(f for f in preset_files() if f.path == "unet/diffusion_pytorch_model.safetensors"))
    target.write_bytes(target.read_bytes()[:1000])
    states = {s.file.path: s for s in verify()}
    assert states["unet/diffusion_pytorch_model.safetensors"].status == "corrupt"
    assert "size" in states["unet/diffusion_pytorch_model.safetensors"].detail


def test_command_payload_in_official_checkpoint_is_refused(hub_snapshot, tmp_path):
    import pickle

    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    guide = local_path(next(f for f in preset_files() if f.path == "GraySD/diffusion_pytorch_model.bin"))
    with guide.open("wb") as handle:
        pickle.dump({"conv_in_condition.weight": Payload()}, handle)
    from engine.models.loading import load_diffusion

    with pytest.raises(ModelError, match="refused or unreadable"):
        load_diffusion(resolve_models("official"))
    assert not marker.exists()


def test_convert_writes_safetensors_that_load_identically(models_copy, capsys):
    graysd = models_copy / "colorflow" / "GraySD"
    originals = {p.stem: torch.load(p, weights_only=True) for p in graysd.glob("*.bin")}
    assert main(["models", "convert", "--models", str(models_copy)]) == 0
    from safetensors.torch import load_file

    for stem, state in originals.items():
        converted = load_file(str(graysd / f"{stem}.safetensors"))
        assert converted.keys() == state.keys()
        assert all(torch.equal(converted[k], state[k]) for k in state)
    # The loader now prefers the safetensors copies: the pickles can go.
    for path in graysd.glob("*.bin"):
        path.unlink()
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0  # removed on purpose
    from engine.models.loading import load_diffusion

    components = load_diffusion(resolve_models(str(models_copy)))
    assert torch.equal(components.guide.state_dict()["brushnet_mid_block.weight"],
                       originals["diffusion_pytorch_model"]["brushnet_mid_block.weight"])


def test_convert_also_works_on_the_official_snapshot(hub_snapshot):
    written = convert_to_safetensors(resolve_models("official").graysd)
    assert sorted(p.name for p in written) == [
        "MultiResNetModel.safetensors", "diffusion_pytorch_model.safetensors", "unet_lora.safetensors"
    ]


def test_download_to_unreachable_endpoint_fails_fast_with_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _fake_disk(monkeypatch, 10**13)  # the space check comes first; this test is about the network
    start = time.monotonic()
    with pytest.raises(ModelError) as error:
        download("official", endpoint="http://127.0.0.1:9")
    assert time.monotonic() - start < 30
    assert "cannot download from the Hugging Face hub" in str(error.value)
    assert "HTTPS_PROXY" in str(error.value)


def test_download_refuses_when_offline_flag_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        download("official")


def test_no_code_calls_torch_load_without_weights_only():
    offenders = []
    for path in REPO_ROOT.rglob("*.py"):
        if ".venv" in path.parts or "site-packages" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}")
    assert offenders == []


def test_models_list_shows_presence_and_device(hub_snapshot, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "official  20/20 files present" in out
    assert "device    auto -> cpu, float32" in out


def test_download_progress_bar_reports_bytes_and_cancels():
    from engine.core.events import CancelToken, Progress
    from engine.models.hub import _progress_bar_class

    events, cancel = [], CancelToken()
    bar_class = _progress_bar_class(events.append, "GraySD/unet_lora.bin", cancel)
    bar = bar_class(total=1000, unit="B")
    bar.update(400)
    bar.update(100)
    assert [(e.stage, e.step, e.total, e.page) for e in events] == [
        ("download", 400, 1000, "GraySD/unet_lora.bin"), ("download", 500, 1000, "GraySD/unet_lora.bin")
    ]
    assert all(isinstance(e, Progress) for e in events)
    cancel.cancel()
    with pytest.raises(ModelError, match="cancelled"):
        bar.update(100)
    bar.close()


def test_download_repair_fetches_only_damaged_files(hub_snapshot, capsys, monkeypatch):
    _pin_all()
    assert main(["models", "download", "--repair"]) == 0
    assert "all official model files are present" in capsys.readouterr().out
    target = local_path(next(f for f in preset_files() if f.path == "GraySD/unet_lora.bin"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    requested = []

    def fake_download(preset, emit, force, files):
        requested.extend(f.path for f in files)
        return []

    monkeypatch.setattr("engine.models.hub.download", fake_download)
    assert main(["models", "download", "--repair"]) == 0
    assert requested == ["GraySD/unet_lora.bin"]


def test_verify_on_a_fresh_install_says_download_not_repair(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert main(["models", "verify"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "not downloaded yet" in last and "colorflow models download" in last and "--repair" not in last


Usage = collections.namedtuple("Usage", "total used free")


def _fake_disk(monkeypatch, free: int) -> list[Path]:
    """shutil.disk_usage answering `free` bytes; returns the folders it was asked about."""
    asked: list[Path] = []

    def disk_usage(path):
        asked.append(Path(path))
        return Usage(10 * free + 1, 0, free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    return asked


def test_models_list_shows_file_sizes_total_folder_space_licences_and_speed(hub_snapshot, monkeypatch, capsys):
    lora = next(f for f in preset_files() if f.path == "GraySD/unet_lora.bin")
    local_path(lora).unlink()
    asked = _fake_disk(monkeypatch, 500 * 10**9)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    installed = {f.path: os.path.getsize(local_path(f)) for f in preset_files() if local_path(f)}
    assert len(installed) == 19
    # An installed file shows its size on disk, a missing one its download size (~).
    rows = {m[3]: (m[1], m[2]) for m in (re.match(r"   (ok|--)\s+(~?[\d.]+ [KMG]?B)  tofu\s+(\S+)$", line) for line in lines) if m}
    assert len(rows) == 20
    guide = "TencentARC/ColorFlow/GraySD/diffusion_pytorch_model.bin"
    assert rows[guide] == ("ok", human_bytes(installed["GraySD/diffusion_pytorch_model.bin"]))
    assert rows["TencentARC/ColorFlow/GraySD/unet_lora.bin"] == ("--", "~95.9 MB")
    total = sum(installed.values()) + 95_900_000
    assert f"official  19/20 files present, {human_bytes(sum(installed.values()))} on disk, 95.9 MB still to download" in out
    assert f"   total {human_bytes(total)} " in out
    assert f"folder    {hub_snapshot / 'hub'} " in out
    assert f"free      500.0 GB free (measured at {hub_snapshot / 'hub'})" in out and asked == [hub_snapshot / "hub"]
    assert "WARNING" not in out
    for name in ("CreativeML OpenRAIL-M", "Academic Software Licence (ASL)", "ScreenStyle licence"):
        assert sum(line.strip().startswith(name) for line in lines) == 1, name
    assert "https://github.com/TencentARC/ColorFlow/blob/main/LICENSE" in out
    assert "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5" in out
    assert "speed     not measured — run `colorflow models probe`" in out
    assert "speed: not measured — run `colorflow models probe --models tiny`" in out


@pytest.mark.parametrize("room, warned", [(1.0, True), (1.04, True), (1.06, False)])
def test_models_list_warns_when_the_download_does_not_fit(tmp_path, monkeypatch, capsys, room, warned):
    """The warning comes exactly when `models download` would refuse (5% margin), and free
    space is measured on the nearest folder that exists (the cache folder is made later)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "new" / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    needed = sum(f.approx_bytes for f in preset_files())
    asked = _fake_disk(monkeypatch, int(needed * room))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert asked == [tmp_path]
    assert f"{human_bytes(needed)} still to download" in out
    warning = [line for line in out.splitlines() if line.startswith("WARNING")]
    if warned:
        assert len(warning) == 1 and "not enough free disk space" in warning[0]
        assert f"only {human_bytes(int(needed * room))} free in {tmp_path / 'new' / 'hf' / 'hub'}" in warning[0]
        assert "HF_HOME" in warning[0]
    else:
        assert warning == []


def test_probe_with_tiny_models_prints_stage_seconds_and_models_list_shows_it(capsys):
    from engine.models.speed import probe_path

    assert main(["models", "probe", "--models", "tiny", "--device", "cpu", "--size", "256x384", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    shown = dict(re.findall(r"^  (ScreenStyle|RAP|ICP|GSRP|total)\s+([\d.]+) s", out, flags=re.M))
    assert set(shown) == {"ScreenStyle", "RAP", "ICP", "GSRP", "total"}
    stored = json.loads(probe_path().read_text())
    assert list(stored) == ["tiny"]
    probe = stored["tiny"]
    assert (probe["device"], probe["size"], probe["steps"], probe["dtype"]) == ("cpu", "256x384", 1, "float32")
    assert all(seconds > 0 for seconds in probe["stages_s"].values())
    assert probe["page_s"] == pytest.approx(sum(probe["stages_s"].values()), abs=0.002)
    assert float(shown["total"]) == pytest.approx(probe["page_s"], abs=0.05)
    assert sum(float(shown[s]) for s in probe["stages_s"]) == pytest.approx(probe["page_s"], abs=0.21)
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    date = probe["measured"][:10]
    assert f"speed: last probe: {probe['page_s']:.1f} s/page on cpu ({date}, 1 step, 256x384)" in listing
    assert "speed     not measured — run `colorflow models probe`" in listing  # the official models: not yet


def test_stored_probes_are_kept_per_model_source(tmp_path):
    from engine.models.speed import probe_line, read_probes, store_probe

    base = {"device": "cuda:0", "steps": 10, "size": "512x800", "stages_s": {}, "measured": "2026-11-25T10:00:00"}
    store_probe({**base, "models": "official", "page_s": 12.34})
    store_probe({**base, "models": "tiny", "page_s": 0.5, "device": "cpu"})
    store_probe({**base, "models": str(tmp_path / "m" / ".." / "m"), "page_s": 3.0})
    assert sorted(read_probes()) == sorted(["official", "tiny", str(tmp_path / "m")])
    assert probe_line("official") == "last probe: 12.3 s/page on cuda:0 (2026-11-25, 10 steps, 512x800)"
    assert probe_line(str(tmp_path / "m")).startswith("last probe: 3.0 s/page")


def test_device_dtype_names_match_the_loader():
    from engine.core.devices import dtype_name
    from engine.models.loading import default_dtype

    for device in ("cpu", "cuda", "mps"):
        assert f"torch.{dtype_name(device)}" == str(default_dtype(device))
