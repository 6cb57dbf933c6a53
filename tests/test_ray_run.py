"""Pass 2 of a chapter on Ray actors (engine.pipelines.ray_pass): the bytes of the local run, a lost worker's page
colored again elsewhere exactly once (past the retries: failed; no worker left: the run stops), resume after a
cancelled run, a worker's page error in the report, cancel within one step, and the runs Ray refuses.
One local Ray for the session (conftest `ray_local`, 2 CPUs) and its 2 workers (`ray_workers`), tiny models."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from dataclasses import fields

import pytest

from engine.core.errors import ColorFlowError, InputError, RunStopped
from engine.core.events import CancelToken, Cancelled, Notice, PageDone, PageFailed, Progress
from engine.core.options import RunSettings
from engine.io.chapter import list_images, open_chapter
from engine.io.demo import make_demo_chapter
from engine.pipelines.chapter import colorize_chapter
from engine.pipelines.families import load_families
from engine.pipelines.settings import pipeline_settings
from engine.project.state import ChapterProject

PAGES = [f"{n}.png" for n in range(1, 7)]  # make_demo_chapter's names
WRITTEN = [f"{n:03d}_{n}.png" for n in range(1, 7)]
FOUR = set(PAGES[:4])  # the pages of the tests that need no more


def settings(**more):
    chosen = {"models": "tiny", "steps": 1, "size": "256x256", "seed": 7, "input_style": "gray", **more}
    return pipeline_settings(RunSettings(**chosen))


@pytest.fixture(scope="module")
def chapter(tmp_path_factory):
    pages, refs = make_demo_chapter(tmp_path_factory.mktemp("ray-demo"), pages=6, refs=3, size=(160, 200))
    return open_chapter(pages), list_images([refs])


@pytest.fixture(scope="module")
def driver(tiny_models_dir, tmp_path_factory):
    """The driver's pipeline: it prepares and retrieves; no diffusion model is loaded here."""
    return load_families(str(tiny_models_dir), "cpu", cache_dir=tmp_path_factory.mktemp("driver-cache"))


@pytest.fixture(scope="module")
def executor(ray_workers):
    """Two CPU actors holding the tiny models (the session's, conftest `ray_workers`: one start for the Ray tests),
    for every test of the module; those that kill workers come last (a later test gets new workers)."""
    started = ray_workers()
    assert started.workers == 2 and started.devices == ["cpu", "cpu"]
    return started


