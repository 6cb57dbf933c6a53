"""The main window's series memory (issue 25), mixed into MainWindow: Accept/Un-accept in the Pages menu,
the Series dock, File ▸ New series library… and Link chapter to series…, and the References panel's
levels (series, chapter, accepted pages), whole-series choices and moves between chapter and series."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QFileDialog, QInputDialog

from engine.core.errors import ColorFlowError, printable
from engine.rap.curation import Target

from .accept import AcceptMixin
from .series_commands import LinkSeriesCommand, MoveReferenceCommand, SeriesChoiceCommand
from .series_panel import NO_CHAPTER, NOT_LINKED, SeriesPanel, read_series
from .series_sync import linked_library
from .window_layout import ScrollingPanel


def chapter_name(project) -> str:
    """The chapter's name in a series: the one it has (linked before), else its folder's or archive's name
    (the project folder's, without .colorflow)."""
    if project.series:
        return project.series["chapter"]
    if project.inputs:
        return Path(project.inputs[0]).stem if Path(project.inputs[0]).suffix else Path(project.inputs[0]).name
    return project.folder.name.removesuffix(".colorflow")


class SeriesWindowMixin(AcceptMixin):
    """Mixed into MainWindow (main thread only); library files are small: read and saved here, images
    decoded for thumbnails in the worker."""

    def _build_series_ui(self, file_menu, pages_menu) -> None:
        """Called while the menus are built: the Pages menu, the Series dock and its File actions."""
        from .menus import add_action

        self._build_accept(pages_menu)
        self.series_panel = SeriesPanel()
        self.series_dock = dock = QDockWidget("Series", self)
        dock.setObjectName("Series")
        dock.setWidget(ScrollingPanel(self.series_panel))
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        references = next(d for d in self.findChildren(QDockWidget) if d.objectName() == "References")
        self.tabifyDockWidget(references, dock)
        references.raise_()
        quit_separator = file_menu.actions()[-2]  # File's last two: a separator, Quit
        self.new_series_action = add_action(self, file_menu, "New series library…", self.new_series_dialog)
        self.link_series_action = add_action(self, file_menu, "Link chapter to series…", self.link_series_dialog)
        for action in (self.new_series_action, self.link_series_action):
            file_menu.insertAction(quit_separator, action)
        levels = self.reference_panel.levels
        levels.series_choice, levels.move = self.request_series_choice, self.move_reference
        self._series_thumbs: dict[str, object] = {}  # ref -> QPixmap of series references and accepted pages
        self._thumbs_job: int | None = None  # the Series dock's view with its thumbnails
        self._pool_thumbs_jobs: set[int] = set()  # thumbnails of the References panel's other levels
        self._thumbs_asked: set[str] = set()
        self._pool_refs: list[str] = []  # what the References panel lists: the pool of every level
        self.worker.job_finished.connect(self._series_job_finished)
        self.document_opened.connect(self.refresh_series)

    # --- the library --------------------------------------------------------------------------------
    def series_library(self, quiet: bool = False):
        """The library the open chapter is linked to, or None (not linked, or it cannot be read: said)."""
        if self.document is None or not self.document.project.series:
            return None
        try:
            return linked_library(self.document.project)
        except (ColorFlowError, OSError) as exc:
            if not quiet:
                self.statusBar().showMessage(f"Series library: {printable(str(exc))}", 15000)
            return None

    def new_series_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "New series library: choose an empty folder")
        if folder:
            self.new_series(Path(folder))

    def new_series(self, folder: Path) -> None:
        """Make a series library in `folder`; the open chapter (if any) joins it."""
        from engine.project.series import SeriesLibrary

        try:
            SeriesLibrary.create(folder)
        except (ColorFlowError, OSError) as exc:
            self.statusBar().showMessage(f"No series library made: {printable(str(exc))}", 15000)
            return
        if self.document is not None:
            self.link_series(folder)
        else:
            self.statusBar().showMessage(f"Series library made in {folder}: open a chapter, then File ▸ Link chapter "
                                         "to series…", 10000)

    def link_series_dialog(self) -> None:
        if self.document is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Link chapter to series: choose the series library's folder")
        if not folder:
            return
        name, ok = QInputDialog.getText(self, "Link chapter to series", "This chapter's name in the series "
                                        "(chapters are ordered as they join):", text=chapter_name(self.document.project))
        if ok and name.strip():
            self.link_series(Path(folder), name.strip())

    def link_series(self, folder: Path, name: str | None = None) -> None:
        """The chapter joins the library in `folder` as `name` (default: chapter_name), undoably
        (series_commands.LinkSeriesCommand: registered there with the pages accepted so far, recorded in the project)."""
        name = name or chapter_name(self.document.project)
        try:
            self.undo_stack.push(LinkSeriesCommand(self.document, folder, name, self._series_changed))
        except FileNotFoundError:
            self.statusBar().showMessage(f"{folder} holds no series library: File ▸ New series library… makes one", 15000)
            return
        except (ColorFlowError, OSError) as exc:
            self.statusBar().showMessage(f"Not linked: {printable(str(exc))}", 15000)
            return
        library = self.series_library()
        if library is not None:
            self.statusBar().showMessage(f"{name} is now chapter {library.chapters.index(name) + 1} of the series "
                                         f"{library.name} (Ctrl+Z unlinks it)", 10000)

    def _series_changed(self) -> None:
        self._refresh_references()
        self.refresh_series()
        self.request_retrieval()

    # --- the Series dock and the References panel's levels --------------------------------------------
    def refresh_series(self) -> None:
        """The Series dock from the library (thumbnails decoded in the worker)."""
        self._thumbs_job = None  # a view still decoding for an earlier state (or chapter) is not shown
        self.link_series_action.setEnabled(self.document is not None)
        if self.document is None:
            self.series_panel.show_message(NO_CHAPTER)
            return
        library = self.series_library()
        if library is None:
            self.series_panel.show_message(NOT_LINKED)
            return
        self.series_panel.show_series(read_series(library, self.document.project.series["chapter"],
                                                  lambda source: None), self._series_thumbs)
        self._load_series_thumbs(library)

    def _load_series_thumbs(self, library) -> None:
        from . import jobs

        chapter = self.document.project.series["chapter"]

        def job(emit, cancel):
            return read_series(library, chapter, jobs.source_thumbnail)

        self._thumbs_job = self.worker.submit(job)  # not a job of the window's model: only this mixin waits for it

    def _series_job_finished(self, job_id: int, view) -> None:
        from .images import pil_to_pixmap

        if job_id in self._pool_thumbs_jobs and self.document is not None:
            self._pool_thumbs_jobs.discard(job_id)
            self._series_thumbs.update({ref: pil_to_pixmap(t) for ref, t in view.items() if t is not None})
            self._refresh_references()
        if job_id != self._thumbs_job or self.document is None:
            return
        self.series_panel.show_series(view)
        for ref, thumb in view.references + [(a[2], a[3]) for a in view.accepted]:
            if thumb is not None:
                self._series_thumbs[ref] = pil_to_pixmap(thumb)
        self._refresh_references()

    def show_reference_levels(self) -> None:
        """The References panel: every image the chapter's pages are retrieved from, each with its level."""
        from engine.project.reference_pool import build_pool

        doc = self.document
        if doc is None:
            return
        library = self.series_library(quiet=True)
        pool = build_pool(doc.project, doc.references, library, bool(self.settings.run.rolling_refs))
        series = pool.series_choices
        states = {}
        for entry in pool.entries:
            ref = entry.source.ref
            states[ref] = doc.project.choice(Target(ref)) or (series.state(Target(ref)) if series else None)
        self.rolling_action.setChecked(bool(self.settings.run.rolling_refs))  # Edit ▸ Settings may have changed it
        levels = self.reference_panel.levels
        levels.entries = {e.source.ref: (e.level, e.chapter, e.label) for e in pool.entries}
        levels.linked = library is not None
        thumbs = {**self._series_thumbs, **self._ref_thumbs}
        self._pool_refs = [e.source.ref for e in pool.entries]
        self.reference_panel.set_references(self._pool_refs, thumbs, states)
        missing = [e.source for e in pool.entries if e.source.ref not in thumbs and e.source.ref not in self._thumbs_asked]
        if missing:  # accepted pages, a library read before: their thumbnails decoded in the worker
            from . import jobs

            self._thumbs_asked.update(s.ref for s in missing)
            self._pool_thumbs_jobs.add(self.worker.submit(
                lambda emit, cancel: {s.ref: jobs.source_thumbnail(s) for s in missing}))

    # --- whole-series choices and moves (undoable) ------------------------------------------------------
    def request_series_choice(self, target: Target, state) -> None:
        """Pin/reject/clear a library file for the whole series (References panel's menus), undoable."""
        self._push_series(lambda: SeriesChoiceCommand(self.document, target, state, self._series_changed),
                          "Series library not changed")

    def move_reference(self, ref: str, to: str) -> None:
        """Move a reference to the series library ("series") or from it to this chapter ("chapter"), undoable."""
        self._push_series(lambda: MoveReferenceCommand(self.document, ref, to, self._series_changed), "Not moved")

    def _push_series(self, command, failed: str) -> None:
        if self.series_library() is None:
            return
        try:
            self.undo_stack.push(command())
        except (ColorFlowError, OSError) as exc:
            self.statusBar().showMessage(f"{failed}: {printable(str(exc))}", 15000)
