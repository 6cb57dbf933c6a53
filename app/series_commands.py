"""Undoable series edits of the window: linking the chapter to a series library, a whole-series pin/reject (saved
in the series library) and a reference moved between the chapter and the series library (undo puts the file and
the entries back)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtGui import QUndoCommand

from engine.io.chapter import ImageSource
from engine.rap.curation import Curation, Target

from .document import ChapterDocument, ValueCommand
from .series_sync import linked_library
from .vocabulary import choice_verb, patch_name, short_name

MOVED_FOLDER = "references"  # in the project folder: series references moved to the chapter are copied here


class LinkSeriesCommand(QUndoCommand):
    """The chapter joins the library in `folder` as `name`: registered there with the pages accepted so far (their
    copies written into the library), recorded in the project. Undo gives both files back what they listed
    before (the accepted copies made by the link deleted, the chapter's earlier link, if any, back)."""

    def __init__(self, document: ChapterDocument, folder: Path, name: str, on_change: Callable[[], None]) -> None:
        from engine.project.series import SeriesLibrary

        super().__init__(f"Link the chapter to a series as {name}")
        library = SeriesLibrary.load(folder)  # FileNotFoundError: no library there
        self.document, self.folder, self.name, self.on_change = document, library.folder, name, on_change
        self.library_before = library.entries()
        with document.project.lock:
            self.previous = dict(document.project.series) if document.project.series else None

    def redo(self) -> None:
        from engine.project.series import SeriesLibrary

        project, library = self.document.project, SeriesLibrary.load(self.folder)
        library.register_chapter(self.name)
        for page, path in project.accepted_pages():  # pages accepted before the link join the library too
            library.add_accepted(self.name, page, path)
        library.save()
        self._link({"folder": str(self.folder), "chapter": self.name})

    def undo(self) -> None:
        from engine.project.series import SeriesLibrary

        library = SeriesLibrary.load(self.folder)
        library.put_back(self.library_before, {})
        library.save()
        self._link(self.previous)

    def _link(self, series: dict | None) -> None:
        project = self.document.project
        with project.lock:
            project.series = dict(series) if series else None
        project.save()
        self.on_change()


class SeriesChoiceCommand(ValueCommand):
    """Pin/reject/clear a library file for the whole series; undo gives back the state it had."""

    def __init__(self, document: ChapterDocument, target: Target, state: str | None,
                 on_change: Callable[[], None]) -> None:
        previous = linked_library(document.project).choices().state(target)
        super().__init__(f"{choice_verb(state, previous)} {patch_name(target.ref, target.patch)} for the whole series",
                         state, previous, on_change)
        self.document, self.target = document, target

    def _set(self, state: str | None) -> None:
        library = linked_library(self.document.project)
        library.set_choice(self.target, state)
        library.save()


def _retarget(curation: Curation, old: str, new: str) -> Curation:
    """The chapter's and pages' pins, rejects and region pins of reference `old`, now naming `new`."""
    data = curation.to_json()
    for choices in [data["chapter"], *data["pages"].values()]:
        for kind in ("pins", "rejects", "regions"):
            for entry in choices.get(kind, []):
                if entry["ref"] == old:
                    entry["ref"] = new
    return Curation.from_json(data)


class MoveReferenceCommand(QUndoCommand):
    """Move a reference between the chapter (project.references) and the series library.

    To the series: the image is copied into the library and leaves the chapter's list; the chapter's
    pins and rejects of it follow it. To the chapter: the library's copy is copied into the project
    folder's references/ and added to the chapter; the library drops it. Undo restores the chapter's
    list, its curation and the library file as they were."""

    def __init__(self, document: ChapterDocument, ref: str, to: str, on_change: Callable[[], None]) -> None:
        super().__init__(f"Move {short_name(ref)} to the {to}")
        self.document, self.ref, self.to, self.on_change = document, ref, to, on_change
        project = document.project
        with project.lock:
            self.references = list(project.references)
            self.curation = Curation.from_json(project.curation.to_json())
        self.sources = list(document.references)
        library = linked_library(project)
        self.library_before = library.entries()
        # the image the move takes out of the library, for the undo to write back
        self.removed = {self._library_file(library): Path(ref).read_bytes()} if to == "chapter" else {}
        self.new_ref: str | None = None

    def redo(self) -> None:
        project, library = self.document.project, linked_library(self.document.project)
        if self.to == "series":
            source = next(s for s in self.sources if s.ref == self.ref)
            file = library.add_reference(source)
            self.new_ref = str(library.folder / file)
            kept = [r for r in self.references if r != self.ref]
            sources = [s for s in self.sources if s.ref != self.ref]
        else:
            copy = self._copy_to_project(library)
            library.remove_reference(self._library_file(library))
            self.new_ref = str(copy)
            kept = [*self.references, self.new_ref]
            sources = [*self.sources, ImageSource(copy)]
        library.save()
        with project.lock:
            project.references = kept
            project.curation = _retarget(self.curation, self.ref, self.new_ref)
        self.document.references = sources
        project.save()
        self.on_change()

    def undo(self) -> None:
        project = self.document.project
        library = linked_library(project)
        library.put_back(self.library_before, self.removed)  # the library's entries and files as they were
        library.save()
        with project.lock:
            project.references = list(self.references)
            project.curation = Curation.from_json(self.curation.to_json())
        self.document.references = list(self.sources)
        project.save()
        if self.to == "chapter" and self.new_ref:
            Path(self.new_ref).unlink(missing_ok=True)  # the copy made in the project folder
        self.on_change()

    def _library_file(self, library) -> str:
        return Path(self.ref).relative_to(library.folder).as_posix()

    def _copy_to_project(self, library) -> Path:
        """The library's image, copied (atomically) into the project folder under a free name."""
        from engine.io.fileio import atomic_write_bytes, ensure_real_folder

        folder = ensure_real_folder(self.document.project.folder / MOVED_FOLDER, self.document.project.folder)
        name = Path(self.ref).name
        target = folder / name
        count = 1
        while target.exists():
            count += 1
            target = folder / f"{Path(name).stem}-{count}{Path(name).suffix}"
        atomic_write_bytes(target, self.removed[self._library_file(library)])
        return target