def run(chapter, pipeline, folder, run_settings, **kwargs):
    """colorize_chapter, its events and the bytes of every page file written."""
    pages, refs = chapter
    events, sink = [], kwargs.pop("emit", None)

    def emit(event):
        events.append(event)
        if sink is not None:
            sink(event)

    report = colorize_chapter(pages, refs, pipeline, ChapterProject.open_or_create(folder), settings=run_settings, emit=emit,
                              **kwargs)
    return report, events, {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def local(chapter, tiny_models_dir, tmp_path_factory):
    """The same chapter colored in this process (its own models): the bytes and resume keys Ray must give."""
    folder = tmp_path_factory.mktemp("local")
    pipeline = load_families(str(tiny_models_dir), "cpu", cache_dir=tmp_path_factory.mktemp("local-cache"))
    report, _, written = run(chapter, pipeline, folder / "out", settings())
    assert report.done == PAGES and list(written) == WRITTEN
    return written, keys(folder / "out")


def keys(folder) -> dict[str, str]:
    return {page.name: page.settings_key for page in ChapterProject.load(folder).pages}


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_ray_refuses_runs_it_cannot_reproduce_before_any_worker_starts(chapter, driver, tmp_path):
    """--procedure official (global-RNG draws) and --batch-pages 2: InputError from colorize_chapter with an
    executor that was never started, before the project is written or an event sent."""
    from engine.pipelines.ray_pass import RayExecutor, check_ray_settings
    from engine.pipelines.ray_workers import WorkerSpec

    unstarted = RayExecutor(WorkerSpec(models="tiny"))
    for bad, words in ((settings(procedure="official"), "official"), (settings(batch_pages=2), "--batch-pages")):
        events = []
        with pytest.raises(InputError, match=words):
            colorize_chapter(*chapter, driver, ChapterProject(folder=tmp_path / "out"), settings=bad,
                             emit=events.append, executor=unstarted)
        with pytest.raises(InputError, match=words):
            check_ray_settings(bad)
        assert events == [] and not (tmp_path / "out").exists() and unstarted.workers == 0
    check_ray_settings(settings())  # ours, one page a call: accepted


def test_connect_says_how_to_install_ray_and_names_an_unreachable_cluster(ray_local, monkeypatch):
    from engine.pipelines.ray_cluster import STUDIO_HINT, connect, ray_installed

    assert 'pip install "colorflow-desktop[studio]"' in STUDIO_HINT
    start = time.perf_counter()
    with pytest.raises(ColorFlowError, match="127.0.0.1:9"):  # nothing listens there: said at once, not after minutes
        connect("127.0.0.1:9")
    assert time.perf_counter() - start < 15
    assert ray_installed()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the studio extra were not installed
    assert not ray_installed()
    with pytest.raises(InputError, match=r'pip install "colorflow-desktop\[studio\]"'):
        connect(None)


def test_one_actor_per_gpu_ray_sees_else_cpu_actors(ray_local, monkeypatch):
    """This Ray (2 CPUs, no GPU): CPU actors, --workers of them (1 by default), never more than its CPUs;
    a Ray seeing 4 GPUs: one GPU actor each, --workers caps it (the issue's one model-holding actor per GPU)."""
    from engine.pipelines.ray_cluster import actor_resources

    assert actor_resources(None) == (1, {"num_cpus": 1})
    assert actor_resources(2) == (2, {"num_cpus": 1})
    with pytest.raises(InputError, match="2 CPU"):
        actor_resources(3)
    monkeypatch.setattr(ray_local, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 4.0})
    assert actor_resources(None) == (4, {"num_gpus": 1})
    assert actor_resources(2) == (2, {"num_gpus": 1})
    assert actor_resources(2, cpu_only=True) == (2, {"num_cpus": 1})  # --device cpu: the GPUs are not asked for


def test_workers_the_cluster_cannot_place_are_said_not_waited_for_for_ever(ray_local, monkeypatch):
    """A Ray that counts 2 GPUs it cannot give (here: none exists; on a studio cluster: busy with another job):
    the workers are never placed; after the start limit the run stops with what to do, instead of hanging."""
    from engine.pipelines import ray_executor
    from engine.pipelines.ray_executor import RayExecutor
    from engine.pipelines.ray_workers import WorkerSpec

    monkeypatch.setattr(ray_local, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 2.0})
    monkeypatch.setattr(ray_executor, "WORKER_START_S", 1.0)
    start = time.monotonic()
    with pytest.raises(ColorFlowError) as refused:
        RayExecutor(WorkerSpec(models="tiny")).__enter__()
    assert time.monotonic() - start < 30
    said = str(refused.value)
    assert "no Ray worker was ready after 1 s (2 asked for, a GPU each)" in said and "ray status" in said, said


def test_a_worker_keeps_its_model_error_for_the_executor(tmp_path):
    """A models folder missing on a worker's machine: the worker keeps the loader's own error and `ready`
    raises it as it was (the executor raises it before any page); nothing is loaded."""
    from engine.core.errors import ModelError
    from engine.pipelines.ray_workers import PageWorker, WorkerSpec

    worker = PageWorker(WorkerSpec(models=str(tmp_path / "not-here"), device="cpu"))
    with pytest.raises(ModelError, match="not-here"):
        worker.ready()


