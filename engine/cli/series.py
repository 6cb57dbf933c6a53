"""`colorflow series new|add|list`: the series library that every chapter of a series shares."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.core.errors import InputError, printable

SERIES_DESCRIPTION = """\
A series library is a folder that holds what every chapter of a series shares: colored references
(copied in), the pages colorists accepted in earlier chapters, and series-level pins and rejects.

Levels: series -> chapter -> page. For the same reference (or patch) the narrowest level that pins or
rejects it decides: a page's pin beats a chapter's or the series' reject, a chapter's reject beats a
series pin. A new chapter colored with `colorize --series DIR` starts with the library.

Rolling references: with `colorize --series DIR --rolling-refs`, pages accepted in this chapter and in
earlier chapters of the series join the reference pool, so later pages keep their colors (a page never
retrieves itself). Accept pages in the app, or here with `series add DIR --chapter OUT --accept ...`.
"""


def add_series_commands(commands) -> None:
    series = commands.add_parser("series", help="a series library shared by chapters: references, accepted "
                                 "pages, pins and rejects", description=SERIES_DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = series.add_subparsers(dest="series_command", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="make an empty series library in DIR",
                             description="Makes DIR (if missing) a series library: DIR/colorflow-series.json.")
    new.add_argument("dir", type=Path, metavar="DIR")
    new.add_argument("--name", help="the series' name (default: DIR's folder name)")

    add = actions.add_parser(
        "add", help="copy references and a chapter's accepted pages into the library",
        description="Copies REFS (images, folders, .cbz/.zip archives) into DIR/references/. With --chapter OUT "
        "(a chapter project folder, as made by colorize --out OUT), registers that chapter after the ones "
        "already in the series and copies its accepted pages into DIR/accepted/; the chapter project records "
        "its series. --accept PAGE... (or --accept all: every colored page) first accepts those pages' "
        "picked results in the chapter project.")
    add.add_argument("dir", type=Path, metavar="DIR")
    add.add_argument("refs", nargs="*", metavar="REFS", help="colored reference images, folders or archives")
    add.add_argument("--chapter", type=Path, metavar="OUT", help="a chapter project folder to register")
    add.add_argument("--chapter-name", metavar="NAME", help="its name in the series (default: the name it has there "
                     "already, else OUT's name)")
    add.add_argument("--accept", nargs="+", metavar="PAGE", help="accept these pages of --chapter first "
                     "(page names as in the chapter), or `all` for every colored page")

    listing = actions.add_parser("list", help="show the library: chapters, references, accepted pages, pins",
                                 description="Shows the series' name, its chapters in order, its references, "
                                 "the accepted pages of each chapter and the series-level pins and rejects.")
    listing.add_argument("dir", type=Path, metavar="DIR")
    listing.add_argument("--json", action="store_true", help="print it as JSON on stdout")


def cmd_series(args) -> int:
    from engine.project.series import SeriesLibrary

    if args.series_command == "new":
        library = SeriesLibrary.create(args.dir, args.name)
        print(printable(f"series library {library.name!r} made in {library.folder}; add references with "
                        f"`colorflow series add {args.dir} REFS...`"))
        return 0
    try:
        library = SeriesLibrary.load(args.dir)
    except FileNotFoundError:
        raise InputError(f"{args.dir}: no series library there; make one with `colorflow series new {args.dir}`") \
            from None
    if args.series_command == "add":
        return _add(args, library)
    return _list(args, library)


def _add(args, library) -> int:
    from engine.io.chapter import list_images

    if not args.refs and args.chapter is None:
        raise InputError("nothing to add: give reference images, folders or archives, or --chapter OUT")
    if args.accept and args.chapter is None:
        raise InputError("--accept needs --chapter OUT: the chapter whose pages are accepted")
    try:
        sources = list_images(args.refs) if args.refs else []
    except InputError as exc:
        raise InputError(f"REFS {exc}") from exc
    before = len(library.references())
    if args.chapter is None:
        for source in sources:
            library.add_reference(source)
        library.save()
    else:
        _add_chapter(args, library, sources)
    added = len(library.references()) - before
    same = f" ({len(sources) - added} already there)" if len(sources) > added else ""
    if sources:
        print(printable(f"{added} reference(s) added to series {library.name!r} in {library.folder}{same}"))
    return 0


def _add_chapter(args, library, sources) -> None:
    """Register --chapter OUT (its pages accepted first with --accept) and copy its accepted pages in (those it
    no longer accepts leave the library), holding the chapter project's lock."""
    from engine.io.projectlock import ProjectLock
    from engine.project.state import ChapterProject
    from engine.project.store import PROJECT_FILE

    from engine.cli.series_run import chapter_name

    folder, cbz = args.chapter.expanduser(), None
    if folder.suffix.lower() == ".cbz":  # colorize --out NAME.cbz keeps its project in NAME.colorflow beside it
        folder, cbz = folder.with_suffix(".colorflow"), folder
    folder = folder.resolve()
    if not (folder / PROJECT_FILE).is_file():
        raise InputError(f"--chapter {args.chapter}: no chapter project there ({PROJECT_FILE}); give the folder "
                         "(or NAME.cbz) a colorize run wrote as its --out")
    with ProjectLock(folder):
        project = ChapterProject.load(folder)
        name = args.chapter_name or chapter_name(project, library, cbz)
        _accept(project, args.accept or [])
        for source in sources:
            library.add_reference(source)
        library.register_chapter(name)
        accepted = project.accepted_pages()
        for page, path in accepted:
            library.add_accepted(name, page, path)
        kept = {page for page, _ in accepted}
        for entry in library.accepted():  # pages the chapter no longer accepts leave the library
            if entry.chapter == name and entry.page not in kept:
                library.remove_accepted(name, entry.page)
        project.series = {"folder": str(library.folder), "chapter": name}
        library.save()
        project.save()
    print(printable(f"chapter {name!r}: {len(accepted)} accepted page(s) in the series library"))


