"""The open chapter project on the main thread: chapter, references, project state, and the
undoable pin/reject command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PySide6.QtGui import QUndoCommand

from engine.io.chapter import Chapter, ImageSource, list_images, open_chapter
from engine.io.fileio import refuse_symlink
from engine.io.imaging import IMAGE_EXTENSIONS
from engine.rap.curation import Target
from engine.core.errors import InputError
from engine.io.projectlock import ProjectLock
from engine.project.state import ChapterProject
from engine.project.store import PROJECT_FILE

from .vocabulary import choice_verb, patch_name, scope_name


def project_folder_for(path: Path, projects_dir: Path | None = None) -> Path:
    """Where a chapter's project lives: the folder itself if it is a project, else
    `<chapter>.colorflow/` in `projects_dir`, or beside the chapter folder or archive."""
    if (path / PROJECT_FILE).is_file():
        return path
    return (projects_dir or path.parent) / f"{path.stem if path.is_file() else path.name}.colorflow"


@dataclass
class ChapterDocument:
    project: ChapterProject
    chapter: Chapter
    references: list[ImageSource]

    lock: ProjectLock | None = None  # held while the chapter is open: another ColorFlow is refused

    @classmethod
    def open(cls, path: str | Path, projects_dir: str | Path | None = None) -> "ChapterDocument":
        """Open a chapter (folder, CBZ/ZIP) or a project folder; runs in the worker thread.
        The project's lock is held until `close`."""
        path = Path(path).expanduser().resolve()
        if not path.exists():
            raise InputError(f"{path}: does not exist")
        folder = project_folder_for(path, Path(projects_dir).expanduser() if projects_dir else None)
        refuse_symlink(folder)  # `<chapter>.colorflow` is ours to make: a link there would send the project elsewhere
        lock = ProjectLock(folder).acquire()
        try:
            return cls._open(path, folder, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open(cls, path: Path, folder: Path, lock: ProjectLock) -> "ChapterDocument":
        project = ChapterProject.open_or_create(folder)
        if folder == path:
            if not project.inputs:
                raise InputError(f"{path}: project has no chapter inputs")
            inputs = project.inputs
        else:
            inputs = [str(path)]
            project.inputs = inputs
        chapter = open_chapter(inputs)
        references = []
        for ref in project.references:
            source = ImageSource.parse(ref)
            # a shared project file names these paths: only image files are ever decoded
            if Path(source.member or source.path.name).suffix.lower() in IMAGE_EXTENSIONS and source.path.is_file():
                references.append(source)
        project.sync_pages([(s.name, s.ref) for s in chapter.sources])
        for source in chapter.sources:
            reason = chapter.errors.get(source.ref)
            if reason:
                project.set_status(source.name, "failed", reason)
        project.save()
        return cls(project, chapter, references, lock)

    def close(self) -> None:
        """Save and let other ColorFlow windows or runs use the project again."""
        try:
            self.project.save()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    @property
    def page_names(self) -> list[str]:
        return self.chapter.page_names

    def add_references(self, paths: list[str]) -> int:
        found = list_images(paths)
        known = {r.ref for r in self.references}
        new = [s for s in found if s.ref not in known]
        self.references.extend(new)
        self.project.add_references([s.ref for s in new])
        self.project.save()
        return len(new)


class ValueCommand(QUndoCommand):
    """An undoable edit that sets one value (a pin or reject, a page's style, a region pin): redo sets
    `new`, undo the value it had before; `_set` sets and saves it, then the window is told (`on_change`)."""

    def __init__(self, text: str, new, previous, on_change: Callable[[], None]) -> None:
        super().__init__(text)
        self.new, self.previous, self.on_change = new, previous, on_change

    def _set(self, value) -> None:
        raise NotImplementedError

    def redo(self) -> None:
        self._set(self.new)
        self.on_change()

    def undo(self) -> None:
        self._set(self.previous)
        self.on_change()


class ChoiceCommand(ValueCommand):
    """Pin/reject/clear a target for a page or the chapter; undo restores the previous state."""

    def __init__(self, document: ChapterDocument, target: Target, state: str | None, page: str | None,
                 on_change: Callable[[], None]) -> None:
        previous = document.project.choice(target, page)
        super().__init__(f"{choice_verb(state, previous)} {patch_name(target.ref, target.patch)} for {scope_name(page)}",
                         state, previous, on_change)
        self.document, self.target, self.page = document, target, page

    def _set(self, state: str | None) -> None:
        self.document.project.set_choice(self.target, state, self.page)
        self.document.project.save()
