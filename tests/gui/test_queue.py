"""The Queue with tiny models (pytest-qt): Cancel page stops the running page within one step and
writes nothing for it; queued pages are removed one by one; tooltips name shortcuts; elapsed time
and ETA; the Result tab and the page strip follow the running page."""

from __future__ import annotations

import re
import threading
from dataclasses import replace

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QAction, QKeySequence  # noqa: E402
from PySide6.QtWidgets import QAbstractButton  # noqa: E402

from engine.project.state import ChapterProject  # noqa: E402
from window_helpers import WAIT_MS, close, make_window, open_with_refs  # noqa: E402


@pytest.fixture
def small_chapter(tmp_path):
    from engine.io.demo import make_demo_chapter

    return make_demo_chapter(tmp_path / "data", pages=3, refs=3, size=(180, 256))


class IcpGate:
    """Holds the worker just after the first page's first ICP step until the test (main thread)
    has acted, so a click lands while that step is the last one done, on any machine's speed."""

    def __init__(self, window) -> None:
        self._open = threading.Event()
        self._held = False  # worker thread only
        colorize = window.session.colorize

        def gated(*args, emit, **kwargs):
            def held_emit(event):
                emit(event)
                if getattr(event, "stage", None) == "ICP" and event.step == 1 and not self._held:
                    self._held = True
                    self._open.wait(30)

            return colorize(*args, emit=held_emit, **kwargs)

        window.session.colorize = gated

    def release(self) -> None:
        self._open.set()


def queue_button(window, text: str) -> QAbstractButton:
    return next(b for b in window.queue.findChildren(QAbstractButton) if b.text() == text)


def menu_action(window, text: str) -> QAction:
    return next(a for a in window.findChildren(QAction) if a.text() == text)


def statuses(window) -> dict[str, str]:
    return {p.name: p.status for p in ChapterProject.load(window.document.project.folder).pages}


def written_for(window, index: int) -> list[str]:
    """Every file or folder of page `index` in the project (its result, a temp file of it)."""
    prefix = f"{index + 1:03d}_"
    return [p.name for p in window.document.project.folder.rglob("*") if p.name.lstrip(".").startswith(prefix)]


def test_cancel_page_stops_the_running_page_within_one_step_and_writes_nothing(qtbot, settings, small_chapter):
    settings.run = replace(settings.run, steps=6)
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *small_chapter)
    names = window.document.page_names
    gate = IcpGate(window)
    clicked_at, after_click = [], []

    def on_progress(_job, event):
        if event.stage != "ICP" or event.page != names[0]:
            return
        if clicked_at:
            after_click.append(event.step)
            return
        try:
            assert not window.queue.list.isVisible()  # Details closed: nothing can be selected
            qtbot.mouseClick(queue_button(window, "Cancel page"), Qt.MouseButton.LeftButton)
            clicked_at.append(event.step)
        finally:
            gate.release()

    window.worker.progress.connect(on_progress)
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_all()
    assert clicked_at == [1]
    assert len(after_click) <= 1, f"ICP went on for steps {after_click} after Cancel page"
    assert written_for(window, 0) == []
    assert statuses(window) == {names[0]: "pending", names[1]: "done", names[2]: "done"}  # only that page
    assert window.page_strip.status(0) == "pending"
    assert [len(written_for(window, i)) for i in (1, 2)] == [1, 1]
    close(qtbot, window)


def test_queued_pages_are_removed_one_by_one_and_the_others_run(qtbot, settings, small_chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *small_chapter)
    names = window.document.page_names
    gate = IcpGate(window)
    seen = {}

    def texts() -> list[str]:
        return [window.queue.list.item(row).text() for row in range(window.queue.list.count())]

    def select(name: str) -> None:
        window.queue.list.clearSelection()
        row = next(r for r, text in enumerate(texts()) if text.startswith(name))
        window.queue.list.item(row).setSelected(True)

    def on_progress(_job, event):
        seen.setdefault("first event", texts())  # the page is loading models or retrieving: it runs
        if event.stage != "ICP" or event.page != names[0] or "running" in seen:
            return
        try:
            qtbot.mouseClick(queue_button(window, "Details"), Qt.MouseButton.LeftButton)
            seen["running"] = texts()
            select(names[1])
            qtbot.keyClick(window.queue.list, Qt.Key.Key_Delete)
            seen["after delete"] = texts()
            select(names[2])
            qtbot.mouseClick(queue_button(window, "Cancel page"), Qt.MouseButton.LeftButton)
            seen["after cancel"] = texts()
        finally:
            gate.release()

    window.worker.progress.connect(on_progress)
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_all()
    assert [re.search(r" — (\w+)", t).group(1) for t in seen["first event"]] == ["running", "queued", "queued"], seen
    assert seen["running"][0].startswith(f"{names[0]} — running: ICP 1/2"), seen["running"]
    assert [t.split(" — ")[0] for t in seen["after delete"]] == [names[0], names[2]]
    assert [t.split(" — ")[0] for t in seen["after cancel"]] == [names[0]]
    assert statuses(window) == {names[0]: "done", names[1]: "pending", names[2]: "pending"}
    assert written_for(window, 1) == [] and written_for(window, 2) == []
    remove = [a for a in window.queue.list.actions() if a.text() == "Remove from queue"]
    assert remove and window.queue.list.contextMenuPolicy() == Qt.ContextMenuPolicy.ActionsContextMenu
    close(qtbot, window)


