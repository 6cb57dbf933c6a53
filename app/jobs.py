"""Engine jobs the GUI queues on its worker: each runs in the worker thread and returns plain
data (PIL images, dicts) that the main thread turns into widgets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from engine.session import EngineSession, RunSettings

from .document import ChapterDocument

THUMB = 96
PATCH_THUMB = 72
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


def reference_thumbnails(document: ChapterDocument) -> dict[str, Image.Image]:
    from engine.io.chapter import load_image
    from engine.errors import PageDecodeError

    thumbs = {}
    for source in document.references:
        try:
            thumbs[source.ref] = _thumb(load_image(source, "RGB").image, THUMB)
        except PageDecodeError:
            continue
    return thumbs


def open_document(path: str, projects_dir: str | None = None) -> OpenResult:
    document = ChapterDocument.open(path, projects_dir)
    thumbs: list[Image.Image | None] = []
    for index, source in enumerate(document.chapter.sources):
        if source.ref in document.chapter.errors:
            thumbs.append(None)
            continue
        try:
            thumbs.append(_thumb(document.chapter.load_page(index).image, THUMB))
        except Exception:
            thumbs.append(None)
    return OpenResult(document, thumbs, reference_thumbnails(document))


@dataclass
class RetrievalView:
    page_index: int
    picks: list[list[dict]]
    patch_thumbs: list[list[Image.Image]]
    canvas: Image.Image
    page_box: tuple[int, int, int, int]  # in display canvas pixels
    warnings: list[str]


def retrieve_view(session: EngineSession, document: ChapterDocument, index: int, settings: RunSettings) -> RetrievalView:
    name = document.chapter.sources[index].name
    if not document.references:
        raise ValueError("add colored reference pages first (References panel, + Add references)")
    result = session.retrieve_page(document.chapter, index, document.references, document.project.choices_for(name), settings)
    retriever = session.retriever(settings)
    patches = [[_thumb(retriever.reference_patch(p.candidate, result.work_size), PATCH_THUMB) for p in row] for row in result.picks]
    canvas = result.canvas
    scale = min(1.0, CANVAS_DISPLAY_MAX / max(canvas.size))
    if scale < 1.0:
        canvas = canvas.resize((int(canvas.width * scale), int(canvas.height * scale)), Image.BILINEAR)
    x0, y0, x1, y1 = result.work_size.query_box_in_canvas
    box = tuple(int(v * scale) for v in (x0, y0, x1, y1))
    return RetrievalView(index, result.to_json()["picks"], patches, canvas, box, list(result.warnings))


def result_path(document: ChapterDocument, name: str) -> Path | None:
    state = next((p for p in document.project.pages if p.name == name), None)
    if state and state.status == "done" and state.outputs.get("colored"):
        path = document.project.folder / state.outputs["colored"]
        return path if path.is_file() else None
    return None
