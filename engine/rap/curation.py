"""Pins and rejects of references (whole or one patch), for a chapter or for one page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from engine.core.geometry import REFERENCE_PATCHES


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


@dataclass
class Choices:
    """Pinned and rejected targets at one scope; a target is never both."""

    pins: list[Target] = field(default_factory=list)
    rejects: list[Target] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.pins and not self.rejects

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
        return {
            "pins": [t.to_json() for t in self.pins],
            "rejects": [t.to_json() for t in self.rejects],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Choices":
        if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list) for k in ("pins", "rejects")):
            raise ValueError(f"choices must be {{'pins': [...], 'rejects': [...]}}, got {data!r:.80}")
        return cls(
            [Target.from_json(t) for t in data.get("pins", [])],
            [Target.from_json(t) for t in data.get("rejects", [])],
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

    def effective(self, page: str) -> Choices:
        """What applies to one page: union of both scopes; a reject anywhere wins over a pin."""
        local = self.pages.get(page, Choices())
        rejects = _unique([*self.chapter.rejects, *local.rejects])
        pins = [t for t in _unique([*local.pins, *self.chapter.pins]) if t not in rejects]
        return Choices(pins, rejects)

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
