"""The desktop application, offscreen with tiny models (pytest-qt)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("PySide6")

from PySide6.QtCore import QTimer  # noqa: E402

from app.main_window import MainWindow  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.worker import EngineWorker  # noqa: E402
from engine.rap.curation import Target  # noqa: E402
from engine.project import ChapterProject  # noqa: E402
from engine.session import RunSettings  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 180_000


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves an engine worker thread running."""
    before = set(EngineWorker.instances)
    yield
    leaked = [w for w in EngineWorker.instances if w not in before and w.is_running()]
    for worker in leaked:
        worker.shutdown()
    assert not leaked, "a QThread was left running"


@pytest.fixture
def settings(tiny_models_dir, tmp_path) -> AppSettings:
    run = RunSettings(models=str(tiny_models_dir), device="cpu", steps=2, size="256x384",
                      cache_dir=str(tmp_path / "embeddings"))
    return AppSettings(run)


@pytest.fixture
def chapter(tmp_path):
    from engine.demo import make_demo_chapter

    return make_demo_chapter(tmp_path / "data", pages=4, refs=4)


def make_window(qtbot, settings) -> MainWindow:
    window = MainWindow(settings, persist_settings=False)
    qtbot.addWidget(window)
    window.show()
    return window


def open_with_refs(qtbot, window: MainWindow, chapter_dir: Path, refs_dir: Path | None) -> None:
    """Open a chapter (adding references from `refs_dir` when it has none) and wait until the
    first page's retrieval is on screen."""
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter_dir))
    if window.document.references:
        qtbot.waitUntil(lambda: bool(window.reference_panel._picks), timeout=WAIT_MS)
    else:
        with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
            window.add_references([str(refs_dir)])


def canvas_image(window: MainWindow):
    return window.canvas_view._pixmap.pixmap().toImage()


def picked_refs(window: MainWindow) -> set[str]:
    return {p["ref"] for row in window.reference_panel._picks for p in row}


def close(qtbot, window: MainWindow) -> None:
    window.close()
    assert not window.worker.is_running()


