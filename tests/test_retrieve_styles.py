"""`colorflow retrieve` prepares each page with its own input style, as the chapter loop colors it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine.cli.main import main
from engine.io.demo import make_demo_chapter
from engine.project.state import ChapterProject


def _canvases(out: Path) -> dict[str, np.ndarray]:
    """Each page's canvas.png by page file stem (the retrieval folders are NNN_stem/)."""
    return {folder.name.split("_", 1)[1]: np.asarray(Image.open(folder / "canvas.png"))
            for folder in sorted(out.iterdir()) if (folder / "canvas.png").is_file()}


def test_retrieve_prepares_a_page_with_its_own_style(tiny_models_dir, tmp_path, capsys):
    pages, refs = make_demo_chapter(tmp_path / "demo", pages=2, refs=2, size=(128, 192))

    def retrieve(out: Path, style: str, own: dict[str, str]) -> dict[str, np.ndarray]:
        if own:  # the page's own style, stored in the project as the GUI stores it
            project = ChapterProject.open_or_create(out)
            project.sync_pages([(p.name, str(p)) for p in sorted(pages.iterdir())])
            for name, page_style in own.items():
                project.set_page_style(name, page_style)
            project.save()
        assert main(["retrieve", str(pages), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
                     "--size", "256x384", "--input-style", style, "--cache-dir", str(tmp_path / "cache"),
                     "--json"]) == 0
        capsys.readouterr()
        return _canvases(out)

    mixed = retrieve(tmp_path / "mixed", "screen", {"2.png": "sketch"})
    screen = retrieve(tmp_path / "screen", "screen", {})
    sketch = retrieve(tmp_path / "sketch", "sketch", {})
    assert not np.array_equal(screen["2"], sketch["2"])  # the two styles give the page another query
    assert np.array_equal(mixed["1"], screen["1"])  # the chapter's style
    assert np.array_equal(mixed["2"], sketch["2"])  # the page's own
