"""RAP: embed query and reference patches (cached), score by cosine, pick top-3 with pins/rejects,
then place the region pins ahead of retrieval."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
from PIL import Image

from engine.core.geometry import QUERY_PATCHES, REFERENCE_PATCHES, Box, PageFit, WorkSize, choose_work_size, crop_patch, fit_page, fit_reference, query_boxes, reference_boxes
from engine.rap.canvas import TOP_K, build_canvas, build_mask
from engine.io.chapter import ImageSource, PageImage, load_image
from engine.io.imaging import open_image
from engine.rap.curation import Choices, RegionPin
from engine.io.archive import archives_kept_open
from engine.rap.embedding import Embedder, EmbeddingCache
from engine.core.errors import ColorFlowError, InputError, PageDecodeError

REGION = "region"  # Candidate.patch of a region pin: its box is in the reference's ORIGINAL pixels
_T = TypeVar("_T")


@dataclass(frozen=True)
class Candidate:
    """One reference patch that can be placed in a canvas."""

    ref: str
    patch: str  # one of REFERENCE_PATCHES, or REGION
    box: Box | None  # in working-size pixels of the reference (REGION: its original pixels); None = whole image


@dataclass(frozen=True)
class Pick:
    """A candidate chosen for one query patch, with its cosine score."""

    candidate: Candidate
    score: float
    pinned: bool = False

    def to_json(self) -> dict[str, Any]:
        box = list(self.candidate.box) if self.candidate.box is not None else None
        return {
            "ref": self.candidate.ref,
            "patch": self.candidate.patch,
            "box": box,
            "score": round(self.score, 6),
            "pinned": self.pinned,
        }


def select_picks(
    scores: np.ndarray,
    candidates: Sequence[Candidate],
    choices: Choices = Choices(),
    k: int = TOP_K,
) -> list[list[Pick]]:
    """Top-k candidates per query patch (rows of `scores`), honouring pins and rejects.

    Rejected candidates never appear. Each pin takes one slot at the query patch it matches
    best (its best-scoring patch there), moving on to the next best query patch when that one
    already holds k pins; pinned picks come first, in the order the user pinned them, and the
    rest is filled by score. Like the
    official code, one candidate may serve several query patches.
    """
    n_queries = scores.shape[0]
    allowed = np.array(
        [not any(t.matches(c.ref, c.patch) for t in choices.rejects) for c in candidates], bool
    )
    masked = np.where(allowed[None, :], scores, -np.inf)
    pinned: list[list[int]] = [[] for _ in range(n_queries)]
    pin_groups = []  # (order the user pinned in, candidate indices the pin covers)
    for order, target in enumerate(choices.pins):
        members = [i for i, c in enumerate(candidates) if allowed[i] and target.matches(c.ref, c.patch)]
        if members:
            pin_groups.append((order, members))
    # Strongest pins choose their query patch first so a weak pin cannot push a strong one
    # off its best patch; within a patch, pins then sit in the order the user pinned them.
    pin_groups.sort(key=lambda g: -masked[:, g[1]].max())
    pin_order: dict[tuple[int, int], int] = {}
    for order, members in pin_groups:
        best_per_query = masked[:, members].max(axis=1)
        for query in np.argsort(-best_per_query, kind="stable"):
            if len(pinned[query]) < k:
                best = members[int(np.argmax(masked[query, members]))]
                if best not in pinned[query]:
                    pinned[query].append(best)
                    pin_order[(query, best)] = order
                    break
    picks = []
    for query in range(n_queries):
        chosen = sorted(pinned[query], key=lambda i: pin_order[(query, i)])
        for index in np.argsort(-masked[query], kind="stable"):
            if len(chosen) >= k or not np.isfinite(masked[query, index]):
                break
            if index not in chosen:
                chosen.append(int(index))
        picks.append(
            [Pick(candidates[i], float(scores[query, i]), i in pinned[query]) for i in chosen]
        )
    return picks


def place_regions(
    picks: Sequence[Sequence[Pick]], regions: Sequence[tuple[RegionPin, Candidate]], k: int = TOP_K
) -> list[list[Pick]]:
    """Each region pin's pick at its rank of its query region, ahead of retrieval (pinned, score 0):
    the picks from that rank on move down one and the row keeps k. Lower ranks are placed first, so
    two region pins of one query region each land on their own rank (a row left shorter by rejects
    gives a pin the first free rank). Rejects do not apply: a region pin is an explicit choice."""
    rows = [list(row) for row in picks]
    for pin, candidate in sorted(regions, key=lambda placed: placed[0].rank):
        row = rows[QUERY_PATCHES.index(pin.query)]
        row.insert(pin.rank - 1, Pick(candidate, 0.0, pinned=True))
        del row[k:]
    return rows


def _cached(cache: OrderedDict, key, make: Callable[[], _T], limit: int) -> _T:
    """`cache[key]`, made on a miss; the least recently used entries beyond `limit` are dropped."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


