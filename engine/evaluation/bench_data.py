"""make_bench: a ColorFlow-Bench-like benchmark (refs/, gt/, bw/screen/, bw/gray/) from colored chapters."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from engine.core.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

BENCH_VERSION = 1
MANIFEST = "bench.json"
BENCH_SETS = ("screen", "gray")  # the two input styles of the paper's Table 1
SAME_STYLE = "same"  # `eval bench --input-style same`: each set read in its own style (beside the declared styles)
DEFAULT_REFS = 40  # per chapter, as ColorFlow-Bench
DEFAULT_PAGES = 50

# How the black-and-white inputs are made; printed in --help and stored in the manifest.
DERIVATION = {
    "gray": "the colored page converted to 8-bit grayscale (PIL 'L', ITU-R 601 luma; alpha flattened "
            "on white), exactly as the pipeline reads a page for input style gray",
    "screen": "the ScreenVAE screentone rendition of the colored page (paper Fig. 4, right): our "
              "official ScreenStyle pass run on the colored page (its color goes into "
              "G_RGB2INTSCR), taken before the pass's final 50/50 blend with the grayscale, "
              "recovered as 2G - gray (the blend rounds down, so within one gray level); the "
              "decoder's live dropout and noise are seeded with --seed",
}
PAPER_DIFFERENCES = (
    "The paper says only that each chapter has 40 references and 50 pages 'provided in two styles: "
    "screenstyle [ScreenVAE] and grayscale'; it does not publish how pages were split or which "
    "ScreenVAE settings made the screentones. Here the first --refs pages of a chapter are its "
    "references and the next --pages its test pages, and the screentones come from the official "
    "app's ScreenStyle networks (at the page's own size) rather than a separate ScreenVAE run."
)


@dataclass
class BenchChapter:
    """One chapter of a benchmark: its folder and the names of its reference and test pages."""

    name: str
    folder: Path
    source: str = ""
    refs: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)

    def bw(self, style: str) -> Path:
        return self.folder / "bw" / style

    @property
    def gt(self) -> Path:
        return self.folder / "gt"

    @property
    def references(self) -> Path:
        return self.folder / "refs"


@dataclass
class Bench:
    """A benchmark folder: its chapters and which black-and-white sets it holds."""

    root: Path
    chapters: list[BenchChapter]
    sets: tuple[str, ...]
    manifest: dict = field(default_factory=dict)


def safe_name(text: str) -> str:
    name = re.sub(r"[^\w.-]+", "_", Path(text).stem).strip("._")
    return name[:60] or "chapter"


def _page_name(index: int, source_name: str) -> str:
    from engine.io.naming import page_folder_name

    return page_folder_name(index, source_name)


def plan_chapters(chapters: Sequence[str | Path], out: Path, refs: int, pages: int) -> list[tuple[BenchChapter, object, list, list]]:
    """Open every chapter and split its pages, checking everything before any model loads:
    each chapter needs more than `refs` readable pages; chapter names must differ."""
    from engine.io.chapter import open_chapter

    if refs < 1 or pages < 1:
        raise InputError("--refs and --pages must be at least 1")
    planned = []
    seen: dict[str, str] = {}
    for item in chapters:
        try:
            chapter = open_chapter(item)
        except InputError as exc:
            raise InputError(f"CHAPTERS {exc}") from exc
        bad = [s.name for s in chapter.sources if s.ref in chapter.errors]
        if bad:
            raise InputError(f"{item}: unreadable page(s): {'; '.join(chapter.errors.values())}")
        name = safe_name(str(item))
        if name in seen:
            raise InputError(f"chapters {seen[name]} and {item} would both be named {name!r} in the benchmark")
        seen[name] = str(item)
        if len(chapter.sources) <= refs:
            raise InputError(f"{item}: {len(chapter.sources)} page(s), but the first {refs} become references "
                             f"(--refs) and at least one test page must remain")
        ref_sources = chapter.sources[:refs]
        test_sources = chapter.sources[refs : refs + pages]
        entry = BenchChapter(name, out / name, str(Path(item).expanduser().resolve()),
                             [_page_name(i, s.name) for i, s in enumerate(ref_sources)],
                             [_page_name(refs + i, s.name) for i, s in enumerate(test_sources)])
        planned.append((entry, chapter, ref_sources, test_sources))
    return planned


def screentone(colored: "Image.Image", networks, seed: int) -> "Image.Image":
    """The ScreenVAE rendition (L) of a colored page, from the official pass's G = floor((S + gray) / 2)."""
    import numpy as np
    from PIL import Image

    from engine.preprocess.screenstyle import screen_style

    gray = colored.convert("L")
    blended = screen_style(colored.convert("RGB"), networks, seed).convert("L")
    values = 2 * np.asarray(blended, dtype=np.int16) - np.asarray(gray, dtype=np.int16)
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")


