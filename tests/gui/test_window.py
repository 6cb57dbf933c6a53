"""The main window offscreen with tiny models (pytest-qt): open, run, cancel, failures, reopen, settings, start-up."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from PIL import Image

pytest.importorskip("PySide6")

from PySide6.QtCore import QTimer  # noqa: E402

from app.settings import AppSettings  # noqa: E402
from engine.rap.curation import Target  # noqa: E402
from engine.project.state import ChapterProject  # noqa: E402
from engine.pipelines.session import RunSettings  # noqa: E402
from window_helpers import REPO_ROOT, WAIT_MS, close, make_window, open_with_refs, picked_refs  # noqa: E402


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
    # the window's own slot ran first: the running page (selected as it runs: View ▸ Follow the
    # running page is on) is large in the Result tab, and the caption says it is a live preview
    window.worker.preview.connect(lambda *_: previews.append((window._live_page, window.page_caption.text())))
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_all()
    heartbeat.stop()
    assert [window.page_strip.status(i) for i in range(4)] == ["done"] * 4
    assert [p.status for p in ChapterProject.load(window.document.project.folder).pages] == ["done"] * 4
    assert previews, "live preview shown during denoising"
    assert {page for page, _ in previews} == set(window.document.page_names), previews
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


def test_settings_round_trip_and_projects_folder(qtbot, tmp_path, chapter):
    from app.document import ChapterDocument
    from app.settings import SettingsDialog
    from app.settings_store import load_settings, save_settings

    settings = AppSettings(RunSettings(models="tiny", steps=7, size="512x800"), ["/a"], str(tmp_path / "projects"))
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.steps.setValue(12)
    dialog.keep_ink.setChecked(False)
    assert dialog.keep_ink.isEnabled()
    dialog.procedure.setCurrentIndex(dialog.procedure.findData("official"))
    assert not dialog.keep_ink.isEnabled()  # the official procedure has no keep-ink
    settings.run = dialog.result_settings()
    settings.projects_dir = dialog.chosen_projects_dir()
    save_settings(settings)
    loaded = load_settings().settings
    assert loaded.run.steps == 12 and not loaded.run.keep_ink and loaded.run.size == "512x800"
    assert loaded.run.procedure == "official"
    assert loaded.recent == ["/a"] and loaded.projects_dir == str(tmp_path / "projects")
    document = ChapterDocument.open(chapter[0], loaded.projects_dir)
    assert document.project.folder == tmp_path / "projects" / "chapter.colorflow"
    assert (document.project.folder / "colorflow-project.json").is_file()


def test_original_view_applies_exif_orientation(qtbot, tmp_path):
    from app.images import image_pixmap

    image = Image.new("L", (40, 20), 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", format="JPEG", exif=exif.tobytes())
    pixmap = image_pixmap(tmp_path / "rotated.jpg")
    assert (pixmap.width(), pixmap.height()) == (20, 40)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert image_pixmap(tmp_path / "broken.png") is None


@pytest.mark.parametrize("answer", ["No", "Yes"])
def test_esc_asks_before_cancelling_the_queue(qtbot, settings, monkeypatch, answer):
    from PySide6.QtGui import QAction, QKeySequence
    from PySide6.QtWidgets import QMessageBox

    from app.job_model import JobKind

    window = make_window(qtbot, settings)
    cancelled = []
    monkeypatch.setattr(window, "cancel_all", lambda: cancelled.append(True))
    window.jobs.add(7, JobKind.COLORIZE_PAGE, "1.png")  # two pages queued (no worker job behind them)
    window.jobs.add(8, JobKind.COLORIZE_PAGE, "2.png")
    window._update_actions()  # what queueing pages does
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or getattr(QMessageBox.StandardButton, answer))
    esc = next(a for a in window.findChildren(QAction) if a.shortcut() == QKeySequence("Esc"))
    esc.trigger()
    assert asked and "Cancel all 2 queued page(s)" in asked[0]
    assert cancelled == ([] if answer == "No" else [True])
    for job_id in (7, 8):
        window.jobs.cancelled_unstarted(job_id)
    close(qtbot, window)


def test_tiny_models_banner_shows_only_with_tiny_models(qtbot, settings):
    from dataclasses import replace

    window = make_window(qtbot, settings)  # settings use a tiny models folder
    assert window.tiny_banner.isVisible() and "meaningless" in window.tiny_banner.text()
    window.settings.run = replace(window.settings.run, models="official")
    window._update_device_label()
    assert not window.tiny_banner.isVisible()
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


def test_an_open_chapter_is_locked_and_a_damaged_project_offers_its_backup(qtbot, settings, chapter, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from app.document import ChapterDocument
    from engine.core.errors import ProjectLockedError

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
