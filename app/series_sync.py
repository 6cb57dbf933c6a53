"""The series library's side of the window's edits, on the main thread: an accepted page copied into the
library (and taken out again), a reference moved between the chapter and the series, a whole-series pin."""

from __future__ import annotations

from pathlib import Path

from engine.core.errors import ColorFlowError, printable


def linked_library(project):
    """The series library the chapter is linked to (project.series), loaded; None when not linked.
    ColorFlowError (or OSError) when it cannot be read."""
    if not project.series:
        return None
    from engine.project.series import SeriesLibrary

    return SeriesLibrary.load(Path(project.series["folder"]))


class SeriesAccepted:
    """Keeps the library's copy of one page of a linked chapter in step with the project's acceptance."""

    def __init__(self, project, page: str) -> None:
        self.project, self.page = project, page

    def follow(self, accepted: list[tuple[str, Path]]) -> str | None:
        """Copy the page's accepted result into the library, or take it out when it is no longer accepted.
        Returns what went wrong, in words (the project's acceptance stands either way)."""
        if not self.project.series:
            return None
        try:
            library = linked_library(self.project)
            chapter = self.project.series["chapter"]
            path = dict(accepted).get(self.page)
            if path is not None:
                library.add_accepted(chapter, self.page, path)
            else:
                library.remove_accepted(chapter, self.page)
            library.save()
        except (ColorFlowError, OSError) as exc:
            return f"the series library was not updated: {printable(str(exc))}"
        return None
