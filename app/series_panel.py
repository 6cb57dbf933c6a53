"""The Series dock: the series library the chapter is linked to (its references, the accepted pages of
its chapters, its whole-series pins and rejects), and what to do when there is none."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QGroupBox,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .images import pil_to_pixmap
from .patch_views import marked_icon
from .reference_levels import blank
from .vocabulary import patch_name, short_name

THUMB = 64
NOT_LINKED = ("This chapter is not part of a series yet.\n\nFile ▸ New series library… makes one for it; "
              "File ▸ Link chapter to series… joins one made before. The series' references, pins and rejects "
              "then apply to every chapter of it, and pages you accept (Pages ▸ Accept page) help later chapters.")
NO_CHAPTER = "Open a chapter, then link it to a series (File ▸ Link chapter to series…)."


@dataclass
class SeriesView:
    """What the panel shows of a library, read in the worker (thumbnails decoded there)."""

    name: str
    folder: str
    chapter: str  # this chapter's name in the series
    chapters: list[str]
    references: list[tuple[str, Image.Image | None]]  # (absolute ref, thumbnail)
    accepted: list[tuple[str, str, str, Image.Image | None]]  # (chapter, page, absolute ref, thumbnail)
    pins: list[tuple[str, str | None]] = field(default_factory=list)  # (ref, patch)
    rejects: list[tuple[str, str | None]] = field(default_factory=list)


def read_series(library, chapter: str, thumb) -> SeriesView:
    """A SeriesView of `library` (engine.project.series.SeriesLibrary); `thumb(source)` gives a thumbnail or None."""
    choices = library.choices()
    return SeriesView(
        library.name, str(library.folder), chapter, list(library.chapters),
        [(source.ref, thumb(source)) for source in library.reference_sources()],
        [(page.chapter, page.page, page.source.ref, thumb(page.source)) for page in library.accepted()],
        [(t.ref, t.patch) for t in choices.pins], [(t.ref, t.patch) for t in choices.rejects])


class SeriesPanel(QWidget):
    """Read-only lists of the linked library; edits happen where the references are (References panel)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.references = QListWidget()
        self.references.setViewMode(QListView.ViewMode.IconMode)
        self.references.setIconSize(QSize(THUMB, THUMB))
        self.references.setResizeMode(QListView.ResizeMode.Adjust)
        self.references.setMovement(QListView.Movement.Static)
        self.references.setToolTip("The series library's references: every chapter of the series retrieves from "
                                   "them. References panel ▸ right-click ▸ Move to series / Move to chapter")
        self.accepted = QTreeWidget()
        self.accepted.setHeaderHidden(True)
        self.accepted.setIconSize(QSize(THUMB // 2, THUMB // 2))
        self.accepted.setToolTip("Pages accepted in each chapter of the series (Pages ▸ Accept page): with rolling "
                                 "references on, later chapters retrieve from them")
        self.choices = QListWidget()
        self.choices.setToolTip("Pinned and rejected for every chapter of the series (References panel ▸ "
                                "right-click ▸ For the whole series). A chapter's or a page's own choice wins")
        self._shown: dict[str, QPixmap] = {}  # thumbnails decoded before, by ref
        self.empty = QLabel(NO_CHAPTER)
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.empty.setStyleSheet("color: #888; padding: 8px;")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        self.boxes: list[QGroupBox] = []
        for title, widget in (("References (series)", self.references), ("Accepted pages, by chapter", self.accepted),
                              ("Pins and rejects (whole series)", self.choices)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(widget)
            splitter.addWidget(box)
            self.boxes.append(box)
        self.lists = splitter
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.empty, 1)
        layout.addWidget(splitter, 1)
        self.show_message(NO_CHAPTER)

    def show_message(self, text: str) -> None:
        """No library to list: why, and what to do."""
        self.title.setText("<b>Series</b>")
        self.empty.setText(text)
        self.empty.show()
        self.lists.hide()

    def show_series(self, view: SeriesView, shown: dict[str, QPixmap] | None = None) -> None:
        """List `view`; an image without a thumbnail in it shows the one in `shown` (ref -> pixmap) or a blank."""
        self._shown = shown or {}
        self.title.setText(f"<b>{view.name or 'Series'}</b> — this chapter is “{view.chapter}”, "
                           f"chapter {view.chapters.index(view.chapter) + 1 if view.chapter in view.chapters else '?'}"
                           f" of {len(view.chapters)}")
        self.title.setToolTip(view.folder)
        self.empty.hide()
        self.lists.show()
        self.references.clear()
        whole = {ref: state for state, targets in (("pin", view.pins), ("reject", view.rejects))
                 for ref, patch in targets if patch is None}  # a whole reference pinned or rejected: marked
        for ref, thumb in view.references:
            item = QListWidgetItem(self._icon(ref, thumb, whole.get(ref)), f"{short_name(ref)}\nseries")
            item.setData(Qt.ItemDataRole.UserRole, ref)
            item.setToolTip(f"{ref}\nlevel: series (every chapter retrieves from it)")
            self.references.addItem(item)
        self.boxes[0].setTitle(f"References (series): {len(view.references)}")
        self.accepted.clear()
        for chapter in view.chapters:
            pages = [a for a in view.accepted if a[0] == chapter]
            node = QTreeWidgetItem([f"{chapter} — {len(pages)} accepted" + (" (this chapter)" if chapter == view.chapter else "")])
            self.accepted.addTopLevelItem(node)
            for _chapter, page, ref, thumb in pages:
                child = QTreeWidgetItem([page])
                child.setIcon(0, self._icon(ref, thumb, whole.get(ref)))
                child.setData(0, Qt.ItemDataRole.UserRole, ref)
                child.setToolTip(0, ref)
                node.addChild(child)
            node.setExpanded(True)
        self.choices.clear()
        for verb, targets in (("pinned", view.pins), ("rejected", view.rejects)):
            for ref, patch in targets:
                item = QListWidgetItem(f"{verb}: {patch_name(ref, patch)}")
                item.setData(Qt.ItemDataRole.UserRole, (ref, patch, verb))
                item.setToolTip(ref)
                self.choices.addItem(item)
        if not self.choices.count():
            self.choices.addItem("none yet")

    def listed(self) -> dict:
        """What the panel lists, in words (for tests and checks by eye)."""
        return {
            "references": [self.references.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.references.count())],
            "accepted": {self.accepted.topLevelItem(i).text(0).split(" — ")[0]:
                         [self.accepted.topLevelItem(i).child(j).text(0) for j in range(self.accepted.topLevelItem(i).childCount())]
                         for i in range(self.accepted.topLevelItemCount())},
            "choices": [self.choices.item(i).text() for i in range(self.choices.count())],
        }

    def _icon(self, ref: str, thumb: Image.Image | None, state: str | None):
        pixmap = pil_to_pixmap(thumb) if thumb is not None else self._shown.get(ref)
        return marked_icon(blank(THUMB) if pixmap is None else pixmap, state, THUMB)  # blank: not decoded yet
