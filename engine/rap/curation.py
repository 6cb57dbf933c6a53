"""Pins and rejects of references (whole or one patch) and region pins, for a series, a chapter or
one page: for the same target the narrowest level that has a say decides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from engine.core.geometry import QUERY_PATCHES, REFERENCE_PATCHES, Box

RANKS = (1, 2, 3)  # a query region's canvas cells, best first (engine.rap.canvas.TOP_K)


@dataclass(frozen=True)
class Target:
    """A reference (patch None: any of its 5 patches) or one of its patches ("full", "TL", ...)."""

    ref: str
    patch: str | None = None

    def __post_init__(self) -> None:
        if self.patch is not None and self.patch not in REFERENCE_PATCHES:
            raise ValueError(f"patch must be one of {REFERENCE_PATCHES} or None, got {self.patch!r}")

    def matches(self, ref: str, patch: str) -> bool:
        return self.ref == ref and (self.patch is None or self.patch == patch)

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "patch": self.patch}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Target":
        if not isinstance(data, dict) or not isinstance(data.get("ref"), str):
            raise ValueError(f"a pin or reject must be {{'ref': str, 'patch': ...}}, got {data!r:.80}")
        return cls(data["ref"], data.get("patch"))


@dataclass(frozen=True)
class RegionPin:
    """A rectangle the colorist drew on a reference (or an accepted page), placed in one canvas cell:
    query region `query`'s cell of rank `rank`, ahead of retrieval. `box` = (x0, y0, x1, y1) as
    fractions of the reference image's own width and height, so it holds at any working size."""

    ref: str
    box: tuple[float, float, float, float]
    query: str
    rank: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.ref, str) or not self.ref:
            raise ValueError("a region pin needs the reference it is cut from")
        if self.query not in QUERY_PATCHES:
            raise ValueError(f"query must be one of {QUERY_PATCHES}, got {self.query!r}")
        if self.rank not in RANKS or isinstance(self.rank, bool):
            raise ValueError(f"rank must be one of {RANKS}, got {self.rank!r}")
        box = tuple(self.box)
        if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got {self.box!r:.80}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(f"box must be fractions of the image with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, "
                             f"got {self.box!r:.80}")
        object.__setattr__(self, "box", (x0, y0, x1, y1))

    @property
    def slot(self) -> tuple[str, int]:
        return self.query, self.rank

    def pixel_box(self, width: int, height: int) -> Box:
        """The box in an image of this size: rounded to pixels, at least one pixel wide and high."""
        x0, y0, x1, y1 = self.box
        left, top = min(round(x0 * width), width - 1), min(round(y0 * height), height - 1)
        return left, top, max(left + 1, round(x1 * width)), max(top + 1, round(y1 * height))

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "box": list(self.box), "query": self.query, "rank": self.rank}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RegionPin":
        if not isinstance(data, dict):
            raise ValueError(f"a region pin must be {{'ref', 'box', 'query', 'rank'}}, got {data!r:.80}")
        return cls(data.get("ref"), tuple(data.get("box") or ()), data.get("query"), data.get("rank", 1))


