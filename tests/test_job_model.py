"""The GUI's job model without Qt: kinds, states and their transitions, cancellation as a state."""

from __future__ import annotations

import pytest

from app.job_model import JobKind, JobModel, JobState


def test_a_page_job_goes_queued_running_done_and_then_leaves_the_model():
    jobs = JobModel()
    job = jobs.add(1, JobKind.COLORIZE_PAGE, "3.png")
    assert (job.state, jobs.page_job("3.png"), jobs.queued_pages()) == (JobState.QUEUED, job, ["3.png"])
    jobs.started(1)
    assert job.state is JobState.RUNNING
    ended = jobs.finished(1)
    assert ended is job and job.state is JobState.DONE and job.ended
    assert jobs.get(1) is None and jobs.page_job("3.png") is None and jobs.queued_pages() == []


def test_cancel_comes_from_the_engine_event_never_from_a_failure_reason():
    jobs = JobModel()
    jobs.add(1, JobKind.COLORIZE_PAGE, "1.png")
    jobs.add(2, JobKind.RETRIEVE, "2.png")
    jobs.started(1)
    jobs.request_cancel(1)
    jobs.engine_cancelled(1)  # the engine's typed Cancelled event, then the job returns normally
    assert jobs.finished(1).state is JobState.CANCELLED
    # the reason string the window used to compare against is, on its own, just a failure
    failed = jobs.failed(2, "cancelled before it started")
    assert failed.state is JobState.FAILED and failed.reason == "cancelled before it started"


def test_a_job_cancelled_before_it_started_is_cancelled():
    jobs = JobModel()
    jobs.add(5, JobKind.OPEN)
    jobs.request_cancel(5)
    job = jobs.cancelled_unstarted(5)
    assert job.state is JobState.CANCELLED and job.reason is None and jobs.active() == []


def test_a_cancelled_job_that_stops_with_an_error_is_cancelled_and_keeps_its_message():
    jobs = JobModel()
    jobs.add(3, JobKind.DOWNLOAD)
    jobs.started(3)
    jobs.request_cancel(3)
    job = jobs.failed(3, "download cancelled; run it again to resume")
    assert job.state is JobState.CANCELLED and job.reason == "download cancelled; run it again to resume"


def test_a_cancel_that_came_too_late_leaves_the_job_done():
    jobs = JobModel()
    jobs.add(4, JobKind.RETRIEVE, "1.png")
    jobs.started(4)
    jobs.request_cancel(4)  # asked, but the job finished before its next check
    job = jobs.finished(4)
    assert job.state is JobState.DONE and job.cancel_requested


def test_active_jobs_by_kind_in_submission_order_and_unknown_ids_are_ignored():
    jobs = JobModel()
    jobs.add(7, JobKind.COLORIZE_PAGE, "1.png")
    jobs.add(8, JobKind.EXPORT)
    jobs.add(9, JobKind.COLORIZE_PAGE, "2.png")
    assert [j.id for j in jobs.active(JobKind.COLORIZE_PAGE)] == [7, 9]
    assert [j.id for j in jobs.active()] == [7, 8, 9]
    assert jobs.queued_pages() == ["1.png", "2.png"]
    assert jobs.latest(JobKind.EXPORT).id == 8 and jobs.latest(JobKind.OPEN) is None
    # another listener's job (the Models dialog's) is not ours: every transition says so
    assert jobs.started(42) is None and jobs.finished(42) is None and jobs.failed(42, "x") is None
    assert jobs.request_cancel(42) is None and jobs.engine_cancelled(42) is None
    assert jobs.cancelled_unstarted(42) is None


def test_an_id_is_added_once_and_a_page_job_names_its_page():
    jobs = JobModel()
    jobs.add(1, JobKind.EXPORT)
    with pytest.raises(ValueError, match="job 1"):
        jobs.add(1, JobKind.OPEN)
    with pytest.raises(ValueError, match="page"):
        jobs.add(2, JobKind.COLORIZE_PAGE)
