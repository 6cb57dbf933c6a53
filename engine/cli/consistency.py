"""The `colorflow check-consistency OUT` command: the drift check of a colored chapter (evaluation.consistency)."""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from pathlib import Path

from engine.core.errors import InputError, printable

OK, DRIFTED = 0, 1  # engine.cli.main's EXIT_OK and EXIT_PAGES_FAILED (bad usage: 2, as every command)

DESCRIPTION = """\
Finds the pages of a colored chapter whose recurring regions drifted in color, most deviant first.

A recurring region: the same query region (TL, TR, BL, BR: 3/4 of the page each) of two or more
pages retrieved the same reference patch as its first pick (the retrieval record of each page's
picked result). A region's color is the median a* and median b* (CIELAB) of its mid-tone pixels
(L* {low:g} to {high:g}: ink lines and paper do not count; a region with too few is left out).
Colors are compared with CIEDE2000 at a fixed L* = {fixed:g}, so only hue and chroma drift
counts: ink density differs between pages. A page's dE00 is its region farthest from the median
color of its group, shown beside the region of another page closest to that median: pin that
region (or its reference patch) for the page and color the page again.

Pages not colored, colored before the retrieval record existed, or sharing no region with
another page are listed as unchecked, with why. Reads only the colored files the project records
inside its folder. Exit codes: 0 no page above the threshold, 1 some page above it, 2 bad usage
(no project, a damaged project).
"""

THRESHOLD_HELP = ("flag pages whose dE00 is above X (default {default:g}). In the CIEDE2000 literature about 1 "
                  "is just perceptible under close viewing, about 2 noticeable side by side, and above about 10 "
                  "two patches read as different colors at a glance: the default flags drift a reader would see, "
                  "not rendering noise")


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def add_consistency_command(commands) -> None:
    """`check-consistency` on the top-level subparsers `commands`."""
    from engine.evaluation.consistency import DEFAULT_THRESHOLD, FIXED_L, MIDTONE_L

    parser = commands.add_parser(
        "check-consistency", help="rank a colored chapter's pages by color drift of their recurring regions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION.format(low=MIDTONE_L[0], high=MIDTONE_L[1], fixed=FIXED_L))
    parser.add_argument("out", type=Path, metavar="OUT",
                        help="the chapter's project folder (colorize --out); or the NAME.cbz colorize wrote, "
                        "whose project folder NAME.colorflow is beside it")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout: "
                        '{"pages": [{"page", "delta_e", "region", "box", "compared_with", "reference"}, ...], '
                        '"groups", "regions_left_out", "threshold", "unchecked"}')
    parser.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD, metavar="X",
                        help=THRESHOLD_HELP.format(default=DEFAULT_THRESHOLD))


def _project_folder(out: Path) -> Path:
    out = out.expanduser()
    beside = out.with_suffix(".colorflow")
    return beside if out.suffix.lower() == ".cbz" and beside.is_dir() else out


def cmd_consistency(args) -> int:
    from engine.evaluation.consistency import check_consistency
    from engine.project.state import ChapterProject

    folder = _project_folder(args.out)
    try:
        project = ChapterProject.load(folder)
    except FileNotFoundError:
        raise InputError(f"{folder}: no ColorFlow project here (colorflow-project.json): give the folder "
                         "`colorflow colorize --out` wrote") from None
    report = check_consistency(project, args.threshold)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_table(report)
    return DRIFTED if report.drifted else OK


def _print_table(report) -> None:
    rows = [(f"{page.delta_e:.2f}", page.page, page.query, f"{page.compared_page} {page.compared_query}",
             page.reference) for page in report.pages]
    header = ("dE00", "page", "region", "closest on another page", "shared reference")
    widths = [max(len(printable(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print(printable("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]))
    print(printable(f"{len(report.pages)} page(s) checked in {report.groups} recurring region(s); "
                    f"{report.regions_left_out} region(s) left out (mostly ink and paper)"))
    for page, why in report.unchecked:
        print(printable(f"unchecked: {page}: {why}"))
    drifted = report.drifted
    if drifted:
        names = ", ".join(page.page for page in drifted)
        print(textwrap.fill(printable(
            f"{len(drifted)} page(s) above dE00 {report.threshold:g}: {names}. To fix one, pin the region of the "
            "page it is shown beside (or that shared reference patch) for it, and color it again"), 100))
    else:
        print(f"no page above dE00 {report.threshold:g}")