def _accept(project, pages: list[str]) -> None:
    """Accept pages of the project (in memory): `all` = every colored page; InputError for a page it does not
    have or one not colored."""
    if pages == ["all"]:
        for page in project.pages:
            if page.status == "done" and page.picked_variation() is not None:
                project.accept(page.name)
        return
    names = {page.name for page in project.pages}
    for name in pages:
        if name not in names:
            raise InputError(f"--accept {name}: the chapter {project.folder} has no page of that name")
        project.accept(name)


def _list(args, library) -> int:
    folder = library.folder
    accepted = [{"chapter": a.chapter, "page": a.page, "file": a.source.path.relative_to(folder).as_posix()}
                for a in library.accepted()]
    choices = {kind: [{"ref": Path(t.ref).relative_to(folder).as_posix(), "patch": t.patch}
                      for t in getattr(library.choices(), kind)] for kind in ("pins", "rejects")}
    if args.json:
        print(json.dumps({"folder": str(folder), "name": library.name, "chapters": library.chapters,
                          "references": library.references(), "accepted": accepted, **choices}, indent=2))
        return 0
    lines = [f"series {library.name!r} in {folder}",
             f"chapters, in order: {', '.join(library.chapters) or 'none yet'}",
             f"references ({len(library.references())}):"]
    lines += [f"  {r['file']}  (added as {r['original']})" for r in library.references()]
    lines.append(f"accepted pages ({len(accepted)}):")
    for chapter in library.chapters:
        pages = [a["page"] for a in accepted if a["chapter"] == chapter]
        if pages:
            lines.append(f"  {chapter}: {', '.join(pages)}")
    for kind in ("pins", "rejects"):
        shown = [t["ref"] + (f" ({t['patch']})" if t["patch"] else "") for t in choices[kind]]
        lines.append(f"series {kind}: {', '.join(shown) or 'none'}")
    print("\n".join(printable(line) for line in lines))
    return 0
