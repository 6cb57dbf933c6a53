"""The window and its dialogs on the screen they open on: first-start size, the user's saved layout,
docks that scroll, long messages that wrap, a status bar that elides."""

from __future__ import annotations

import re

from PySide6.QtCore import QByteArray, QEvent, QPoint, QRect, QSize, Qt
from PySide6.QtGui import QGuiApplication, QPainter
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QMainWindow,
    QLabel,
    QScrollArea,
    QSizeGrip,
    QSizePolicy,
    QStatusBar,
    QStyle,
    QStyleOption,
    QWidget,
)

from .queue_panel import ElidedLabel

FIRST_SIZE = QSize(1400, 900)  # the most a first start asks for
SCREEN_SHARE = 0.9  # of the available screen, leaving room for the window frame
STATUS_LABEL_LEAST = 160  # px a permanent status bar label keeps when the window is narrow
WRAP_EVERY = 24  # characters: a longer run without spaces (a URL, a path) gets a break opportunity


def available_geometry(widget: QWidget, at: QPoint | None = None) -> QRect:
    """The usable area (without task bars) of the screen showing `widget`, or of the one holding `at`."""
    screen = (QGuiApplication.screenAt(at) if at is not None else None) or widget.screen()
    return (screen or QGuiApplication.primaryScreen()).availableGeometry()


def share_of(available: QRect, most: QSize) -> QSize:
    """`most`, shrunk to the screen's share where the screen is smaller."""
    return most.boundedTo(QSize(int(available.width() * SCREEN_SHARE), int(available.height() * SCREEN_SHARE)))


def _centred(size: QSize, available: QRect) -> QRect:
    box = QRect(QPoint(0, 0), size)
    box.moveCenter(available.center())
    return box


def place_window(window: QMainWindow, saved: dict) -> None:
    """The user's saved dock layout, and the saved geometry when it fits the screen it was on;
    otherwise the first-start size, centred."""
    if saved.get("docks"):
        window.restoreState(QByteArray.fromBase64(saved["docks"].encode("ascii")))
    box = QRect(*saved["geometry"]) if saved.get("geometry") else None
    available = available_geometry(window, box.center() if box is not None else None)
    if box is None or not available.contains(box):
        box = _centred(share_of(available, FIRST_SIZE), available)
    window.setGeometry(box)
    if saved.get("maximized"):
        window.setWindowState(window.windowState() | Qt.WindowState.WindowMaximized)


def saved_layout(window: QMainWindow) -> dict:
    """What place_window restores: the normal (not maximized) geometry and the docks' arrangement."""
    box = window.normalGeometry() if window.isMaximized() else window.geometry()
    return {"geometry": [box.x(), box.y(), box.width(), box.height()], "maximized": window.isMaximized(),
            "docks": bytes(window.saveState().toBase64()).decode("ascii")}


def fit_dialog(dialog: QWidget, preferred: QSize) -> None:
    """Open `dialog` at `preferred`, or at the screen's share where the screen is smaller."""
    dialog.resize(share_of(available_geometry(dialog), preferred))


def wrappable(text: str) -> str:
    """`text` with zero-width spaces inside long runs without spaces, where a word-wrapped label can
    break them: a URL or a path would otherwise widen its dialog past the screen."""
    return re.sub(r"\S{%d}(?=\S)" % WRAP_EVERY, lambda run: run.group(0) + "\u200b", text)


def status_label() -> QLabel:
    """A permanent status bar label (the model/device line) that elides in a narrow window rather
    than widen it; the whole text in its tooltip."""
    label = ElidedLabel()
    label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(STATUS_LABEL_LEAST)
    return label


class WrappingLabel(QLabel):
    """A word-wrapped plain-text label that also breaks long runs without spaces (URLs, paths)
    rather than widen its dialog; `text()` is the text as given."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setWordWrap(True)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._given = text
        super().setText(wrappable(text))

    def text(self) -> str:
        return self._given


class ScrollingPanel(QScrollArea):
    """A dock's panel that scrolls up and down on a short screen instead of setting the window's
    minimum height; as wide as the panel needs, so it never scrolls sideways."""

    def __init__(self, panel: QWidget) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(panel)
        panel.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        # QScrollArea sizes its panel again (word-wrapped heights included) only on its own layout
        # requests, not on the panel's: a label that grew longer would be cut off, not scrolled to
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            QApplication.postEvent(self, QEvent(QEvent.Type.LayoutRequest))
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        width = self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
        return QSize(width, super().minimumSizeHint().height())


class ElidingStatusBar(QStatusBar):
    """Shows a message too long for the room left of the permanent widgets (the model/device
    label) elided, with the whole message in the tooltip; `currentMessage()` stays whole."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.messageChanged.connect(self._update_tooltip)

    def _beside(self) -> list[QWidget]:
        """The widgets shown beside a message (while one is shown, QStatusBar hides all but its
        permanent ones), the size grip aside."""
        children = self.findChildren(QWidget, options=Qt.FindChildOption.FindDirectChildrenOnly)
        return [child for child in children if child.isVisible() and not isinstance(child, QSizeGrip)]

    def message_rect(self) -> QRect:
        """Where the message is drawn: up to the first widget shown beside it."""
        right = min([self.width() - 12] + [child.x() - 4 for child in self._beside()])
        return QRect(6, 0, max(0, right - 6), self.height())

    def shown_message(self) -> str:
        """The message as drawn: on one line, elided to the room it has."""
        one_line = " ".join(self.currentMessage().split())
        return self.fontMetrics().elidedText(one_line, Qt.TextElideMode.ElideRight, self.message_rect().width())

    def _update_tooltip(self, message: str = "") -> None:
        self.setToolTip(message if message and self.shown_message() != message else "")

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._update_tooltip(self.currentMessage())

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if not self.currentMessage():
            super().paintEvent(event)
            return
        # QStatusBar's own painting, with the message elided instead of cut off mid-letter
        painter = QPainter(self)
        option = QStyleOption()
        option.initFrom(self)
        self.style().drawPrimitive(QStyle.PrimitiveElement.PE_PanelStatusBar, option, painter, self)
        for child in self._beside():
            frame = QStyleOption()
            frame.rect = child.geometry().adjusted(-2, -1, 2, 1)
            frame.palette = self.palette()
            self.style().drawPrimitive(QStyle.PrimitiveElement.PE_FrameStatusBarItem, frame, painter, child)
        painter.setPen(self.palette().windowText().color())
        flags = Qt.AlignmentFlag.AlignLeading | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextSingleLine
        painter.drawText(self.message_rect(), int(flags), self.shown_message())
