"""Golden pixel slices of the tiny pipeline (as diffusers' `expected_slice`): the runs, the slices kept, the files.

The same code makes the runs for tests/test_golden.py and scripts/regenerate_goldens.py, so a
regenerated file pins exactly what the tests compare. A run is the `colorflow colorize` command
(the contract users rely on) on one crafted page, so the pins survive any refactoring inside.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

GOLDEN_DIR = Path(__file__).parent / "data" / "golden"
TOLERANCE = 2  # uint8 levels: float sums may differ in the last bits across CPUs, colors may not
SEED = 7
WORK_SIZE = "256x384"
PAGE_SIZE = (256, 384)  # the working size itself: no resampling before the stages
# Every path a user can take, as the command-line flags that select it (besides the shared ones).
PATHS = {
    "default": [],  # screen input (ScreenStyle G), procedure ours, keep-ink, the page's own size
    "no_keep_ink": ["--no-keep-ink"],  # the colored page keep-ink starts from
    "gray_input": ["--input-style", "gray"],
    "official": ["--procedure", "official"],  # centre-crop fit, no keep-ink, 1.5x the working size
}


def crafted_page() -> Image.Image:
    """A gray manga-like page drawn from formulas (no RNG): ink frame, gradient sky, a mid-gray
    disc with an outline, a screentone band and a gray corner block where keep-ink lets color show."""
    w, h = PAGE_SIZE
    y, x = np.mgrid[0:h, 0:w]
    page = np.full((h, w), 255.0)
    page[: h // 3] = 170 + 80 * x[: h // 3] / w  # sky: horizontal gradient
    page[(x - w / 2) ** 2 + (y - h / 2) ** 2 < 60**2] = 128  # disc
    ring = np.abs(np.hypot(x - w / 2, y - h / 2) - 60) < 2
    page[ring] = 10
    band = (y > 2 * h // 3) & (y < 2 * h // 3 + 40)
    page[band] = np.where(((x // 4) + (y // 4)) % 2 == 0, 80, 220)[band]  # screentone
    page[:16, :16] = 150
    for edge in (slice(0, 3), slice(-3, None)):  # the panel frame
        page[edge, :] = 0
        page[:, edge] = 0
    return Image.fromarray(page.astype(np.uint8), "L")


def crafted_reference() -> Image.Image:
    """A colored reference from formulas: blue sky, a red disc, green ground."""
    w, h = PAGE_SIZE
    y, x = np.mgrid[0:h, 0:w]
    ref = np.zeros((h, w, 3), np.uint8)
    ref[...] = (60, 150, 70)
    ref[: h // 3] = (90, 150, 230)
    ref[(x - w / 2) ** 2 + (y - h / 2) ** 2 < 60**2] = (220, 40, 40)
    return Image.fromarray(ref, "RGB")


def run_path(models_dir: Path, folder: Path, name: str) -> np.ndarray:
    """One `colorflow colorize` run of the crafted page along PATHS[name], in this process; its
    colored page as an array. Runs in one `folder` share the caches (G, embeddings): a cached
    result is the one computed, so only the time changes."""
    from engine.cli.main import main

    chapter, refs, out = folder / "chapter", folder / "refs", folder / "out" / name
    if not chapter.exists():
        chapter.mkdir(parents=True)
        refs.mkdir()
        crafted_page().save(chapter / "1.png")
        crafted_reference().save(refs / "r.png")
    args = ["colorize", str(chapter), "--refs", str(refs), "--out", str(out), "--models", str(models_dir),
            "--cache-dir", str(folder / "cache"), "--steps", "2", "--size", WORK_SIZE, "--seed", str(SEED),
            *PATHS[name]]
    messages = io.StringIO()
    with contextlib.redirect_stderr(messages), contextlib.redirect_stdout(messages):
        code = main(args)
    if code != 0:
        raise AssertionError(f"colorflow {' '.join(args)} exited {code}: {messages.getvalue()[-2000:]}")
    (output,) = sorted(out.glob("*.png"))
    return np.asarray(Image.open(output).convert("RGB"))


def screenstyle_g(models_dir: Path) -> np.ndarray:
    """G of the crafted page, shrunk to 96x144 (the pass is the same at every size, and this one
    pads to a single 256x256 tile), from the tiny ScreenStyle networks."""
    from engine.preprocess.screenstyle import load_screenstyle, screen_style

    networks = load_screenstyle(Path(models_dir) / "colorflow")
    return np.asarray(screen_style(crafted_page().resize((96, 144), Image.BICUBIC), networks, SEED))


def slices(image: np.ndarray) -> dict:
    """What a golden file keeps of an image: its shape, 3x3 pixels inside the top-left corner (past
    the page's ink frame), at the centre, inside the disc's edge and on its outline, and the mean
    of each channel."""
    h, w = image.shape[:2]
    at = {"corner": (4, 4), "centre": (h // 2 - 1, w // 2 - 1), "disc_edge": (h // 2 - 1, w * 5 // 8),
          "ink": (h // 2 - 1, w // 2 + w * 58 // 256)}  # on the disc's black outline
    kept = {"shape": list(image.shape)}
    for name, (y, x) in at.items():
        kept[name] = image[y:y + 3, x:x + 3].astype(int).tolist()
    kept["mean"] = [round(float(v), 2) for v in image.reshape(-1, image.shape[-1]).mean(axis=0)]
    return kept


def weight_sums(models_dir: Path) -> dict[str, list[float]]:
    """Per weight file of the tiny models: the sum and the sum of magnitudes of its tensor values."""
    import torch
    from safetensors.torch import load_file

    sums = {}
    for path in sorted(Path(models_dir).rglob("*")):
        if path.suffix == ".safetensors":
            state = load_file(path)
        elif path.suffix in (".bin", ".pth"):
            state = torch.load(path, weights_only=True, map_location="cpu")
        else:
            continue
        values = [t.double() for t in state.values() if t.is_floating_point()]
        sums[path.relative_to(models_dir).as_posix()] = [round(float(sum(v.sum() for v in values)), 6),
                                                        round(float(sum(v.abs().sum() for v in values)), 6)]
    return sums


def differences(expected: dict, actual: dict, tolerance: float = TOLERANCE) -> list[str]:
    """Where `actual` leaves `expected` by more than `tolerance` (each pixel value and each mean)."""
    found = []
    for key, want in expected.items():
        got = actual.get(key)
        if key == "about":  # what the file pins, in words
            continue
        if key == "shape":
            if got != want:
                found.append(f"shape {got}, expected {want}")
            continue
        want_array, got_array = np.asarray(want, float), np.asarray(got, float)
        if want_array.shape != got_array.shape or np.abs(want_array - got_array).max() > tolerance:
            found.append(f"{key}: got {got}, expected {want}")
    return found


def load_expected(name: str) -> dict:
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text())
