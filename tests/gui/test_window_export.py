"""Export from the main window: partial chapters, chapter info into ComicInfo."""

from __future__ import annotations

import pytest
from PIL import Image

pytest.importorskip("PySide6")

from app.job_model import JobKind  # noqa: E402
from engine.project.state import ChapterProject  # noqa: E402
from window_helpers import WAIT_MS, close, make_window  # noqa: E402


@pytest.mark.parametrize("answer", ["No", "Yes"])
def test_partial_cbz_export_asks_and_never_writes_a_short_file(qtbot, settings, chapter, monkeypatch, answer):
    from dataclasses import replace

    from PIL import Image
    from PySide6.QtWidgets import QMessageBox

    settings.run = replace(settings.run, input_style="gray")
    window = make_window(qtbot, settings)
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter[0]))
    project = window.document.project
    first = project.pages[0].name
    Image.new("RGB", (64, 64), (200, 0, 0)).save(project.folder / "001_1.png")
    project.record_outputs(first, {"colored": "001_1.png"}, "done", "k")
    asked = []

    def question(*args, **kwargs):
        asked.append(args[2])
        return getattr(QMessageBox.StandardButton, answer)

    monkeypatch.setattr(QMessageBox, "question", question)
    from PySide6.QtGui import QDesktopServices
    from PySide6.QtWidgets import QFileDialog

    chosen = project.folder.parent / "exports" / "mine.cbz"
    offered = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: offered.append(a[2]) or (str(chosen), ""))
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    window.export("cbz")
    assert asked and "3 of 4 pages are not colored" in asked[0]
    if answer == "No":
        assert window.jobs.latest(JobKind.EXPORT) is None and not offered and not list(project.folder.parent.rglob("*.cbz"))
    else:
        assert offered == [str(chapter[0].parent / f"{chapter[0].name}-colored.cbz")]  # first time: beside the chapter
        qtbot.waitUntil(lambda: chosen.is_file() and window.jobs.latest(JobKind.EXPORT) is None, timeout=WAIT_MS)
        import zipfile

        with zipfile.ZipFile(chosen) as archive:
            assert len([n for n in archive.namelist() if n.endswith(".png")]) == 4
        assert window.show_folder_button.isVisible()
        window.show_folder_button.click()
        assert opened == [str(chosen.parent)]
        # remembered per project: the next export (after reopening) starts in that folder
        assert ChapterProject.load(project.folder).settings["export_dir"] == str(chosen.parent)
        window.export("cbz")
        assert offered[1] == str(chosen.parent / f"{chapter[0].name}-colored.cbz")
        qtbot.waitUntil(lambda: window.jobs.latest(JobKind.EXPORT) is None, timeout=WAIT_MS)
    close(qtbot, window)


def test_chapter_info_dialog_sets_the_cbz_comicinfo(qtbot, tmp_path, monkeypatch):
    import zipfile
    import xml.etree.ElementTree as ET

    from app.chapter_info import ChapterInfoDialog, edit_chapter_info
    from engine.io.chapter import open_chapter
    from engine.io.export import export_project

    pages = tmp_path / "Blue Lagoon 12"
    pages.mkdir()
    for index in range(2):
        Image.new("L", (60, 80), 200).save(pages / f"{index + 1}.png")
    project = ChapterProject.open_or_create(tmp_path / "proj.colorflow")
    project.inputs = [str(pages)]
    chapter = open_chapter(project.inputs)
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])

    def fill(dialog: ChapterInfoDialog) -> int:
        assert dialog.title.text() == "Blue Lagoon 12"  # default: the chapter's name
        dialog.series.setText("Blue Lagoon")
        dialog.number.setText("12.5")
        dialog.reading.setCurrentIndex(dialog.reading.findData("Yes"))  # manga read left to right
        return 1

    monkeypatch.setattr(ChapterInfoDialog, "exec", fill)
    assert edit_chapter_info(None, project)
    saved = ChapterProject.load(project.folder).settings
    assert (saved["series"], saved["number"], saved["manga"]) == ("Blue Lagoon", "12.5", "Yes")
    [cbz] = export_project(project, chapter, "cbz", include_uncolored=True)
    with zipfile.ZipFile(cbz) as archive:
        info = ET.fromstring(archive.read("ComicInfo.xml"))
    assert info.findtext("Series") == "Blue Lagoon" and info.findtext("Number") == "12.5"
    assert info.findtext("Manga") == "Yes" and info.findtext("Title") == "Blue Lagoon 12"
    assert info.findtext("PageCount") == "2"
