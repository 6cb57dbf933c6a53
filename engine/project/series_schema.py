"""The series library file's versioned schema (pydantic v2), read by engine.project.series on load."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError

from engine.project.format import ACCEPTED, REFERENCES, SERIES_FORMAT, SERIES_VERSION, check_output_path
from engine.project.schema import NewerVersion, TargetModel, _Model, describe


def _in_folder(folder: str | None, parts: int | None):
    """A check of a recorded file: a relative POSIX path inside the series folder, and (given) a file of
    `folder`/ at `parts` parts deep (references/NAME, accepted/CHAPTER/PAGE.png)."""
    def check(value: str) -> str:
        check_output_path(value, "series folder")
        found = PurePosixPath(value).parts
        if folder is None:
            if found[0] not in (REFERENCES, ACCEPTED):
                raise ValueError(f"must be a file in {REFERENCES}/ or {ACCEPTED}/")
        elif found[0] != folder or len(found) != parts:
            raise ValueError(f"must be a file in {folder}/" + ("" if parts == 2 else "CHAPTER/"))
        return value
    return AfterValidator(check)


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ReferenceModel(_Model):
    file: Annotated[str, _in_folder(REFERENCES, 2)]
    sha256: Sha256
    original: str | None = None  # the name it was added under


class AcceptedModel(_Model):
    chapter: str = Field(min_length=1)
    page: str = Field(min_length=1)
    file: Annotated[str, _in_folder(ACCEPTED, 3)]
    sha256: Sha256


class LibraryTargetModel(TargetModel):
    ref: Annotated[str, _in_folder(None, None)]  # a library file, relative to the series folder


class SeriesCurationModel(_Model):
    pins: list[LibraryTargetModel] = Field(default_factory=list)
    rejects: list[LibraryTargetModel] = Field(default_factory=list)


class SeriesModel(_Model):
    format: Literal[SERIES_FORMAT]
    version: Literal[SERIES_VERSION]
    saved_by: str | None = None
    name: str = ""
    chapters: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    references: list[ReferenceModel] = Field(default_factory=list)
    accepted: list[AcceptedModel] = Field(default_factory=list)
    curation: SeriesCurationModel = Field(default_factory=SeriesCurationModel)


def _check_consistent(model: SeriesModel) -> None:
    """Names listed once, accepted pages of listed chapters, pins and rejects of the library's own files."""
    def once(values: list, what: str) -> None:
        if len(set(values)) != len(values):
            raise ValueError(f"{what}: the same one is listed twice")

    once(model.chapters, "chapters")
    once([(a.chapter, a.page) for a in model.accepted], "accepted")
    once([r.file.casefold() for r in model.references] + [a.file.casefold() for a in model.accepted],
         "references and accepted: a file")
    for index, page in enumerate(model.accepted):
        if page.chapter not in model.chapters:
            raise ValueError(f"accepted[{index}].chapter: {page.chapter!r} is not one of the chapters")
    files = {r.file for r in model.references} | {a.file for a in model.accepted}
    for kind in ("pins", "rejects"):
        for index, target in enumerate(getattr(model.curation, kind)):
            if target.ref not in files:
                raise ValueError(f"curation.{kind}[{index}].ref: {target.ref!r} is not a file of the library")


class NewerSeries(NewerVersion):
    """The series file was saved by a newer ColorFlow."""

    def __init__(self, version: int) -> None:
        ValueError.__init__(self, f"saved by a newer ColorFlow (series version {version}, this one reads up to "
                                  f"{SERIES_VERSION})")
        self.version = version


def validate_series(data: Any, folder: str) -> SeriesModel:
    """Check a parsed series file: ValueError with a plain message (not a series file, or the bad
    fields), NewerSeries for a newer version."""
    if not isinstance(data, dict) or data.get("format") != SERIES_FORMAT:
        raise ValueError("not a ColorFlow series library file")
    version = data.get("version")
    if type(version) is not int or version < 1:  # a bool is an int to isinstance
        raise ValueError(f"version: must be a whole number from 1 to {SERIES_VERSION} (got {version!r})")
    if version > SERIES_VERSION:
        raise NewerSeries(version)
    try:
        model = SeriesModel.model_validate(data)
    except ValidationError as exc:
        raise ValueError(describe(exc, data)) from None
    _check_consistent(model)
    return model