def test_ray_run_writes_the_bytes_of_the_local_run(chapter, driver, executor, local, tmp_path):
    """6 pages on 2 CPU actors: every page file byte-identical to the local run's, the same resume keys,
    each page written once and both workers used."""
    written_locally, local_keys = local
    report, events, written = run(chapter, driver, tmp_path / "out", settings(), executor=executor)
    assert sorted(report.done) == PAGES and not report.failed and not report.cancelled
    assert written == written_locally
    assert keys(tmp_path / "out") == local_keys
    done = of(events, PageDone)
    assert sorted(e.page for e in done) == PAGES
    assert {e.info["worker"] for e in done} == {0, 1}
    icp = {e.page for e in of(events, Progress) if e.stage == "ICP"}
    assert icp == set(PAGES)  # the workers' progress reached this process's events
    for page in PAGES:  # prepared here once (no pass 1 on Ray), then waiting for a worker, then colored there
        stages = [e.stage for e in of(events, Progress) if e.page == page]
        assert stages.count("RAP") == 1 and stages.index("RAP") < stages.index("waiting for a worker") \
            < stages.index("ICP"), stages
    assert driver.loads == {}  # no diffusion model was loaded in the driver
    assert report.timings["ICP"] > 0 and report.timings["GSRP"] > 0  # the workers' stage seconds, in the report


def test_the_workers_color_page_1_while_later_pages_are_still_being_retrieved(chapter, driver, executor, local,
                                                                             tmp_path, monkeypatch):
    """No whole-chapter retrieval before the first page goes out: page 3's preparation here waits until a worker
    reports page 1's first ICP step (or 20 s); it is that step that lets it go on. The bytes stay the local run's."""
    seen_icp, opened_by_icp = threading.Event(), []
    prepare = driver.prepare

    def gated(page, inputs):
        if page.source.name == "3.png":
            opened_by_icp.append(seen_icp.wait(20))
        return prepare(page, inputs)

    def emit(event):
        if isinstance(event, Progress) and event.stage == "ICP" and event.page == "1.png":
            seen_icp.set()

    monkeypatch.setattr(driver, "prepare", gated)
    report, _, written = run(chapter, driver, tmp_path / "out", settings(), executor=executor, emit=emit, only=FOUR)
    assert opened_by_icp == [True]  # page 1 was on a worker while page 3 was prepared
    assert sorted(report.done) == sorted(FOUR) and written == {name: local[0][name] for name in WRITTEN[:4]}


def test_a_page_error_on_a_worker_reaches_the_report_with_the_page_named(chapter, driver, executor, local, tmp_path,
                                                                         monkeypatch):
    """Page 03's prepared page arrives broken on its worker (it breaks when unpickled there, never here):
    that page fails with the worker's own reason, the others are written with the local bytes."""
    from engine.preprocess.page import PreparedPage

    class BrokenOnTheWorker:
        def __init__(self, page):
            self.page = page

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            raise RuntimeError(f"page {self.page} arrived broken (simulated)")

    class Poisoned(PreparedPage):
        def __reduce__(self):  # how it travels to the worker
            return BrokenOnTheWorker, ("3.png",)

    prepare = driver.prepare

    def poisoning(page, inputs):
        prepared = prepare(page, inputs)
        if page.source.name != "3.png":
            return prepared
        return Poisoned(**{f.name: getattr(prepared, f.name) for f in fields(prepared)})

    monkeypatch.setattr(driver, "prepare", poisoning)
    report, events, written = run(chapter, driver, tmp_path / "out", settings(), executor=executor, only=FOUR)
    reason = "RuntimeError: page 3.png arrived broken (simulated)"
    assert report.failed == {"3.png": reason}
    assert [(e.page, e.reason) for e in of(events, PageFailed)] == [("3.png", reason)]
    assert sorted(report.done) == ["1.png", "2.png", "4.png"]
    assert written == {name: local[0][name] for name in ("001_1.png", "002_2.png", "004_4.png")}
    assert ChapterProject.load(tmp_path / "out").page("3.png").status == "failed"


def test_resume_after_a_cancelled_ray_run_colors_only_the_rest(chapter, driver, executor, local, tmp_path):
    """Cancelled once 2 pages are written; --resume skips every page written and colors the others only."""
    cancel = CancelToken()

    def cancel_after_two(event):
        if isinstance(event, PageDone) and len(first_done) == 1:
            cancel.cancel()
        if isinstance(event, PageDone):
            first_done.append(event.page)

    first_done = []
    first, events, _ = run(chapter, driver, tmp_path / "out", settings(), executor=executor, emit=cancel_after_two,
                           cancel=cancel, only=FOUR)
    assert first.cancelled and of(events, Cancelled)
    assert 2 <= len(first.done) < len(FOUR)  # (a page in flight when the cancel came may finish)
    again, events, written = run(chapter, driver, tmp_path / "out", settings(), executor=executor, resume=True,
                                 only=FOUR)
    assert sorted(again.skipped) == sorted(first.done)
    assert sorted(again.done) == sorted(FOUR - set(first.done))
    assert {e.page for e in of(events, Progress) if e.stage == "ICP"} == FOUR - set(first.done)
    assert written == {name: local[0][name] for name in WRITTEN[:4]}


