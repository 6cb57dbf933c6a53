"""The main window: page strip, canvas/result/compare views, reference panel, run queue."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QPixmap, QUndoStack
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.rap.curation import Target
from engine.session import EngineSession

from . import jobs
from .canvas_view import ZoomView
from .compare_view import CompareView
from .document import ChapterDocument, ChoiceCommand
from .images import pil_to_pixmap, pixmap_with_exif
from .page_strip import PageStrip
from .queue_panel import QueuePanel
from .reference_panel import ReferencePanel
from .settings import AppSettings, SettingsDialog, save_settings
from .worker import EngineWorker


class MainWindow(QMainWindow):
    """All widget work happens here, on the main thread; engine work goes through `worker`."""

    document_opened = Signal()
    retrieval_shown = Signal(int)
    run_finished = Signal()

    def __init__(self, settings: AppSettings, persist_settings: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("ColorFlow")
        self.resize(1400, 900)
        self.settings = settings
        self.persist_settings = persist_settings
        self.worker = EngineWorker(self)
        self.session = EngineSession()  # used only inside worker jobs
        self.document: ChapterDocument | None = None
        self.undo_stack = QUndoStack(self)
        self.current_page = -1
        self._retrieval_job: int | None = None
        self._open_job: int | None = None
        self._refs_job: int | None = None
        self._export_job: int | None = None
        self._page_jobs: dict[int, str] = {}  # colorize job -> page name
        self._ref_thumbs: dict[str, QPixmap] = {}
        self._original: QPixmap | None = None
        self._showing_original = False
        self._build_ui()
        self._connect_worker()
        self.setAcceptDrops(True)

    # --- construction -------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.canvas_view = ZoomView("Open a chapter (File ▸ Open) and add colored references")
        self.result_view = ZoomView("Not colored yet — Run ▸ Colorize page (Ctrl+Enter)")
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
        layout.addWidget(self.tiny_banner)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self.page_strip = PageStrip()
        self.page_strip.page_selected.connect(self.select_page)
        self.reference_panel = ReferencePanel()
        self.reference_panel.choice_requested.connect(self.request_choice)
        self.reference_panel.add_requested.connect(self.add_references_dialog)
        self.queue = QueuePanel()
        self.queue.cancel_selected.clicked.connect(self._cancel_selected)
        self.queue.cancel_all.clicked.connect(self.cancel_all)
        self.queue.retry_failed.clicked.connect(self.colorize_failed)
        for title, widget, area in (
            ("Pages", self.page_strip, Qt.DockWidgetArea.LeftDockWidgetArea),
            ("References", self.reference_panel, Qt.DockWidgetArea.RightDockWidgetArea),
            ("Queue", self.queue, Qt.DockWidgetArea.BottomDockWidgetArea),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(title)
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
        self.device_label = QLabel()
        self.statusBar().addPermanentWidget(self.device_label)
        self._update_device_label()
        self._build_menus()

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self._action(file, "Open chapter folder…", self.open_folder_dialog, QKeySequence.StandardKey.Open)
        self._action(file, "Open CBZ/ZIP…", self.open_archive_dialog)
        self.recent_menu = file.addMenu("Open recent")
        self._action(file, "Add references…", self.add_references_dialog)
        export = file.addMenu("Export")
        for fmt in ("cbz", "png", "ora", "psd"):
            self._action(export, fmt.upper(), lambda _c=False, f=fmt: self.export(f))
        file.addSeparator()
        self._action(file, "Quit", self.close, QKeySequence.StandardKey.Quit)
        edit = bar.addMenu("&Edit")
        undo = self.undo_stack.createUndoAction(self, "Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.undo_stack.createRedoAction(self, "Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Y"), QKeySequence.StandardKey.Redo])
        edit.addActions([undo, redo])
        edit.addSeparator()
        self._action(edit, "Pin selected patch", lambda: self.reference_panel._apply_to_selection("pin"), "P")
        self._action(edit, "Reject selected patch", lambda: self.reference_panel._apply_to_selection("reject"), "R")
        self._action(edit, "Settings…", self.settings_dialog)
        run = bar.addMenu("&Run")
        self._action(run, "Colorize page", self.colorize_current, "Ctrl+Return")
        self._action(run, "Colorize all pages", self.colorize_all, "Ctrl+Shift+Return")
        self._action(run, "Retry failed pages", self.colorize_failed)
        # Esc is a reflex key in paint programs: it asks first; Ctrl+Esc (or the Queue's
        # button) cancels everything at once.
        self._action(run, "Cancel all…", self.ask_cancel_all, "Esc")
        self._action(run, "Cancel all now", self.cancel_all, "Ctrl+Esc")
        view = bar.addMenu("&View")
        self._action(view, "Toggle original / result", self.toggle_original, "Space")
        self._action(view, "Next page", lambda: self._step_page(1), "Right")
        self._action(view, "Previous page", lambda: self._step_page(-1), "Left")
        self._action(view, "Fit to window", lambda: self.tabs.currentWidget().fit() if hasattr(self.tabs.currentWidget(), "fit") else None, "Ctrl+0")
        models = bar.addMenu("&Models")
        self._action(models, "Model manager…", self.models_dialog)
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "About ColorFlow", lambda: QMessageBox.about(
            self, "ColorFlow", "Reference-based manga colorization (ColorFlow: retrieval, in-context "
            "diffusion colorization, guided super-resolution)."))
        self._refresh_recent()

    def _connect_worker(self) -> None:
        w = self.worker
        w.job_finished.connect(self._on_job_finished)
        w.job_failed.connect(self._on_job_failed)
        w.progress.connect(self._on_progress)
        w.preview.connect(self._on_preview)
        w.page_done.connect(self._on_page_done)
        w.page_failed.connect(self._on_page_failed)
        w.cancelled.connect(self._on_cancelled)

    def _update_device_label(self) -> None:
        from engine.sources import is_tiny

        run = self.settings.run
        self.device_label.setText(f"models: {run.models} | device: {run.device} | steps {run.steps}")
        self.tiny_banner.setVisible(is_tiny(run.models))

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
        if self.worker.busy and self._page_jobs:
            QMessageBox.information(self, "ColorFlow", "Cancel the running colorization before opening another chapter.")
            return
        self.statusBar().showMessage(f"Opening {path}…")
        projects_dir = self.settings.projects_dir
        self._open_job = self.worker.submit(lambda emit, cancel: jobs.open_document(path, projects_dir))
        self.settings.remember(str(Path(path).expanduser().resolve()))
        self._save_settings()
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent:
            self._action(self.recent_menu, path, lambda _c=False, p=path: self.open_path(p))

    def _show_document(self, result: jobs.OpenResult) -> None:
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

        self._refs_job = self.worker.submit(job)

    def _refresh_references(self) -> None:
        doc = self.document
        states = {ref: doc.project.choice(Target(ref)) for ref in doc.project.references}
        self.reference_panel.set_references([r.ref for r in doc.references], self._ref_thumbs, states)

    # --- pages and retrieval ------------------------------------------------------------
    def _step_page(self, delta: int) -> None:
        if self.page_strip.count():
            self.page_strip.setCurrentRow(max(0, min(self.page_strip.count() - 1, self.current_page + delta)))

    def select_page(self, index: int) -> None:
        if self.document is None:
            return
        self.current_page = index
        self._show_result(index)
        self.request_retrieval()

    def request_retrieval(self) -> None:
        if self.document is None or self.current_page < 0:
            return
        if self._retrieval_job is not None:
            self.worker.cancel(self._retrieval_job)  # only the latest page matters
        if not self.document.references:  # a normal first step, not a failure
            self.canvas_view.set_pixmap(None)
            self.canvas_view._placeholder.setText(
                "No colored references yet.\n\nAdd some with + Add references in the References panel, "
                "or drop colored images on this window: each page is then matched to them."
            )
            self.canvas_view._placeholder.setWordWrap(True)
            self.reference_panel.clear_page()
            return
        document, index, run, session = self.document, self.current_page, self.settings.run, self.session
        self._retrieval_job = self.worker.submit(lambda emit, cancel: jobs.retrieve_view(session, document, index, run))

    def _show_retrieval(self, view: jobs.RetrievalView) -> None:
        if view.page_index != self.current_page:
            return
        x0, y0, x1, y1 = view.page_box
        self.canvas_view.set_pixmap(pil_to_pixmap(view.canvas), QRectF(x0, y0, x1 - x0, y1 - y0))
        name = self.document.page_names[view.page_index]
        page_choices = self.document.project.curation.pages.get(name)
        states = {}
        if page_choices:
            states = {(t.ref, t.patch): "pin" for t in page_choices.pins} | {(t.ref, t.patch): "reject" for t in page_choices.rejects}
        patches = [[pil_to_pixmap(p) for p in row] for row in view.patch_thumbs]
        self.reference_panel.set_page_picks(view.picks, patches, states)
        if view.warnings:
            self.statusBar().showMessage("; ".join(view.warnings), 8000)
        self.retrieval_shown.emit(view.page_index)

    def _show_result(self, index: int) -> None:
        source = self.document.chapter.sources[index]
        self._original = None
        if source.ref not in self.document.chapter.errors:
            try:
                self._original = pixmap_with_exif(source.read_bytes())
            except OSError:
                pass
        path = jobs.result_path(self.document, source.name)
        colored = QPixmap(str(path)) if path else None
        self._showing_original = False
        self.result_view.set_pixmap(colored)
        self.compare_view.set_images(self._original, colored)

    def toggle_original(self) -> None:
        """Space: flip the Result view between the colored page and the original."""
        if self.document is None or self.current_page < 0:
            return
        self.tabs.setCurrentIndex(1)
        self._showing_original = not self._showing_original
        path = jobs.result_path(self.document, self.document.page_names[self.current_page])
        colored = QPixmap(str(path)) if path else None
        shown = self._original if self._showing_original or colored is None else colored
        self.result_view.set_pixmap(shown, fit=False)
        self.statusBar().showMessage("original" if shown is self._original else "colored", 1500)

    # --- pins and rejects (undoable) ----------------------------------------------------
    def request_choice(self, target: Target, state, whole_chapter: bool) -> None:
        if self.document is None:
            return
        page = None if whole_chapter else self.document.page_names[self.current_page]
        self.undo_stack.push(ChoiceCommand(self.document, target, state, page, self._choices_changed))

    def _choices_changed(self) -> None:
        self._refresh_references()
        self.request_retrieval()

    # --- running ------------------------------------------------------------------------
    def colorize_pages(self, names: list[str]) -> None:
        if self.document is None or not names:
            return
        document, run, session = self.document, self.settings.run, self.session
        if not self._page_jobs:  # a new run: overall progress starts again
            self.queue.overall.setRange(0, 0)
            self.queue.overall.setValue(0)
        for name in names:
            if name in self._page_jobs.values():
                continue
            self.queue.overall.setMaximum(self.queue.overall.maximum() + 1)
            job = self.worker.submit(
                lambda emit, cancel, n=name: session.colorize(document.chapter, document.references, document.project, run, {n}, emit, cancel)
            )
            self._page_jobs[job] = name
            item = QListWidgetItem(f"{name} — queued")
            item.setData(Qt.ItemDataRole.UserRole, job)
            self.queue.list.addItem(item)
            self.page_strip.set_status(document.page_names.index(name), "queued")
        self.queue.status.setText(f"{len(self._page_jobs)} page(s) queued")

    def colorize_current(self) -> None:
        if self.document is not None and self.current_page >= 0:
            self.colorize_pages([self.document.page_names[self.current_page]])

    def colorize_all(self) -> None:
        if self.document is not None:
            self.colorize_pages([p.name for p in self.document.project.pages if p.status != "done"])

    def colorize_failed(self) -> None:
        if self.document is not None:
            self.colorize_pages([p.name for p in self.document.project.pages if p.status == "failed"])

    def cancel_all(self) -> None:
        for job in list(self._page_jobs):
            self.worker.cancel(job)

    def ask_cancel_all(self) -> None:
        """Cancel every queued and running page after a confirmation."""
        if not self._page_jobs:
            return
        answer = QMessageBox.question(
            self, "Cancel", f"Cancel all {len(self._page_jobs)} queued page(s)? Pages already colored are kept.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.cancel_all()

    def _cancel_selected(self) -> None:
        item = self.queue.list.currentItem()
        if item is not None:
            self.worker.cancel(item.data(Qt.ItemDataRole.UserRole))

    def _queue_item(self, job: int) -> QListWidgetItem | None:
        for row in range(self.queue.list.count()):
            item = self.queue.list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == job:
                return item
        return None

    def _finish_page_job(self, job: int, status: str, error: str | None = None) -> None:
        name = self._page_jobs.pop(job, None)
        self.queue.overall.setValue(self.queue.overall.value() + 1)
        item = self._queue_item(job)
        if item is not None:
            self.queue.list.takeItem(self.queue.list.row(item))
        if name is not None and self.document is not None:
            index = self.document.page_names.index(name)
            self.page_strip.set_status(index, status, error)
            if index == self.current_page:
                self._show_result(index)
        if not self._page_jobs:
            self.queue.status.setText("Idle")
            self.queue.progress.reset()
            self.run_finished.emit()

    # --- worker signals -----------------------------------------------------------------
    def _on_progress(self, job: int, event) -> None:
        if job in self._page_jobs:
            self.queue.status.setText(f"{event.page or self._page_jobs[job]}: {event.stage} {event.step}/{event.total}")
            self.queue.progress.setMaximum(max(1, event.total))
            self.queue.progress.setValue(event.step)
            item = self._queue_item(job)
            if item is not None and event.stage in ("ICP", "GSRP"):
                item.setText(f"{self._page_jobs[job]} — {event.stage} {event.step}/{event.total}")
            if event.stage == "ICP" and event.step == 1 and self.document is not None:
                self.page_strip.set_status(self.document.page_names.index(self._page_jobs[job]), "running")

    def _on_preview(self, job: int, page: str, image) -> None:
        pixmap = pil_to_pixmap(image).scaled(self.queue.preview.size(), Qt.AspectRatioMode.KeepAspectRatio)
        self.queue.preview.setPixmap(pixmap)

    def _on_page_done(self, job: int, page: str, outputs: dict) -> None:
        self.statusBar().showMessage(f"{page} colored", 4000)

    def _on_page_failed(self, job: int, page: str, reason: str) -> None:
        self.statusBar().showMessage(f"{page} failed: {reason}", 8000)

    def _on_cancelled(self, job: int, page: str) -> None:
        self.statusBar().showMessage(f"{page or 'job'} cancelled", 4000)

    def _on_job_finished(self, job: int, result) -> None:
        if job == self._open_job:
            self._open_job = None
            self._show_document(result)
        elif job == self._retrieval_job:
            self._retrieval_job = None
            self._show_retrieval(result)
        elif job in self._page_jobs:
            name = self._page_jobs[job]
            state = self.document.project.page(name)
            self._finish_page_job(job, state.status if state.status != "running" else "pending", state.error)
        elif job == self._refs_job:
            self._ref_thumbs = {ref: pil_to_pixmap(t) for ref, t in result.items()}
            self._refresh_references()
            doc = self.document
            self.statusBar().showMessage(f"{len(doc.page_names)} pages, {len(doc.references)} references", 5000)
            self.request_retrieval()
        elif job == self._export_job:
            self.statusBar().showMessage(f"exported {len(result)} file(s) to {self.document.project.folder}", 8000)

    def _on_job_failed(self, job: int, reason: str) -> None:
        if job in self._page_jobs:
            if reason == "cancelled before it started":
                self._finish_page_job(job, "pending")
            else:
                self._finish_page_job(job, "failed", reason)
        elif job == self._retrieval_job:
            self._retrieval_job = None
            if reason != "cancelled before it started":
                self.canvas_view.set_pixmap(None)
                hint = "\n\nOpen Models ▸ Model manager to download them." if "models download" in reason else ""
                self.canvas_view._placeholder.setText(f"Retrieval failed: {reason}{hint}")
                self.canvas_view._placeholder.setWordWrap(True)
                self.reference_panel.clear_page()
        elif job == self._open_job:
            self._open_job = None
            QMessageBox.warning(self, "ColorFlow", f"Could not open the chapter:\n{reason}")
        elif reason != "cancelled before it started":  # superseded requests are dropped quietly
            self.statusBar().showMessage(reason, 8000)

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
    def export(self, fmt: str) -> None:
        if self.document is None:
            return
        from engine.io.export import export_project, uncolored_pages

        document = self.document
        include = False
        missing = uncolored_pages(document.project, document.chapter) if fmt == "cbz" else []
        if missing:  # never a silently short CBZ: ask
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            answer = QMessageBox.question(
                self, "Export CBZ",
                f"{len(missing)} of {len(document.chapter.sources)} pages are not colored yet ({shown}).\n\n"
                "Export the CBZ with the original black-and-white pages in their place?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                self.statusBar().showMessage("export cancelled: some pages are not colored yet", 8000)
                return
            include = True
        self._export_job = self.worker.submit(
            lambda emit, cancel: export_project(document.project, document.chapter, fmt, include_uncolored=include)
        )

    def settings_dialog(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.settings.run = dialog.result_settings()
            self.settings.projects_dir = dialog.chosen_projects_dir()
            self._save_settings()
            self._update_device_label()
            self.request_retrieval()

    def models_dialog(self) -> None:
        from .model_dialog import ModelDialog

        ModelDialog(self.worker, self).exec()

    def _save_settings(self) -> None:
        if self.persist_settings:
            save_settings(self.settings)

    def closeEvent(self, event) -> None:
        if self.document is not None:
            self.document.project.save()
        self.worker.shutdown()
        super().closeEvent(event)
