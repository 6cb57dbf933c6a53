"""The project file's versioned schema (pydantic v2) and the migrations from older versions."""

from __future__ import annotations

import copy
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from engine.core.options import MAX_SEED, OPTIONS, PROJECT_OPTIONS, InputStyle

from engine.project.format import (FORMAT, MAX_PROJECT_PAGES, MAX_VARIATIONS, PAGE_STATES, VERSION,
                                   check_output_path)
from engine.core.geometry import QUERY_PATCHES, REFERENCE_PATCHES

OutputPath = Annotated[str, AfterValidator(check_output_path)]


class _Model(BaseModel):
    # strict: a number is not a string, a string is not a list. Fields this version does not
    # know (a newer ColorFlow's, another tool's) are kept in model_extra and saved back.
    model_config = ConfigDict(strict=True, extra="allow")


class RecordedPickModel(_Model):
    ref: str
    patch: Literal[(*REFERENCE_PATCHES, "region")]
    box: list[int] | None = Field(default=None, min_length=4, max_length=4)


class RetrievalRecordModel(_Model):
    """What a colored result was retrieved from (the drift check and the accepted pages it used)."""

    work_size: list[int] = Field(min_length=2, max_length=2)
    page_size: list[int] = Field(min_length=2, max_length=2)
    content_box: list[int] = Field(min_length=4, max_length=4)
    picks: list[list[RecordedPickModel]] = Field(min_length=4, max_length=4)
    accepted_used: list[str] = Field(default_factory=list)


class VariationModel(_Model):
    id: int = Field(ge=1)
    file: OutputPath
    settings_key: str | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    guidance: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    steps: int | None = Field(default=None, ge=1)
    override: bool = False
    retrieval: RetrievalRecordModel | None = None


StyleName = Literal[tuple(InputStyle)]


class SuggestionModel(_Model):
    style: StyleName
    reason: str = ""


class PageModel(_Model):
    name: str = Field(min_length=1)
    source: str
    status: Literal[PAGE_STATES] = "pending"
    error: str | None = None
    outputs: dict[str, OutputPath] = Field(default_factory=dict)  # kind -> path relative to the folder
    settings_key: str | None = None
    variations: list[VariationModel] = Field(default_factory=list, max_length=MAX_VARIATIONS)
    picked: int | None = None  # the id of the variation that is the page's result
    input_style: StyleName | None = None  # the page's own input style, over the chapter's
    suggested: SuggestionModel | None = None  # auto's pick for the page, with its reason
    accepted: int | None = None  # the id of the variation the colorist accepted (a rolling reference)

    @model_validator(mode="after")
    def _picked_is_the_result(self) -> "PageModel":
        ids = [variation.id for variation in self.variations]
        if len(set(ids)) != len(ids):
            raise ValueError("variations: two variations have the same id")
        if self.picked is not None:
            chosen = next((v for v in self.variations if v.id == self.picked), None)
            if chosen is None:
                raise ValueError(f"picked: there is no variation {self.picked}")
            if self.outputs.get("colored") != chosen.file:
                raise ValueError(f"picked: variation {self.picked}'s file {chosen.file!r} is not outputs.colored "
                                 f"({self.outputs.get('colored')!r})")
        if self.accepted is not None and self.accepted not in ids:
            raise ValueError(f"accepted: there is no variation {self.accepted}")
        return self


class TargetModel(_Model):
    ref: str
    patch: Literal[REFERENCE_PATCHES] | None = None


class RegionPinModel(_Model):
    ref: str = Field(min_length=1)
    box: list[float] = Field(min_length=4, max_length=4)
    query: Literal[QUERY_PATCHES]
    rank: Literal[1, 2, 3] = 1

    @model_validator(mode="after")
    def _box_inside_the_image(self) -> "RegionPinModel":
        x0, y0, x1, y1 = self.box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"box: must be fractions 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1 (got {self.box})")
        return self


