"""Faults during a chapter run: disk full or read-only output, out of memory. Nothing already
written is lost, the project stays loadable and --resume finishes the chapter."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from PIL import Image

from engine.core.errors import OutputError
from engine.core.events import Notice, PageDone
from engine.io.chapter import list_images, open_chapter
from engine.io.storage import check_output_folder, estimate_output_bytes
from engine.pipelines.chapter import colorize_chapter
from engine.pipelines.page import load_pipeline
from engine.pipelines.settings import PipelineSettings
from engine.project.state import ChapterProject
from engine.project.store import PROJECT_FILE
from engine.core.geometry import WorkSize
from engine.icp.settings import ColorizeSettings
from engine.gsrp.settings import UpscaleSettings

SETTINGS = PipelineSettings(colorize=ColorizeSettings(steps=2), upscale=UpscaleSettings(),
                            size=WorkSize(256, 384), input_style="gray")


def disk_full_after(monkeypatch, fills_disk):
    """From the first os.replace of a file whose name makes `fills_disk` true, every fsync fails
    with ENOSPC, as atomic writes (temp file, fsync, replace) do on a full disk. Returns the
    function that frees the space (puts the real os functions back)."""
    real_replace, real_fsync = os.replace, os.fsync
    full = [False]

    def replace(src, dst):  # fileio renames through the os module
        real_replace(src, dst)
        if fills_disk(os.path.basename(dst)):
            full[0] = True

    def fsync(fd):
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)

    def free_space() -> None:
        monkeypatch.setattr(os, "replace", real_replace)
        monkeypatch.setattr(os, "fsync", real_fsync)

    return free_space


@pytest.fixture
def run(tiny_models_dir, demo_data, tmp_path):
    """A fresh tiny pipeline (its memory mode may change), the demo chapter and a project."""
    chapter_dir, refs_dir = demo_data
    pipeline = load_pipeline(str(tiny_models_dir), cache_dir=tmp_path / "cache", input_style="gray")
    return open_chapter(chapter_dir), list_images([refs_dir]), pipeline, ChapterProject(folder=tmp_path / "out")


def test_disk_full_mid_run_keeps_written_pages_and_resume_finishes(run, monkeypatch):
    chapter, refs, pipeline, project = run
    written = set()

    def page2_recorded(name: str) -> bool:  # page 2 and then the project saying so: the disk fills up
        written.add(name)
        return name == PROJECT_FILE and "002_2.png" in written

    free_space = disk_full_after(monkeypatch, page2_recorded)
    with pytest.raises(OutputError) as caught:
        colorize_chapter(chapter, refs, pipeline, project, settings=SETTINGS)
    message = str(caught.value)
    assert "No space left on device" in message and "3.png" in message and "--resume" in message
    assert "2 page(s) written before are kept" in message
    folder = project.folder
    assert sorted(p.name for p in folder.iterdir() if not p.is_dir() and p.suffix == ".png") == ["001_1.png", "002_2.png"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # no half-written file left
    for name in ("001_1.png", "002_2.png"):
        Image.open(folder / name).load()  # complete files
    saved = ChapterProject.load(folder)  # the last good project file
    assert [p.status for p in saved.pages] == ["done", "done", "pending", "pending"]

    free_space()
    report = colorize_chapter(chapter, refs, pipeline, ChapterProject.load(folder), settings=SETTINGS, resume=True)
    assert report.skipped == ["1.png", "2.png"] and report.done == ["3.png", "4.png"]
    assert [p.status for p in ChapterProject.load(folder).pages] == ["done"] * 4


def test_read_only_or_small_output_folder_is_refused_before_the_run(tmp_path, monkeypatch, demo_data):
    import shutil
    import tempfile

    import engine.io.storage as storage

    chapter = open_chapter(demo_data[0])
    needed = estimate_output_bytes(chapter.sources)
    source_bytes = sum(p.stat().st_size for p in demo_data[0].iterdir())
    assert needed >= source_bytes  # a colored page is never smaller than the estimate's base

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", read_only)
        with pytest.raises(OutputError, match="cannot write there \\(Read-only file system\\)"):
            check_output_folder(tmp_path / "out", needed)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _p: usage._replace(free=needed - 1))
    with pytest.raises(OutputError, match="free, the chapter needs about"):
        check_output_folder(tmp_path / "out", needed)
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _p: usage._replace(free=needed))
    check_output_folder(tmp_path / "out", needed)
    assert not list((tmp_path / "out").iterdir())  # the write probe leaves nothing behind


class RunsOutOfMemory:
    """Stands in for the colorizer: raises CUDA's out-of-memory error on chosen calls."""

    def __init__(self, real, failing_calls):
        self.real, self.failing, self.calls = real, set(failing_calls), 0
        self.components = real.components  # the loaded models, as the real colorizer exposes them

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls in self.failing:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.real(*args, **kwargs)


