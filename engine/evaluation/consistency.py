"""Drift check: a chapter's colored pages ranked by how far their recurring regions' colors drifted.

For every page with a picked colored result that has a retrieval record (Variation.retrieval), each of
its 4 query regions (engine.core.geometry.query_boxes of the working size, mapped into the colored
file's pixels through the record's content box: the colored file is the content box of the working
frame, at the page's size or 1.5x with --output-size gsrp) is keyed by its rank-1 pick: reference and
patch (the same part of the reference whatever working size it was cut at; for a region pin, its box
in the reference's pixels too). Regions of different pages with the same key are a recurring region:
a group (at least 2 pages). A region's color is the MEDIAN a* and MEDIAN b* (CIELAB, skimage.color.rgb2lab of the sRGB
pixels, D65) of its mid-tone pixels only: L* from 25 to 85, so black ink lines and white paper do not
count; a region with too few mid-tone pixels is left out (and counted). Colors are compared with
CIEDE2000 (skimage.color.deltaE_ciede2000) at a fixed L* = 50: only hue and chroma drift counts,
since ink density and shading differ from page to page. A region's deviation is the ΔE00 between its
color and its group's median color (the median of the members' a*, b*); a page's delta_e is its
largest region deviation, shown against the group member closest to that median on another page:
the region a colorist would pin to fix the page. Pages are ranked most deviant first (ties in page
order); pages not colored, without a record, unreadable or sharing no region are listed as unchecked.
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import numpy as np

from engine.core.errors import PageDecodeError, ProjectFileError
from engine.core.geometry import QUERY_PATCHES, Box, WorkSize, box_on_page, query_boxes

MIDTONE_L = (25.0, 85.0)  # L* band of the pixels that carry color: darker is ink, lighter is paper
FIXED_L = 50.0  # colors are compared at this L*: hue and chroma only
MIN_MIDTONE_FRACTION = 0.02  # a region with fewer mid-tone pixels than this (and than MIN_MIDTONE_PIXELS) is left out
MIN_MIDTONE_PIXELS = 32
# ΔE00 ~2 is just noticeable side by side; above ~10 two colors read as different at a glance.
DEFAULT_THRESHOLD = 10.0
MAX_SAMPLES = 1 << 19  # pixels of a page converted to CIELAB: a larger page is read on a regular grid

Color = tuple[float, float]  # median a*, median b*


@dataclass(frozen=True)
class PageDrift:
    """A page's most deviant recurring region, and the region on another page it should match."""

    page: str
    delta_e: float
    query: str  # TL, TR, BL or BR
    box: Box  # in the pixels of the page's colored file
    compared_page: str
    compared_query: str
    compared_box: Box
    compared_file: str  # the compared page's colored file, relative to the project folder
    reference: str  # the shared rank-1 pick, "ref#patch"

    def to_json(self) -> dict[str, Any]:
        return {"page": self.page, "delta_e": round(self.delta_e, 2), "region": self.query, "box": list(self.box),
                "compared_with": {"page": self.compared_page, "region": self.compared_query,
                                  "box": list(self.compared_box), "file": self.compared_file},
                "reference": self.reference}


@dataclass
class ConsistencyReport:
    """The drift check of a project: checked pages most deviant first, and the pages it could not check."""

    pages: list[PageDrift] = field(default_factory=list)
    groups: int = 0  # recurring regions compared
    regions_left_out: int = 0  # recurring regions with too few mid-tone pixels
    unchecked: list[tuple[str, str]] = field(default_factory=list)  # (page, why)
    threshold: float = DEFAULT_THRESHOLD

    @property
    def drifted(self) -> list[PageDrift]:
        """The pages whose delta_e is above the threshold."""
        return [page for page in self.pages if page.delta_e > self.threshold]

    def to_json(self) -> dict[str, Any]:
        return {"pages": [page.to_json() for page in self.pages], "groups": self.groups,
                "regions_left_out": self.regions_left_out, "threshold": self.threshold,
                "unchecked": [{"page": page, "why": why} for page, why in self.unchecked]}


def region_color(rgb: np.ndarray) -> Color | None:
    """The median a*, b* of an sRGB region's mid-tone pixels (H x W x 3, uint8); None when too few."""
    from skimage.color import rgb2lab

    return _midtone_color(rgb2lab(rgb))


def delta_e00(first: Color, second: Color) -> float:
    """CIEDE2000 between two colors at L* = FIXED_L."""
    from skimage.color import deltaE_ciede2000

    return float(deltaE_ciede2000(np.array([FIXED_L, *first]), np.array([FIXED_L, *second])))


def _midtone_color(lab: np.ndarray) -> Color | None:
    pixels = lab.reshape(-1, 3)
    midtones = pixels[(pixels[:, 0] >= MIDTONE_L[0]) & (pixels[:, 0] <= MIDTONE_L[1])]
    if len(midtones) < max(MIN_MIDTONE_PIXELS, MIN_MIDTONE_FRACTION * len(pixels)):
        return None
    return float(np.median(midtones[:, 1])), float(np.median(midtones[:, 2]))


@dataclass
class _Region:
    order: int  # the page's place in the chapter
    page: str
    query: str
    work_box: Box
    key: tuple
    reference: str
    file: str = ""
    box: Box | None = None
    color: Color | None = None


