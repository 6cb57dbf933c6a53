"""File ▸ Export: ask about uncolored pages, choose the destination in a Save dialog (remembered
per project), run the export on the worker, then offer "Show in folder"."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

EXPORT_DIR_SETTING = "export_dir"  # project setting: the folder last exported to


def ask_include_uncolored(parent: QWidget, missing: list[str], chapter) -> bool | None:
    """None: the user cancelled; True: put the original pages in their place (a labelled
    placeholder page for each that could not be read, which the question names)."""
    if not missing:
        return False
    from engine.core.errors import listed

    unreadable = [s.name for s in chapter.sources if s.ref in chapter.errors and s.name in missing]
    placeholders = (f"\n\n{len(unreadable)} of them could not be read ({listed(unreadable)}): a gray page "
                    "labelled with its name stands in for each." if unreadable else "")
    answer = QMessageBox.question(
        parent, "Export CBZ",
        f"{len(missing)} of {len(chapter.sources)} pages are not colored yet ({listed(missing)}).{placeholders}\n\n"
        "Export the CBZ with the original black-and-white pages in their place?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
    )
    return True if answer == QMessageBox.StandardButton.Yes else None


def is_hidden_folder(folder: Path) -> bool:
    """A folder a user does not browse: a dot folder (or inside one) or ColorFlow's cache."""
    from engine.core.paths import cache_dir

    folder = folder.expanduser().resolve()
    return any(part.startswith(".") for part in folder.parts) or folder.is_relative_to(cache_dir().resolve())


def start_folder(project) -> Path:
    """Where the Export chooser opens: the folder this project last exported to (if it still
    exists), else the folder holding the chapter, else the project's; never a hidden folder or
    the cache (the demo chapter lives there): then the home folder."""
    remembered = (project.settings or {}).get(EXPORT_DIR_SETTING)
    candidates = [Path(remembered)] if isinstance(remembered, str) and remembered else []
    candidates += [Path(project.inputs[0]).expanduser().parent] if project.inputs else []
    candidates.append(Path(project.folder).parent)
    for folder in candidates:
        if folder.is_dir() and not is_hidden_folder(folder):
            return folder
    return Path.home()


def choose_destination(parent: QWidget, project, fmt: str, title: str) -> Path | None:
    """A CBZ file name, or the folder for PNG/ORA/PSD pages; None when cancelled."""
    from engine.io.export import cbz_file_name

    start = start_folder(project)
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