def test_open_chapter_shows_pages_and_retrieved_patches(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    assert window.page_strip.count() == 4
    assert window.reference_panel.references.count() == 4
    buttons = window.reference_panel.patch_buttons
    assert all(b.isEnabled() and "similarity 0." in b.toolTip() for b in buttons.values())
    assert len(picked_refs(window)) >= 1
    assert window.canvas_view.has_image()
    assert window.canvas_view._outline.isVisible()  # mask area outlined
    close(qtbot, window)


def test_pin_and_reject_change_canvas_and_undo_restores(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    original = canvas_image(window)
    top = window.reference_panel._picks[0][0]["ref"]
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        window.request_choice(Target(top), "reject", False)
    assert top not in picked_refs(window)
    assert canvas_image(window) != original
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        window.undo_stack.undo()
    assert top in picked_refs(window)
    assert canvas_image(window) == original

    unused = [r.ref for r in window.document.references if r.ref not in picked_refs(window)]
    if unused:  # pin a reference that was not picked: it appears, pinned
        with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
            window.request_choice(Target(unused[0]), "pin", False)
        assert any(p["ref"] == unused[0] and p["pinned"] for row in window.reference_panel._picks for p in row)
        with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
            window.undo_stack.undo()
        assert canvas_image(window) == original
    close(qtbot, window)


def test_chapter_run_completes_with_responsive_ui(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    gaps, last = [], [time.perf_counter()]

    def beat():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    heartbeat = QTimer()
    heartbeat.timeout.connect(beat)
    heartbeat.start(10)
    previews = []
    # the window's own slot ran first: the running page (page 1, the one shown) is large in
    # the Result tab, and the caption says it is a live preview
    window.worker.preview.connect(lambda *_: previews.append((window._live_page, window.page_caption.text())))
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_all()
    heartbeat.stop()
    assert [window.page_strip.status(i) for i in range(4)] == ["done"] * 4
    assert [p.status for p in ChapterProject.load(window.document.project.folder).pages] == ["done"] * 4
    assert previews, "live preview shown during denoising"
    first_page = window.document.page_names[0]
    assert (first_page, ) == tuple({page for page, _ in previews if page is not None}), previews
    assert any("live preview" in caption for _, caption in previews)
    assert window._live_page is None and "live preview" not in window.page_caption.text()
    assert len(gaps) > 20 and max(gaps) < 0.100, f"main thread blocked {max(gaps) * 1000:.0f} ms"
    assert window.result_view.has_image()
    close(qtbot, window)


def test_cancel_stops_within_a_step_and_page_stays_pending(qtbot, settings, chapter):
    from dataclasses import replace

    settings.run = replace(settings.run, steps=10)
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    steps = []
    at_cancel = []

    def on_progress(job, event):
        if event.stage == "ICP":
            steps.append(event.step)
            if not at_cancel:
                at_cancel.append(len(steps))
                window.cancel_all()

    window.worker.progress.connect(on_progress)
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_all()
    assert len(steps) <= at_cancel[0] + 2 and len(steps) < 10
    assert [window.page_strip.status(i) for i in range(4)] == ["pending"] * 4
    folder = window.document.project.folder
    assert not list(folder.glob("*.png"))
    assert [p.status for p in ChapterProject.load(folder).pages] == ["pending"] * 4
    close(qtbot, window)


def test_failing_page_shows_reason_and_others_finish(qtbot, settings, chapter):
    chapter_dir, refs_dir = chapter
    (chapter_dir / "3.png").write_bytes(b"\x89PNG broken")
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, chapter_dir, refs_dir)
    assert window.page_strip.status(2) == "failed"
    assert "not a readable image" in window.page_strip.item(2).toolTip()
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_all()
    assert [window.page_strip.status(i) for i in range(4)] == ["done", "done", "failed", "done"]
    assert "3.png" in window.page_strip.item(2).toolTip()
    close(qtbot, window)


def test_close_and_reopen_restores_state(qtbot, settings, chapter):
    chapter_dir, refs_dir = chapter
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, chapter_dir, refs_dir)
    ref = window.document.references[1].ref
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        window.request_choice(Target(ref, "TL"), "pin", False)
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_current()
    folder = window.document.project.folder
    close(qtbot, window)

    reopened = make_window(qtbot, settings)
    open_with_refs(qtbot, reopened, folder, None)  # open the project folder itself
    qtbot.waitUntil(lambda: reopened.result_view.has_image(), timeout=WAIT_MS)
    assert reopened.page_strip.status(0) == "done"
    assert [reopened.page_strip.status(i) for i in (1, 2, 3)] == ["pending"] * 3
    assert [r.ref for r in reopened.document.references] == [r for r in ChapterProject.load(folder).references]
    assert reopened.document.project.choice(Target(ref, "TL"), "1.png") == "pin"
    assert any(p["ref"] == ref and p["pinned"] for row in reopened.reference_panel._picks for p in row)
    close(qtbot, reopened)


def test_window_appears_before_torch_is_imported(tmp_path):
    code = (
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from app.main_window import MainWindow\n"
        "from app.settings import AppSettings\n"
        "w = MainWindow(AppSettings(), persist_settings=False)\n"
        "w.show(); app.processEvents()\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "w.close()\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen", "COLORFLOW_CONFIG_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_screenshot_command_writes_an_image(tmp_path, tiny_models_dir, chapter):
    chapter_dir, refs_dir = chapter
    target = tmp_path / "shot.png"
    project = ChapterProject(folder=chapter_dir.parent / "chapter.colorflow")
    project.add_references([str(p) for p in sorted(refs_dir.glob("*.png"))])
    project.save()
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen", "COLORFLOW_CONFIG_DIR": str(tmp_path / "cfg")}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "main.py"), str(chapter_dir), "--models", str(tiny_models_dir), "--screenshot", str(target)],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    image = Image.open(target)
    assert image.size[0] > 800 and image.size[1] > 500


def test_settings_round_trip_and_projects_folder(qtbot, tmp_path, chapter):
    from app.document import ChapterDocument
    from app.settings import SettingsDialog, load_settings, save_settings

    settings = AppSettings(RunSettings(models="tiny", steps=7, size="512x800"), ["/a"], str(tmp_path / "projects"))
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.steps.setValue(12)
    dialog.keep_ink.setChecked(False)
    settings.run = dialog.result_settings()
    settings.projects_dir = dialog.chosen_projects_dir()
    save_settings(settings)
    loaded = load_settings()
    assert loaded.run.steps == 12 and not loaded.run.keep_ink and loaded.run.size == "512x800"
    assert loaded.recent == ["/a"] and loaded.projects_dir == str(tmp_path / "projects")
    document = ChapterDocument.open(chapter[0], loaded.projects_dir)
    assert document.project.folder == tmp_path / "projects" / "chapter.colorflow"
    assert (document.project.folder / "colorflow-project.json").is_file()


def test_original_view_applies_exif_orientation(qtbot):
    import io

    from app.images import pixmap_with_exif

    image = Image.new("L", (40, 20), 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    pixmap = pixmap_with_exif(buffer.getvalue())
    assert (pixmap.width(), pixmap.height()) == (20, 40)
    assert pixmap_with_exif(b"not an image") is None


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
        assert window._export_job is None and not offered and not list(project.folder.parent.rglob("*.cbz"))
    else:
        assert offered == [str(project.folder / f"{chapter[0].name}-colored.cbz")]  # first time: the project
        qtbot.waitUntil(lambda: chosen.is_file() and window._export_job is None, timeout=WAIT_MS)
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
        qtbot.waitUntil(lambda: window._export_job is None, timeout=WAIT_MS)
    close(qtbot, window)


def test_no_references_yet_is_a_hint_not_an_error(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter[0]))
    qtbot.wait(200)
    text = window.canvas_view._placeholder.text()
    assert "Add references" in text or "+ Add references" in text
    assert "Error" not in text and "ValueError" not in text and "failed" not in text
    close(qtbot, window)


@pytest.mark.parametrize("answer", ["No", "Yes"])
def test_esc_asks_before_cancelling_the_queue(qtbot, settings, monkeypatch, answer):
    from PySide6.QtGui import QAction, QKeySequence
    from PySide6.QtWidgets import QMessageBox

    window = make_window(qtbot, settings)
    cancelled = []
    monkeypatch.setattr(window, "cancel_all", lambda: cancelled.append(True))
    monkeypatch.setattr(window, "_page_jobs", {7: "1.png", 8: "2.png"})
    window._update_actions()  # what queueing pages does
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or getattr(QMessageBox.StandardButton, answer))
    esc = next(a for a in window.findChildren(QAction) if a.shortcut() == QKeySequence("Esc"))
    esc.trigger()
    assert asked and "Cancel all 2 queued page(s)" in asked[0]
    assert cancelled == ([] if answer == "No" else [True])
    monkeypatch.setattr(window, "_page_jobs", {})
    close(qtbot, window)


def test_tiny_models_banner_shows_only_with_tiny_models(qtbot, settings):
    from dataclasses import replace

    window = make_window(qtbot, settings)  # settings use a tiny models folder
    assert window.tiny_banner.isVisible() and "meaningless" in window.tiny_banner.text()
    window.settings.run = replace(window.settings.run, models="official")
    window._update_device_label()
    assert not window.tiny_banner.isVisible()
    close(qtbot, window)


def test_reject_keeps_the_selection_lists_it_and_restore_brings_it_back(qtbot, settings, chapter):
    from PySide6.QtGui import QAction

    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    panel = window.reference_panel
    original = canvas_image(window)
    reject = next(a for a in window.findChildren(QAction) if a.text() == "Reject selected patch")
    assert not reject.isEnabled()  # nothing selected yet
    button = panel.patch_buttons[("TL", 0)]
    button.click()
    acted = (panel._picks[0][0]["ref"], panel._picks[0][0]["patch"])
    assert button.isChecked() and reject.isEnabled()
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        reject.trigger()  # R
    assert acted not in {(p["ref"], p["patch"]) for row in panel._picks for p in row}
    assert panel.rejected.count() == 1
    item = panel.rejected.currentItem()
    assert item is not None and item.data(0x0100) == (acted[0], acted[1], "page")  # Qt.UserRole
    assert not any(b.isChecked() for b in panel.patch_buttons.values())  # no unseen patch selected
    commands = window.undo_stack.count()
    reject.trigger()  # R again: the selection is the rejected patch, so nothing else is rejected
    qtbot.wait(100)
    assert window.undo_stack.count() == commands
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        panel.restore_button.click()
    assert panel.rejected.count() == 0
    assert canvas_image(window) == original
    assert (panel._picks[0][0]["ref"], panel._picks[0][0]["patch"]) == acted
    assert panel.patch_buttons[("TL", 0)].isChecked()  # the selection followed the patch back
    close(qtbot, window)


def test_hovering_a_patch_outlines_its_tile_and_query_region_and_back(qtbot, settings, chapter):
    from PySide6.QtCore import QEvent, QRectF
    from PySide6.QtWidgets import QApplication

    window = make_window(qtbot, settings)  # 256x384 working size: canvas 512x768, shown 1:1
    open_with_refs(qtbot, window, *chapter)
    QApplication.sendEvent(window.reference_panel.patch_buttons[("TR", 0)], QEvent(QEvent.Type.Enter))
    # GEOMETRY.md: TR rank 1 sits in cell (row 1, col 3) of W/2 x H/2 = 128x192 cells, pasted at
    # (3*128 + 1, 192 + 1) with size 126x190; the TR query patch is 192x288 at (W/4, 0) of
    # the page, which starts at (W/2, H/2) = (128, 192) in the canvas.
    assert window.canvas_view.highlighted() == [QRectF(385, 193, 126, 190), QRectF(192, 192, 192, 288)]
    QApplication.sendEvent(window.reference_panel.patch_buttons[("TR", 0)], QEvent(QEvent.Type.Leave))
    assert window.canvas_view.highlighted() == []
    # the other way: the pointer over cell (3, 0) = BL rank 3 marks that patch's button
    window.canvas_view.hover_moved.emit(10.0, 3 * 192 + 50.0)
    assert window.reference_panel.hovered_patch() == (2, 2)
    assert window.canvas_view.highlighted()[0] == QRectF(1, 3 * 192 + 1, 126, 190)
    window.canvas_view.hover_moved.emit(-1.0, -1.0)
    assert window.reference_panel.hovered_patch() is None
    close(qtbot, window)


def test_patch_score_is_a_bar_with_the_number_in_the_tooltip(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    button = window.reference_panel.patch_buttons[("TL", 0)]
    score = window.reference_panel._picks[0][0]["score"]
    assert button.text() == "" and f"similarity {score:.4f}" in button.toolTip()
    icon = button.icon().pixmap(button.iconSize()).toImage()
    bar_row = icon.height() - 3  # the bar is the last rows of the icon
    filled = sum(1 for x in range(icon.width()) if icon.pixelColor(x, bar_row).name() == "#4fb3ff")
    assert abs(filled / icon.width() - max(0.0, score)) < 0.05
    close(qtbot, window)


def test_actions_follow_state_and_idle_queue_is_one_line(qtbot, settings, chapter):
    from dataclasses import replace

    from PySide6.QtGui import QAction

    settings.run = replace(settings.run, device="auto")
    window = make_window(qtbot, settings)
    actions = {a.text(): a for a in window.findChildren(QAction)}
    for text in ("Colorize page", "Colorize all pages", "Pin selected patch", "Reject selected patch",
                 "Retry failed pages", "Cancel all…", "Export CBZ…"):
        assert not actions[text].isEnabled(), text
    assert not window.queue.progress.isVisible() and not window.queue.list.isVisible()
    assert not window.queue.overall.isVisible()
    assert window.queue.sizeHint().height() < 60
    assert "resolved when a chapter opens" in window.device_label.text()
    open_with_refs(qtbot, window, *chapter)
    assert actions["Colorize page"].isEnabled() and actions["Export CBZ…"].isEnabled()
    assert not actions["Pin selected patch"].isEnabled() and not actions["Cancel all…"].isEnabled()
    import torch

    expected = "cuda:0" if torch.cuda.is_available() else "cpu"  # what `auto` must resolve to here
    qtbot.waitUntil(lambda: f"device: {expected}" in window.device_label.text(), timeout=WAIT_MS)
    assert window.page_caption.text().startswith(f"Page 1 / 4: {window.document.page_names[0]}")
    assert window.tabs.tabText(1) == f"Result — {window.document.page_names[0]}"
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


def test_an_open_chapter_is_locked_and_a_damaged_project_offers_its_backup(qtbot, settings, chapter, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from app.document import ChapterDocument
    from engine.errors import ProjectLockedError

    window = make_window(qtbot, settings)
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter[0]))
    folder = window.document.project.folder
    with pytest.raises(ProjectLockedError, match="is in use by"):
        ChapterDocument.open(chapter[0])  # a second window or run on the same project
    window.document.project.settings["series"] = "kept"
    window.document.project.save()  # the previous save becomes the .bak
    window.close()
    ChapterDocument.open(chapter[0]).close()  # closing the window let the project go

    (folder / "colorflow-project.json").write_text('{"format": "colorflow-project", "version": 2, "pages": 7}')
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Yes)
    window = make_window(qtbot, settings)
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter[0]))
    assert asked and "colorflow-project.json.bak" in asked[0]
    assert list(folder.glob("colorflow-project.json.damaged-*"))  # the damaged file is kept
    assert window.page_strip.count() == 4
    close(qtbot, window)


def test_a_view_filled_while_hidden_fits_when_shown(qtbot):
    from PySide6.QtGui import QPixmap
    from PySide6.QtWidgets import QTabWidget

    from app.canvas_view import ZoomView

    tabs = QTabWidget()
    qtbot.addWidget(tabs)
    first, hidden = ZoomView(), ZoomView()
    tabs.addTab(first, "a")
    tabs.addTab(hidden, "b")
    tabs.resize(800, 600)
    tabs.show()
    image = QPixmap(200, 100)
    image.fill()
    hidden.set_pixmap(image)  # set while its tab is not shown
    tabs.setCurrentIndex(1)
    qtbot.waitUntil(hidden.isVisible)
    shown = hidden.mapFromScene(hidden.sceneRect()).boundingRect()
    # fitted: the 2:1 image fills the view's width (not drawn at 1:1, 200 px wide)
    assert shown.width() > 0.9 * hidden.viewport().width()
