"""File ▸ Export: ask about uncolored pages, choose the destination in a Save dialog (remembered
per project), run the export on the worker, then offer "Show in folder"."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

EXPORT_DIR_SETTING = "export_dir"  # project setting: the folder last exported to


def ask_include_uncolored(parent: QWidget, missing: list[str], total: int) -> bool | None:
    """None: the user cancelled; True: put the original pages in their place."""
    if not missing:
        return False
    from engine.core.errors import listed

    shown = listed(missing)
    answer = QMessageBox.question(
        parent, "Export CBZ",
        f"{len(missing)} of {total} pages are not colored yet ({shown}).\n\n"
        "Export the CBZ with the original black-and-white pages in their place?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
    )
    return True if answer == QMessageBox.StandardButton.Yes else None


def default_folder(project) -> Path:
    """The folder this project last exported to (if it still exists), else the project folder."""
    remembered = (project.settings or {}).get(EXPORT_DIR_SETTING)
    if isinstance(remembered, str) and Path(remembered).is_dir():
        return Path(remembered)
    return Path(project.folder)


def choose_destination(parent: QWidget, project, fmt: str, title: str) -> Path | None:
    """A CBZ file name, or the folder for PNG/ORA/PSD pages; None when cancelled."""
    from engine.io.export import cbz_file_name

    start = default_folder(project)
    if fmt == "cbz":
        path, _ = QFileDialog.getSaveFileName(
            parent, "Export CBZ", str(start / cbz_file_name(title)), "Comic archive (*.cbz)")
        if path and not path.lower().endswith(".cbz"):
            path += ".cbz"
    else:
        path = QFileDialog.getExistingDirectory(parent, f"Export {fmt.upper()} pages into folder", str(start))
    return Path(path) if path else None


def remember_destination(project, destination: Path, fmt: str) -> None:
    folder = destination.parent if fmt == "cbz" else destination
    project.settings = dict(project.settings or {}, **{EXPORT_DIR_SETTING: str(folder)})
    project.save()


def show_in_folder(path: Path) -> bool:
    """Open the file manager on the folder holding `path`."""
    folder = path if path.is_dir() else path.parent
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
