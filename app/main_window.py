"""The main window: page strip, canvas/result/compare views, reference panel, run queue."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap, QUndoStack
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.pipelines.session import EngineSession

from . import export_flow, jobs
from .canvas_view import ZoomView
from .compare_view import CompareView
from .document import ChapterDocument
from .images import image_pixmap, pil_to_pixmap
from .job_model import JobKind, JobModel
from .menus import add_action, build_menus
from .page_strip import PageStrip, status_legend
from .page_styles import PageStyleMixin
from .queue_panel import ElidedLabel, QueuePanel
from .curation_view import CurationMixin
from .run_queue import RunQueueMixin
from .window_jobs import WindowJobsMixin
from .page_states import NO_CHAPTER, NOT_COLORED, PageStatesMixin
from .series_window import SeriesWindowMixin
from .variations import VariationsMixin
from .reference_panel import ReferencePanel
from .model_dialog import offer_line_art_files
from .settings import AppSettings, SettingsDialog
from .settings_store import save_settings
from .window_layout import ElidingStatusBar, ScrollingPanel, place_window, saved_layout, status_label
from .worker import EngineWorker


class MainWindow(CurationMixin, RunQueueMixin, WindowJobsMixin, VariationsMixin, PageStatesMixin, PageStyleMixin, SeriesWindowMixin,
                 QMainWindow):
    """All widget work happens here, on the main thread; engine work goes through `worker`."""

    quit_wait_ms: int | None = None  # closing waits this long for the worker's step (None: until it ends)
    document_opened = Signal()
    retrieval_shown = Signal(int)
    run_finished = Signal()

    def __init__(self, settings: AppSettings, persist_settings: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("ColorFlow")
        self.setStatusBar(ElidingStatusBar())  # before any message: long ones are elided
        self.settings = settings
        self.persist_settings = persist_settings
        self.worker = EngineWorker(self)
        self.session = EngineSession()  # used only inside worker jobs
        self.document: ChapterDocument | None = None
        self.undo_stack = QUndoStack(self)
        self.current_page = -1
        self.jobs = JobModel()  # what this window has on the worker, by kind and page
        self._opening: str | None = None  # the chapter or project being opened
        self._view: jobs.RetrievalView | None = None  # the retrieval on the canvas
        self._live_page: str | None = None  # the page whose live preview is in the Result tab
        self._ref_thumbs: dict[str, QPixmap] = {}
        self._original: QPixmap | None = None
        self._showing_original = False
        self._build_ui()
        place_window(self, settings.window)  # the user's layout, or sized to this screen
        self._connect_worker()
        self.setAcceptDrops(True)
        self._update_actions()

    # --- construction -------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.canvas_view = ZoomView(NO_CHAPTER)
        self.result_view = ZoomView(NOT_COLORED)
        self.compare_view = CompareView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.canvas_view, "Canvas")
        self.tabs.addTab(self.result_view, "Result")
        self.tabs.addTab(self.compare_view, "Compare")
        # Shown while the tiny random-weight models are in use: their colors mean nothing.
        self.tiny_banner = QLabel(
            "Demo models in use: random weights, the colors are meaningless. "
            "Models ▸ Model manager downloads the official models for real colors."
        )
        self.tiny_banner.setWordWrap(True)
        self.tiny_banner.setStyleSheet("background: #f6c343; color: #222; padding: 6px; font-weight: bold;")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.page_caption = ElidedLabel("No chapter open")  # a long page name never widens the window
        self.page_caption.setStyleSheet("padding: 3px 8px; color: #ddd; background: #3a3a40;")
        layout.addWidget(self.tiny_banner)
        layout.addWidget(self.page_caption)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self._build_variations())  # below Result and Compare
        self.setCentralWidget(central)

        self.page_strip = PageStrip()
        self.page_strip.page_selected.connect(self.select_page)
        self.reference_panel = ReferencePanel()
        self.reference_panel.choice_requested.connect(self.request_choice)
        self.reference_panel.add_requested.connect(self.add_references_dialog)
        self.reference_panel.patch_hovered.connect(self._on_patch_hovered)
        self.reference_panel.selection_changed.connect(self._update_actions)
        self.canvas_view.hover_moved.connect(self._on_canvas_hover)
        pages = QWidget()
        pages_layout = QVBoxLayout(pages)
        pages_layout.setContentsMargins(0, 0, 0, 0)
        pages_layout.addWidget(self.page_strip, 1)
        pages_layout.addWidget(self._build_page_style())  # the selected page's own input style
        pages_layout.addWidget(status_legend())
        self.queue = QueuePanel()
        self._connect_queue()
        for title, widget, area in (
            ("Pages", pages, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("References", self.reference_panel, Qt.DockWidgetArea.RightDockWidgetArea),
            ("Queue", self.queue, Qt.DockWidgetArea.BottomDockWidgetArea),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(title)
            dock.setWidget(widget if widget is self.queue else ScrollingPanel(widget))  # scroll on a short screen
            self.addDockWidget(area, dock)
        self.show_folder_button = QPushButton("Show in folder")
        self.show_folder_button.hide()
        self.statusBar().addPermanentWidget(self.show_folder_button)
        self._exported: list[Path] = []
        self.show_folder_button.clicked.connect(lambda: self._exported and export_flow.show_in_folder(self._exported[0]))
        self.device_label = status_label()
        self.statusBar().addPermanentWidget(self.device_label)
        self._device_text = None  # the resolved device, once the worker has looked
        self._update_device_label()
        self.actions = build_menus(self)
        self._refresh_recent()

    def _update_device_label(self) -> None:
        from engine.models.sources import random_weights_kind, random_weights_notice

        run = self.settings.run
        device = self._device_text or f"{run.device} (resolved when a chapter opens)"
        self.device_label.setText(f"models: {run.models} | device: {device} | steps {run.steps}")
        kind = random_weights_kind(run.models)  # None, "tiny" or "official-size" ("random weights: timing only")
        self.tiny_banner.setVisible(kind is not None)
        if kind is not None:
            self.tiny_banner.setText(f"{random_weights_notice(kind)}. Models ▸ Model manager gets the real ones.")

    def _resolve_device(self) -> None:
        """Ask the worker which device `auto` (or the chosen one) really is."""
        choice = self.settings.run.device
        self._device_text = f"{choice} (checking…)"
        self._update_device_label()
        self._submit(JobKind.DEVICE, lambda emit, cancel: jobs.device_in_words(choice))

    def _update_actions(self) -> None:
        """Enable only what can apply now: no chapter, no selection, nothing queued."""
        if not hasattr(self, "actions"):  # still building the window
            return
        has_doc = self.document is not None
        self.reference_panel.set_chapter_open(has_doc)
        for action in self.actions.need_chapter:
            action.setEnabled(has_doc)
        for action in self.actions.need_selection:
            action.setEnabled(has_doc and self.reference_panel.has_selection())
        for action in self.actions.need_queue:
            action.setEnabled(bool(self.jobs.queued_pages()))
        failed = bool(self.failed_pages())  # the project's failures and jobs that failed before a page ran
        self.refresh_result_hint()  # queued, running, failed or not colored yet
        self.actions.retry_failed.setEnabled(failed)
        self.queue.retry_failed.setEnabled(failed)
        self.actions.export_default.setText(f"Export {self.settings.run.export_format.upper()}…")

    def fit_current(self, zoom: float | None = None) -> None:
        """View ▸ Fit to window, or Zoom in/out by `zoom`, in whichever view is shown."""
        widget = self.tabs.currentWidget()
        if hasattr(widget, "fit"):
            widget.fit() if zoom is None else widget.zoom_by(zoom)

    def _update_caption(self) -> None:
        if self.document is None or self.current_page < 0:
            self.page_caption.setText("No chapter open" if self.document is None else "")
            return
        name = self.document.page_names[self.current_page]
        status = self.page_strip.status(self.current_page)
        live = " — live preview" if self._live_page == name else ""
        self.page_caption.setText(f"Page {self.current_page + 1} / {len(self.document.page_names)}: {name} ({status}){live}")

    # --- opening ------------------------------------------------------------------------
    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open chapter folder")
        if path:
            self.open_path(path)

    def open_archive_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open chapter archive", "", "Comic archives (*.cbz *.zip)")
        if path:
            self.open_path(path)

    def open_path(self, path: str) -> None:
        if self.jobs.queued_pages():
            QMessageBox.information(self, "ColorFlow", "Cancel the running colorization before opening another chapter.")
            return
        self.statusBar().showMessage(f"Opening {path}…")
        projects_dir = self.settings.projects_dir
        self._opening = path
        self.show_opening(path)
        self._submit(JobKind.OPEN, lambda emit, cancel: jobs.open_document(path, projects_dir, emit))
        self.settings.remember(str(Path(path).expanduser().resolve()))
        self._save_settings()
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent:
            add_action(self, self.recent_menu, path, lambda _c=False, p=path: self.open_path(p))

    def _show_document(self, result: jobs.OpenResult) -> None:
        if self.document is not None:
            self.document.close()  # its project lock goes with it
        self.document = result.document
        self.undo_stack.clear()
        doc = self.document
        states = [p.status for p in doc.project.pages]
        errors = [p.error for p in doc.project.pages]
        thumbs = [pil_to_pixmap(t) if t is not None else QPixmap() for t in result.page_thumbs]
        self.page_strip.set_pages(doc.page_names, thumbs, states, errors)
        self._ref_thumbs = {ref: pil_to_pixmap(t) for ref, t in result.reference_thumbs.items()}
        self._refresh_references()
        self.setWindowTitle(f"ColorFlow — {doc.project.folder.name}")
        self.statusBar().showMessage(f"{len(doc.page_names)} pages, {len(doc.references)} references", 5000)
        self._update_actions()
        if self._device_text is None:  # torch loads with the chapter anyway; not before the window shows
            self._resolve_device()
        self.document_opened.emit()
        if doc.page_names:
            self.page_strip.setCurrentRow(0)

    def add_references_dialog(self) -> None:
        if self.document is None:
            return
        paths, _ = QFileDialog.getOpenFileNames(self, "Add colored references", "", "Images and archives (*.png *.jpg *.jpeg *.webp *.cbz *.zip)")
        if paths:
            self.add_references(paths)

    def add_references(self, paths: list[str]) -> None:
        document = self.document

        def job(emit, cancel):
            document.add_references(paths)
            return jobs.reference_thumbnails(document)

        self._submit(JobKind.ADD_REFERENCES, job)
        self.show_adding_references()

    # --- pages and retrieval ------------------------------------------------------------
    def _step_page(self, delta: int) -> None:
        if self.page_strip.count():
            self.page_strip.setCurrentRow(max(0, min(self.page_strip.count() - 1, self.current_page + delta)))

    def select_page(self, index: int) -> None:
        if self.document is None:
            return
        self.current_page = index
        self._show_result(index)
        self._update_caption()
        self.request_retrieval()

    def request_retrieval(self) -> None:
        if self.document is None or self.current_page < 0:
            return
        for superseded in self.jobs.active(JobKind.RETRIEVE):
            self._cancel_job(superseded.id)  # only the latest page matters
        if not self._pool_refs:  # no reference at any level yet: a normal first step, not a failure
            self.show_empty_canvas()
            return
        document, index, run, session = self.document, self.current_page, self.settings.run, self.session
        job = self._submit(JobKind.RETRIEVE, lambda emit, cancel: jobs.retrieve_view(session, document, index, run, emit),
                           document.page_names[index])
        self.show_retrieval_state(self.jobs.get(job))

    def _show_result(self, index: int) -> None:
        source = self.document.chapter.sources[index]
        self._original = None if source.ref in self.document.chapter.errors else image_pixmap(source)
        path = jobs.result_path(self.document, source.name)
        colored = image_pixmap(path)
        self._showing_original = False
        if self._live_page != source.name:  # a running page keeps its live preview
            self.result_view.set_pixmap(colored)
        self.compare_view.set_images(self._original, colored)
        self.tabs.setTabText(1, f"Result — {source.name}")
        self.tabs.setTabText(2, f"Compare — {source.name}")
        self.refresh_result_hint()
        self._refresh_variations()

    def toggle_original(self) -> None:
        """Space: flip the Result view between the colored page and the original."""
        if self.document is None or self.current_page < 0:
            return
        self.tabs.setCurrentIndex(1)
        self._showing_original = not self._showing_original
        path = jobs.result_path(self.document, self.document.page_names[self.current_page])
        colored = image_pixmap(path)
        shown = self._original if self._showing_original or colored is None else colored
        self.result_view.set_pixmap(shown, fit=False)
        self.statusBar().showMessage("original" if shown is self._original else "colored", 1500)

    # --- drag and drop: a chapter folder/archive opens it; images add references ---------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        chapters = [p for p in paths if Path(p).is_dir() or Path(p).suffix.lower() in (".cbz", ".zip")]
        images = [p for p in paths if p not in chapters]
        if chapters:
            self.open_path(chapters[0])
        elif images and self.document is not None:
            self.add_references(images)

    # --- dialogs, export, closing -------------------------------------------------------
    def export(self, fmt: str, destination: Path | None = None) -> None:
        """Ask about uncolored pages (CBZ), then where to write (remembered per project)."""
        if self.document is None:
            return
        from engine.io.export import default_title, export_project, uncolored_pages

        document = self.document
        missing = uncolored_pages(document.project, document.chapter) if fmt == "cbz" else []
        include = export_flow.ask_include_uncolored(self, missing, document.chapter)
        if include is None:  # never a silently short CBZ
            self.statusBar().showMessage("export cancelled: some pages are not colored yet", 8000)
            return
        if destination is None:
            destination = export_flow.choose_destination(self, document.project, fmt, default_title(document.project))
            if destination is None:
                return
        export_flow.remember_destination(document.project, destination, fmt)
        self.show_folder_button.hide()
        self._submit(JobKind.EXPORT, lambda emit, cancel: export_project(
            document.project, document.chapter, fmt, include_uncolored=include, destination=destination, emit=emit))

    def chapter_info_dialog(self) -> None:
        if self.document is not None:
            from .chapter_info import edit_chapter_info

            edit_chapter_info(self, self.document.project)

    def settings_dialog(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            before, self.settings.run = self.settings.run, dialog.result_settings()
            offer_line_art_files(self, self.worker, self.settings.run, before)  # a line-art style picked
            self.settings.projects_dir = dialog.chosen_projects_dir()
            self._save_settings()
            self._resolve_device()
            self._update_actions()
            self._series_changed()  # the References panel (rolling references on or off), the Series dock, the canvas

    def models_dialog(self) -> None:
        from .model_dialog import ModelDialog

        ModelDialog(self.worker, self, size=self.settings.run.size).exec()

    def _save_settings(self) -> None:
        if self.persist_settings:
            save_settings(self.settings)

    def report_settings_problem(self, problem: str) -> None:
        """A damaged settings file, said once at start-up: in the status bar and a message that does not block."""
        self.statusBar().showMessage(problem)
        box = QMessageBox(QMessageBox.Icon.Warning, "ColorFlow settings", problem, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _offer_backup(self, reason: str) -> None:
        answer = QMessageBox.question(
            self, "Damaged project", f"{reason}\n\nGo back to the previous good copy? The damaged file is kept beside it.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes,
        )
        if answer == QMessageBox.StandardButton.Yes:
            path, projects_dir = self._opening, self.settings.projects_dir
            self._submit(JobKind.OPEN, lambda emit, cancel: jobs.restore_and_open(path, projects_dir))

    def closeEvent(self, event) -> None:
        self.settings.window = saved_layout(self)
        self._save_settings()
        self.hide()  # at once, even while the worker ends its step
        if self.worker.shutdown(self.quit_wait_ms):  # not while a step still runs: the launcher ends the process then
            self._worker_stopped()  # the chapter closes, the Ray workers stop
        super().closeEvent(event)

