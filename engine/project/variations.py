"""A page's variations: each colored result kept in its own file with what it was made with (seed,
guidance, steps); one is picked, and the picked one is the page's result (outputs.colored)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from engine.core.errors import ProjectFileError
from engine.core.options import MAX_SEED
from engine.project.format import MAX_VARIATIONS


@dataclass
class Variation:
    """One colored result of a page."""

    id: int  # 1, 2, ...: never reused within a page, so a file name never means two results
    file: str  # POSIX path relative to the project folder
    settings_key: str | None = None  # the resume key it was made with
    seed: int | None = None  # None: not recorded (a result from before variations)
    guidance: float | None = None
    steps: int | None = None
    # Made by "Colorize again": while it is picked, the page keeps its seed and guidance whatever
    # the run's (a plain run's variation follows the run's settings).
    override: bool = False
    unknown: dict[str, Any] = field(default_factory=dict)  # keys this version does not know: saved back
    # What it was retrieved from (picks per query region, the sizes that place them, the accepted
    # pages it used): schema.RetrievalRecordModel; None for results from before the record.
    retrieval: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        known = {"id": self.id, "file": self.file, "settings_key": self.settings_key, "seed": self.seed,
                 "guidance": self.guidance, "steps": self.steps, "override": self.override}
        if self.retrieval is not None:
            known["retrieval"] = self.retrieval
        return {**known, **{key: value for key, value in self.unknown.items() if key not in known}}

    def made_with(self, made: dict[str, Any]) -> None:
        """Take what a run made it with: seed, guidance, steps, override, retrieval (those missing are not known)."""
        self.seed, self.guidance, self.steps = made.get("seed"), made.get("guidance"), made.get("steps")
        self.override = bool(made.get("override", False))
        self.retrieval = made.get("retrieval")


def next_id(variations: Iterable[Variation]) -> int:
    return max((v.id for v in variations), default=0) + 1


def find(variations: Iterable[Variation], variation_id: int | None) -> Variation | None:
    return next((v for v in variations if v.id == variation_id), None)


def drop_beyond_cap(variations: list[Variation], picked: int | None) -> list[Variation]:
    """Remove (in place) the oldest variations not picked until at most MAX_VARIATIONS remain;
    returns the removed ones."""
    dropped = []
    while len(variations) > MAX_VARIATIONS:
        oldest = next(v for v in variations if v.id != picked)
        variations.remove(oldest)
        dropped.append(oldest)
    return dropped


def next_unused_seed(used: Iterable[int | None], base: int) -> int:
    """The first seed after `base` that no variation of the page has used (after MAX_SEED: 0)."""
    taken = {seed for seed in used if seed is not None}
    seed = base
    while True:
        seed = seed + 1 if seed < MAX_SEED else 0
        if seed not in taken:
            return seed


class PageVariations:
    """ChapterProject's variation methods (mixed in; they use its lock, pages and path checks)."""

    def record_variation(self, name: str, file: str | os.PathLike, settings_key: str | None,
                         made_with: dict[str, Any], *, replace: int | None) -> list[str]:
        """Record a colored result of a page as a variation made with `made_with` (see Variation.made_with).
        `replace`, the picked variation (a plain run), is made again and stays picked; None adds a
        new variation beside the others, picked only when the page has no result yet. Beyond
        MAX_VARIATIONS the oldest one not picked is dropped: returns the files to delete
        (remove_files) once the project is saved."""
        with self.lock:
            page = self.page(name)
            file = self._relative(file)
            variation = find(page.variations, replace) if replace is not None else None
            if variation is None:
                variation = Variation(next_id(page.variations), file)
                page.variations.append(variation)
            if variation.id == page.accepted:  # the accepted result is colored over: no longer the one accepted
                page.accepted = None
            variation.file, variation.settings_key = file, settings_key
            variation.made_with(made_with)
            if replace is not None or page.picked_variation() is None:
                page.picked = variation.id
                page.status, page.error = "done", None
            self._show_picked(page)
            dropped = drop_beyond_cap(page.variations, page.picked)
            if any(v.id == page.accepted for v in dropped):
                page.accepted = None
            return [v.file for v in dropped if not self._still_recorded(v.file)]

    def pick_variation(self, name: str, variation_id: int) -> None:
        """Make a variation the page's result: the Result tab and every export show it."""
        with self.lock:
            page = self.page(name)
            if find(page.variations, variation_id) is None:
                raise KeyError(f"page {name!r} has no variation {variation_id}")
            page.picked = variation_id
            page.status, page.error = "done", None
            self._show_picked(page)

    def variation_path(self, page, variation: Variation) -> Path:
        """Where a variation's file is, checked to lie inside the project folder (ProjectFileError)."""
        return self._inside(variation.file, f"page {page.name!r} variation {variation.id}")

    def remove_files(self, files: Sequence[str]) -> None:
        """Delete dropped variations' files: inside the project folder only, never through a link,
        never a file a page still records."""
        for value in files:
            path = self.folder / value
            try:
                self._inside(value, "a dropped variation")
                with self.lock:
                    recorded = self._still_recorded(value)
                if not recorded and not path.is_symlink() and path.is_file():
                    path.unlink()
            except (OSError, ProjectFileError):
                pass  # left on disk: harmless, nothing reads it again

    def _result_is_picked(self, page) -> None:
        """outputs["colored"] just recorded (settings not told): the picked variation is it, or the first one."""
        variation = page.picked_variation()
        if variation is None:
            variation = Variation(next_id(page.variations), page.outputs["colored"])
            page.variations.append(variation)
            page.picked = variation.id
        if variation.id == page.accepted:
            page.accepted = None
        variation.file, variation.settings_key = page.outputs["colored"], page.settings_key
        variation.made_with({})

    @staticmethod
    def _show_picked(page) -> None:
        picked = page.picked_variation()
        if picked is not None:
            page.outputs["colored"], page.settings_key = picked.file, picked.settings_key

    def _still_recorded(self, value: str) -> bool:
        return any(value in p.outputs.values() or any(v.file == value for v in p.variations) for p in self.pages)
