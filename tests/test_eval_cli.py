"""`colorflow eval`: folders (shorthand PRED GT), make-bench and bench on a tiny generated chapter."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main

from cli_probe import PROBE

REPO_ROOT = Path(__file__).resolve().parents[1]


def _folders(tmp_path: Path, pred_size=(64, 48)) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(0)
    for name in ("p1", "p2"):
        truth = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(truth).save(gt / f"{name}.jpg" if name == "p2" else gt / f"{name}.png")
        noisy = np.clip(truth.astype(int) + rng.integers(-20, 21, truth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).resize(pred_size).save(pred / f"{name}.png")
    return pred, gt


def test_eval_shorthand_scores_pairs_by_name(tmp_path, capsys):
    pred, gt = _folders(tmp_path)
    assert main(["eval", str(pred), str(gt), "--json", "--method", "m", "--input-style", "gray"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"] == ["psnr", "ssim"] and report["count"] == 2  # default: no weights needed
    assert [i["name"] for i in report["images"]] == ["p1", "p2"]  # p2.png predicts p2.jpg
    assert all(10 < i["psnr"] < 40 and 0 < i["ssim"] < 1 for i in report["images"])  # p2: JPEG
    assert main(["eval", "folders", str(pred), str(gt), "--method", "m", "--input-style", "gray"]) == 0
    table = capsys.readouterr().out
    assert "| m | gray | - | - |" in table and "| p1 |" in table


def test_eval_missing_prediction_is_exit_1(tmp_path, capsys):
    pred, gt = _folders(tmp_path)
    (pred / "p2.png").unlink()
    assert main(["eval", str(pred), str(gt)]) == 1
    assert "No prediction for: p2" in capsys.readouterr().out


def test_eval_size_mismatch_names_the_pair_before_torch(tmp_path):
    pred, gt = _folders(tmp_path, pred_size=(60, 48))
    result = subprocess.run([sys.executable, "-c", PROBE, "eval", str(pred), str(gt), "--metrics", "psnr,ssim"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"code": 2, "torch": False}, result.stderr
    assert "p1" in result.stderr and "60x48" in result.stderr and "64x48" in result.stderr


def test_eval_unknown_metric_is_exit_2(tmp_path, capsys):
    pred, gt = _folders(tmp_path)
    assert main(["eval", str(pred), str(gt), "--metrics", "psnr,lpips"]) == 2
    assert "lpips" in capsys.readouterr().err


def _colored_chapter(folder: Path, pages: int) -> Path:
    from engine.io.demo import make_demo_chapter

    _, refs = make_demo_chapter(folder, pages=1, refs=pages, size=(180, 256))
    return refs.rename(folder / "ch1")  # colored pages, in reading order


def test_make_bench_refuses_short_chapters_and_used_folders(tmp_path, capsys):
    chapter = _colored_chapter(tmp_path / "demo", pages=2)
    assert main(["eval", "make-bench", str(chapter), "--out", str(tmp_path / "b"), "--ref-count", "2", "--sets", "gray"]) == 2
    assert "at least one test page" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "x.txt").write_text("x")
    assert main(["eval", "make-bench", str(chapter), "--out", str(used), "--ref-count", "1", "--sets", "gray"]) == 2
    assert "not an empty folder" in capsys.readouterr().err


@pytest.fixture
def one_torch_thread():
    """Tiny models on a small, busy CPU run several times faster on one thread."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_make_bench_then_bench_prints_both_input_styles(tmp_path, tiny_models_dir, capsys, one_torch_thread):
    chapter = _colored_chapter(tmp_path / "demo", pages=3)
    bench = tmp_path / "bench"
    models = str(tiny_models_dir)
    assert main(["eval", "make-bench", str(chapter), "--out", str(bench), "--ref-count", "2", "--models", models,
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    name = "003_ref_03"
    layout = {p.relative_to(bench).as_posix() for p in bench.rglob("*.png")}
    assert layout == {"ch1/refs/001_ref_01.png", "ch1/refs/002_ref_02.png", f"ch1/gt/{name}.png",
                      f"ch1/bw/gray/{name}.png", f"ch1/bw/screen/{name}.png"}
    colored = Image.open(chapter / "ref_03.png")
    gray, screen = (Image.open(bench / "ch1" / "bw" / s / f"{name}.png") for s in ("gray", "screen"))
    assert gray.mode == screen.mode == "L" and gray.size == screen.size == colored.size
    assert np.array_equal(np.asarray(gray), np.asarray(colored.convert("L")))
    assert not np.array_equal(np.asarray(screen), np.asarray(gray))  # the ScreenStyle rendition
    assert np.array_equal(np.asarray(Image.open(bench / "ch1" / "gt" / f"{name}.png")), np.asarray(colored))

    out = tmp_path / "run"
    assert main(["eval", "bench", str(bench), "--models", models, "--device", "cpu", "--size", "256x384",
                 "--steps", "2", "--input-style", "same", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["input_style"] for r in result["reports"]] == ["screen", "gray"]
    for report in result["reports"]:
        assert report["count"] == 1 and report["missing_predictions"] == []
        summary = report["summary"]
        assert set(summary) == {"clip-is", "psnr", "ssim"}
        assert math.isfinite(summary["psnr"]) and 0 < summary["psnr"] < 100
        assert -1 <= summary["ssim"] <= 1 and -1 <= summary["clip-is"] <= 1
    table = result["table"].splitlines()
    assert table[0] == "| Method | Input | CLIP-IS↑ | FID↓ | PSNR↑ | SSIM↑ | AS↑ |"
    assert [row.split(" | ")[1] for row in table[2:]] == ["screen", "gray"]
    assert "tiny random models" in table[2]
    prediction = Image.open(out / "pred" / "gray" / "ch1" / f"{name}.png")
    assert prediction.size == colored.size  # paired with gt/ at the page's own size
