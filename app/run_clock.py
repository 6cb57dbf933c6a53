"""Elapsed time and time left of a colorize run, from the step and stage times measured so far (no Qt)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    """Seconds left; `complete` is False while a part of the page (before or after ICP) is not timed yet,
    so the real time is at least this."""

    seconds: float
    complete: bool


@dataclass
class _Page:
    started: float
    first_step: float | None = None  # when ICP step 1 ended
    last_step: float | None = None
    step: int = 0
    total: int = 0


def clock_text(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def describe_left(estimate: Estimate | None) -> str:
    if estimate is None:
        return "estimating…"
    return f"{'~' if estimate.complete else '≥'}{clock_text(estimate.seconds)} left"


class RunClock:
    """Times pages as they run: the mean ICP step, the time before ICP (models, retrieval) and after
    it (decode, GSRP, writing) of finished pages; estimates the running page and the pages queued."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.run_started: float | None = None
        self._pages: dict[str, _Page] = {}
        self._step_times: list[float] = []
        self._before: list[float] = []  # page start -> end of ICP step 1 (less one step)
        self._after: list[float] = []  # end of the last ICP step -> page end
        self._steps = 0  # ICP steps of a page, as the last page said

    # --- what happened ---------------------------------------------------------------------
    def page_started(self, page: str, now: float) -> None:
        if self.run_started is None:
            self.run_started = now
        self._pages[page] = _Page(now)

    def progress(self, page: str, stage: str, step: int, total: int, now: float) -> None:
        timing = self._pages.get(page)
        if timing is None or stage != "ICP":
            return
        if timing.last_step is not None and step == timing.step + 1:
            self._step_times.append(now - timing.last_step)
        elif step == 1:
            timing.first_step = now
        timing.last_step, timing.step, timing.total = now, step, total
        self._steps = total

    def page_ended(self, page: str, now: float, *, completed: bool) -> None:
        """A page left the run; only a page colored to the end teaches how long pages take."""
        timing = self._pages.pop(page, None)
        if timing is None or not completed or timing.first_step is None or timing.step != timing.total:
            return
        step = self.step_time() or 0.0
        self._before.append(max(0.0, timing.first_step - timing.started - step))
        self._after.append(now - timing.last_step)

    # --- what it tells ---------------------------------------------------------------------
    def elapsed(self, page: str, now: float) -> float | None:
        timing = self._pages.get(page)
        return None if timing is None else now - timing.started

    def run_elapsed(self, now: float) -> float | None:
        return None if self.run_started is None else now - self.run_started

    def step_time(self) -> float | None:
        return sum(self._step_times) / len(self._step_times) if self._step_times else None

    def page_total(self) -> float | None:
        """A page yet to start, start to end (the shortest time before ICP: model loading happens once)."""
        step = self.step_time()
        if step is None or not self._after:
            return None
        return min(self._before) + self._steps * step + sum(self._after) / len(self._after)

    def page_left(self, page: str, now: float) -> Estimate | None:
        step, timing = self.step_time(), self._pages.get(page)
        if step is None or timing is None:
            return None
        after = sum(self._after) / len(self._after) if self._after else None
        total = timing.total or self._steps
        if timing.step == 0:  # not denoising yet
            before = max(0.0, min(self._before) - (now - timing.started)) if self._before else 0.0
            seconds, complete = before + total * step, bool(self._before)
        elif timing.step < total:
            seconds, complete = max(0.0, (total - timing.step) * step - (now - timing.last_step)), True
        else:  # ICP done: decode, GSRP, writing
            seconds, complete = 0.0, True
            if after is not None:
                return Estimate(max(0.0, after - (now - timing.last_step)), True)
        if after is None:
            return Estimate(seconds, False)
        return Estimate(seconds + after, complete)

    def run_left(self, page: str | None, *, queued: int, now: float) -> Estimate | None:
        """The running page's time left plus `queued` pages after it."""
        running = self.page_left(page, now) if page is not None else Estimate(0.0, True)
        if running is None:
            return None
        if not queued:
            return running
        each, step = self.page_total(), self.step_time()
        if step is None:
            return None
        if each is None:  # a page after this one not timed to the end yet: at least its steps
            return Estimate(running.seconds + queued * self._steps * step, False)
        return Estimate(running.seconds + queued * each, running.complete)
