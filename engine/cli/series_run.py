"""`--refs`, `--series DIR` and `--rolling-refs` of colorize and retrieve: what a chapter's pages are retrieved from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.errors import InputError

if TYPE_CHECKING:
    from engine.io.chapter import ImageSource
    from engine.project.reference_pool import ReferencePool
    from engine.project.series import SeriesLibrary
    from engine.project.state import ChapterProject


def linked_series(folder: Path) -> str | None:
    """The series library folder the chapter project in `folder` is linked to (in the app, or by an earlier
    --series run), if any; None also for a project that cannot be read (its own error comes when it opens)."""
    from engine.core.errors import ColorFlowError
    from engine.project.state import ChapterProject
    from engine.project.store import PROJECT_FILE

    folder = Path(folder).expanduser().resolve()
    if not (folder / PROJECT_FILE).is_file():
        return None
    try:
        return (ChapterProject.load(folder).series or {}).get("folder") or None
    except (ColorFlowError, OSError, ValueError):
        return None


def open_references(args, folder: Path) -> list[ImageSource]:
    """The images of --refs; none is allowed with --series, or when the project in `folder` is linked to a
    series (the library's references serve)."""
    from engine.io.chapter import list_images

    if not args.refs:
        if args.series is None and linked_series(folder) is None:
            raise InputError("no references: give --refs with colored reference images, folders or archives, or "
                             "--series with a series library that holds references")
        return []
    try:
        return list_images(args.refs)
    except InputError as exc:
        raise InputError(f"--refs {exc}") from exc


def load_series(folder: str | Path) -> SeriesLibrary:
    """The series library in `folder`; InputError when there is none, its own error naming the file when damaged."""
    from engine.project.series import SeriesLibrary

    folder = Path(folder).expanduser().resolve()
    try:
        return SeriesLibrary.load(folder)
    except FileNotFoundError:
        raise InputError(f"--series {folder}: no series library there; make one with `colorflow series new "
                         f"{folder}`, or give the folder of an existing one") from None


def chapter_name(project: ChapterProject, series: SeriesLibrary, cbz: Path | None) -> str:
    """This chapter's name in the series: the one it has there already, else OUT's name (a CBZ's without .cbz)."""
    linked = project.series or {}
    if linked.get("chapter") and Path(linked.get("folder", "")).resolve() == Path(series.folder).resolve():
        return linked["chapter"]
    return cbz.stem if cbz is not None else project.folder.name


def reference_pool(args, project: ChapterProject, references: list[ImageSource],
                   cbz: Path | None = None) -> ReferencePool | None:
    """With --series, or without it for a chapter already linked to a library (project.series: in the app, or
    an earlier --series run): the library loaded, the chapter linked to it and registered in it (saved), and
    the pool of its references (and, with --rolling-refs, the accepted pages); with --rolling-refs alone the
    pool of the chapter's references and accepted pages; else None (--refs)."""
    from engine.project.reference_pool import build_pool

    series, folder = None, args.series
    if folder is None and (project.series or {}).get("folder"):
        folder = project.series["folder"]
        from engine.project.series import SERIES_FILE

        if not (Path(folder) / SERIES_FILE).is_file():
            raise InputError(f"this chapter is linked to the series library {folder}, which is not there any more: "
                             "give --series with its new folder (or another library), or link the chapter again "
                             "in the app (File ▸ Link chapter to series…)")
    if folder is not None:
        series = load_series(folder)
        name = chapter_name(project, series, cbz)
        project.series = {"folder": str(Path(series.folder).resolve()), "chapter": name}
        series.register_chapter(name)
        series.save()
    elif not args.rolling_refs:
        return None
    pool = build_pool(project, references, series, args.rolling_refs)
    if not pool.entries:
        raise InputError(f"--series {folder}: the series library holds no references yet: add some with "
                         "`colorflow series add`, or give --refs")
    return pool
