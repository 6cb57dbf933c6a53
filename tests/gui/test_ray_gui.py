"""The GUI's Ray path (issue 26, item 3): with a Ray address in Settings the queued pages are colored on Ray
workers with the same per-page progress and the bytes of a local run; without Ray the Settings row says how to
install it. One local Ray for the test session (conftest `ray_local`), tiny models, 1 step, 256x256."""

from __future__ import annotations

import sys
import threading
from dataclasses import replace

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QComboBox, QSpinBox  # noqa: E402

from app.settings import AppSettings, SettingsDialog  # noqa: E402
from engine.core.events import Cancelled, Notice, PageDone, Progress  # noqa: E402
from engine.project.state import ChapterProject  # noqa: E402
from test_settings_dialog import rows  # noqa: E402
from window_helpers import WAIT_MS, close, make_window, open_with_refs  # noqa: E402

INSTALL = 'pip install "colorflow-desktop[studio]"'  # the words for getting Ray


@pytest.fixture
def three_pages(tmp_path):
    from engine.io.demo import make_demo_chapter

    return make_demo_chapter(tmp_path / "data", pages=3, refs=2, size=(160, 200))


def color_all(qtbot, settings, chapter, projects, remove: str | None = None
              ) -> tuple[dict[str, bytes], dict[str, str], list, list[str]]:
    """Open `chapter` with `settings`, queue every page, wait for the run: (each page file's bytes, each page's
    status in the project file, the engine's events, the Queue's status lines seen during the run). With
    `remove`, that page is deleted from the queue when page 1's first ICP step arrives, the engine held there
    until it is done (so no page goes out meanwhile)."""
    settings.projects_dir = str(projects)
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    done, shown = [], []
    colorize = window.session.colorize
    removed = threading.Event()

    def hold(event) -> None:  # worker thread: page 1's first step waits for the removal
        if remove and isinstance(event, Progress) and event.stage == "ICP" and event.page == "1.png":
            removed.wait(WAIT_MS / 1000)

    def watched(*args, emit, **kwargs):  # the engine's own events, as the worker thread gets them
        return colorize(*args, emit=lambda event: (done.append(event), emit(event), hold(event)), **kwargs)

    def remove_page(_job, event) -> None:
        if remove and event.stage == "ICP" and event.page == "1.png" and not removed.is_set():
            details = next(b for b in window.queue.findChildren(QAbstractButton) if b.text() == "Details")
            qtbot.mouseClick(details, Qt.MouseButton.LeftButton)
            window.queue.list.clearSelection()
            rows = [window.queue.list.item(row) for row in range(window.queue.list.count())]
            next(item for item in rows if item.text().startswith(f"{remove} — ")).setSelected(True)
            qtbot.keyClick(window.queue.list, Qt.Key.Key_Delete)
            removed.set()

    window.session.colorize = watched
    window.worker.progress.connect(lambda *_: shown.append(window.queue.status.text()))
    window.worker.progress.connect(remove_page)
    try:
        with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
            window.colorize_all()
    finally:
        removed.set()
    folder = window.document.project.folder
    statuses = {p.name: p.status for p in ChapterProject.load(folder).pages}
    written = {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}
    executor = window.session.ray.current
    actors = list(executor.actors) if executor is not None else []
    close(qtbot, window)
    for actor in actors:  # closing the window stops the session's Ray workers
        assert stops(actor), "a Ray worker still answers after the window closed"
    return written, statuses, done, shown


def stops(actor, within_s: float = 30.0) -> bool:
    """Whether the Ray actor is dead within `within_s` (ray.kill is asynchronous: a call sent at once may
    still be answered)."""
    import time

    import ray

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=within_s)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.2)
    return False


def test_queued_pages_with_a_ray_address_are_colored_side_by_side_on_ray_workers_with_the_local_bytes(
        qtbot, settings, three_pages, ray_local, tmp_path):
    """The queue's pages go out together, one per Ray worker at once (both workers color a page), with the bytes
    of a local run; a page removed from the queue while the others run is never colored and stays pending."""
    settings.run = replace(settings.run, steps=1, size="256x256", input_style="gray")
    local, local_states, local_events, _ = color_all(qtbot, settings, three_pages, tmp_path / "local")
    assert set(local_states.values()) == {"done"} and len(local) == 3
    assert all("worker" not in event.info for event in local_events if isinstance(event, PageDone))

    settings.run = replace(settings.run, ray="local", workers=2)  # what Settings ▸ Ray cluster "local" gives
    on_ray, ray_states, ray_events, shown = color_all(qtbot, settings, three_pages, tmp_path / "ray", remove="3.png")
    assert ray_states == {"1.png": "done", "2.png": "done", "3.png": "pending"}
    ray_done = [event for event in ray_events if isinstance(event, PageDone)]
    started = [e for e in ray_events if isinstance(e, Notice) and e.message.startswith("coloring on Ray")]
    assert len(started) == 1, started  # one start of the workers for the whole queue
    assert sorted(event.page for event in ray_done) == ["1.png", "2.png"]
    assert {event.info.get("worker") for event in ray_done} == {0, 1}  # both workers colored at once
    assert [e.page for e in ray_events if isinstance(e, Cancelled)] == ["3.png"]
    assert not [e for e in ray_events if isinstance(e, Progress) and e.page == "3.png" and e.stage == "ICP"]
    assert any("on Ray: 2 workers" in line for line in shown), shown[-3:]
    assert on_ray == {name: data for name, data in local.items() if not name.startswith("003_")}  # byte for byte


def test_ray_and_worker_rows_round_trip_through_the_dialog(qtbot):
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    found = rows(dialog)
    address, workers = found["Ray cluster"], found["Ray workers"]
    assert isinstance(address, QComboBox) and isinstance(workers, QSpinBox)
    assert (address.currentText(), workers.text()) == ("", "auto")  # off; all GPUs Ray sees
    untouched = dialog.result_settings()
    assert (untouched.ray, untouched.workers) == (None, None)
    address.setCurrentText("10.0.0.5:6379")
    workers.setValue(3)
    chosen = dialog.result_settings()
    assert (chosen.ray, chosen.workers) == ("10.0.0.5:6379", 3)


def test_without_ray_the_settings_row_is_disabled_and_says_how_to_install_it(qtbot, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where the studio extra is missing
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    found = rows(dialog)
    for label in ("Ray cluster", "Ray workers"):
        assert not found[label].isEnabled(), label
        assert INSTALL in found[label].toolTip(), label
    assert dialog.result_settings().ray is None


def test_an_unreachable_ray_address_is_explained_in_the_apps_words(ray_local):
    from app.gui_messages import gui_text
    from engine.core.errors import ColorFlowError
    from engine.pipelines.ray_cluster import connect

    with pytest.raises(ColorFlowError) as raised:
        connect("127.0.0.1:9")  # the discard port: nothing listens there
    said = gui_text(str(raised.value))
    assert "127.0.0.1:9" in said and "ray start --head" in said
    assert "clear Ray cluster in Edit ▸ Settings…" in said and "--ray" not in said
