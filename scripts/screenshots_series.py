"""Screenshots of the Series dock and of the References panel's levels (docs/screenshots/series-panel.png,
series-references.png): chapter 2 of a generated series (its page 1 colored and accepted) linked to the series library
(references, a whole-series reject, two accepted pages of chapter 1), rolling references on.
Usage: xvfb-run -s "-screen 0 1366x768x24" python scripts/screenshots_series.py OUT_DIR"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_series(root: Path):
    """The library (3 references, chapter 1's accepted pages, a series reject) and chapter 2's project
    with page 1 colored and accepted. Returns (chapter folder, library)."""
    from engine.io.chapter import ImageSource, open_chapter
    from engine.io.demo import make_demo_chapter
    from engine.project.series import SeriesLibrary
    from engine.project.state import ChapterProject
    from engine.rap.curation import Target

    from app.document import project_folder_for

    shutil.rmtree(root, ignore_errors=True)
    chapter, refs = make_demo_chapter(root / "ch02", pages=4, refs=4)
    library = SeriesLibrary.create(root / "series", name="Star Courier")
    files = [library.add_reference(ImageSource(ref)) for ref in sorted(refs.glob("*.png"))[:3]]
    library.register_chapter("ch01")
    for number, ref in enumerate(sorted(refs.glob("*.png"))[1:3], 1):
        library.add_accepted("ch01", f"{number}.png", ref)
    library.register_chapter("ch02")
    library.set_choice(Target(str(library.folder / files[2])), "reject")
    library.save()
    project = ChapterProject.open_or_create(project_folder_for(chapter))  # where the window looks for it
    project.inputs = [str(chapter)]
    project.sync_pages([(s.name, s.ref) for s in open_chapter([str(chapter)]).sources])
    project.folder.mkdir()
    project.add_references([str(sorted(refs.glob("*.png"))[3])])  # the chapter's own reference
    colored = project.folder / "001_1.png"
    shutil.copyfile(sorted(refs.glob("*.png"))[0], colored)  # page 1 shows scene 1: its colored page
    project.record_variation("1.png", colored, "key", {"seed": 0}, replace=None)
    project.accept("1.png")  # accepted before the chapter joins the series: linking copies it in
    project.save()
    return chapter, library


def main(out: Path) -> None:
    from PySide6.QtWidgets import QApplication

    out.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv[:1])  # noqa: F841 - must outlive the widgets
    shoot(out)


def shoot(out: Path) -> None:
    """Both screenshots, in a window of their own (scripts/screenshots.py calls this after its own)."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QSplitter

    from app.main_window import MainWindow
    from app.settings import AppSettings
    from engine.core.paths import cache_dir
    from engine.io.demo import DEMO_STEPS, DEMO_WORK_SIZE

    chapter, library = make_series(cache_dir() / "screenshot-series")
    settings = AppSettings()
    settings.run = replace(settings.run, models="tiny", size=DEMO_WORK_SIZE, steps=DEMO_STEPS, rolling_refs=True)
    window = MainWindow(settings, persist_settings=False)
    window.show()

    def wait_for(signal=None, ms: int = 300_000) -> None:  # an event loop that lets the worker thread run
        loop = QEventLoop()
        if signal is not None:
            signal.connect(loop.quit)
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    window.open_path(str(chapter))
    wait_for(window.document_opened)
    window.link_series(library.folder, "ch02")  # File ▸ Link chapter to series…
    window.page_strip.setCurrentRow(1)  # page 2: its canvas may use page 1, accepted
    wait_for(window.retrieval_shown)
    wait_for(ms=1500)  # the library's thumbnails, decoded in the worker
    window.reference_panel.findChild(QSplitter).setSizes([250, 300, 60])  # room for the references
    window.reference_panel.references.scrollToBottom()  # the accepted pages: this chapter's, then chapter 1's
    wait_for(ms=300)
    window.grab().save(str(out / "series-references.png"))
    window.series_dock.raise_()
    wait_for(ms=800)
    window.grab().save(str(out / "series-panel.png"))
    window.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots"))
