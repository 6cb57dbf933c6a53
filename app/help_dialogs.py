"""Help ▸ Keyboard shortcuts (generated from the window's actions) and Help ▸ User guide (the
Markdown guide shipped in resources/docs/, shown inside the app with its screenshots)."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl
from PySide6.QtGui import QAction, QImage, QKeySequence, QTextDocument
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMessageBox,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.core.resources import resource

from .images import image_pixmap
from .window_layout import fit_dialog

GUIDE = ("docs", "user-guide.md")  # under resources/: the one copy of the guide, in every install
IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
MENU_SEPARATOR = " ▸ "
NO_MENU = "Window"  # where an action with a key but no menu lives

# What the views do with the mouse and keys outside the menu actions (ZoomView, the reference
# panel, the page strip, the window's drag and drop); menu keys are read from the actions.
VIEW_INPUTS = (
    ("Canvas, Result, Compare", "Mouse wheel", "Zoom in or out around the pointer"),
    ("Canvas, Result, Compare", "Drag", "Pan a zoomed page"),
    ("Canvas", "Point at a tile", "Outlines the patch it came from in the References panel"),
    ("References", "Point at a patch", "Outlines its tile in the canvas and the page region it serves"),
    ("References", "Right-click a patch or a reference", "Pin or reject it, for this page or the whole chapter"),
    ("References ▸ Rejected", "Double-click", "Restore the patch"),
    ("Pages", "Up / Down (page strip focused)", "Previous / next page"),
    ("Pages", "Point at a failed page", "Shows why it failed"),
    ("Window", "Drop a chapter folder or CBZ/ZIP", "Opens it"),
    ("Window", "Drop images", "Adds them as colored references"),
)


def _plain(text: str) -> str:
    """A menu or action text without its mnemonic ampersands."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&")


def menu_paths(window) -> dict[QAction, str]:
    """Each action of the window's menu bar (submenus included) with its menu path, in menu order."""
    paths: dict[QAction, str] = {}

    def walk(menu, trail: list[str]) -> None:
        for action in menu.actions():
            if action.menu() is not None:
                walk(action.menu(), trail + [_plain(action.text())])
            elif not action.isSeparator():
                paths.setdefault(action, MENU_SEPARATOR.join(trail))

    for top in window.menuBar().actions():
        if top.menu() is not None:
            walk(top.menu(), [_plain(top.text())])
    return paths


def shortcut_rows(window) -> list[tuple[str, str, str]]:
    """(menu path, action text, its keys as the platform writes them) for every action of the
    window that has a shortcut: read when asked, so an action added anywhere is listed."""
    paths = menu_paths(window)
    actions = list(paths) + [a for a in window.findChildren(QAction) if a not in paths]
    return [
        (paths.get(action, NO_MENU), _plain(action.text()),
         ", ".join(key.toString(QKeySequence.SequenceFormat.NativeText) for key in action.shortcuts()))
        for action in actions if not action.shortcut().isEmpty()
    ]


def _table(headers: tuple[str, ...], rows) -> QTableWidget:
    table = QTableWidget(len(rows), len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.verticalHeader().hide()
    table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setWordWrap(True)
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(text))
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
    return table


def _close_button(dialog: QDialog) -> QDialogButtonBox:
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.close)
    return buttons


class ShortcutsDialog(QDialog):
    """The window's shortcuts, generated from its actions, and the views' mouse and keys."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard shortcuts")
        self.actions_table = _table(("Menu", "Command", "Shortcut"), shortcut_rows(window))
        self.views_table = _table(("Where", "Input", "Does"), VIEW_INPUTS)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Menu commands with a key (they work while the main window has focus):"))
        layout.addWidget(self.actions_table, 3)
        layout.addWidget(QLabel("In the views and panels:"))
        layout.addWidget(self.views_table, 2)
        layout.addWidget(_close_button(self))
        fit_dialog(self, QSize(760, 820))


class _GuideBrowser(QTextBrowser):
    """A text browser that serves the guide's pictures from memory, already scaled to fit."""

    def __init__(self) -> None:
        super().__init__()
        self.pictures: dict[str, QImage] = {}

    def loadResource(self, kind: int, url: QUrl):
        picture = self.pictures.get(url.toString()) if kind == QTextDocument.ResourceType.ImageResource else None
        return picture if picture is not None else super().loadResource(kind, url)


class GuideDialog(QDialog):
    """The user guide rendered from Markdown; its pictures are read from `folder` (the guide's
    own folder), and one that is absent (a wheel ships no screenshots) is shown as its words."""

    def __init__(self, text: str, folder: Path | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("ColorFlow user guide")
        fit_dialog(self, QSize(1000, 860))
        self.browser = _GuideBrowser()
        # inside the app only: no web browser or other program is ever started from here
        self.browser.setOpenExternalLinks(False)
        self.browser.setOpenLinks(False)
        self.browser.anchorClicked.connect(lambda url: url.fragment() and self.browser.scrollToAnchor(url.fragment()))
        max_width = max(320, self.width() - 80)
        self.browser.setMarkdown(IMAGE_LINK.sub(lambda m: self._picture(m, folder, max_width), text))
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser, 1)
        layout.addWidget(_close_button(self))

    def _picture(self, match: re.Match, folder: Path | None, max_width: int) -> str:
        """The image link kept (its picture loaded, scaled to fit) or, when absent, its words."""
        alt, link = match.groups()
        pixmap = image_pixmap(folder / link) if folder is not None and (folder / link).is_file() else None
        image = pixmap.toImage() if pixmap is not None else QImage()  # decoded by the engine, as every file
        if image.isNull():
            return f"*{alt}*"
        if image.width() > max_width:
            image = image.scaledToWidth(max_width, Qt.TransformationMode.SmoothTransformation)
        self.browser.pictures[link] = image
        return match.group(0)


def show_shortcuts(window) -> ShortcutsDialog:
    """Help ▸ Keyboard shortcuts: not modal, so it can stay open beside the work."""
    dialog = ShortcutsDialog(window)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    return dialog


def show_user_guide(window) -> GuideDialog | None:
    """Help ▸ User guide: the shipped guide, beside the window (not modal)."""
    guide = resource(*GUIDE)
    try:
        text = guide.read_text(encoding="utf-8")
    except OSError:
        QMessageBox.warning(window, "ColorFlow", "The user guide is missing from this installation; reinstall ColorFlow.")
        return None
    # a guide inside an archive has no folder to read pictures from: they show as their words
    dialog = GuideDialog(text, guide.parent if isinstance(guide, Path) else None, window)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    return dialog