def test_cancel_stops_every_worker_within_a_step(chapter, driver, executor, tmp_path):
    """20 steps a page; the cancel comes with the first step a worker reports: both pages in flight stop
    before their last step, nothing is written, every page is pending again."""
    cancel = CancelToken()

    def on_event(event):
        if isinstance(event, Progress) and event.stage == "ICP":
            cancel.cancel()

    report, events, written = run(chapter, driver, tmp_path / "out", settings(steps=20), executor=executor,
                                  emit=on_event, cancel=cancel)
    assert report.cancelled and report.done == [] and written == {}
    assert len(of(events, Cancelled)) == 1
    steps = {}
    for e in of(events, Progress):
        if e.stage == "ICP":
            steps[e.page] = max(steps.get(e.page, 0), e.step)
    assert steps and all(step < 20 for step in steps.values()), steps  # stopped mid-page, not at the page's end
    assert not [e for e in of(events, Progress) if e.stage == "GSRP"]
    assert [p.status for p in ChapterProject.load(tmp_path / "out").pages] == ["pending"] * len(PAGES)
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_pages_cancelled_on_their_own_stop_or_never_go_out_and_the_others_finish(chapter, driver, executor, local,
                                                                                  tmp_path):
    """The app's queue removing pages from a Ray run: page 4 is cancelled before it goes out (never colored),
    page 1 when its worker reports its first step (20 steps a page: it stops mid-page); the run goes on and
    pages 2 and 3 are written; both cancelled pages are pending, and the next run colors them (the workers' flag
    is per run)."""
    cancel = CancelToken()
    cancel.cancel_page("4.png")

    def on_event(event):
        if isinstance(event, Progress) and event.stage == "ICP" and event.page == "1.png":
            cancel.cancel_page("1.png")

    report, events, written = run(chapter, driver, tmp_path / "out", settings(steps=20), executor=executor,
                                  emit=on_event, cancel=cancel, only=FOUR)
    assert not report.cancelled and not report.failed
    assert sorted(report.done) == ["2.png", "3.png"] and sorted(written) == ["002_2.png", "003_3.png"]
    assert sorted(e.page for e in of(events, Cancelled)) == ["1.png", "4.png"]
    first = [e.step for e in of(events, Progress) if e.stage == "ICP" and e.page == "1.png"]
    assert first and max(first) < 20  # stopped within a step or so, not at the page's end
    assert not [e for e in of(events, Progress) if e.page == "4.png" and e.stage in ("ICP", "GSRP")]
    statuses = {p.name: p.status for p in ChapterProject.load(tmp_path / "out").pages if p.name in FOUR}
    assert statuses == {"1.png": "pending", "2.png": "done", "3.png": "done", "4.png": "pending"}
    again, _, _ = run(chapter, driver, tmp_path / "out", settings(steps=20), executor=executor, only=FOUR,
                      resume=True)
    assert not again.cancelled and sorted(again.done) == ["1.png", "4.png"]


def test_a_worker_killed_mid_run_leaves_every_page_written_exactly_once(chapter, driver, executor, local, tmp_path,
                                                                        ray_local, monkeypatch):
    """The worker that wrote the first page is killed before it gets the next one (its next call dies):
    that page goes to the other worker; every page written once, with the local bytes. Near the end: it kills one
    (no replacement here: the next test is about replacements)."""
    monkeypatch.setattr(executor, "replacements", 0)
    killed = []

    def kill_first_worker(event):
        if isinstance(event, PageDone) and not killed:
            kill_and_wait(ray_local, executor.actors[event.info["worker"]])
            killed.append(event.info["worker"])

    report, events, written = run(chapter, driver, tmp_path / "out", settings(), executor=executor,
                                  emit=kill_first_worker, only=FOUR)
    assert killed and sorted(report.done) == sorted(FOUR) and not report.failed
    assert Counter(e.page for e in of(events, PageDone)) == Counter(FOUR)  # each page once
    assert {e.info["worker"] for e in of(events, PageDone)[1:]} == {1 - killed[0]}  # the other did the rest
    lost = [e for e in of(events, Notice) if "worker" in e.message and "again" in e.message]
    assert len(lost) == 1 and lost[0].page in FOUR
    assert written == {name: local[0][name] for name in WRITTEN[:4]}
    variations = {page.name: len(page.variations) for page in ChapterProject.load(tmp_path / "out").pages}
    assert variations == {name: int(name in FOUR) for name in PAGES}  # one file each, none written twice
    assert executor.workers == 1


