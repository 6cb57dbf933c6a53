"""Typed events the engine emits for long work; the CLI and the GUI worker consume them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from PIL import Image


@dataclass(frozen=True)
class Started:
    """A job began: `total` pages (or files) to process."""

    job: str
    total: int


@dataclass(frozen=True)
class Progress:
    """Step `step` of `total` within `stage` (e.g. "RAP", "ICP", "GSRP", "embed", "download")."""

    stage: str
    step: int
    total: int
    page: str | None = None


@dataclass(frozen=True)
class Preview:
    """A low-resolution look at work in progress."""

    page: str
    image: Image.Image


@dataclass(frozen=True)
class PageDone:
    page: str
    outputs: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PageFailed:
    page: str
    reason: str


@dataclass(frozen=True)
class Cancelled:
    """The job stopped at the user's request; `page` (if any) was left unfinished."""

    page: str | None = None


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not a failure (e.g. a page retried with less memory)."""

    message: str
    page: str | None = None


@dataclass(frozen=True)
class Finished:
    done: int
    failed: int


Event = Union[Started, Progress, Preview, PageDone, PageFailed, Cancelled, Notice, Finished]
EventSink = Callable[[Event], None]


class CancelToken:
    """Cooperative cancel flag: set from any thread, checked between steps and pages. Single pages
    of a run can be cancelled too (`cancel_page`): a run that colors pages side by side (Ray) skips
    them, or stops them within a step, and goes on with the others."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._pages: frozenset[str] = frozenset()  # replaced whole, so readers on other threads need no lock

    def cancel(self) -> None:
        self._flag.set()

    @property
    def cancelled(self) -> bool:
        return self._flag.is_set()

    def cancel_page(self, name: str) -> None:
        self._pages = self._pages | {name}

    @property
    def pages_cancelled(self) -> frozenset[str]:
        return self._pages

    def page_cancelled(self, name: str) -> bool:
        """The whole run, or this page, was cancelled."""
        return self.cancelled or name in self._pages


def ignore(_event: Event) -> None:
    """An EventSink that drops everything."""
