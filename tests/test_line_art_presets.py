"""The line-art model files (ColorFlow sketch/, shading/, LE/ and the PixArt-alpha base) as optional
components of the official preset: parsed, downloaded only on request (exactly the allow-listed
files, T5 skipped once the prompt embeddings are cached), verified and listed, and found in a models DIR."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.core.errors import ModelError
from engine.io.storage import human_bytes
from engine.models.hub_cache import local_path
from engine.models.presets import preset_files

COLORFLOW, PIXART = "TencentARC/ColorFlow", "PixArt-alpha/PixArt-XL-2-1024-MS"
STYLE_FOLDER_FILES = ("config.json", "diffusion_pytorch_model.bin", "transformer_lora.bin", "MultiResNetModel.bin")
# The allow-list, from the issue and the hub layout of the PixArt-alpha repo (diffusers layout; the
# repo's multi-GB .pth/.bin checkpoints are never fetched): written out here, not read from the presets.
PIXART_FILES = {
    "model_index.json", "scheduler/scheduler_config.json",
    "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    "tokenizer/added_tokens.json", "tokenizer/special_tokens_map.json", "tokenizer/spiece.model",
    "tokenizer/tokenizer_config.json",
    "text_encoder/config.json", "text_encoder/model.safetensors.index.json",
}
T5_SHARDS = {"text_encoder/model-00001-of-00002.safetensors", "text_encoder/model-00002-of-00002.safetensors"}
LINE_ART = ({(COLORFLOW, f"{folder}/{name}") for folder in ("sketch", "shading") for name in STYLE_FOLDER_FILES}
            | {(COLORFLOW, "LE/erika.pth")} | {(PIXART, path) for path in PIXART_FILES | T5_SHARDS})


class RecordingHub:
    """Stands in for huggingface_hub (as tests/test_presets.py's FakeHub): writes a few bytes for each
    requested file into the cache layout of refs/main, recording every (repo, path) asked for."""

    def __init__(self):
        self.requested: list[tuple[str, str]] = []

    def hf_hub_download(self, repo, path, cache_dir, revision=None, **_):
        self.requested.append((repo, path))
        base = Path(cache_dir) / f"models--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True, exist_ok=True)
        if not (base / "refs" / "main").exists():
            (base / "refs" / "main").write_text("0123abcd")
        target = base / "snapshots" / (base / "refs" / "main").read_text().strip() / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f"{repo}/{path}".encode())
        return str(target)

    def api(self, endpoint=None):
        class Api:
            def get_paths_info(self, repo, paths, expand=False, revision=None):
                return []

        return Api()


@pytest.fixture
def hub(monkeypatch) -> RecordingHub:
    import huggingface_hub

    stub = RecordingHub()
    # The stub writes bytes, not the 24 GB the presets estimate: the machine's free space must not decide.
    real_disk_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real_disk_usage(path)._replace(free=10**15))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", stub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", stub.api)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return stub


@pytest.fixture
def base_snapshot(hub_snapshot) -> Path:
    """The hub cache of `hub_snapshot` with the base files only: the tiny models' line-art folders
    (make-tiny writes them) taken out of the ColorFlow snapshot."""
    snapshot = hub_snapshot / "hub" / "models--TencentARC--ColorFlow" / "snapshots" / "0123abcd"
    for folder in ("sketch", "shading", "LE"):
        shutil.rmtree(snapshot / folder, ignore_errors=True)
    return hub_snapshot


@pytest.fixture
def embeddings_cached(monkeypatch):
    """engine.icp.text_embeddings.text_embedding_cached answering state["cached"], recording the
    arguments it was asked with (the cache itself is tested in tests/test_text_embeddings.py; a
    real end-to-end of the T5 shards deleted after caching is in tests/test_pixart_icp.py)."""
    state = {"cached": False, "asked": []}

    def text_embedding_cached(pixart_root, prompt, negative, cache_dir, max_length=120, **_):
        state["asked"].append((Path(pixart_root), prompt, negative, max_length))
        return state["cached"]

    import engine.icp.text_embeddings as module

    monkeypatch.setattr(module, "text_embedding_cached", text_embedding_cached)
    return state


def test_the_presets_hold_the_line_art_files_as_optional_components_with_sizes():
    base = preset_files()
    assert len(base) == 20 and {f.component for f in base} == {"base"}  # what a gray/screen user needs
    everything = preset_files(components=None)
    line_art = {(f.repo, f.path): f for f in everything if f.component != "base"}
    assert set(line_art) == LINE_ART
    assert {f.component for f in line_art.values()} == {"line-art", "line-art-text-encoder"}
    assert {path for (_repo, path), f in line_art.items() if f.component == "line-art-text-encoder"} == T5_SHARDS
    assert {f.root for f in line_art.values() if f.repo == PIXART} == {"pixart"}
    assert not any(path.endswith((".pth", ".bin")) for repo, path in line_art if repo == PIXART)
    sizes = {path: f.approx_bytes for (_repo, path), f in line_art.items()}
    assert sizes["LE/erika.pth"] == 173_000_000  # the hub listing (reference/CHECKPOINTS.md)
    # 2.45 GB on the hub (fp32); T5 v1.1 XXL encoder 4.76 B parameters in fp32 ~ 19 GB over both shards
    assert abs(sizes["transformer/diffusion_pytorch_model.safetensors"] - 2.45e9) < 0.01e9
    assert abs(sum(sizes[p] for p in T5_SHARDS) - 4 * 4.762e9) < 0.01 * 4 * 4.762e9
    assert all(f.size_estimated for f in line_art.values() if f.path != "LE/erika.pth")
    assert {f.styles for f in line_art.values() if f.path.startswith("sketch/")} == {("sketch",)}
    assert {f.styles for f in line_art.values() if f.path.startswith("shading/")} == {("sketch-shading",)}


def test_download_with_line_art_requests_exactly_the_allow_listed_files(base_snapshot, hub, embeddings_cached, capsys):
    assert main(["models", "download"]) == 0  # the base components are all there: nothing requested
    assert hub.requested == [] and "all official model files are present" in capsys.readouterr().out
    assert main(["models", "download", "--line-art"]) == 0
    assert set(hub.requested) == LINE_ART and len(hub.requested) == len(LINE_ART)
    out = capsys.readouterr().out
    total = sum(f.approx_bytes for f in preset_files(components=None) if f.component != "base")
    first = out.splitlines()[0]
    assert human_bytes(total) in first and "line-art" in first  # the size is shown before anything is fetched
    hub.requested.clear()
    assert main(["models", "download", "--line-art"]) == 0  # everything present now
    assert hub.requested == []


def test_a_line_art_download_skips_t5_once_the_embeddings_are_cached(base_snapshot, hub, embeddings_cached, capsys):
    assert main(["models", "download", "--line-art", "sketch"]) == 0
    sketch = LINE_ART - {(COLORFLOW, f"shading/{name}") for name in STYLE_FOLDER_FILES}
    assert set(hub.requested) == sketch
    for file in preset_files(components=None):  # the user deletes T5 ...
        if file.repo == PIXART and file.path in T5_SHARDS:
            local_path(file).unlink()
    embeddings_cached["cached"] = True  # ... after the prompt embeddings were computed and cached
    hub.requested.clear()
    assert main(["models", "download", "--line-art"]) == 0
    assert set(hub.requested) == {(COLORFLOW, f"shading/{name}") for name in STYLE_FOLDER_FILES}
    pixart_root = base_snapshot / "hub" / "models--PixArt-alpha--PixArt-XL-2-1024-MS" / "snapshots" / "0123abcd"
    assert embeddings_cached["asked"][-1] == (pixart_root, "manga", "", 120)  # the official prompt and negative
    capsys.readouterr()
    assert main(["models", "verify"]) == 0  # T5 not demanded once the embeddings exist
    out = capsys.readouterr().out
    for shard in T5_SHARDS:
        line = next(line for line in out.splitlines() if f"{PIXART}/{shard} " in line)
        assert line.split()[0] == "optional" and "embeddings are cached" in line


def test_line_art_missing_names_the_files_of_a_style_and_their_size(base_snapshot, hub, embeddings_cached):
    from engine.models.line_art import line_art_missing

    missing, total = line_art_missing("official", "sketch")
    expected = LINE_ART - {(COLORFLOW, f"shading/{name}") for name in STYLE_FOLDER_FILES}
    assert {(f.repo, f.path) for f in missing} == expected
    assert total == sum(f.approx_bytes for f in missing) and total > 20 * 10**9  # T5 (19 GB) included
    embeddings_cached["cached"] = True
    without_t5, smaller = line_art_missing("official", "sketch")
    # nothing of PixArt is there yet: no snapshot root to have embeddings for, so T5 is still needed
    assert len(without_t5) == len(missing)
    hub.hf_hub_download(PIXART, "text_encoder/config.json", base_snapshot / "hub")
    without_t5, smaller = line_art_missing("official", "sketch")
    fetched = {(PIXART, p) for p in T5_SHARDS | {"text_encoder/config.json"}}
    assert {(f.repo, f.path) for f in without_t5} == expected - fetched
    assert smaller == total - sum(f.approx_bytes for f in missing if (f.repo, f.path) in fetched)


def test_colorize_sketch_without_the_files_names_the_size_and_the_command(base_snapshot, one_page_chapter, tmp_path,
                                                                         embeddings_cached, capsys):
    pages, refs = one_page_chapter
    code = main(["colorize", str(pages), "--refs", str(refs), "--out", str(tmp_path / "out"), "--models", "official",
                 "--input-style", "sketch"])
    assert code == 2
    err = capsys.readouterr().err
    from engine.models.line_art import line_art_missing

    _missing, total = line_art_missing("official", "sketch")
    assert human_bytes(total) in err and "colorflow models download --line-art" in err


def test_verify_and_list_report_the_line_art_components(base_snapshot, embeddings_cached, capsys):
    assert main(["models", "verify"]) == 0  # optional files missing are no failure
    out = capsys.readouterr().out
    for repo, path in LINE_ART:
        line = next(line for line in out.splitlines() if f"{repo}/{path}" in line)
        assert line.split()[0] == "optional", line
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "official  20/20 files present" in out
    line_art = [f for f in preset_files(components=None) if f.component != "base"]
    assert f"line art  0/{len(line_art)} files present" in out
    assert human_bytes(sum(f.approx_bytes for f in line_art)) in out
    assert main(["models", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["files"]) == 20
    listed = {row["path"]: row for row in data["line_art"]["files"]}
    assert set(listed) == {f"{repo}/{path}" for repo, path in LINE_ART}
    assert all(not row["installed"] and row["component"] in ("line-art", "line-art-text-encoder") for row in listed.values())
    assert data["line_art"]["to_download_bytes"] == sum(f.approx_bytes for f in line_art)
    assert set(data["line_art"]["styles"]) == {"sketch", "sketch-shading"}


def test_official_models_fill_pixart_only_when_its_snapshot_is_there(base_snapshot, hub):
    from engine.models.sources import resolve_models

    assert resolve_models("official").pixart is None  # a gray/screen user without PixArt: no failure
    hub.hf_hub_download(PIXART, "model_index.json", base_snapshot / "hub")
    paths = resolve_models("official")
    assert paths.pixart == base_snapshot / "hub" / "models--PixArt-alpha--PixArt-XL-2-1024-MS" / "snapshots" / "0123abcd"


def test_a_models_dir_with_pixart_resolves_it_and_its_record_covers_it(models_copy, capsys):
    from engine.models.sources import resolve_models

    shutil.rmtree(models_copy / "pixart", ignore_errors=True)
    assert resolve_models(str(models_copy)).pixart is None
    (models_copy / "pixart" / "transformer").mkdir(parents=True)
    config = models_copy / "pixart" / "transformer" / "config.json"
    config.write_text('{"num_layers": 2}')
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    paths = resolve_models(str(models_copy))
    assert paths.pixart == models_copy.resolve() / "pixart"
    config.write_text('{"num_layers": 3}')
    with pytest.raises(ModelError, match=r"pixart/transformer/config\.json"):
        resolve_models(str(models_copy))


def test_layout_lists_the_line_art_networks_at_official_size_and_from_the_files(tiny_models_dir, capsys):
    assert main(["models", "layout", "--json"]) == 0
    layout = json.loads(capsys.readouterr().out)
    # reference/SKETCH.md: the real LoRA is 291 modules / 582 tensors of rank 128; the guide 14 blocks, each
    # followed by a 1152-wide zero Linear, the last one aliased as after_proj; erika.pth 707 tensors, 43.13M values
    assert len(layout["pixart_lora"]) == 582
    assert {shape[0] for key, shape in layout["pixart_lora"].items() if ".lora_A." in key} == {128}
    assert layout["pixart_guider"]["after_proj.weight"] == layout["pixart_guider"]["adapter_linear.13.weight"] == [1152, 1152]
    assert "adapter_linear.14.weight" not in layout["pixart_guider"]
    assert layout["pixart_guider"]["pos_embed.proj.weight"] == [1152, 13, 2, 2]
    extractor = layout["line_extractor"]
    assert len(extractor) == 707 and abs(sum(_count(s) for s in extractor.values()) - 43.13e6) < 0.01e6
    # exactly the manifests built from the official classes on the meta device (tests/data)
    data = Path(__file__).parent / "data"
    pixart = json.loads((data / "pixart-manifest.json").read_text())
    assert layout["pixart_guider"] == pixart["guide"] and layout["pixart_lora"] == pixart["transformer_lora"]
    assert extractor == json.loads((data / "line-extractor-manifest.json").read_text())["keys"]
    # from the files of a models DIR: every line-art weight file, by its folder
    assert main(["models", "layout", "--json", "--models", str(tiny_models_dir)]) == 0
    files = json.loads(capsys.readouterr().out)
    from engine.icp.pixart_guide import guide_shapes

    for folder in ("sketch", "shading"):
        config = json.loads((tiny_models_dir / "colorflow" / folder / "config.json").read_text())
        assert files[f"{folder}/pixart_guider"] == guide_shapes(config)
        assert set(files[f"{folder}/multires"]) == set(files["multires"])  # the GraySD GSRP network's keys
        assert files[f"{folder}/pixart_lora"] and all(".lora_" in key for key in files[f"{folder}/pixart_lora"])
    assert {key.split(".")[0] for key in files["line_extractor"]} == {key.split(".")[0] for key in extractor}


def _count(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


@pytest.fixture
def gui_worker():
    pytest.importorskip("PySide6")
    from app.worker import EngineWorker

    worker = EngineWorker()
    yield worker
    worker.shutdown()


def test_model_manager_shows_the_line_art_size_and_downloads_the_picked_style(qtbot, gui_worker, base_snapshot, hub,
                                                                             embeddings_cached):
    from app.model_dialog import ModelDialog
    from engine.models.line_art import line_art_missing

    _files, total = line_art_missing("official", "sketch")
    dialog = ModelDialog(gui_worker, line_art_style="sketch")
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.line_art_status is not None or "could not" in dialog.line_art.text(), timeout=180_000)
    assert dialog.line_art_status is not None, dialog.line_art.text()
    assert human_bytes(total) in dialog.line_art.text() and human_bytes(total) in dialog.line_art_button.text()
    assert dialog.line_art_button.isEnabled()
    dialog.line_art_button.click()
    # after the GPU check and the memory estimate the dialog queued first (seconds of torch on a busy machine)
    qtbot.waitUntil(lambda: "Download complete" in dialog.summary.text() or "stopped" in dialog.summary.text(),
                    timeout=180_000)
    assert "Download complete" in dialog.summary.text(), dialog.summary.text()
    assert set(hub.requested) == LINE_ART - {(COLORFLOW, f"shading/{name}") for name in STYLE_FOLDER_FILES}
    qtbot.waitUntil(lambda: dialog.line_art_button.text() == "Line-art files installed", timeout=180_000)
    assert not dialog.line_art_button.isEnabled()
    # the check after the download does not wipe what the download said
    assert "Download complete" in dialog.summary.text(), dialog.summary.text()


@pytest.mark.parametrize("style, asked", [("sketch-shading", True), ("screen", False)])
def test_picking_a_line_art_style_offers_its_files_with_their_size(qtbot, gui_worker, base_snapshot, embeddings_cached,
                                                                    monkeypatch, style, asked):
    from PySide6.QtWidgets import QMessageBox, QWidget

    from app.model_dialog import offer_line_art_download
    from engine.models.line_art import line_art_missing

    questions = []
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *a: questions.append(text)
                        or QMessageBox.StandardButton.No)
    window = QWidget()
    qtbot.addWidget(window)
    offer_line_art_download(window, gui_worker, style, "official")
    if asked:
        qtbot.waitUntil(lambda: bool(questions), timeout=180_000)
        _files, total = line_art_missing("official", style)
        assert human_bytes(total) in questions[0] and style in questions[0]
    else:
        qtbot.wait(300)
        assert questions == []


def test_a_models_dir_lacks_nothing_when_make_tiny_wrote_the_line_art_files(models_copy, embeddings_cached):
    from engine.models.line_art import line_art_missing
    from engine.models.sources import resolve_models

    paths = resolve_models(str(models_copy))
    assert line_art_missing(paths, "sketch") == ([], 0) and line_art_missing(paths, "sketch-shading") == ([], 0)
    (models_copy / "colorflow" / "shading" / "transformer_lora.bin").unlink()
    (models_copy / "pixart" / "text_encoder" / "model-00002-of-00002.safetensors").unlink()
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    paths = resolve_models(str(models_copy))
    assert [f.path for f in line_art_missing(paths, "sketch")[0]] == ["text_encoder/model-00002-of-00002.safetensors"]
    missing = {f.path for f in line_art_missing(paths, "sketch-shading")[0]}
    assert missing == {"shading/transformer_lora.bin", "text_encoder/model-00002-of-00002.safetensors"}
    embeddings_cached["cached"] = True  # T5's weights no longer needed
    assert [f.path for f in line_art_missing(paths, "sketch-shading")[0]] == ["shading/transformer_lora.bin"]