def test_a_lost_worker_is_replaced_and_the_new_one_colors_the_pages_left(chapter, driver, executor, local, tmp_path,
                                                                         ray_local):
    """Every live worker is killed once the first page is written: with no worker left the run does not stop, it
    waits for the workers started in the lost ones' places (each loads the models), which color every page left,
    each once, with the local bytes. Near the end: the replacements are live when it ends."""
    killed: list[int] = []

    def kill_live_workers(event):
        if isinstance(event, PageDone) and not killed:
            for number in executor.live():
                kill_and_wait(ray_local, executor.actors[number])
                killed.append(number)

    before = list(executor.actors)
    report, events, written = run(chapter, driver, tmp_path / "out", settings(), executor=executor,
                                  emit=kill_live_workers, only=FOUR)
    assert killed and sorted(report.done) == sorted(FOUR) and not report.failed
    assert Counter(e.page for e in of(events, PageDone)) == Counter(FOUR)  # each page once
    assert written == {name: local[0][name] for name in WRITTEN[:4]}
    starting = [e for e in of(events, Notice) if "is starting in place of lost worker" in e.message]
    joined = [e for e in of(events, Notice) if "took lost worker" in e.message]
    assert len(starting) == len(killed) and 1 <= len(joined) <= len(killed)
    after_kill = [e.info["worker"] for e in of(events, PageDone)[1:]]
    assert after_kill and set(after_kill) <= set(killed)  # colored by the new workers, in the lost ones' places
    while executor.starting:  # a second replacement may still be loading: let it in, so the next test has it
        ready, _ = ray_local.wait(list(executor.starting), num_returns=1, timeout=60)
        assert ready and executor.revive(ready[0])[1] is None
    assert all(executor.actors[n] is not before[n] for n in killed) and set(killed) <= set(executor.live())


def kill_and_wait(ray, actor) -> None:
    """Kill a worker and wait until Ray says it is dead (so the run's next call to it surely fails)."""
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)


def test_a_page_whose_worker_is_lost_past_the_retries_fails_and_no_worker_left_stops_the_run(
        chapter, driver, executor, tmp_path, ray_local, monkeypatch):
    """No retries allowed; every worker killed once a page is written: the page sent next (to the dead worker
    that wrote it) fails naming the lost worker; with no worker left the run stops (RunStopped) with the
    written pages kept and the pages never sent still pending. Last: it leaves no worker."""
    monkeypatch.setattr(executor, "max_retries", 0)
    monkeypatch.setattr(executor, "replacements", 0)

    def kill_every_worker(event):
        if isinstance(event, PageDone) and executor.workers:
            for actor in executor.actors:
                kill_and_wait(ray_local, actor)

    with pytest.raises(RunStopped, match="every Ray worker was lost") as stopped:
        run(chapter, driver, tmp_path / "out", settings(), executor=executor, emit=kill_every_worker)
    report = stopped.value.report
    assert report.done and set(report.done) <= {"1.png", "2.png"}  # the first two sent (one may end before its kill)
    assert report.failed and set(report.failed) <= set(PAGES[:4]) - set(report.done)  # one a worker, at most
    assert all(reason.startswith("Ray worker lost once while coloring this page") for reason in report.failed.values())
    project = ChapterProject.load(tmp_path / "out")
    assert [project.page(name).status for name in ("5.png", "6.png")] == ["pending", "pending"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"00{n[0]}_{n}" for n in report.done]
    assert executor.workers == 0