@dataclass
class Choices:
    """Pinned and rejected targets at one scope (a target is never both), and region pins (one per
    canvas slot)."""

    pins: list[Target] = field(default_factory=list)
    rejects: list[Target] = field(default_factory=list)
    regions: list[RegionPin] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.pins and not self.rejects and not self.regions

    def set_region(self, pin: RegionPin) -> None:
        """Place a region pin, replacing the one in the same slot (query, rank)."""
        self.regions = [r for r in self.regions if r.slot != pin.slot] + [pin]

    def clear_region(self, query: str, rank: int) -> None:
        self.regions = [r for r in self.regions if r.slot != (query, rank)]

    def region(self, query: str, rank: int) -> RegionPin | None:
        return next((r for r in self.regions if r.slot == (query, rank)), None)

    def set(self, target: Target, state: str | None) -> None:
        """state: "pin", "reject" or None (clear)."""
        self.pins = [t for t in self.pins if t != target]
        self.rejects = [t for t in self.rejects if t != target]
        if state == "pin":
            self.pins.append(target)
        elif state == "reject":
            self.rejects.append(target)
        elif state is not None:
            raise ValueError(f"state must be 'pin', 'reject' or None, got {state!r}")

    def state(self, target: Target) -> str | None:
        if target in self.pins:
            return "pin"
        if target in self.rejects:
            return "reject"
        return None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "pins": [t.to_json() for t in self.pins],
            "rejects": [t.to_json() for t in self.rejects],
        }
        if self.regions:  # only when there are some: files without region pins stay as they were
            data["regions"] = [r.to_json() for r in self.regions]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Choices":
        kinds = ("pins", "rejects", "regions")
        if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list) for k in kinds):
            raise ValueError(f"choices must be {{'pins': [...], 'rejects': [...]}}, got {data!r:.80}")
        return cls(
            [Target.from_json(t) for t in data.get("pins", [])],
            [Target.from_json(t) for t in data.get("rejects", [])],
            [RegionPin.from_json(r) for r in data.get("regions", [])],
        )


@dataclass
class Curation:
    """Chapter-wide choices plus per-page choices, keyed by page name."""

    chapter: Choices = field(default_factory=Choices)
    pages: dict[str, Choices] = field(default_factory=dict)

    def scope(self, page: str | None) -> Choices:
        if page is None:
            return self.chapter
        return self.pages.setdefault(page, Choices())

    def set(self, target: Target, state: str | None, page: str | None = None) -> None:
        self.scope(page).set(target, state)
        if page is not None and self.pages[page].is_empty():
            del self.pages[page]

    def set_region(self, pin: RegionPin, page: str | None = None) -> None:
        self.scope(page).set_region(pin)

    def clear_region(self, query: str, rank: int, page: str | None = None) -> None:
        self.scope(page).clear_region(query, rank)
        if page is not None and self.pages[page].is_empty():
            del self.pages[page]

    def effective(self, page: str, series: Choices | None = None) -> Choices:
        """What applies to one page, from the levels series -> chapter -> page: for the same target
        the narrowest level that pins or rejects it decides (a page's pin beats the chapter's or the
        series' reject, a chapter's reject beats a series pin). Pins come narrowest level first, each
        level in the order the user pinned. Region pins: the page's, then the chapter's in the slots
        the page leaves free."""
        local = self.pages.get(page, Choices())
        levels = [local, self.chapter, series or Choices()]  # narrowest first
        decided: dict[Target, str] = {}
        for level in levels:
            for state, targets in (("pin", level.pins), ("reject", level.rejects)):
                for target in targets:
                    decided.setdefault(target, state)
        pins = [t for level in levels for t in level.pins if decided[t] == "pin"]
        rejects = [t for level in levels for t in level.rejects if decided[t] == "reject"]
        regions = list(local.regions)
        regions += [r for r in self.chapter.regions if all(r.slot != mine.slot for mine in local.regions)]
        return Choices(_unique(pins), _unique(rejects), regions)

    def to_json(self) -> dict[str, Any]:
        return {
            "chapter": self.chapter.to_json(),
            "pages": {name: c.to_json() for name, c in self.pages.items() if not c.is_empty()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Curation":
        if not isinstance(data, dict) or not isinstance(data.get("pages", {}), dict):
            raise ValueError(f"curation must be {{'chapter': {{...}}, 'pages': {{...}}}}, got {data!r:.80}")
        return cls(
            Choices.from_json(data.get("chapter", {})),
            {name: Choices.from_json(c) for name, c in data.get("pages", {}).items()},
        )


def _unique(targets: Iterable[Target]) -> list[Target]:
    return list(dict.fromkeys(targets))