def test_out_of_memory_retries_once_in_lowest_memory_mode(run):
    chapter, refs, pipeline, project = run
    pipeline.colorizer = RunsOutOfMemory(pipeline.colorizer, failing_calls={1})
    vae = pipeline.colorizer.components.vae
    assert not vae.use_tiling
    events = []
    report = colorize_chapter(chapter, refs, pipeline, project, settings=SETTINGS, emit=events.append)
    assert report.done == ["1.png", "2.png", "3.png", "4.png"] and not report.failed
    assert vae.use_tiling  # the lowest-memory mode on the CPU: tiled VAE
    notices = [e for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and notices[0].page == "1.png" and "tiled VAE" in notices[0].message
    first = next(e for e in events if isinstance(e, PageDone) and e.page == "1.png")
    assert any("out of memory at first" in w for w in first.info["warnings"])


def test_out_of_memory_twice_fails_the_page_with_advice_and_the_run_goes_on(run):
    chapter, refs, pipeline, project = run
    pipeline.colorizer = RunsOutOfMemory(pipeline.colorizer, failing_calls={1, 2})
    report = colorize_chapter(chapter, refs, pipeline, project, settings=SETTINGS)
    assert report.done == ["2.png", "3.png", "4.png"]
    reason = report.failed["1.png"]
    assert "out of memory even in the lowest-memory mode" in reason and "--size" in reason
    assert pipeline.colorizer.calls == 5  # page 1 twice, then one call per page


def test_lowest_memory_on_an_accelerator_offloads_every_model(tiny_models_dir):
    from engine.models.loading import load_diffusion, use_lowest_memory
    from engine.models.sources import resolve_models

    components = load_diffusion(resolve_models(str(tiny_models_dir)), "cpu")
    components.device = torch.device("meta")  # as if the models had been loaded on an accelerator
    changed = use_lowest_memory(components)
    assert changed == ["tiled VAE", "models offloaded to the CPU between uses"]
    assert set(components.offload.hooks) == {"text_encoder", "unet", "guide", "vae", "fusion"}
    models = (components.unet, components.guide, components.vae, components.text_encoder, components.fusion)
    assert all(p.device.type == "cpu" for m in models for p in m.parameters())  # waiting on the CPU
    assert use_lowest_memory(components) == []  # nothing lower: a second OOM fails the page


def test_cli_read_only_out_is_one_line_and_disk_full_mid_run_exits_1(tiny_models_dir, demo_data, tmp_path,
                                                                     monkeypatch, capsys):
    import tempfile

    from engine.cli.main import main

    chapter_dir, refs_dir = demo_data
    out = tmp_path / "out"
    args = ["colorize", str(chapter_dir), "--refs", str(refs_dir), "--out", str(out), "--models", str(tiny_models_dir),
            "--steps", "2", "--size", "256x384", "--input-style", "gray", "--format", "png"]

    def read_only(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", read_only)
        assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"colorflow: error: {out}: cannot write there (Read-only file system); " \
                  "make the folder writable (or choose another output folder)"

    free_space = disk_full_after(monkeypatch, lambda name: name == "001_1.png")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [l for l in err.splitlines() if l.startswith("colorflow: error:")]
    assert "No space left on device while writing page 1.png" in line and "--resume" in line
    assert sorted(p.name for p in out.glob("*.png")) == ["001_1.png"]  # written, kept
    # page 1's project save failed: on disk the project still says pending, so resume redoes it
    free_space()
    assert main([*args, "--resume"]) == 0
    assert [p.status for p in ChapterProject.load(out).pages] == ["done"] * 4
