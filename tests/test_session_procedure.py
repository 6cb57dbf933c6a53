"""The GUI's procedure setting: a session run with procedure "official" colors exactly as the
CLI's --procedure official (an independent path: the CLI builds its own settings)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.io.chapter import list_images, open_chapter
from engine.project import ChapterProject
from engine.session import EngineSession, RunSettings

ARGS = ["--steps", "2", "--size", "256x384", "--seed", "7"]


def _session_page(tiny_models_dir, chapter_dir, refs_dir, out, procedure) -> np.ndarray:
    settings = RunSettings(models=str(tiny_models_dir), device="cpu", steps=2, seed=7, size="256x384",
                           procedure=procedure, cache_dir=str(out.parent / "cache"))
    chapter, project = open_chapter([chapter_dir]), ChapterProject.open_or_create(out)
    first = chapter.sources[0].name
    report = EngineSession().colorize(chapter, list_images([refs_dir]), project, settings, {first})
    assert report.done == [first], report.failed
    page = ChapterProject.load(out).pages[0]
    with Image.open(out / page.outputs["colored"]) as image:
        return np.asarray(image.convert("RGB"))


def test_official_procedure_in_the_gui_is_the_clis(tiny_models_dir, demo_data, tmp_path):
    chapter_dir, refs_dir = demo_data
    cli_out = tmp_path / "cli"
    code = main(["colorize", str(chapter_dir), "--refs", str(refs_dir), "--out", str(cli_out),
                 "--models", str(tiny_models_dir), "--procedure", "official", "--json",
                 "--cache-dir", str(tmp_path / "cache"), *ARGS])
    assert code == 0
    cli_page = ChapterProject.load(cli_out).pages[0]
    with Image.open(cli_out / cli_page.outputs["colored"]) as image:
        expected = np.asarray(image.convert("RGB"))
    official = _session_page(tiny_models_dir, chapter_dir, refs_dir, tmp_path / "official", "official")
    assert official.shape == expected.shape == (576, 384, 3)  # 1.5x the working size, as the official app
    assert np.array_equal(official, expected)


def test_unknown_procedure_is_refused():
    with pytest.raises(ValueError, match="procedure"):
        RunSettings(procedure="fast")
