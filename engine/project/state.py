"""ChapterProject: the versioned JSON state of one chapter (pages, references, pins/rejects,
per-page status and outputs), validated on load, saved atomically with the previous good file
kept as a .bak, and never overwritten when unreadable."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from engine import __version__
from engine.rap.curation import Choices, Curation, RegionPin, Target
from engine.core.errors import InputError, ProjectFileError
from engine.project.format import (FORMAT, MAX_PROJECT_PAGES, PAGE_STATES, VERSION,
                                   check_output_path)
from engine.project.store import (BACKUP_FILE, PROJECT, PROJECT_FILE, LinkInProject, encode_project, load_file,
                                  restore_file, save_file)
from engine.project.accepted import PageAcceptance
from engine.project.variations import PageVariations, Variation, find


@dataclass
class PageState:
    """Status of one page in the project."""

    name: str
    source: str  # ImageSource.ref
    status: str = "pending"
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # kind -> POSIX path relative to project
    settings_key: str | None = None  # settings the outputs were made with (for --resume)
    unknown: dict[str, Any] = field(default_factory=dict)  # keys this version does not know: saved back
    # Its colored results, oldest first; outputs["colored"] and settings_key are the picked one's.
    variations: list[Variation] = field(default_factory=list)
    picked: int | None = None
    input_style: str | None = None  # the page's own input style (None: the chapter's)
    suggested: dict[str, str] | None = None  # auto's pick for the page: {"style", "reason"}
    accepted: int | None = None  # the variation the colorist accepted: a rolling reference

    def to_json(self) -> dict[str, Any]:
        known = {
            "name": self.name,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "outputs": dict(self.outputs),
            "settings_key": self.settings_key,
        }
        if self.variations or self.picked is not None:
            known.update(variations=[v.to_json() for v in self.variations], picked=self.picked)
        if self.input_style is not None:
            known["input_style"] = self.input_style
        if self.suggested is not None:
            known["suggested"] = dict(self.suggested)
        if self.accepted is not None:
            known["accepted"] = self.accepted
        return _with_unknown(known, self.unknown)

    def picked_variation(self) -> Variation | None:
        return find(self.variations, self.picked)


def _with_unknown(known: dict[str, Any], unknown: dict[str, Any] | None) -> dict[str, Any]:
    """An entry as saved: its known keys, then the keys a newer ColorFlow or another tool wrote."""
    return {**known, **{key: value for key, value in (unknown or {}).items() if key not in known}}


def _unknown_keys(model) -> dict[str, Any]:
    return dict(model.model_extra or {})


def _curation_unknown(curation) -> dict[tuple, dict[str, Any]]:
    """The unknown keys of a validated curation, by place: ("curation",), ("choices", scope) and
    ("target", scope, "pins"|"rejects", ref, patch), scope None for the chapter or a page name."""
    found = {("curation",): _unknown_keys(curation)}
    for scope, choices in [(None, curation.chapter), *curation.pages.items()]:
        found[("choices", scope)] = _unknown_keys(choices)
        for kind in ("pins", "rejects"):
            for target in getattr(choices, kind):
                found[("target", scope, kind, target.ref, target.patch)] = _unknown_keys(target)
    return {place: keys for place, keys in found.items() if keys}


def _curation_json(curation: Curation, unknown: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """Curation.to_json with the unknown keys of the file it came from put back in place."""
    def choices(scope: str | None, data: dict[str, Any]) -> dict[str, Any]:
        for kind in ("pins", "rejects"):
            data[kind] = [_with_unknown(t, unknown.get(("target", scope, kind, t["ref"], t["patch"]))) for t in data[kind]]
        return _with_unknown(data, unknown.get(("choices", scope)))

    data = curation.to_json()
    pages = {name: choices(name, c) for name, c in data["pages"].items()}
    for place, keys in unknown.items():  # a page's choices now empty still carry their unknown keys
        if place[0] == "choices" and place[1] is not None and place[1] not in pages:
            pages[place[1]] = {"pins": [], "rejects": [], **keys}
    return _with_unknown({"chapter": choices(None, data["chapter"]), "pages": pages}, unknown.get(("curation",)))


@dataclass
class ChapterProject(PageVariations, PageAcceptance):
    """State of one chapter project, stored as `<folder>/colorflow-project.json`."""

    folder: Path
    inputs: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    pages: list[PageState] = field(default_factory=list)
    curation: Curation = field(default_factory=Curation)
    settings: dict[str, Any] = field(default_factory=dict)
    series: dict[str, str] | None = None  # {"folder": the series library, "chapter": this chapter's name in it}
    unknown: dict[str, Any] = field(default_factory=dict)  # top-level keys this version does not know: saved back
    # Unknown keys inside the curation, by place (see _curation_unknown): saved back where they were.
    curation_unknown: dict[tuple, dict[str, Any]] = field(default_factory=dict)
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
        return _with_unknown({
            "format": FORMAT,
            "version": VERSION,
            "saved_by": f"colorflow {__version__}",
            "inputs": self.inputs,
            "references": self.references,
            "settings": self.settings,
            "pages": [p.to_json() for p in self.pages],
            "curation": _curation_json(self.curation, self.curation_unknown),
            **({"series": dict(self.series)} if self.series else {}),
        }, self.unknown)

    def save(self) -> None:
        """Atomic save: a crash mid-save leaves the previous file intact. The file it replaces
        becomes colorflow-project.json.bak; a damaged file on disk is never saved over."""
        with self.lock:
            data = encode_project(self.to_json())
        with self._save_lock:
            save_file(self.folder, PROJECT, data, self._on_disk)
            self._on_disk = data

    @classmethod
    def load(cls, folder: Path) -> "ChapterProject":
        """Read and validate `<folder>/colorflow-project.json` (any version up to VERSION).
        FileNotFoundError when there is none; ProjectFileError, naming the file and the field,
        when it is damaged, unsafe or newer; the file is never changed by loading."""
        folder = Path(folder)
        raw, project = load_file(folder, PROJECT, lambda model: cls._from_model(folder, model)._checked())
        project._on_disk = raw
        return project

    def _checked(self) -> "ChapterProject":
        self.check_outputs()
        return self

    @classmethod
    def _from_model(cls, folder: Path, model) -> "ChapterProject":
        def choices(c) -> Choices:
            return Choices([Target(t.ref, t.patch) for t in c.pins], [Target(t.ref, t.patch) for t in c.rejects],
                           [RegionPin(r.ref, tuple(r.box), r.query, r.rank) for r in c.regions])

        curation = Curation(choices(model.curation.chapter),
                            {name: choices(c) for name, c in model.curation.pages.items()})
        return cls(
            folder=folder,
            inputs=list(model.inputs),
            references=list(model.references),
            pages=[PageState(p.name, p.source, p.status, p.error, dict(p.outputs), p.settings_key, _unknown_keys(p),
                             [Variation(v.id, v.file, v.settings_key, v.seed, v.guidance, v.steps, v.override,
                                        _unknown_keys(v), v.retrieval and v.retrieval.model_dump())
                              for v in p.variations], p.picked,
                             p.input_style, p.suggested and p.suggested.model_dump(), p.accepted)
                   for p in model.pages],
            curation=curation,
            settings=model.settings.model_dump(exclude_unset=True),
            series=model.series and model.series.model_dump(),
            unknown=_unknown_keys(model),
            curation_unknown=_curation_unknown(model.curation),
        )

    @classmethod
    def restore_backup(cls, folder: Path) -> "ChapterProject":
        """Go back to the previous save: the damaged project file is kept beside it as
        `colorflow-project.json.damaged-<time>` and the .bak becomes the project file."""
        folder = Path(folder)
        raw, restored = restore_file(folder, PROJECT, lambda model: cls._from_model(folder, model)._checked())
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
        root = self.folder.resolve()  # once: resolving it per output was most of a large project's load
        for index, page in enumerate(self.pages):
            for kind, value in page.outputs.items():
                self._inside(value, f"pages[{index}].outputs.{kind} (page {page.name!r})", root)
            for number, variation in enumerate(page.variations):
                self._inside(variation.file, f"pages[{index}].variations[{number}].file (page {page.name!r})", root)

    def _inside(self, value: str, entry: str, root: Path | None = None) -> Path:
        try:
            check_output_path(value)
        except ValueError as exc:
            raise ProjectFileError(f"{self.path}: {entry}: {exc} (got {value!r})") from None
        root = root or self.folder.resolve()
        path = (root / value).resolve()
        if not path.is_relative_to(root):
            where = f"{self.path}: {entry}: {value!r} leads to {path}, outside the project folder"
            link = root
            for part in PurePosixPath(value).parts:  # name the link on the way: the user can remove it
                link = link / part
                if link.is_symlink():
                    raise LinkInProject(
                        f"{where}: {link} is a symbolic link; remove it (what it points to is not touched) "
                        "and open or run the project again: that page is colored again. "
                        "The project file was left untouched")
            raise ProjectFileError(where)
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
        dropped (its recorded outputs with it), never opened. InputError for more pages than a
        project file may hold (MAX_PROJECT_PAGES)."""
        if len(names_and_sources) > MAX_PROJECT_PAGES:
            raise InputError(f"{self.folder}: the chapter has {len(names_and_sources):,} pages, more than a project "
                             f"may hold ({MAX_PROJECT_PAGES:,}); color it in parts, one volume at a time")
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

    def set_page_style(self, name: str, style: str | None) -> None:
        """Give a page its own input style (None: back to the chapter's). Its next run colors it
        with that style (the resume key holds the style a page was colored with)."""
        from engine.project.page_styles import check_page_style

        with self.lock:
            self.page(name).input_style = check_page_style(style)

    def record_suggestion(self, name: str, style: str, reason: str) -> None:
        """Keep auto's pick for a page and why (shown to the user; applied by runs in auto)."""
        from engine.project.page_styles import check_page_style

        with self.lock:
            self.page(name).suggested = {"style": check_page_style(style), "reason": reason}

    def page_style(self, name: str, chapter: str):
        """The page's input style under the chapter's choice `chapter` (engine.project.page_styles)."""
        from engine.project.page_styles import page_style

        with self.lock:
            state = self.page(name)
            return page_style(state.input_style, chapter, state.suggested)

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
            if "colored" in outputs:  # the page's result: its picked variation made again, or its first
                self._result_is_picked(page)

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

    def choices_for(self, page: str, series: Choices | None = None):
        """The effective pins/rejects/region pins of one page under the series' choices (a copy, safe
        to use in another thread): the narrowest level decides (Curation.effective)."""
        with self.lock:
            return self.curation.effective(page, series)

    def set_region_pin(self, pin: RegionPin, page: str | None = None) -> None:
        """Place a region pin for a page (or the chapter), replacing the one in its slot."""
        with self.lock:
            self.curation.set_region(pin, page)

    def clear_region_pin(self, query: str, rank: int, page: str | None = None) -> None:
        with self.lock:
            self.curation.clear_region(query, rank, page)

    def pin(self, ref: str, patch: str | None = None, page: str | None = None) -> None:
        self.set_choice(Target(ref, patch), "pin", page)

    def reject(self, ref: str, patch: str | None = None, page: str | None = None) -> None:
        self.set_choice(Target(ref, patch), "reject", page)

    def clear_choice(self, ref: str, patch: str | None = None, page: str | None = None) -> None:
        self.set_choice(Target(ref, patch), None, page)