def test_queue_buttons_name_their_shortcuts_and_the_run_bar_text_fits(qtbot, settings, tmp_path):
    window = make_window(qtbot, settings)
    window.resize(1366, 740)
    for button, action in (("Cancel page", "Cancel page"), ("Cancel all", "Cancel all now"),
                           ("Retry failed", "Retry failed pages")):
        key = menu_action(window, action).shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        assert key, f"Run ▸ {action} has no shortcut"
        assert key in queue_button(window, button).toolTip(), button
    details = queue_button(window, "Details")
    assert details.shortcut().toString() and details.shortcut().toString(QKeySequence.SequenceFormat.NativeText) in details.toolTip()
    window.queue.set_running(True)
    window.queue.overall.setRange(0, 120)
    window.queue.overall.setValue(119)
    qtbot.wait(50)
    bar = window.queue.overall
    window.queue.grab().save(str(tmp_path / "queue_running_1366.png"))  # looked at by eye once
    assert bar.fontMetrics().horizontalAdvance(bar.text()) + 8 <= bar.contentsRect().width(), bar.text()
    window.queue.set_running(False)
    close(qtbot, window)


def test_follow_running_page_selects_it_and_off_keeps_the_selection(qtbot, settings, small_chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *small_chapter)
    names = window.document.page_names
    follow = menu_action(window, "Follow the running page")
    assert follow.isCheckable() and follow.isChecked()
    previews, texts = [], []
    window.worker.preview.connect(lambda _job, page, _image: previews.append((page, window.current_page, window._live_page)))
    window.worker.progress.connect(lambda _job, event: texts.append(window.queue.status.text()))
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_pages([names[1]])
    assert previews and all(entry == (names[1], 1, names[1]) for entry in previews), previews
    assert window.page_strip.currentRow() == 1
    # before one step was timed the Queue says so; then elapsed time and how long is left
    estimating = [i for i, text in enumerate(texts) if "estimating…" in text]
    timed = [i for i, text in enumerate(texts) if re.search(r"\d+:\d\d left", text)]
    assert estimating and timed and estimating[0] < timed[0], texts

    window.page_strip.setCurrentRow(0)
    follow.setChecked(False)
    previews.clear()
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_pages([names[2]])
    assert previews and all(current == 0 for _page, current, _live in previews), previews
    assert window.page_strip.currentRow() == 0
    close(qtbot, window)


def test_run_clock_estimates_from_the_step_times_measured_so_far():
    from app.run_clock import RunClock, describe_left

    clock = RunClock()
    clock.page_started("a", 0.0)
    assert clock.page_left("a", 5.0) is None and describe_left(None) == "estimating…"
    clock.progress("a", "ICP", 1, 6, 10.0)
    assert clock.page_left("a", 10.0) is None  # one step: no interval timed yet
    clock.progress("a", "ICP", 2, 6, 12.0)
    clock.progress("a", "ICP", 3, 6, 14.0)
    left = clock.page_left("a", 14.0)  # 3 steps of 2 s; GSRP not timed yet: at least that
    assert (left.seconds, left.complete) == (6.0, False) and describe_left(left) == "≥0:06 left"
    for step, now in ((4, 16.0), (5, 18.0), (6, 20.0)):
        clock.progress("a", "ICP", step, 6, now)
    clock.page_ended("a", 26.0, completed=True)  # 26 s: 8 before ICP, 6 steps of 2 s, 6 after it
    clock.page_started("b", 26.0)
    assert clock.page_total() == pytest.approx(26.0)  # a page yet to start: as long as page a took
    left = clock.page_left("b", 30.0)
    assert (left.seconds, left.complete) == (pytest.approx(22.0), True) and describe_left(left) == "~0:22 left"
    run = clock.run_left("b", queued=2, now=30.0)
    assert run.seconds == pytest.approx(22.0 + 2 * 26.0) and run.complete
    assert clock.run_elapsed(30.0) == pytest.approx(30.0) and clock.elapsed("b", 30.0) == pytest.approx(4.0)
