"""A page's own input style in the Pages dock: its menu (the chapter's, or one of the styles) with undo,
and auto's suggestion with its reason, applied only by a click on Use suggestion."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QLabel, QMenu, QPushButton, QVBoxLayout, QWidget

from engine.core.options import AUTO_STYLE, OPTIONS, InputStyle

from .document import ChapterDocument, ValueCommand
from .model_dialog import offer_line_art_download

CHAPTER_DEFAULT = "chapter default"


def style_label(style: str) -> str:
    """A style in the Settings dialog's words (engine/core/options.py choice labels)."""
    return OPTIONS["input_style"].choice_label(style)


def style_choices(chapter: str) -> list[tuple[str | None, str, str]]:
    """The menu of a page: (value, text, what it means): the chapter's style (None; its current value
    said), then each style."""
    return [(None, f"{CHAPTER_DEFAULT} ({chapter})", "the chapter's input style (Edit ▸ Settings)"),
            *((str(s), str(s), style_label(s)) for s in InputStyle)]


class PageStyleCommand(ValueCommand):
    """Give a page its own input style (None: the chapter's); undo gives back the one it had."""

    def __init__(self, document: ChapterDocument, page: str, style: str | None, on_change: Callable[[], None]) -> None:
        super().__init__(f"Input style of {page}: {style or CHAPTER_DEFAULT}", style,
                         document.project.page(page).input_style, on_change)
        self.document, self.page = document, page

    def _set(self, style: str | None) -> None:
        self.document.project.set_page_style(self.page, style)
        self.document.project.save()


class PageStylePanel(QWidget):
    """The current page's input style (a combo) and auto's suggestion for it (a line and a button)."""

    style_chosen = Signal(object)  # str, or None for the chapter's
    use_suggestion = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(6)  # the Pages dock keeps its width
        self.combo.setToolTip("This page's input style: the chapter's (Edit ▸ Settings ▸ Input style), or its own, "
                              "e.g. a line-art insert in a toned chapter. Undo with Ctrl+Z")
        self.combo.activated.connect(lambda index: self.style_chosen.emit(self.combo.itemData(index)))
        self.suggestion = QLabel()
        self.suggestion.setWordWrap(True)
        self.suggestion.setStyleSheet("color: #888; font-size: 11px;")
        self.use = QPushButton("Use suggestion")
        self.use.setToolTip("Give this page the suggested style (Ctrl+Z undoes it)")
        self.use.clicked.connect(self.use_suggestion.emit)
        layout = QVBoxLayout(self)  # one column: the dock stays as narrow as the thumbnails
        layout.setContentsMargins(4, 2, 4, 2)
        layout.addWidget(QLabel("Input style"))
        layout.addWidget(self.combo)
        layout.addWidget(self.suggestion)
        layout.addWidget(self.use)
        self.show_page(None, "screen", None)

    def show_page(self, own: str | None, chapter: str, suggested: dict | None) -> None:
        """A page's own style (None: the chapter's), the chapter's choice and auto's suggestion (None: none yet)."""
        self.combo.blockSignals(True)
        self.combo.clear()
        for value, text, meaning in style_choices(chapter):
            self.combo.addItem(text, value)
            self.combo.setItemData(self.combo.count() - 1, meaning, Qt.ItemDataRole.ToolTipRole)
        self.combo.setCurrentIndex(max(0, self.combo.findData(own)))
        self.combo.blockSignals(False)
        if suggested is None:
            self.suggestion.setText("Suggested: — (made when the page's canvas is shown)")
        else:
            self.suggestion.setText(f"Suggested: {suggested['style']} — {suggested['reason']}")
        # the style the page gets now is the suggestion already (its own, the chapter's, or auto's)
        applied = (own or chapter) == (suggested or {}).get("style") or (own is None and chapter == AUTO_STYLE)
        self.use.setEnabled(suggested is not None and not applied)


class PageStyleMixin:
    """Mixed into MainWindow (main thread only): the Pages dock's input style panel and the page strip's menu."""

    def _build_page_style(self) -> PageStylePanel:
        self.page_style_panel = panel = PageStylePanel()
        panel.setEnabled(False)  # until a page is shown
        panel.style_chosen.connect(self.set_page_style)
        panel.use_suggestion.connect(self.use_style_suggestion)
        self.page_strip.page_selected.connect(lambda _index: self._refresh_page_style())  # after select_page
        self.page_strip.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.page_strip.customContextMenuRequested.connect(self._page_style_menu)
        return panel

    def _current_page_name(self) -> str | None:
        if self.document is None or not 0 <= self.current_page < len(self.document.page_names):
            return None
        return self.document.page_names[self.current_page]

    def _refresh_page_style(self) -> None:
        name = self._current_page_name()
        self.page_style_panel.setEnabled(name is not None)
        if name is None:
            return
        with self.document.project.lock:
            state = self.document.project.page(name)
            own, suggested = state.input_style, state.suggested and dict(state.suggested)
        self.page_style_panel.show_page(own, str(self.settings.run.input_style), suggested)

    def set_page_style(self, style: str | None, page: str | None = None) -> None:
        """The page's own input style (None: the chapter's), through the undo stack; its canvas is made again.
        A line-art style with the official models offers its optional files when they are missing, as Settings does."""
        name = page or self._current_page_name()
        if name is None or self.document.project.page(name).input_style == style:
            return
        self.undo_stack.push(PageStyleCommand(self.document, name, style, self._page_style_changed))
        if style is not None:
            offer_line_art_download(self, self.worker, style, str(self.settings.run.models))

    def use_style_suggestion(self) -> None:
        name = self._current_page_name()
        suggested = name and self.document.project.page(name).suggested
        if suggested:
            self.set_page_style(suggested["style"], name)

    def _page_style_changed(self) -> None:
        self._refresh_page_style()
        self.request_retrieval()  # the canvas shows the page prepared with its style

    def _page_style_menu(self, position) -> None:
        """Right-click on a page: its Input style menu, Accept / Un-accept page (that page is selected first)."""
        item = self.page_strip.itemAt(position)
        if item is None or self.document is None:
            return
        self.page_strip.setCurrentItem(item)
        name = self._current_page_name()
        own = self.document.project.page(name).input_style
        menu = QMenu(self)
        styles = menu.addMenu("Input style")
        for value, text, meaning in style_choices(str(self.settings.run.input_style)):
            action = styles.addAction(f"{text} — {meaning}")
            action.setCheckable(True)
            action.setChecked(value == own)
            action.triggered.connect(lambda _checked=False, v=value, n=name: self.set_page_style(v, n))
        menu.addActions([self.accept_action, self.unaccept_action])  # app/accept.py: for the page selected above
        menu.exec(self.page_strip.viewport().mapToGlobal(position))
