"""A custom models folder (--models DIR) is recorded on first use (size + sha256 of every file), checked cheaply on every run and fully with `models verify --rehash`; the resume key follows the content; unreadable files say "permission denied"."""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import shlex
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.core.errors import ModelError
from engine.models import pins
from engine.models.sources import resolve_models
from weight_faults import flip_byte_keeping_size_and_mtime

UNET = "sd15/unet/diffusion_pytorch_model.safetensors"
LORA = "colorflow/GraySD/unet_lora.bin"


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """Names (last two path parts) of the files the engine hashes from now on."""
    calls: list[str] = []
    real = pins.sha256_file

    def counting(path, *args, **kwargs):
        calls.append("/".join(Path(path).parts[-2:]))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pins, "sha256_file", counting)
    return calls


def _layout_files(root: Path) -> dict[str, Path]:
    """Every file under DIR/sd15, DIR/colorflow and DIR/pixart (line-art styles), as the test sees the folder."""
    return {p.relative_to(root).as_posix(): p
            for sub in ("sd15", "colorflow", "pixart") for p in (root / sub).rglob("*") if p.is_file()}


def _accept_command(root: Path) -> str:
    return f"colorflow models verify --models {shlex.quote(str(root))} --accept"


def test_first_use_records_every_file_outside_the_folder_then_runs_only_stat(models_copy, hashed, tmp_path):
    before = sorted(p for p in models_copy.rglob("*"))
    resolve_models(str(models_copy))
    files = _layout_files(models_copy)
    assert sorted(hashed) == sorted("/".join(Path(r).parts[-2:]) for r in files)  # each file once
    assert sorted(p for p in models_copy.rglob("*")) == before  # nothing written into the user's folder
    records = list((tmp_path / "user-config").rglob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["folder"] == str(models_copy.resolve())
    assert sorted(record["files"]) == sorted(files)
    assert record["files"][UNET]["sha256"] == hashlib.sha256(files[UNET].read_bytes()).hexdigest()
    assert record["files"][UNET]["size"] == files[UNET].stat().st_size
    hashed.clear()
    resolve_models(str(models_copy))
    resolve_models(str(models_copy))
    assert hashed == []


def test_byte_flipped_in_a_tensor_with_the_mtime_restored_is_refused(models_copy, hashed):
    from safetensors.torch import load_file

    resolve_models(str(models_copy))
    hashed.clear()
    unet = models_copy / UNET
    flip_byte_keeping_size_and_mtime(unet)
    load_file(str(unet))  # why the check is needed: it loads without a word
    with pytest.raises(ModelError) as error:
        resolve_models(str(models_copy))
    assert str(error.value) == (
        f"{unet.resolve()}: content changed since this models folder was recorded (sha256 differs); "
        f"if the change is intended run `{_accept_command(models_copy.resolve())}`, else restore the file"
    )
    assert hashed == ["unet/diffusion_pytorch_model.safetensors"]  # only the file whose ctime moved
    with pytest.raises(ModelError, match="content changed"):  # still changed: still refused
        resolve_models(str(models_copy))


def test_touched_file_with_the_same_content_is_hashed_once_and_passes(models_copy, hashed):
    from engine.models import fingerprint_models

    first = resolve_models(str(models_copy))
    before = fingerprint_models(first)
    hashed.clear()
    lora = models_copy / LORA
    stat = lora.stat()
    os.utime(lora, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    again = resolve_models(str(models_copy))
    assert hashed == ["GraySD/unet_lora.bin"]
    assert again.content_id == first.content_id  # same bytes: same content
    assert fingerprint_models(again) != before  # the touched mtime still counts, as before
    hashed.clear()
    resolve_models(str(models_copy))
    assert hashed == []


def test_verify_lists_each_changed_missing_and_new_file_then_accept_records_them(models_copy, capsys, monkeypatch):
    from engine.models import folder_record

    root = models_copy.resolve()
    monkeypatch.setattr(folder_record, "PROGRESS_MIN_BYTES", 0)  # the tiny files hash too fast for lines
    assert main(["models", "verify", "--models", str(models_copy)]) == 0
    out, err = capsys.readouterr()
    count = len(_layout_files(models_copy))
    notice, recorded = out.splitlines()[:2]
    assert notice.startswith("random weights: ")  # a folder make-tiny wrote says so first
    assert recorded.startswith(f"recorded {count} files of {root} in ")
    progress = err.strip().splitlines()
    assert len(progress) == count  # one line per file hashed, as for the official files
    assert all(line.startswith("recording the sha256 of the model files of this folder: ")
               for line in progress), err
    assert progress[0].split(": ", 1)[1].startswith(f"1/{count} ")
    flip_byte_keeping_size_and_mtime(models_copy / UNET)
    (models_copy / LORA).unlink()
    (models_copy / "colorflow/GraySD/unet_lora.safetensors").write_bytes(b"\0" * 10)
    assert main(["models", "verify", "--models", str(models_copy)]) == 1
    notice, *lines = capsys.readouterr().out.rstrip().splitlines()
    assert notice.startswith("random weights: ")
    assert lines[:3] == [  # by path
        f" missing  {LORA}",
        "     new  colorflow/GraySD/unet_lora.safetensors  10 bytes",
        f" changed  {UNET}  sha256 differs",
    ]
    assert lines[3] == (f"3 file(s) of {root} differ from their record; if that is intended, record them with: "
                        f"{_accept_command(root)}")
    assert len(lines) == 4
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    accepted = capsys.readouterr().out.strip().splitlines()[-1]
    assert accepted == f"recorded {count} files of {root} (3 change(s) accepted)"
    assert main(["models", "verify", "--models", str(models_copy)]) == 0
    resolve_models(str(models_copy))  # accepted: runs again


def test_rehash_finds_a_change_the_file_times_cannot_show(models_copy, hashed, capsys, tmp_path):
    """A byte rotted on the disk changes neither size nor any time: only --rehash sees it
    (simulated by recording another sha256 for one file)."""
    assert main(["models", "verify", "--models", str(models_copy)]) == 0
    record_path = next((tmp_path / "user-config").rglob("*.json"))
    record = json.loads(record_path.read_text())
    record["files"][LORA]["sha256"] = "0" * 64
    record_path.write_text(json.dumps(record))
    hashed.clear()
    assert main(["models", "verify", "--models", str(models_copy)]) == 0  # the cheap check reads no file
    assert hashed == []
    capsys.readouterr()
    assert main(["models", "verify", "--models", str(models_copy), "--rehash"]) == 1
    assert len(hashed) == len(_layout_files(models_copy))
    assert capsys.readouterr().out.splitlines()[1] == f" changed  {LORA}  sha256 differs"


def test_damaged_record_is_one_line_with_the_accept_command(models_copy, tmp_path):
    resolve_models(str(models_copy))
    record_path = next((tmp_path / "user-config").rglob("*.json"))
    record_path.write_text("{not json")
    with pytest.raises(ModelError) as error:
        resolve_models(str(models_copy))
    assert str(error.value).startswith(f"{record_path}: the record of {models_copy.resolve()} is damaged")
    assert str(error.value).endswith(f"make it again with `{_accept_command(models_copy.resolve())}`")
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    resolve_models(str(models_copy))


def test_tiny_and_official_presets_record_nothing(tiny_models_dir, hub_snapshot, tmp_path, hashed):
    import shutil

    from engine.models import fingerprint_models
    from engine.models.sources import TINY_MARKER, TINY_VERSION

    tiny = tmp_path / "tiny"
    shutil.copytree(tiny_models_dir, tiny)
    (tiny / TINY_MARKER).write_text(f"tiny models v{TINY_VERSION}\n")
    paths = resolve_models("tiny", tiny_root=tiny)
    resolve_models("official")  # no pins: nothing to check, as before
    assert hashed == []
    assert not (tmp_path / "user-config").exists() or not list((tmp_path / "user-config").rglob("*.json"))
    assert paths.content_id == "" and fingerprint_models(paths)  # the key of the tiny preset is unchanged


def test_resume_redoes_the_page_after_weights_changed_with_the_mtime_restored(models_copy, one_page_chapter,
                                                                              tmp_path, capsys):
    pages, refs = one_page_chapter
    out = tmp_path / "out"
    run = ["colorize", str(pages), "--refs", str(refs), "--out", str(out), "--models", str(models_copy),
           "--steps", "1", "--size", "256x384", "--input-style", "gray", "--json"]

    def page_state() -> tuple[str, int]:
        page = json.loads((out / "colorflow-project.json").read_text())["pages"][0]
        return page["settings_key"], (out / page["outputs"]["colored"]).stat().st_mtime_ns

    assert main(run) == 0
    first_key, first_written = page_state()
    capsys.readouterr()
    flip_byte_keeping_size_and_mtime(models_copy / UNET)
    assert main([*run, "--resume"]) == 2  # refused before any model loads
    err = capsys.readouterr().err
    assert f"{(models_copy / UNET).resolve()}: content changed since this models folder was recorded" in err
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    capsys.readouterr()
    assert main([*run, "--resume"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["done"] == ["1.png"] and report["skipped"] == []
    key, written = page_state()
    assert key != first_key and written != first_written


# --- permission denied --------------------------------------------------------------------

def _deny_reading(monkeypatch, denied: Path) -> None:
    """Opening `denied` fails as on a chmod 000 file (tests run as root, where chmod does not stop reads)."""
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == denied.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


def _permission_message(path: Path) -> str:
    return (f"{path}: permission denied (this user cannot read it); make it readable with "
            f"`chmod u+r {shlex.quote(str(path))}`, or `chown` it to this user")


def _pinned_unchecked_official(relative: str) -> Path:
    """Pin every official file as a download does, with none checked since: the next use hashes
    each one. Returns the snapshot path of `relative`."""
    from engine.models.hub_cache import local_path
    from engine.models.pins import pin, sha256_file
    from engine.models.presets import preset_files

    for file in preset_files("official"):
        pin(file, local_path(file), sha256_file(local_path(file)))
    pins.checked_path().unlink()
    return local_path(next(f for f in preset_files() if f.path == relative))


@pytest.mark.parametrize("entry", ["folder-record", "official-pins", "pickled-weights", "safetensors-weights"])
def test_unreadable_model_file_says_permission_denied_and_how_to_fix_it(entry, monkeypatch, request):
    from engine.io.weight_files import read_state_dict

    if entry == "official-pins":
        request.getfixturevalue("hub_snapshot")
        denied = _pinned_unchecked_official("vae/diffusion_pytorch_model.safetensors")
        load = lambda: resolve_models("official")  # noqa: E731
    else:
        models = request.getfixturevalue("models_copy").resolve()
        denied = models / {"folder-record": UNET, "pickled-weights": LORA, "safetensors-weights": UNET}[entry]
        load = (lambda: resolve_models(str(models))) if entry == "folder-record" else (lambda: read_state_dict(denied))
    _deny_reading(monkeypatch, denied)
    with pytest.raises(ModelError) as error:
        load()
    assert str(error.value) == _permission_message(denied)
    assert "download --repair" not in str(error.value)


def test_folders_linked_from_another_models_folder_are_recorded_too(models_copy, tmp_path):
    """A trainer's output links DIR/sd15 and DIR/colorflow/image_encoder to the base's folders:
    their files are loaded, so they are recorded and checked too."""
    linked = tmp_path / "trained"
    (linked / "colorflow").mkdir(parents=True)
    (linked / "sd15").symlink_to(models_copy / "sd15", target_is_directory=True)
    for entry in (models_copy / "colorflow").iterdir():
        (linked / "colorflow" / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (linked / "colorflow" / "loop").symlink_to(linked / "colorflow", target_is_directory=True)  # walked once
    resolve_models(str(linked))
    record = json.loads(next((tmp_path / "user-config").rglob("*.json")).read_text())
    linked_roots = ("sd15/", "colorflow/")  # no pixart/ linked: the line-art base is not part of this folder
    assert sorted(record["files"]) == sorted(r for r in _layout_files(models_copy) if r.startswith(linked_roots))
    flip_byte_keeping_size_and_mtime(models_copy / "colorflow/image_encoder/model.safetensors")
    with pytest.raises(ModelError, match="image_encoder/model.safetensors: content changed"):
        resolve_models(str(linked))
