"""The words of curation, in one place: page regions ("top-left region") and reference patches
("patch 3 of ref_01.png"), named so that one is never mistaken for the other."""

from __future__ import annotations

from pathlib import Path

from engine.core.geometry import QUERY_PATCHES, REFERENCE_PATCHES
from engine.rap.retrieval import REGION

REGION_NAMES = dict(zip(QUERY_PATCHES, ("top-left region", "top-right region", "bottom-left region", "bottom-right region")))
PATCH_HELP = "A reference's patches: 1 is the whole image, 2 to 5 its four overlapping crops in reading order."


def short_name(ref: str) -> str:
    return Path(ref.split("!")[-1]).name


def region_name(region: str) -> str:
    """A query region of the page: "TL" -> "top-left region"."""
    return REGION_NAMES[region]


def patch_name(ref: str, patch: str | None) -> str:
    """A crop of a reference, "patch 3 of ref_01.png"; patch None means all of its patches, a
    region pin's pick is "your region of ref_01.png"."""
    if patch is None:
        return f"all patches of {short_name(ref)}"
    if patch == REGION:
        return f"your region of {short_name(ref)}"
    return f"patch {REFERENCE_PATCHES.index(patch) + 1} of {short_name(ref)}"


def scope_name(page: str | None) -> str:
    return f"page {page}" if page else "the whole chapter"


def choice_verb(state: str | None, previous: str | None) -> str:
    """What setting `state` over `previous` does, as the Undo/Redo menus say it."""
    if state is not None:
        return state
    return {"reject": "restore", "pin": "unpin"}.get(previous, "clear")
