"""ChapterProject: the versioned JSON state of one chapter (pages, references, pins/rejects,
per-page status and outputs), saved atomically and never overwritten when unreadable."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from engine import __version__
from engine.rap.curation import Curation, Target
from engine.errors import ProjectFileError
from engine.io.fileio import atomic_write_json

PROJECT_FILE = "colorflow-project.json"
FORMAT = "colorflow-project"
VERSION = 1
PAGE_STATES = ("pending", "retrieved", "running", "done", "failed")


@dataclass
class PageState:
    """Status of one page in the project."""

    name: str
    source: str  # ImageSource.ref
    status: str = "pending"
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # kind -> path relative to project
    settings_key: str | None = None  # settings the outputs were made with (for --resume)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "outputs": dict(self.outputs),
            "settings_key": self.settings_key,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PageState":
        status = data.get("status", "pending")
        if status not in PAGE_STATES:
            raise ValueError(f"unknown page status {status!r}")
        return cls(
            name=str(data["name"]),
            source=str(data["source"]),
            status=status,
            error=data.get("error"),
            outputs=dict(data.get("outputs", {})),
            settings_key=data.get("settings_key"),
        )


@dataclass
class ChapterProject:
    """State of one chapter project, stored as `<folder>/colorflow-project.json`."""

    folder: Path
    inputs: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    pages: list[PageState] = field(default_factory=list)
    curation: Curation = field(default_factory=Curation)
    settings: dict[str, Any] = field(default_factory=dict)
    # The GUI edits choices while the worker thread records page status; both save.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def path(self) -> Path:
        return self.folder / PROJECT_FILE

    # --- persistence --------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "saved_by": f"colorflow {__version__}",
            "inputs": self.inputs,
            "references": self.references,
            "settings": self.settings,
            "pages": [p.to_json() for p in self.pages],
            "curation": self.curation.to_json(),
        }

    def save(self) -> None:
        """Atomic save: a crash mid-save leaves the previous file intact."""
        with self.lock:
            payload = self.to_json()
        atomic_write_json(self.path, payload)

    @classmethod
    def load(cls, folder: Path) -> "ChapterProject":
        folder = Path(folder)
        path = folder / PROJECT_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProjectFileError(
                f"{path}: project file is damaged and was left untouched ({exc}); "
                f"restore it from a backup or choose another output folder"
            ) from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ProjectFileError(f"{path}: not a ColorFlow project file; left untouched")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise ProjectFileError(
                f"{path}: saved by a newer ColorFlow (project version {version}, this one reads "
                f"up to {VERSION}); update ColorFlow. The file was left untouched"
            )
        try:
            return cls(
                folder=folder,
                inputs=[str(v) for v in data.get("inputs", [])],
                references=[str(v) for v in data.get("references", [])],
                pages=[PageState.from_json(p) for p in data.get("pages", [])],
                curation=Curation.from_json(data.get("curation", {})),
                settings=dict(data.get("settings", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProjectFileError(f"{path}: project file is damaged ({exc}); left untouched") from exc

    @classmethod
    def open_or_create(cls, folder: Path) -> "ChapterProject":
        """Load the project in `folder`, or start an empty one (not saved until `save`)."""
        try:
            return cls.load(folder)
        except FileNotFoundError:
            return cls(folder=Path(folder))

    # --- pages and references -----------------------------------------------------------
    def sync_pages(self, names_and_sources: Sequence[tuple[str, str]]) -> None:
        """Make the page list match the chapter, keeping the state of pages that stay."""
        with self.lock:
            known = {p.source: p for p in self.pages}
            self.pages = [known.get(src) or PageState(name, src) for name, src in names_and_sources]

    def page(self, name: str) -> PageState:
        for page in self.pages:
            if page.name == name:
                return page
        raise KeyError(f"no page named {name!r} in this project")

    def set_status(self, name: str, status: str, error: str | None = None) -> None:
        if status not in PAGE_STATES:
            raise ValueError(f"unknown page status {status!r}")
        with self.lock:
            page = self.page(name)
            page.status, page.error = status, error

    def record_outputs(self, name: str, outputs: dict[str, str], status: str, settings_key: str | None = None) -> None:
        """Record a finished page: its output files, status and (for colored pages) settings key."""
        with self.lock:
            page = self.page(name)
            page.outputs.update(outputs)
            page.status, page.error = status, None
            if settings_key is not None:
                page.settings_key = settings_key

    def add_references(self, refs: Sequence[str]) -> None:
        with self.lock:
            for ref in refs:
                if ref not in self.references:
                    self.references.append(ref)

    # --- curation -----------------------------------------------------------------------
    def set_choice(self, target: Target, state: str | None, page: str | None = None) -> None:
        """Pin ("pin"), reject ("reject") or clear (None) a target for a page or the chapter."""
        with self.lock:
            self.curation.set(target, state, page)

    def choice(self, target: Target, page: str | None = None) -> str | None:
        with self.lock:
            scope = self.curation.chapter if page is None else self.curation.pages.get(page)
            return scope.state(target) if scope else None

    def choices_for(self, page: str):
        """The effective pins/rejects of one page (a copy, safe to use in another thread)."""
        with self.lock:
            return self.curation.effective(page)

    def pin(self, ref: str, patch: str | None = None, page: str | None = None) -> None:
        self.set_choice(Target(ref, patch), "pin", page)

    def reject(self, ref: str, patch: str | None = None, page: str | None = None) -> None:
        self.set_choice(Target(ref, patch), "reject", page)

    def clear_choice(self, ref: str, patch: str | None = None, page: str | None = None) -> None:
        self.set_choice(Target(ref, patch), None, page)
