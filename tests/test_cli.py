"""The command contract: retrieve outputs, per-page errors, exit codes, help, make-tiny, bench."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from engine.project.state import ChapterProject

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_retrieve_writes_canvas_mask_and_json_per_page(tiny_models_dir, demo_data, tmp_path, capsys):
    chapter, refs = demo_data
    out = tmp_path / "out"
    code = main(["retrieve", str(chapter), "--refs", str(refs), "--out", str(out),
                 "--models", str(tiny_models_dir), "--device", "cpu", "--input-style", "gray", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["done"] == ["1.png", "2.png", "3.png", "4.png"] and report["failed"] == {}
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["001_1", "002_2", "003_3", "004_4"]
    data = json.loads((out / "001_1" / "retrieval.json").read_text())
    assert data["page"] == "1.png" and data["work_size"] == [512, 800]
    assert data["canvas_size"] == [1024, 1600]
    assert data["query_boxes"][3] == [128, 200, 512, 800]
    assert [len(row) for row in data["picks"]] == [3, 3, 3, 3]
    assert all(Path(p["ref"]).parent == refs for row in data["picks"] for p in row)
    assert Image.open(out / "001_1" / "canvas.png").size == (1024, 1600)
    assert Image.open(out / "001_1" / "mask.png").size == (1024, 1600)
    project = ChapterProject.load(out)
    assert [p.status for p in project.pages] == ["retrieved"] * 4


def test_retrieve_applies_project_rejects_and_custom_size(tiny_models_dir, demo_data, tmp_path, capsys):
    chapter, refs = demo_data
    out = tmp_path / "out"
    project = ChapterProject(folder=out)
    rejected = str(refs / "ref_01.png")
    project.reject(rejected)
    project.save()
    code = main(["retrieve", str(chapter), "--refs", str(refs), "--out", str(out), "--size", "768x768",
                 "--models", str(tiny_models_dir), "--input-style", "gray", "--json"])
    assert code == 0
    for folder in sorted(out.glob("0*")):
        data = json.loads((folder / "retrieval.json").read_text())
        assert data["work_size"] == [768, 768]
        assert all(p["ref"] != rejected for row in data["picks"] for p in row)


def test_retrieve_puts_the_screenstyle_page_in_the_canvas_by_default(tiny_models_dir, tmp_path, capsys):
    chapter = tmp_path / "chapter"
    chapter.mkdir()
    Image.new("L", (256, 384), 200).save(chapter / "1.png")  # flat gray: G re-screens it
    ref = tmp_path / "ref.png"
    Image.new("RGB", (256, 384), (200, 10, 10)).save(ref)
    out = tmp_path / "out"
    assert main(["retrieve", str(chapter), "--refs", str(ref), "--out", str(out), "--size", "256x384",
                 "--models", str(tiny_models_dir), "--json"]) == 0
    centre = np.asarray(Image.open(out / "001_1" / "canvas.png").convert("L"))[192:576, 128:384].astype(int)
    assert np.abs(centre - 200).mean() > 2  # not the plain page
    assert ChapterProject.load(out).pages[0].status == "retrieved"


def test_bad_page_fails_alone_with_exit_code_1(tiny_models_dir, tmp_path, capsys):
    archive = tmp_path / "chapter.cbz"
    buffer = tmp_path / "page.png"
    Image.new("L", (300, 450), 200).save(buffer)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(buffer, "ch/1.png")
        zf.writestr("ch/2.png", b"broken")
        zf.write(buffer, "ch/3.png")
    ref = tmp_path / "ref.png"
    Image.new("RGB", (300, 450), (200, 10, 10)).save(ref)
    code = main(["retrieve", str(archive), "--refs", str(ref), "--out", str(tmp_path / "out"),
                 "--models", str(tiny_models_dir), "--input-style", "gray", "--json"])
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["done"] == ["ch/1.png", "ch/3.png"]
    assert list(report["failed"]) == ["ch/2.png"] and "not a readable image" in report["failed"]["ch/2.png"]
    project = ChapterProject.load(tmp_path / "out")
    assert project.page("ch/2.png").status == "failed"
    assert not (tmp_path / "out" / "002_2").exists()


def test_bad_input_exits_2_before_loading_models(tmp_path, capsys):
    code = main(["retrieve", str(tmp_path / "nope"), "--refs", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--models", str(tmp_path / "no-models")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["retrieve", "x", "--refs", "y", "--out", "z", "--size", "500x500"])
    assert exc.value.code == 2


def test_missing_model_directory_is_a_clear_error(demo_data, tmp_path, capsys):
    chapter, refs = demo_data
    code = main(["retrieve", str(chapter), "--refs", str(refs), "--out", str(tmp_path / "o"),
                 "--models", str(tmp_path)])
    assert code == 2
    assert "not a ColorFlow models directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [[], ["retrieve"], ["colorize"], ["demo"], ["models"], ["models", "make-tiny"], ["models", "layout"],
     ["models", "list"], ["models", "probe"], ["bench", "retrieval"], ["bench", "flops"],
     ["eval"], ["eval", "folders"], ["train"], ["train", "prepare"], ["train", "icp"]],
)
def test_help_explains_each_command(args):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), *args, "--help"],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0
    assert "usage:" in result.stdout and len(result.stdout) > 200


def test_main_py_routes_every_cli_command_to_the_cli():
    """Every command the CLI parser knows must reach it from main.py, not open the GUI."""
    import argparse

    import main as entry
    from engine.cli.main import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) <= entry.CLI_COMMANDS


def test_make_tiny_writes_official_layout_that_loads_strictly(tmp_path):
    assert main(["models", "make-tiny", str(tmp_path / "m")]) == 0
    encoder_dir = tmp_path / "m" / "colorflow" / "image_encoder"
    assert sorted(p.name for p in encoder_dir.iterdir()) == ["config.json", "model.safetensors"]
    from transformers import CLIPVisionModelWithProjection

    model, info = CLIPVisionModelWithProjection.from_pretrained(encoder_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_bench_retrieval_reports_cached_ratio(capsys):
    assert main(["bench", "retrieval", "--pages", "3", "--ref-count", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cached_images_encoded"] == 3 * 5 + 3 * 4
    assert result["per_page_reembed_images_encoded"] == 3 * (3 * 5 + 4)
    assert result["reopened_images_encoded"] == 0
    assert result["encoder_images_ratio"] > 1


def test_bench_flops_ratio_meets_target(capsys):
    assert main(["bench", "flops", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    parts = result["parts_tflop"]
    assert 17.5 < parts["unet_cfg_step"] < 19.5  # SD1.5 UNet (+LoRA) at 512x800, CFG batch 2
    assert parts["guide_batch2"] == pytest.approx(2 * parts["guide_batch1"], rel=1e-3)
    assert parts["vae_decode_page"] < parts["vae_decode_canvas"] / 2
    assert 400 < result["official_total_tflop"] < 560
    assert result["ratio"] <= 0.65


def test_official_models_missing_offline_names_the_fetch_command(demo_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    chapter, refs = demo_data
    code = main(["retrieve", str(chapter), "--refs", str(refs), "--out", str(tmp_path / "o"), "--models", "official"])
    assert code == 2
    error = capsys.readouterr().err
    assert "colorflow models download" in error and "not downloaded yet" in error and "GB" in error
    assert len(error.strip().splitlines()) == 1


def test_readme_commands_block_matches_the_parser():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_commands", REPO_ROOT / "scripts" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert module.rewrite(readme) == readme, "run: python scripts/readme_commands.py"
    assert "colorflow colorize [-h] [--refs REFS [REFS ...]]" in readme and "--include-uncolored" in readme


def test_demo_prints_the_fast_tiny_command_the_readme_gives(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "demo"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("next: ")
    command = lines[-1].removeprefix("next: ")
    assert command.startswith("colorflow colorize demo/chapter --refs demo/refs --out demo/out --models tiny ")
    assert "--size 256x384" in command and "--steps 4" in command
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"colorflow demo demo && {command}" in readme
    assert len(list((tmp_path / "demo" / "chapter").glob("*.png"))) == 3
    assert len(list((tmp_path / "demo" / "refs").glob("*.png"))) == 3


def test_colorize_resolves_the_model_source_once(tiny_models_dir, one_page_chapter, tmp_path, monkeypatch, capsys):
    """One `colorize` checks a models DIR against its record (hashing its files) once, not per stage."""
    import engine.models.sources as sources

    calls = []
    real = sources.resolve_models

    def counting(spec, *args, **kwargs):
        calls.append(spec)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(sources, "resolve_models", counting)
    pages, refs = one_page_chapter
    code = main(["colorize", str(pages), "--refs", str(refs), "--out", str(tmp_path / "out"), "--models",
                 str(tiny_models_dir), "--steps", "1", "--size", "256x256", "--input-style", "gray", "--json"])
    assert code == 0, capsys.readouterr().err
    assert calls == [str(tiny_models_dir)]