def _record_regions(order: int, name: str, retrieval: dict | None) -> tuple[list[_Region], Box] | str:
    """A result's keyed regions (working pixels) and its content box, or why it cannot be checked."""
    from pydantic import ValidationError

    from engine.project.schema import RetrievalRecordModel

    if retrieval is None:
        return "colored before ColorFlow kept a retrieval record: color it again to check it"
    try:
        record = RetrievalRecordModel.model_validate(json.loads(json.dumps(retrieval)))
        work = WorkSize(*record.work_size)
        box = tuple(record.content_box)
        if not (0 <= box[0] < box[2] <= work.width and 0 <= box[1] < box[3] <= work.height):
            raise ValueError(f"content box {list(box)} is not inside the {work} working frame")
    except (ValidationError, ValueError, TypeError) as exc:
        detail = str(exc).splitlines()[0]
        return f"its retrieval record is not usable ({detail}): color it again to check it"
    regions = []
    for query, work_box, picks in zip(QUERY_PATCHES, query_boxes(work), record.picks):
        if picks:
            top = picks[0]
            # a patch of a reference is the same part of it whatever the working size its box was cut at;
            # a region pin's box is in the reference's own pixels
            key = (top.ref, top.patch, tuple(top.box) if top.patch == "region" and top.box else None)
            regions.append(_Region(order, name, query, work_box, key, f"{top.ref}#{top.patch}"))
    return regions, box


def _measure(project, page, variation, regions: list[_Region], content_box: Box) -> str | None:
    """Fill in the regions' boxes and colors from the page's colored file; why not, when it cannot be read."""
    from skimage.color import rgb2lab

    from engine.io.chapter import ImageSource, load_image

    try:
        path = project.variation_path(page, variation)
        image = load_image(ImageSource(path, label=variation.file), "RGB").image
    except (ProjectFileError, PageDecodeError) as exc:
        return f"its colored file was not read: {exc}"
    width, height = image.size
    step = max(1, math.ceil(math.sqrt(width * height / MAX_SAMPLES)))
    lab = rgb2lab(np.asarray(image)[::step, ::step])
    for region in regions:
        region.file = variation.file
        region.box = box_on_page(region.work_box, content_box, (width, height))
        if region.box is not None:
            x0, y0, x1, y1 = (-(-v // step) for v in region.box)
            region.color = _midtone_color(lab[y0:y1, x0:x1])
    return None


def check_consistency(project, threshold: float = DEFAULT_THRESHOLD) -> ConsistencyReport:
    """The drift check of a chapter project (see the module's docstring). Reads only the picked results'
    files, through project.variation_path (inside the project folder) and engine.io (size limits)."""
    with project.lock:  # the GUI may edit the project meanwhile: take what is checked now
        picked = [(order, page, copy.copy(page.picked_variation())) for order, page in enumerate(project.pages)]
    report = ConsistencyReport(threshold=threshold)
    found: list[tuple[Any, Any, list[_Region], Box]] = []
    for order, page, variation in picked:
        keyed = "not colored yet" if variation is None else _record_regions(order, page.name, variation.retrieval)
        if isinstance(keyed, str):
            report.unchecked.append((page.name, keyed))
        else:
            found.append((page, variation, *keyed))
    pages_of = defaultdict(set)
    for _, _, regions, _ in found:
        for region in regions:
            pages_of[region.key].add(region.order)
    recurring: list[_Region] = []
    for page, variation, regions, content_box in found:
        candidates = [region for region in regions if len(pages_of[region.key]) >= 2]
        why = _measure(project, page, variation, candidates, content_box) if candidates else (
            "none of its regions retrieved the same reference patch as another page")
        if why:
            report.unchecked.append((page.name, why))
            continue
        colored = [region for region in candidates if region.color is not None]
        report.regions_left_out += len(candidates) - len(colored)
        if not colored:
            report.unchecked.append((page.name, "its recurring regions are mostly ink and paper (too few "
                                                "mid-tone pixels to compare)"))
        recurring += colored
    worst = _compare_groups(recurring, report)
    for page, _, _, _ in found:
        if page.name not in worst and page.name not in dict(report.unchecked):
            report.unchecked.append((page.name, "its recurring regions recur on no other page that could be read"))
    report.pages = [drift for drift, _ in sorted(worst.values(), key=lambda item: (-item[0].delta_e, item[1]))]
    place = {page.name: order for order, page, _ in picked}
    report.unchecked.sort(key=lambda item: place[item[0]])
    return report


def _compare_groups(regions: list[_Region], report: ConsistencyReport) -> dict[str, tuple[PageDrift, int]]:
    """Each page's most deviant region against its group's median color, with the member to match."""
    groups = defaultdict(list)
    for region in regions:
        groups[region.key].append(region)
    worst: dict[str, tuple[PageDrift, int]] = {}
    for members in groups.values():
        if len({member.order for member in members}) < 2:
            continue
        report.groups += 1
        center = (median(m.color[0] for m in members), median(m.color[1] for m in members))
        deviation = {id(m): delta_e00(m.color, center) for m in members}
        ranked = sorted(members, key=lambda m: (deviation[id(m)], m.order, QUERY_PATCHES.index(m.query)))
        for member in sorted(members, key=lambda m: (m.order, QUERY_PATCHES.index(m.query))):
            other = next(m for m in ranked if m.order != member.order)
            drift = PageDrift(member.page, deviation[id(member)], member.query, member.box, other.page, other.query,
                              other.box, other.file, member.reference)
            if member.page not in worst or drift.delta_e > worst[member.page][0].delta_e:
                worst[member.page] = (drift, member.order)
    return worst