def make_bench(
    chapters: Sequence[str | Path],
    out: str | Path,
    refs: int = DEFAULT_REFS,
    pages: int = DEFAULT_PAGES,
    sets: Sequence[str] = BENCH_SETS,
    models: str = "official",
    device: str = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Bench:
    """Write OUT/<chapter>/{refs,gt,bw/screen,bw/gray}/NNN_name.png and OUT/bench.json.

    `refs` first pages of each chapter become its references, the next `pages` its test pages:
    gt/ holds them in color, bw/<set>/ the black-and-white inputs made from them (DERIVATION).
    OUT must be new or empty. The ScreenStyle networks of `models` load only for set "screen".
    """
    from engine.io.chapter import load_image
    from engine.io.fileio import atomic_save_image, atomic_write_json

    sets = tuple(dict.fromkeys(sets))
    unknown = [s for s in sets if s not in BENCH_SETS]
    if unknown or not sets:
        raise InputError(f"benchmark sets must be among {', '.join(BENCH_SETS)}, got {', '.join(sets) or 'none'}")
    root = Path(out).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(f"--out {root}: exists and is not an empty folder; choose a new one")
    planned = plan_chapters(chapters, root, refs, pages)
    networks = None
    if "screen" in sets:
        from engine.models.sources import check_models

        check_models(models)
        from engine.core.devices import pick_device
        from engine.preprocess.screenstyle import load_screenstyle
        from engine.core.rng import SCREENSTYLE, stream_seed
        from engine.models.sources import resolve_models

        networks = load_screenstyle(resolve_models(models).colorflow, pick_device(device))
        screen_seed = stream_seed(seed, SCREENSTYLE)
    for entry, _, ref_sources, test_sources in planned:
        for name, source in zip(entry.refs, ref_sources):
            atomic_save_image(load_image(source, "RGB").image, entry.references / f"{name}.png")
        for name, source in zip(entry.pages, test_sources):
            if progress is not None:
                progress(f"{entry.name}/{name}")
            colored = load_image(source, "RGB").image
            atomic_save_image(colored, entry.gt / f"{name}.png")
            if "gray" in sets:
                atomic_save_image(load_image(source, "L").image, entry.bw("gray") / f"{name}.png")
            if networks is not None:
                atomic_save_image(screentone(colored, networks, screen_seed), entry.bw("screen") / f"{name}.png")
    manifest = {
        "version": BENCH_VERSION,
        "refs_per_chapter": refs,
        "max_pages_per_chapter": pages,
        "sets": list(sets),
        "seed": seed,
        "screenstyle_models": models if networks is not None else None,
        "derivation": {s: DERIVATION[s] for s in sets},
        "chapters": [{"name": e.name, "source": e.source, "refs": e.refs, "pages": e.pages} for e, *_ in planned],
    }
    atomic_write_json(root / MANIFEST, manifest)
    return Bench(root, [e for e, *_ in planned], sets, manifest)


def open_bench(folder: str | Path) -> Bench:
    """Read a benchmark written by make_bench (bench.json), or any folder of chapter folders that
    each hold refs/, gt/ and bw/<set>/ (the sets found in every chapter)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"BENCH {root}: folder does not exist")
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            names = [c["name"] for c in manifest["chapters"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{manifest_path}: not a benchmark manifest ({exc})") from exc
    else:
        manifest = {}
        names = sorted(p.name for p in root.iterdir() if (p / "gt").is_dir() and (p / "refs").is_dir())
    chapters = []
    for name in names:
        folder_path = root / name
        if not (folder_path / "gt").is_dir() or not (folder_path / "refs").is_dir():
            raise InputError(f"BENCH chapter {folder_path}: refs/ or gt/ is missing")
        chapters.append(BenchChapter(name, folder_path))
    if not chapters:
        raise InputError(f"BENCH {root}: no chapter folder with refs/ and gt/ (make one with `colorflow eval make-bench`)")
    sets = tuple(s for s in BENCH_SETS if all(c.bw(s).is_dir() for c in chapters))
    if not sets:
        raise InputError(f"BENCH {root}: no bw/screen or bw/gray folder common to every chapter")
    return Bench(root, chapters, sets, manifest)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows it, else a copy (the ground-truth mirror)."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)

