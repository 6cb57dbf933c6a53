"""The models part of the resume key is per model set: the PixArt base and the line-art folders count
for line-art pages only, the SD1.5 files and GraySD for screen and gray pages only."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.models import fingerprint_models
from engine.models.sources import resolve_models
from weight_faults import flip_byte_keeping_size_and_mtime

SD_STYLES = ("screen", "gray")
LINE_ART_STYLES = ("sketch", "sketch-shading")
PIXART_WEIGHT = "pixart/transformer/diffusion_pytorch_model.safetensors"
LINE_ART_PARTS = ("pixart", "colorflow/sketch", "colorflow/shading", "colorflow/LE")


def ids(root: Path) -> dict[str, str]:
    paths = resolve_models(str(root))
    return {style: fingerprint_models(paths, style) for style in (*SD_STYLES, *LINE_ART_STYLES)}


def test_a_changed_pixart_file_changes_the_line_art_ids_only(models_copy):
    before = ids(models_copy)
    assert before["sketch"] != before["screen"] and before["sketch"] != before["sketch-shading"]
    flip_byte_keeping_size_and_mtime(models_copy / PIXART_WEIGHT)
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    after = ids(models_copy)
    assert [after[s] == before[s] for s in SD_STYLES] == [True, True]
    assert [after[s] != before[s] for s in LINE_ART_STYLES] == [True, True]


def test_a_changed_sketch_guide_changes_the_sketch_id_only(models_copy):
    before = ids(models_copy)
    guide = next(p for p in sorted((models_copy / "colorflow" / "sketch").iterdir()) if p.suffix == ".safetensors"
                 or p.suffix == ".bin")
    stat = guide.stat()
    os.utime(guide, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # retrained in place
    after = ids(models_copy)
    assert {s for s in before if after[s] != before[s]} == {"sketch"}


def test_downloading_the_line_art_models_keeps_the_screen_and_gray_ids(models_copy, tmp_path):
    parked = tmp_path / "parked"
    for part in LINE_ART_PARTS:  # a folder with only the screen/gray models
        shutil.move(models_copy / part, parked / part)
    before = ids(models_copy)
    for part in LINE_ART_PARTS:  # the line-art download lands
        shutil.move(parked / part, models_copy / part)
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    after = ids(models_copy)
    assert [after[s] == before[s] for s in SD_STYLES] == [True, True]
    assert [after[s] != before[s] for s in LINE_ART_STYLES] == [True, True]


def test_a_changed_sd15_file_changes_the_screen_and_gray_ids_only(models_copy):
    before = ids(models_copy)
    flip_byte_keeping_size_and_mtime(models_copy / "sd15" / "unet" / "diffusion_pytorch_model.safetensors")
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    after = ids(models_copy)
    assert [after[s] != before[s] for s in SD_STYLES] == [True, True]
    assert [after[s] == before[s] for s in LINE_ART_STYLES] == [True, True]


@pytest.mark.slow  # 6-11 s: three tiny runs of both model sets
def test_resume_after_the_pixart_base_changed_recolors_the_sketch_page_and_skips_the_gray_one(models_copy, tmp_path,
                                                                                                capsys):
    """The command line's --resume on a chapter mixing a gray and a sketch page (the page's own style)."""
    import json

    from engine.io.demo import make_demo_chapter
    from engine.project.state import ChapterProject

    pages, refs = make_demo_chapter(tmp_path / "demo", pages=2, refs=2, size=(128, 192))
    out = tmp_path / "out"
    run = ["colorize", str(pages), "--refs", str(refs), "--out", str(out), "--models", str(models_copy),
           "--steps", "1", "--size", "256x384", "--input-style", "gray", "--cache-dir", str(tmp_path / "cache"),
           "--json"]

    def report() -> dict:
        return json.loads(capsys.readouterr().out)

    project = ChapterProject.open_or_create(out)
    project.sync_pages([(p.name, str(p)) for p in sorted(pages.iterdir())])
    project.set_page_style("2.png", "sketch")
    project.save()
    assert main(run) == 0
    first = report()
    assert first["done"] == ["1.png", "2.png"] and [p["input_style"] for p in first["pages"]] == ["gray", "sketch"]
    assert main([*run, "--resume"]) == 0
    assert report()["skipped"] == ["1.png", "2.png"]  # nothing changed: nothing recolored
    flip_byte_keeping_size_and_mtime(models_copy / PIXART_WEIGHT)
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    capsys.readouterr()
    assert main([*run, "--resume"]) == 0
    again = report()
    assert again["done"] == ["2.png"] and again["skipped"] == ["1.png"]


def test_deleting_the_t5_shards_once_the_embeddings_exist_keeps_every_id(models_copy):
    """T5's weights are read once, for the prompt embeddings (cached, keyed by T5's config, index and
    tokenizer): deleting them afterwards (the user guide allows it) must not recolor line-art pages."""
    before = ids(models_copy)
    for shard in (models_copy / "pixart" / "text_encoder").glob("*.safetensors"):
        shard.unlink()
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    assert ids(models_copy) == before
    config = models_copy / "pixart" / "text_encoder" / "config.json"  # another T5 would change this
    config.write_text(config.read_text().replace("}", ', "note": 1}', 1) if config.read_text().count("}") == 1
                      else config.read_text() + "\n")
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    assert {s for s, value in ids(models_copy).items() if value != before[s]} == set(LINE_ART_STYLES)
