"""EngineWorker.submit_pages (the queue's pages colored side by side on Ray): one engine call followed as one job
per page — each page's job starts with its first event, gets its page's events, ends with its page; removing one
page cancels that page only, removing all cancels the call; the call's failure ends every open page with its reason.
A stand-in engine call (a function of emit and cancel, as the worker runs any job) plays the pages."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("PySide6")

from app.worker import EngineWorker  # noqa: E402
from engine.core.errors import ColorFlowError  # noqa: E402
from engine.core.events import Cancelled, Notice, PageDone, PageFailed, Progress  # noqa: E402

PAGES = ["1.png", "2.png", "3.png"]


class Recorder:
    """Every signal of the worker, in order, with the job ids it came with."""

    def __init__(self, worker: EngineWorker) -> None:
        self.seen: list[tuple] = []
        worker.job_started.connect(lambda job: self.seen.append(("started", job)))
        worker.progress.connect(lambda job, event: self.seen.append(("progress", job, event.page)))
        worker.notice.connect(lambda job, text: self.seen.append(("notice", job, text)))
        worker.page_done.connect(lambda job, page, _outputs: self.seen.append(("page done", job, page)))
        worker.page_failed.connect(lambda job, page, reason: self.seen.append(("page failed", job, page, reason)))
        worker.cancelled.connect(lambda job, page: self.seen.append(("cancelled", job, page)))
        worker.job_finished.connect(lambda job, _result: self.seen.append(("finished", job)))
        worker.job_failed.connect(lambda job, reason: self.seen.append(("failed", job, reason)))
        worker.job_cancelled.connect(lambda job: self.seen.append(("job cancelled", job)))

    def ends(self) -> dict[int, str]:
        return {entry[1]: entry[0] for entry in self.seen if entry[0] in ("finished", "failed", "job cancelled")}


def test_each_page_of_a_group_is_its_own_job_and_removing_one_skips_only_it(qtbot):
    worker, release = EngineWorker(), threading.Event()
    record = Recorder(worker)
    asked = []

    def call(emit, cancel):  # like RayPagePass: a page-less notice, then the pages, a cancelled one skipped
        emit(Notice("coloring on Ray (this computer): 2 worker(s)"))
        emit(Progress("ICP", 1, 2, "1.png"))
        release.wait(5)  # the test removes page 3 meanwhile
        for page in PAGES:
            asked.append((page, cancel.page_cancelled(page)))
            if cancel.page_cancelled(page):
                emit(Cancelled(page))
            elif page == "2.png":
                emit(PageFailed(page, "RuntimeError: broken"))
            else:
                emit(Progress("ICP", 2, 2, page))
                emit(PageDone(page, {}))
        return "report"

    try:
        one, two, three = worker.submit_pages(call, PAGES)
        qtbot.waitUntil(lambda: ("progress", one, "1.png") in record.seen, timeout=5000)
        assert ("started", one) in record.seen and ("started", two) not in record.seen
        worker.cancel(three)
        release.set()
        qtbot.waitUntil(lambda: not worker.busy, timeout=5000)
    finally:
        worker.shutdown()
    assert asked == [("1.png", False), ("2.png", False), ("3.png", True)]  # the whole call was not cancelled
    assert record.ends() == {one: "finished", two: "finished", three: "job cancelled"}
    assert ("notice", one, "coloring on Ray (this computer): 2 worker(s)") in record.seen  # page-less: the first page's
    assert ("page failed", two, "2.png", "RuntimeError: broken") in record.seen
    assert [e for e in record.seen if e[1] == three] == [("cancelled", three, "3.png"), ("job cancelled", three)]
    order = [e[:2] for e in record.seen]
    assert order.index(("started", two)) < order.index(("page failed", two)) < order.index(("finished", two))
    assert order.index(("page done", one)) < order.index(("finished", one)) < order.index(("started", two))


def test_removing_every_page_cancels_the_call_and_its_failure_ends_the_open_pages(qtbot):
    worker, release = EngineWorker(), threading.Event()
    record = Recorder(worker)
    seen_cancel = []

    def cancelled_call(emit, cancel):
        emit(Progress("ICP", 1, 2, "1.png"))
        release.wait(5)
        seen_cancel.append(cancel.cancelled)
        return "report"

    def failing_call(emit, cancel):
        emit(PageDone("1.png", {}))
        raise ColorFlowError("every Ray worker was lost (2 started)")

    try:
        jobs = worker.submit_pages(cancelled_call, PAGES)
        qtbot.waitUntil(lambda: ("started", jobs[0]) in record.seen, timeout=5000)
        for job in jobs:
            worker.cancel(job)
        release.set()
        failing = worker.submit_pages(failing_call, PAGES[:2])
        qtbot.waitUntil(lambda: not worker.busy, timeout=5000)
    finally:
        worker.shutdown()
    assert seen_cancel == [True]  # every page removed: the whole call is cancelled
    assert record.ends() == {jobs[0]: "job cancelled", jobs[1]: "job cancelled", jobs[2]: "job cancelled",
                             failing[0]: "finished", failing[1]: "failed"}
    assert ("failed", failing[1], "every Ray worker was lost (2 started)") in record.seen
