"""Exception types the engine raises for problems a user can act on."""


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


class OutputError(ColorFlowError):
    """An output folder or file cannot be written (read-only, no permission, disk full)."""


class OutOfMemory(ColorFlowError):
    """A page ran out of memory even in the lowest-memory mode (reported with advice)."""


class ProjectLockedError(ColorFlowError):
    """Another ColorFlow process is working on the same project folder."""
