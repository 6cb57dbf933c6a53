"""Pages ▸ Accept page / Un-accept page: the colorist marks a colored page as good (a rolling reference
for later pages and, in a chapter linked to a series, for later chapters), undoable; the page strip marks it."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from PySide6.QtGui import QUndoCommand

from engine.core.errors import ColorFlowError, printable
from engine.core.options import OPTIONS

from .document import ChapterDocument
from .series_sync import SeriesAccepted

ACCEPT_KEY = "A"
NOT_COLORED = "{page} is not colored yet: color it (Run ▸ Colorize page), then accept it"


class AcceptCommand(QUndoCommand):
    """Accept (`accepted` True: the picked result) or un-accept a page; undo puts back the variation
    that was accepted before, exactly, and the series library's copy with it."""

    def __init__(self, document: ChapterDocument, page: str, accepted: bool, on_change: Callable[[str], None]) -> None:
        super().__init__(f"{'Accept' if accepted else 'Un-accept'} page {page}")
        self.document, self.page, self.accepted, self.on_change = document, page, accepted, on_change
        self.previous = document.project.page(page).accepted
        self.series = SeriesAccepted(document.project, page)  # the library's side (a chapter linked to a series)

    def _set(self, variation: int | None) -> None:
        project = self.document.project
        with project.lock:
            project.page(self.page).accepted = variation
        project.save()
        problem = self.series.follow(project.accepted_pages())
        self.on_change(problem or "")

    def redo(self) -> None:
        project = self.document.project
        if self.accepted:
            project.accept(self.page)  # InputError for a page without a result: checked before the push
            self._set(project.page(self.page).accepted)
        else:
            self._set(None)

    def undo(self) -> None:
        self._set(self.previous)


class AcceptMixin:
    """Mixed into MainWindow (main thread only): the Pages menu's Accept/Un-accept and the strip's marks."""

    def _build_accept(self, menu) -> None:
        from .menus import add_action

        self.accept_action = add_action(self, menu, "Accept page", lambda: self.set_accepted(True), ACCEPT_KEY)
        self.accept_action.setToolTip("Mark this colored page as good: with rolling references on, later pages "
                                      "(and later chapters of its series) retrieve from it")
        self.unaccept_action = add_action(self, menu, "Un-accept page", lambda: self.set_accepted(False))
        menu.addSeparator()
        self.rolling_action = add_action(self, menu, "Use rolling references", self.set_rolling)
        self.rolling_action.setCheckable(True)
        self.rolling_action.setChecked(bool(self.settings.run.rolling_refs))
        self.rolling_action.setToolTip(OPTIONS["rolling_refs"].about.help)
        for signal in (self.page_strip.page_selected, self.undo_stack.indexChanged, self.document_opened,
                       self.run_finished, self.worker.job_finished):
            signal.connect(lambda *_: self.refresh_accepted())
        self.refresh_accepted()

    def page_can_be_accepted(self, name: str) -> tuple[bool, bool]:
        """(can accept, can un-accept) for a page: a done page with a picked result that is not being colored."""
        project = self.document.project
        with project.lock:
            state = project.page(name)
            colored = state.status == "done" and state.picked_variation() is not None
            accepted = state.accepted is not None
        idle = self.jobs.page_job(name) is None
        return colored and idle and state.accepted != state.picked, accepted and idle

    def refresh_accepted(self) -> None:
        """The strip's marks from the project (a re-run clears an acceptance), and the actions for the shown page."""
        can = (False, False)
        if self.document is not None:
            project = self.document.project
            with project.lock:
                accepted = [page.accepted is not None for page in project.pages]
            for index, on in enumerate(accepted):
                self.page_strip.set_accepted(index, on)
            name = self._current_page_name()
            if name is not None:
                can = self.page_can_be_accepted(name)
        self.accept_action.setEnabled(can[0])
        self.unaccept_action.setEnabled(can[1])

    def set_accepted(self, accepted: bool, page: str | None = None) -> None:
        """Accept (or un-accept) a page, the shown one by default, through the undo stack."""
        name = page or self._current_page_name()
        if name is None:
            return
        can_accept, can_unaccept = self.page_can_be_accepted(name)
        if not (can_accept if accepted else can_unaccept):
            state = self.document.project.page(name)
            said = (NOT_COLORED.format(page=printable(name)) if accepted and state.picked_variation() is None
                    else f"{printable(name)} is {'already' if accepted else 'not'} accepted"
                    + (" (or it is being colored)" if self.jobs.page_job(name) else "") + ": nothing changed")
            self.statusBar().showMessage(said, 8000)
            return
        try:
            self.undo_stack.push(AcceptCommand(self.document, name, accepted, self._accepted_changed))
        except ColorFlowError as exc:
            self.statusBar().showMessage(printable(str(exc)), 8000)

    def set_rolling(self, on: bool) -> None:
        """Pages ▸ Use rolling references (also in Edit ▸ Settings): accepted pages join the references."""
        self.settings.run = replace(self.settings.run, rolling_refs=on)
        self._save_settings()
        self._series_changed()

    def _accepted_changed(self, problem: str) -> None:
        self.refresh_accepted()
        if problem:
            self.statusBar().showMessage(problem, 10000)
        self._refresh_references()  # with rolling references, the accepted page joins (or leaves) the pool
        self.refresh_series()
