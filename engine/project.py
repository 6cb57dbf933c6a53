"""ChapterProject: the versioned JSON state of one chapter (pages, references, pins/rejects,
per-page status and outputs), validated on load, saved atomically with the previous good file
kept as a .bak, and never overwritten when unreadable."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Sequence

from engine import __version__
from engine.rap.curation import Choices, Curation, Target
from engine.errors import ProjectFileError
from engine.io.fileio import atomic_write_bytes

PROJECT_FILE = "colorflow-project.json"
BACKUP_FILE = PROJECT_FILE + ".bak"  # the file as it was before the last save that changed it
FORMAT = "colorflow-project"
# 1: first release. 2: page outputs relative to the project folder, '/'-separated. The schema
# and the migrations from older versions are in engine.project_schema (pydantic, loaded on use).
VERSION = 2
PAGE_STATES = ("pending", "retrieved", "running", "done", "failed")


def check_output_path(value: str) -> str:
    """A recorded output: a relative POSIX path that cannot leave the project folder."""
    if not value or value.strip() in (".", "") or "\x00" in value:
        raise ValueError("must name a file in the project folder")
    if "\\" in value:
        raise ValueError("must be a relative path with '/' separators")
    windows = PureWindowsPath(value)
    if PurePosixPath(value).is_absolute() or windows.is_absolute() or windows.drive:
        raise ValueError("must be relative to the project folder, not an absolute path")
    if ".." in PurePosixPath(value).parts:
        raise ValueError("must stay inside the project folder (no '..')")
    return value


@dataclass
class PageState:
    """Status of one page in the project."""

    name: str
    source: str  # ImageSource.ref
    status: str = "pending"
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # kind -> POSIX path relative to project
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


class _NewerProject(ProjectFileError):
    """Saved by a newer ColorFlow: not damaged, so no backup advice."""


def _encode(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _parse(path: Path, raw: bytes, folder: Path):
    """The validated model (at the current version) of a project file's bytes, or ProjectFileError
    (no backup advice: the caller adds it)."""
    from engine.project_schema import NewerVersion, validate

    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProjectFileError(f"{path}: project file is damaged (not JSON: {exc})") from None
    except RecursionError:
        raise ProjectFileError(f"{path}: project file is damaged (JSON nested too deeply)") from None
    try:
        return validate(data, str(folder))
    except NewerVersion as exc:
        raise _NewerProject(f"{path}: {exc}; update ColorFlow. The file was left untouched") from None
    except ValueError as exc:
        raise ProjectFileError(f"{path}: project file is damaged: {exc}") from None


def _backup_advice(folder: Path) -> str:
    """What to tell a user whose project file is unusable: the .bak if it is good, else other ways."""
    backup = folder / BACKUP_FILE
    try:
        _parse(backup, backup.read_bytes(), folder)
    except FileNotFoundError:
        return "restore it from a backup or choose another output folder"
    except (OSError, ProjectFileError):
        return f"its backup {BACKUP_FILE} is unusable too; restore it from a backup or choose another output folder"
    return (f"the previous save is intact in {backup}: rename {BACKUP_FILE} to {PROJECT_FILE} "
            f"(or ChapterProject.restore_backup) to go back to it")


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
    _save_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _on_disk: bytes | None = field(default=None, repr=False, compare=False)  # bytes last loaded or saved

    @property
    def path(self) -> Path:
        return self.folder / PROJECT_FILE

    @property
    def backup_path(self) -> Path:
        return self.folder / BACKUP_FILE

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
        """Atomic save: a crash mid-save leaves the previous file intact. The file it replaces
        becomes colorflow-project.json.bak; a damaged file on disk is never saved over."""
        with self.lock:
            data = _encode(self.to_json())
        with self._save_lock:
            try:
                current = self.path.read_bytes()
            except FileNotFoundError:
                current = None
            if current == data:
                return  # nothing changed: the backup keeps the previous version
            if current is not None:
                if current != self._on_disk:  # changed behind our back: keep it only if it is good
                    try:
                        _parse(self.path, current, self.folder)
                    except ProjectFileError as exc:
                        raise ProjectFileError(f"{exc}; not saved over it (left untouched)") from None
                if not self.backup_path.exists() or self.backup_path.read_bytes() != current:
                    atomic_write_bytes(self.backup_path, current)
            atomic_write_bytes(self.path, data)
            self._on_disk = data

    @classmethod
    def load(cls, folder: Path) -> "ChapterProject":
        """Read and validate `<folder>/colorflow-project.json` (any version up to VERSION).
        FileNotFoundError when there is none; ProjectFileError, naming the file and the field,
        when it is damaged, unsafe or newer; the file is never changed by loading."""
        folder = Path(folder)
        path = folder / PROJECT_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise ProjectFileError(f"{path}: project file cannot be read ({exc}); left untouched") from exc
        try:
            project = cls._from_model(folder, _parse(path, raw, folder))
            project.check_outputs()
        except _NewerProject:
            raise
        except ProjectFileError as exc:
            raise ProjectFileError(f"{exc}. The file was left untouched; {_backup_advice(folder)}") from None
        project._on_disk = raw
        return project

    @classmethod
    def _from_model(cls, folder: Path, model) -> "ChapterProject":
        curation = Curation(
            Choices([Target(t.ref, t.patch) for t in model.curation.chapter.pins],
                    [Target(t.ref, t.patch) for t in model.curation.chapter.rejects]),
            {name: Choices([Target(t.ref, t.patch) for t in c.pins], [Target(t.ref, t.patch) for t in c.rejects])
             for name, c in model.curation.pages.items()},
        )
        return cls(
            folder=folder,
            inputs=list(model.inputs),
            references=list(model.references),
            pages=[PageState(p.name, p.source, p.status, p.error, dict(p.outputs), p.settings_key) for p in model.pages],
            curation=curation,
            settings=model.settings.model_dump(exclude_unset=True),
        )

    @classmethod
    def restore_backup(cls, folder: Path) -> "ChapterProject":
        """Go back to the previous save: the damaged project file is kept beside it as
        `colorflow-project.json.damaged-<time>` and the .bak becomes the project file."""
        folder = Path(folder)
        backup = folder / BACKUP_FILE
        try:
            raw = backup.read_bytes()
        except FileNotFoundError:
            raise ProjectFileError(f"{backup}: there is no backup to restore") from None
        restored = cls._from_model(folder, _parse(backup, raw, folder))
        restored.check_outputs()
        path = folder / PROJECT_FILE
        if path.exists():
            aside = folder / f"{PROJECT_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            atomic_write_bytes(aside, path.read_bytes())
        atomic_write_bytes(path, raw)
        restored._on_disk = raw
        return restored

    # --- outputs ------------------------------------------------------------------------
    def output_path(self, page: PageState | str, kind: str) -> Path | None:
        """Where a page's recorded output is, checked to lie inside the project folder (also
        through symlinks); None when it has none. ProjectFileError naming the entry otherwise."""
        state = self.page(page) if isinstance(page, str) else page
        value = state.outputs.get(kind)
        if not value:
            return None
        return self._inside(value, f"page {state.name!r} outputs.{kind}")

    def check_outputs(self) -> None:
        """Every recorded output lies inside the project folder (ProjectFileError otherwise)."""
        for index, page in enumerate(self.pages):
            for kind, value in page.outputs.items():
                self._inside(value, f"pages[{index}].outputs.{kind} (page {page.name!r})")

    def _inside(self, value: str, entry: str) -> Path:
        try:
            check_output_path(value)
        except ValueError as exc:
            raise ProjectFileError(f"{self.path}: {entry}: {exc} (got {value!r})") from None
        root = self.folder.resolve()
        path = (root / value).resolve()
        if not path.is_relative_to(root):
            raise ProjectFileError(f"{self.path}: {entry}: {value!r} leads to {path}, outside the project folder")
        return path

    def _relative(self, value: str | os.PathLike) -> str:
        """An output path as stored: relative to the folder, '/'-separated."""
        path = Path(value)
        if path.is_absolute():
            path = path.resolve().relative_to(self.folder.resolve())
        return check_output_path(PurePosixPath(*path.parts).as_posix())

    @classmethod
    def open_or_create(cls, folder: Path) -> "ChapterProject":
        """Load the project in `folder`, or start an empty one (not saved until `save`)."""
        try:
            return cls.load(folder)
        except FileNotFoundError:
            return cls(folder=Path(folder))

    # --- pages and references -----------------------------------------------------------
    def sync_pages(self, names_and_sources: Sequence[tuple[str, str]]) -> None:
        """Make the page list match the chapter, keeping the state of pages that stay. Pages are
        the chapter's own: a recorded page whose name and source are not a chapter page's is
        dropped (its recorded outputs with it), never opened."""
        with self.lock:
            known = {(p.name, p.source): p for p in self.pages}
            self.pages = [known.get((name, src)) or PageState(name, src) for name, src in names_and_sources]

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

    def record_outputs(self, name: str, outputs: dict[str, str | os.PathLike], status: str,
                       settings_key: str | None = None) -> None:
        """Record a finished page: its output files (inside the project folder; stored relative
        to it), status and (for colored pages) settings key."""
        with self.lock:
            page = self.page(name)
            page.outputs.update({kind: self._relative(value) for kind, value in outputs.items()})
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