@dataclass
class PageRetrieval:
    """Everything RAP decided for one page; `to_json` is the retrieval.json contract."""

    page: str
    work_size: WorkSize
    fit: PageFit
    query_image: Image.Image  # the page at working size, RGB gray
    picks: list[list[Pick]]
    canvas: Image.Image
    mask: Image.Image
    warnings: list[str] = field(default_factory=list)

    @property
    def query_boxes(self) -> list[Box]:
        return query_boxes(self.work_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "work_size": [self.work_size.width, self.work_size.height],
            "query_boxes": [list(b) for b in self.query_boxes],
            "picks": [[p.to_json() for p in row] for row in self.picks],
            "canvas_size": list(self.work_size.canvas),
            "page_size": list(self.fit.page_size),
            "content_box": list(self.fit.content_box),
            "warnings": self.warnings,
        }


def _boxes_array(boxes: Sequence[Box | None]) -> np.ndarray:
    return np.array([b if b is not None else (-1, -1, -1, -1) for b in boxes], np.int64)


@dataclass
class _Reference:
    source: ImageSource
    sha256: str | None = None
    error: str | None = None
    stamp: tuple[int, int, int] | None = None  # its file's (mtime, size, inode) when first read: _file_stamp


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size, found.st_ino


class Retriever:
    """Retrieval for a chapter: reference patches are embedded once and cached on disk."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache | None = None) -> None:
        self.embedder = embedder
        self.cache = cache or EmbeddingCache()
        self._references: dict[str, _Reference] = {}
        self._fitted: OrderedDict[tuple[str, WorkSize], Image.Image] = OrderedDict()
        self._originals: OrderedDict[str, Image.Image] = OrderedDict()  # references cut by region pins
        self.reference_images_embedded = 0
        self.query_images_embedded = 0

    def release_encoder(self) -> None:
        """Free the image encoder's accelerator memory before diffusion (embedders without one
        have nothing to free; cached embeddings keep later retrievals from needing it)."""
        release = getattr(self.embedder, "release", None)  # optional: not part of the Embedder protocol
        if release is not None:
            release()

    # --- references -------------------------------------------------------------------
    def _reference(self, source: ImageSource) -> _Reference:
        """Its state, started afresh when its file changed since (an accepted page colored again in place,
        a reference repainted): digest, decoded copies and error are those of the file as it is now."""
        stamp = _file_stamp(source.path)
        entry = self._references.get(source.ref)
        if entry is None or entry.stamp != stamp:
            entry = self._references[source.ref] = _Reference(source, stamp=stamp)
            for key in [key for key in self._fitted if key[0] == source.ref]:
                del self._fitted[key]
            self._originals.pop(source.ref, None)
        return entry

    def _load(self, entry: _Reference) -> Image.Image:
        loaded = load_image(entry.source, "RGB")
        entry.sha256 = loaded.sha256
        return loaded.image

    def _fitted_reference(self, entry: _Reference, size: WorkSize) -> Image.Image:
        # ~ 48 x 1.2 MB: enough for every pick of a page
        return _cached(self._fitted, (entry.source.ref, size), lambda: fit_reference(self._load(entry), size), 48)

    def _original_reference(self, entry: _Reference) -> Image.Image:
        """The reference as decoded (region pins cut it in its own pixels); a page's few kept."""
        return _cached(self._originals, entry.source.ref, lambda: self._load(entry), 4)

    def _reference_sha(self, entry: _Reference) -> str:
        if entry.sha256 is None:
            data = entry.source.read_bytes()
            # Its header is checked (allowed format, size) even when its embeddings are cached:
            # a file cached before a format was refused must not slip through the cache.
            open_image(data, entry.source.name)
            entry.sha256 = hashlib.sha256(data).hexdigest()
        return entry.sha256

    def reference_candidates(
        self, sources: Sequence[ImageSource], size: WorkSize
    ) -> tuple[list[Candidate], np.ndarray, list[str]]:
        """All usable reference patches and their embeddings; unreadable references are skipped
        with a warning each."""
        boxes = reference_boxes(size)
        boxes_key = _boxes_array(boxes)
        warnings: list[str] = []
        blocks: dict[str, np.ndarray] = {}  # ref -> its 5 patch embeddings
        missing: list[tuple[_Reference, list[Image.Image]]] = []
        with archives_kept_open():  # references packed in one CBZ: the archive is parsed once
            for source in sources:
                entry = self._reference(source)
                if entry.error:
                    warnings.append(entry.error)
                    continue
                try:
                    sha = self._reference_sha(entry)
                    cached = self.cache.get(self.embedder.encoder_id, sha, str(size), "ref", boxes_key)
                    if cached is None:
                        fitted = self._fitted_reference(entry, size)
                        missing.append((entry, [crop_patch(fitted, b) for b in boxes]))
                    else:
                        blocks[source.ref] = cached
                except (PageDecodeError, OSError) as exc:
                    entry.error = f"reference skipped: {exc}"
                    warnings.append(entry.error)
        if missing:
            flat = [patch for _, patches in missing for patch in patches]
            embedded = self.embedder.embed(flat)
            self.reference_images_embedded += len(flat)
            for i, (entry, _) in enumerate(missing):
                block = embedded[i * len(boxes) : (i + 1) * len(boxes)]
                self.cache.put(self.embedder.encoder_id, entry.sha256, str(size), "ref", boxes_key, block)
                blocks[entry.source.ref] = block
        candidates: list[Candidate] = []
        vectors: list[np.ndarray] = []
        for source in sources:  # in the order given, as the official code
            for name, box, vector in zip(REFERENCE_PATCHES, boxes, blocks.get(source.ref, ())):
                candidates.append(Candidate(source.ref, name, box))
                vectors.append(vector)
        if not candidates:
            raise InputError("no usable reference images: " + "; ".join(warnings or ["none given"]))
        return candidates, np.stack(vectors), warnings

    def unusable_references(self) -> list[str]:
        """Why each reference found unusable so far is skipped (one line each, naming it)."""
        return [entry.error for entry in self._references.values() if entry.error]

    def reference_patch(self, candidate: Candidate, size: WorkSize) -> Image.Image:
        """The pixels of a candidate at working size (for the canvas and the GUI); a region pin's
        are its box of the original reference (the canvas resizes every patch into its cell)."""
        entry = self._reference(ImageSource.parse(candidate.ref))
        if candidate.patch == REGION:
            return self._original_reference(entry).crop(candidate.box)
        return crop_patch(self._fitted_reference(entry, size), candidate.box)

    def region_candidates(
        self, regions: Sequence[RegionPin], references: Sequence[ImageSource] = ()
    ) -> tuple[list[tuple[RegionPin, Candidate]], list[str]]:
        """Each region pin with its candidate (its box in the reference's own pixels); a pin whose
        reference cannot be read is left out with a warning: its cell keeps the retrieved patch."""
        known = {source.ref: source for source in references}
        placed, warnings = [], []
        for pin in regions:
            entry = self._reference(known.get(pin.ref) or ImageSource.parse(pin.ref))
            try:
                width, height = self._original_reference(entry).size
            except (ColorFlowError, OSError) as exc:
                warnings.append(f"region pin ({pin.query} region, rank {pin.rank}) not used: {exc}; that canvas "
                                "cell keeps the retrieved patch (restore the file, or remove the pin)")
                continue
            placed.append((pin, Candidate(pin.ref, REGION, pin.pixel_box(width, height))))
        return placed, warnings

    # --- pages ------------------------------------------------------------------------
    def query_embeddings(
        self, page: PageImage, size: WorkSize, prepared=None
    ) -> tuple[Image.Image, PageFit, np.ndarray]:
        """The query image at working size, its fit, and its 4 patch embeddings (cached).

        `prepared` (preprocess.PreparedPage): the query is its G at W x H, cached under its key;
        without it, the page itself (gray, letterboxed)."""
        if prepared is not None:
            working, fit, content_key = prepared.query, prepared.query_fit, prepared.key
        else:
            working, fit = fit_page(page.image, size)
            content_key = page.sha256
        boxes = query_boxes(size)
        boxes_key = _boxes_array(boxes)
        vectors = self.cache.get(self.embedder.encoder_id, content_key, str(size), "query", boxes_key)
        if vectors is None:
            patches = [working.crop(b).convert("RGB") for b in boxes]
            vectors = self.embedder.embed(patches)
            self.query_images_embedded += len(patches)
            self.cache.put(
                self.embedder.encoder_id, content_key, str(size), "query", boxes_key, vectors
            )
        return working.convert("RGB"), fit, vectors

    def retrieve(
        self,
        page: PageImage,
        references: Sequence[ImageSource],
        choices: Choices = Choices(),
        size: WorkSize | None = None,
        prepared=None,
    ) -> PageRetrieval:
        """Run RAP for one gray page: pick reference patches and stitch the canvas and mask.
        With `prepared` (preprocess.PreparedPage) its query (G) is the page and sets the size."""
        work_size = prepared.work_size if prepared is not None else choose_work_size(page.image.size, size)
        candidates, matrix, warnings = self.reference_candidates(references, work_size)
        query_image, fit, query_vectors = self.query_embeddings(page, work_size, prepared)
        scores = query_vectors @ matrix.T
        regions, region_warnings = self.region_candidates(choices.regions, references)
        picks = place_regions(select_picks(scores, candidates, choices), regions)
        warnings += region_warnings
        known = {c.ref for c in candidates}
        for target in choices.pins:
            if target.ref not in known:
                warnings.append(f"pinned reference not available: {target.ref}")
        if any(len(row) < TOP_K for row in picks):
            warnings.append("rejects leave fewer than 3 reference patches: some canvas cells stay empty")
        placed = [[self.reference_patch(p.candidate, work_size) for p in row] for row in picks]
        canvas = build_canvas(query_image, placed, work_size)
        return PageRetrieval(
            page=page.source.name,
            work_size=work_size,
            fit=fit,
            query_image=query_image,
            picks=picks,
            canvas=canvas,
            mask=build_mask(work_size),
            warnings=warnings,
        )