class ChoicesModel(_Model):
    pins: list[TargetModel] = Field(default_factory=list)
    rejects: list[TargetModel] = Field(default_factory=list)
    regions: list[RegionPinModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_pin_a_slot(self) -> "ChoicesModel":
        slots = [(r.query, r.rank) for r in self.regions]
        if len(set(slots)) != len(slots):
            raise ValueError("regions: two region pins in the same query region and rank")
        return self


class SeriesLinkModel(_Model):
    folder: str = Field(min_length=1)  # the series library's folder
    chapter: str = Field(min_length=1)  # this chapter's name in the series


class CurationModel(_Model):
    chapter: ChoicesModel = Field(default_factory=ChoicesModel)
    pages: dict[str, ChoicesModel] = Field(default_factory=dict)


class _ChapterSettings(_Model):
    title: str | None = None
    series: str | None = None
    number: str | None = None
    manga: str | None = None
    export_dir: str | None = None


# The run options a project records (engine/core/options.py PROJECT_OPTIONS), each limited to
# its declared values.
SettingsModel = create_model(
    "SettingsModel",
    __base__=_ChapterSettings,
    __doc__="Known settings are typed; settings this version does not know are kept as they are.",
    **{name: (Literal[OPTIONS[name].choices] | None, None) for name in PROJECT_OPTIONS},
)


class ProjectModel(_Model):
    format: Literal[FORMAT]
    version: Literal[VERSION]
    saved_by: str | None = None
    inputs: list[str] = Field(default_factory=list)
    references: list[str] = Field(default_factory=list)
    settings: SettingsModel = Field(default_factory=SettingsModel)
    pages: list[PageModel] = Field(default_factory=list)
    curation: CurationModel = Field(default_factory=CurationModel)
    series: SeriesLinkModel | None = None


def _v1_to_v2(data: dict[str, Any], folder: str) -> dict[str, Any]:
    """v1 stored page outputs as written by the OS: make them relative to the folder, with '/'."""
    pages = data.get("pages")
    for page in pages if isinstance(pages, list) else []:
        outputs = page.get("outputs") if isinstance(page, dict) else None
        if not isinstance(outputs, dict):
            continue  # the schema reports it
        for kind, value in outputs.items():
            if isinstance(value, str):
                outputs[kind] = _relative_posix(value, folder)
    data["version"] = 2
    return data


def _relative_posix(value: str, folder: str) -> str:
    for flavour in (PurePosixPath, PureWindowsPath):
        path, base = flavour(value), flavour(folder)
        if path.is_absolute():
            try:
                return path.relative_to(base).as_posix()
            except ValueError:
                return value  # outside the folder: left as is, so the schema names it
    return value.replace("\\", "/")


def _v2_to_v3(data: dict[str, Any], folder: str) -> dict[str, Any]:
    """v3 keeps a page's colored results as variations: the one result of a v2 page is variation 1, picked."""
    pages = data.get("pages")
    for page in pages if isinstance(pages, list) else []:
        outputs = page.get("outputs") if isinstance(page, dict) else None
        colored = outputs.get("colored") if isinstance(outputs, dict) else None
        if not isinstance(colored, str) or "variations" in page:
            continue  # nothing colored yet, or the schema reports it
        variation = {"id": 1, "file": colored}
        if isinstance(page.get("settings_key"), str):
            variation["settings_key"] = page["settings_key"]
        page["variations"], page["picked"] = [variation], 1
    data["version"] = 3
    return data


def _v3_to_v4(data: dict[str, Any], folder: str) -> dict[str, Any]:
    """v4 adds a page's own input style and auto's suggestion, both optional: a v3 page has neither."""
    data["version"] = 4
    return data


def _v4_to_v5(data: dict[str, Any], folder: str) -> dict[str, Any]:
    """v5 adds accepted pages, region pins, each result's retrieval record and the series link, all
    optional: a v4 project has none."""
    data["version"] = 5
    return data


MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}  # version n -> function making it version n + 1


def migrate(data: dict[str, Any], folder: str) -> dict[str, Any]:
    """Bring a parsed project of an older version up to VERSION (a new dict; `data` is kept)."""
    data = copy.deepcopy(data)
    while data["version"] < VERSION:
        data = MIGRATIONS[data["version"]](data, folder)
    return data


def location(loc: tuple, data: Any = None) -> str:
    """pydantic's loc as a field path: ('pages', 0, 'outputs', 'colored') -> pages[0].outputs.colored,
    with the page's name when the file gives one."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    if len(loc) >= 2 and loc[0] == "pages" and isinstance(loc[1], int) and isinstance(data, dict):
        pages = data.get("pages")
        page = pages[loc[1]] if isinstance(pages, list) and loc[1] < len(pages) else None
        if isinstance(page, dict) and isinstance(page.get("name"), str):
            text += f" (page {page['name']!r})"
    return text


def describe(exc: ValidationError, data: Any, limit: int = 5) -> str:
    """The first few problems of a failed validation, each as `field: problem (got value)`."""
    problems = []
    for error in exc.errors()[:limit]:
        message = error["msg"].removeprefix("Value error, ")
        shown = repr(error.get("input"))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        got = "" if error["type"] == "missing" else f" (got {shown})"
        problems.append(f"{location(error['loc'], data)}: {message}{got}")
    more = exc.error_count() - limit
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def validate(data: Any, folder: str) -> ProjectModel:
    """Check a parsed project file (any version this one reads) and return it at VERSION.
    Raises ValueError with a plain message: not a project, newer version, or the bad fields."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a ColorFlow project file")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version: must be a whole number from 1 to {VERSION} (got {version!r})")
    if version > VERSION:
        raise NewerVersion(version)
    pages = data.get("pages")
    if isinstance(pages, list) and len(pages) > MAX_PROJECT_PAGES:  # before validating each one
        raise ValueError(f"pages: {len(pages):,} pages, more than a project may hold ({MAX_PROJECT_PAGES:,})")
    migrated = migrate(data, folder)
    try:
        return ProjectModel.model_validate(migrated)
    except ValidationError as exc:
        raise ValueError(describe(exc, migrated)) from None


class NewerVersion(ValueError):
    """The file was saved by a newer ColorFlow."""

    def __init__(self, version: int) -> None:
        super().__init__(f"saved by a newer ColorFlow (project version {version}, this one reads up to {VERSION})")
        self.version = version
