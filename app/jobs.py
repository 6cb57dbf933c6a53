"""Engine jobs the GUI queues on its worker: each runs in the worker thread and returns plain
data (PIL images, dicts) that the main thread turns into widgets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from engine.core.events import EventSink, Progress, ignore
from engine.core.geometry import QUERY_PATCHES, REFERENCE_PATCHES, query_boxes, reference_boxes
from engine.rap.canvas import PLACEMENT, cell_box
from engine.pipelines.session import EngineSession, RunSettings

from .document import ChapterDocument

THUMB = 96
PATCH_THUMB = 320  # long side: the hover preview; the panel scales it to its width
CANVAS_DISPLAY_MAX = 1600  # long side of the canvas shown (display only)


@dataclass
class OpenResult:
    document: ChapterDocument
    page_thumbs: list[Image.Image | None]
    reference_thumbs: dict[str, Image.Image]


def _thumb(image: Image.Image, size: int) -> Image.Image:
    copy = image.copy()
    copy.thumbnail((size, size))
    return copy


def source_thumbnail(source) -> Image.Image | None:
    """A reference's (or an accepted page's) thumbnail; None when it cannot be decoded."""
    from engine.io.chapter import load_image
    from engine.core.errors import PageDecodeError

    try:
        return _thumb(load_image(source, "RGB").image, THUMB)
    except PageDecodeError:
        return None


def reference_thumbnails(document: ChapterDocument) -> dict[str, Image.Image]:
    thumbs = {source.ref: source_thumbnail(source) for source in document.references}
    return {ref: thumb for ref, thumb in thumbs.items() if thumb is not None}


def reference_pool(document: ChapterDocument, settings: RunSettings):
    """What the window's pages are retrieved from: with a linked series library (project.series) or rolling
    references, the pool (reference_pool.build_pool) of the chapter's references, the library's and the
    accepted pages; else None (the chapter's references). Runs in the worker."""
    from engine.project.reference_pool import build_pool

    from .series_sync import linked_library

    series = linked_library(document.project)
    if series is None and not settings.rolling_refs:
        return None
    return build_pool(document.project, document.references, series, settings.rolling_refs)


def open_document(path: str, projects_dir: str | None = None, emit: EventSink = ignore) -> OpenResult:
    document = ChapterDocument.open(path, projects_dir)
    thumbs: list[Image.Image | None] = []
    for index, source in enumerate(document.chapter.sources):
        emit(Progress("reading pages", index + 1, len(document.chapter.sources), source.name))
        if source.ref in document.chapter.errors:
            thumbs.append(None)
            continue
        try:
            thumbs.append(_thumb(document.chapter.load_page(index).image, THUMB))
        except Exception:
            thumbs.append(None)
    return OpenResult(document, thumbs, reference_thumbnails(document))


Box = tuple[int, int, int, int]


@dataclass
class RejectedPatch:
    """A rejected target that applies to the page, for the References panel's Rejected list."""

    ref: str
    patch: str | None  # None: the whole reference
    scope: str  # "page", "chapter" or "series" (the linked series library's, for the whole series)
    thumb: Image.Image | None


def restore_and_open(path: str, projects_dir: str | None = None) -> OpenResult:
    """The project's previous good copy replaces its damaged file, then the chapter opens."""
    from engine.project.state import ChapterProject

    from .document import project_folder_for

    resolved = Path(path).expanduser().resolve()
    ChapterProject.restore_backup(project_folder_for(resolved, Path(projects_dir).expanduser() if projects_dir else None))
    return open_document(path, projects_dir)


@dataclass
class RetrievalView:
    page_index: int
    picks: list[list[dict]]
    patch_thumbs: list[list[Image.Image]]
    canvas: Image.Image
    page_box: Box  # in display canvas pixels
    warnings: list[str]
    tile_boxes: list[list[Box]]  # [query region][rank]: the pick's cell, display pixels
    query_regions: list[Box]  # [query region]: the region of the page it was matched to
    rejected: list[RejectedPatch]


def page_style(document: ChapterDocument, index: int, settings: RunSettings) -> str | None:
    """The input style the page's canvas is prepared with (its own, the chapter's, or auto's); auto's
    suggestion for a readable page is made once and kept in the project (shown, applied only under auto)."""
    source = document.chapter.sources[index]
    if document.project.page(source.name).suggested is None and source.ref not in document.chapter.errors:
        from engine.preprocess.style_suggest import suggest_style

        suggestion = suggest_style(document.chapter.load_page(index).image)
        document.project.record_suggestion(source.name, suggestion.style, suggestion.reason)
        document.project.save()
    return document.project.page_style(source.name, settings.input_style)


def retrieve_view(session: EngineSession, document: ChapterDocument, index: int, settings: RunSettings,
                  emit: EventSink = ignore) -> RetrievalView:
    """RAP for one page, as the window shows it (prepared with the page's input style); `emit` hears
    each stage (models loading, matching)."""
    from engine.pipelines.chapter_pages import retrieval_inputs

    name = document.chapter.sources[index].name
    references, choices = retrieval_inputs(document.project, document.references,
                                           reference_pool(document, settings), name)
    if not references:
        raise ValueError("add colored reference pages first (References panel, + Add references)")
    style = page_style(document, index, settings)
    if document.chapter.sources[index].ref not in document.chapter.errors:  # an unreadable page fails at once
        emit(Progress("loading models", 0, 1, name))  # instant once loaded: the stage shows while it is slow
        session.preparer(settings, style)
        session.retriever(settings)
    emit(Progress("RAP", 0, 1, name))
    result = session.retrieve_page(document.chapter, index, references, choices=choices, settings=settings, style=style)
    retriever = session.retriever(settings)
    patches = [[_thumb(retriever.reference_patch(p.candidate, result.work_size), PATCH_THUMB) for p in row] for row in result.picks]
    canvas = result.canvas
    scale = min(1.0, CANVAS_DISPLAY_MAX / max(canvas.size))
    if scale < 1.0:
        canvas = canvas.resize((int(canvas.width * scale), int(canvas.height * scale)), Image.BILINEAR)
    size = result.work_size

    def shown(box) -> Box:
        return tuple(int(v * scale) for v in box)

    page_x, page_y = size.query_box_in_canvas[:2]
    regions = [shown((x0 + page_x, y0 + page_y, x1 + page_x, y1 + page_y)) for x0, y0, x1, y1 in query_boxes(size)]
    tiles = [[shown(cell_box(size, *PLACEMENT[region][rank])) for rank in range(len(row))]
             for region, row in zip(QUERY_PATCHES, result.picks)]
    rejected = rejected_patches(retriever, document, name, size)
    return RetrievalView(index, result.to_json()["picks"], patches, canvas, shown(size.query_box_in_canvas),
                         list(result.warnings), tiles, regions, rejected)


def rejected_patches(retriever, document: ChapterDocument, page: str, size) -> list[RejectedPatch]:
    """The page's own rejects, the chapter's, then the linked series library's, each with a thumbnail of what
    was rejected."""
    from engine.core.errors import ColorFlowError
    from engine.rap.retrieval import Candidate

    from .series_sync import linked_library

    curation = document.project.curation
    page_rejects = curation.pages[page].rejects if page in curation.pages else []
    try:
        library = linked_library(document.project)
    except (ColorFlowError, OSError):
        library = None  # the Series dock says why it cannot be read
    series_rejects = library.choices().rejects if library is not None else []
    entries = []
    for scope, targets in (("page", page_rejects), ("chapter", curation.chapter.rejects), ("series", series_rejects)):
        for target in targets:
            patch = target.patch or "full"
            box = reference_boxes(size)[REFERENCE_PATCHES.index(patch)] if patch in REFERENCE_PATCHES else None
            try:
                thumb = _thumb(retriever.reference_patch(Candidate(target.ref, patch, box), size), PATCH_THUMB)
            except (ColorFlowError, OSError, ValueError):
                thumb = None  # a reference no longer on disk still shows, without a picture
            entries.append(RejectedPatch(target.ref, target.patch, scope, thumb))
    return entries


def result_path(document: ChapterDocument, name: str) -> Path | None:
    from engine.core.errors import ProjectFileError

    state = next((p for p in document.project.pages if p.name == name), None)
    if state is None or state.status != "done":
        return None
    try:
        path = document.project.output_path(state, "colored")  # never outside the project
    except ProjectFileError:
        return None
    return path if path is not None and path.is_file() else None


def device_in_words(choice: str) -> str:
    """What `choice` resolves to on this machine, in the engine's words ("cpu", "cuda:0 (NVIDIA …, 79.2 GiB)")."""
    from engine.core.devices import describe_device, pick_device

    return describe_device(pick_device(choice))
