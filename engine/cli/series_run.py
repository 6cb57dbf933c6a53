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


def open_references(args) -> list[ImageSource]:
    """The images of --refs; none is allowed with --series (the library's references serve)."""
    from engine.io.chapter import list_images

    if not args.refs:
        if args.series is None:
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
    """With --series: the library loaded, the chapter linked to it (project.series) and registered in it
    (saved), and the pool of its references (and, with --rolling-refs, the accepted pages); with
    --rolling-refs alone the pool of the chapter's references and accepted pages; else None (--refs)."""
    from engine.project.reference_pool import build_pool

    series = None
    if args.series is not None:
        series = load_series(args.series)
        name = chapter_name(project, series, cbz)
        project.series = {"folder": str(Path(series.folder).resolve()), "chapter": name}
        series.register_chapter(name)
        series.save()
    elif not args.rolling_refs:
        return None
    pool = build_pool(project, references, series, args.rolling_refs)
    if not pool.entries:
        raise InputError(f"--series {args.series}: the series library holds no references yet: add some with "
                         "`colorflow series add`, or give --refs")
    return pool
