"""The project file's format name, version, page states, size caps and output-path rule: shared by
the project (engine.project.state) and its schema (engine.project.schema), which import nothing of each other's."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

FORMAT = "colorflow-project"
# 1: first release. 2: page outputs relative to the project folder, '/'-separated. 3: each page's
# colored results kept as variations, one picked (outputs.colored is the picked one's file). 4: a
# page's own input style (over the chapter's) and auto's suggestion for it; the line-art styles (an
# older ColorFlow would color such pages with the chapter's style, so it must refuse the file).
# 5: accepted pages (rolling references), region pins, each result's retrieval record, the series link
# (an older ColorFlow would drop region pins and acceptances on its next save).
# The schema and the migrations from older versions are in engine.project.schema (pydantic, loaded on use).
VERSION = 5
PAGE_STATES = ("pending", "retrieved", "running", "done", "failed")
# A 2,000-page volume with every output recorded and some pins is a 1.7 MB file (860 bytes a
# page) and loads in half a second: the caps are about 19 and 10 times that. The size is checked
# before the file is read, the page count before each page is validated.
MAX_PROJECT_BYTES = 32 * 1024**2
MAX_PROJECT_PAGES = 20_000
# Colored results a page keeps ("Colorize again"); beyond it the oldest one not picked goes, with its file.
MAX_VARIATIONS = 8

# The series library file (engine.project.series): 1: first release. A library of 100 chapters with
# 30 accepted pages each and 500 references is about 1 MB.
SERIES_FORMAT = "colorflow-series"
SERIES_VERSION = 1
MAX_SERIES_BYTES = 16 * 1024**2
REFERENCES, ACCEPTED = "references", "accepted"  # the library's folders of copied-in images


def check_output_path(value: str, folder: str = "project folder") -> str:
    """A recorded output: a relative POSIX path that cannot leave the project (or series) folder."""
    if not value or value.strip() in (".", "") or "\x00" in value:
        raise ValueError(f"must name a file in the {folder}")
    if "\\" in value:
        raise ValueError("must be a relative path with '/' separators")
    windows = PureWindowsPath(value)
    if PurePosixPath(value).is_absolute() or windows.is_absolute() or windows.drive:
        raise ValueError(f"must be relative to the {folder}, not an absolute path")
    if ".." in PurePosixPath(value).parts:
        raise ValueError(f"must stay inside the {folder} (no '..')")
    return value
