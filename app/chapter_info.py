"""File ▸ Chapter info: the title, series, number and reading direction written into the CBZ's
ComicInfo.xml, kept in the project."""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLineEdit, QStyle, QStyleOptionFrame

# ComicInfo's Manga values, as readers understand them
READING = (
    ("Manga, right to left", "YesAndRightToLeft"),
    ("Manga, left to right", "Yes"),
    ("Not manga (left to right)", "No"),
)


GUESSED = "guessed from the title when empty"
LINE_EDIT_MARGIN = 2  # px QLineEdit keeps on each side of its text inside the style's contents box


def show_placeholder_whole(edit: QLineEdit) -> None:
    """At least as wide as the field needs to show its placeholder uncut."""
    text = edit.fontMetrics().horizontalAdvance(edit.placeholderText())
    margins = edit.textMargins()
    contents = QSize(text + 2 * LINE_EDIT_MARGIN + margins.left() + margins.right(), edit.sizeHint().height())
    option = QStyleOptionFrame()
    edit.initStyleOption(option)
    edit.setMinimumWidth(edit.style().sizeFromContents(QStyle.ContentsType.CT_LineEdit, option, contents, edit).width())


class ChapterInfoDialog(QDialog):
    def __init__(self, settings: dict, default_title: str, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Chapter info")
        self.title = QLineEdit(str(settings.get("title") or default_title))
        self.series = QLineEdit(str(settings.get("series") or ""))
        self.number = QLineEdit(str(settings.get("number") or ""))
        for guessed in (self.series, self.number):
            guessed.setPlaceholderText(GUESSED)
            show_placeholder_whole(guessed)
        self.reading = QComboBox()
        for label, value in READING:
            self.reading.addItem(label, value)
        current = settings.get("manga") or "YesAndRightToLeft"
        self.reading.setCurrentIndex(max(0, self.reading.findData(current)))
        form = QFormLayout(self)
        form.addRow("Title", self.title)
        form.addRow("Series", self.series)
        form.addRow("Number", self.number)
        form.addRow("Reading direction", self.reading)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def values(self) -> dict[str, str]:
        return {
            "title": self.title.text().strip(),
            "series": self.series.text().strip(),
            "number": self.number.text().strip(),
            "manga": self.reading.currentData(),
        }


def edit_chapter_info(parent, project) -> bool:
    """Show the dialog for a project; save its values there when accepted."""
    from engine.io.export import default_title

    dialog = ChapterInfoDialog(project.settings or {}, default_title(project), parent)
    if not dialog.exec():
        return False
    project.settings = dict(project.settings or {}, **dialog.values())
    project.save()
    return True
