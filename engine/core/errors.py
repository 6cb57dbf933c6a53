"""Exception types the engine raises for problems a user can act on."""

import errno
import shlex


class ColorFlowError(Exception):
    """Base class: a clear, user-facing problem (bad input, bad file, bad model)."""


class InputError(ColorFlowError):
    """A chapter, page, reference or option the user gave cannot be used."""


class PageDecodeError(InputError):
    """One page (or reference image) could not be decoded; other pages go on."""


class UnsafeArchiveError(InputError):
    """An archive holds a member that would escape its folder or is too large."""


class ProjectFileError(ColorFlowError):
    """A chapter project file is corrupt or from a newer version; it is left untouched."""


class ModelError(ColorFlowError):
    """A model directory or checkpoint is missing, incomplete or does not match."""


def model_permission_error(exc: BaseException, path=None) -> "ModelError | None":
    """A ModelError saying "permission denied" and how to fix it when `exc`, or an error that
    caused it, is one (a library may wrap it); else None. Such a file is not damaged: advice to
    download or replace it would be wrong."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
            where = exc.filename or path
            return ModelError(f"{where}: permission denied (this user cannot read it); make it readable with "
                              f"`chmod u+r {shlex.quote(str(where))}`, or `chown` it to this user")
        exc = exc.__cause__ or exc.__context__
    return None


class OutputError(ColorFlowError):
    """An output folder or file cannot be written (read-only, no permission, disk full)."""


class RunStopped(OutputError):
    """A chapter run stopped because its output can no longer be written (disk full, read-only);
    `report` holds the pages done and failed until then, for the per-page report."""

    def __init__(self, message: str, report=None) -> None:
        super().__init__(message)
        self.report = report


class OutOfMemory(ColorFlowError):
    """A page ran out of memory even in the lowest-memory mode (reported with advice)."""


class ProjectLockedError(ColorFlowError):
    """Another ColorFlow process is working on the same project folder."""


# Bidirectional-text controls: in a name they reorder what a terminal or label shows
# ("evil\u202egnp.exe" reads as "evilexe.png").
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def listed(items, shown: int = 5) -> str:
    """`a, b, c and 4 more`: the first `shown` items, so a message stays on one line."""
    items = list(items)
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def printable(text: str) -> str:
    """`text` safe to print on one line: control characters (C0, DEL, C1, line and paragraph
    separators) and bidi controls escaped as Python writes them (\\n, \\x1b, \\u202e); every other
    character, backslashes included, stays as it is."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if ch in _BIDI_CONTROLS or ch in "\u2028\u2029" or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0
        else ch
        for ch in str(text)
    )
