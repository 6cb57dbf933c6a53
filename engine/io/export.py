"""Exports: PNG folder, CBZ with ComicInfo.xml, layered OpenRaster (.ora) and PSD.

Every file is written to a temporary name and renamed into place, so an existing output is
never half-overwritten.
"""

from __future__ import annotations

import io
import re
import stat
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image

from engine.core.options import ExportFormat
from engine.core.errors import InputError, PageDecodeError, listed
from engine.core.events import EventSink, Notice, ignore
from engine.io.chapter import ImageSource, load_image
from engine.io.fileio import atomic_write, atomic_write_bytes

EXPORT_FORMATS = tuple(ExportFormat)  # as declared in engine/core/options.py


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# Unix mode of every member we write: a regular file, rw-r--r-- (zipfile's default for a name is
# 0600, which `unzip` turns into files only their owner can read).
MEMBER_MODE = stat.S_IFREG | 0o644


def _member(name: str, compress_type: int = zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    """A zip member's header: stamped now, made on Unix with MEMBER_MODE."""
    info = zipfile.ZipInfo(name, date_time=time.localtime(time.time())[:6])
    info.create_system = 3  # Unix: the high 16 bits of external_attr are the st_mode
    info.external_attr = MEMBER_MODE << 16
    info.compress_type = compress_type
    return info


@dataclass(frozen=True)
class ComicMetadata:
    """ComicInfo.xml fields; manga right-to-left by default (readers then page it correctly)."""

    title: str
    series: str = ""
    number: str = ""
    manga: str = "YesAndRightToLeft"  # ComicInfo values: Yes, YesAndRightToLeft, No, Unknown

    @classmethod
    def for_chapter(cls, title: str, settings: dict) -> "ComicMetadata":
        """From the project's settings (`series`, `number`, `manga`), else guessed from the title
        ("Series 12" -> series "Series", number "12")."""
        match = re.match(r"^(.*?)[\s_-]*(?:ch(?:apter)?\.?\s*)?(\d+(?:\.\d+)?)$", title, re.IGNORECASE)
        series, number = (match.group(1).strip(" _-") or title, match.group(2)) if match else (title, "")
        return cls(
            title=title,
            series=str(settings.get("series") or series),
            number=str(settings.get("number") or number),
            manga=str(settings.get("manga") or "YesAndRightToLeft"),
        )


def black_and_white(pages: int, gray_pages: int) -> str:
    """ComicInfo's BlackAndWhite (schema v2.0 values Yes/No/Unknown): Yes only when every page is
    gray, No when every page is colored, Unknown for a mix."""
    if pages and gray_pages == pages:
        return "Yes"
    return "No" if pages and not gray_pages else "Unknown"


def comic_info(meta: ComicMetadata | str, sizes: Sequence[tuple[int, int]] | int, gray_pages: int = 0) -> str:
    """ComicInfo.xml (the Anansi/ComicRack schema most readers understand, its elements in the
    v2.0 schema's order), with a Pages list; `gray_pages` of them are not colored."""
    if isinstance(meta, str):
        meta = ComicMetadata(meta)
    if isinstance(sizes, int):
        sizes = [(0, 0)] * sizes
    pages = "".join(
        f'    <Page Image="{i}" ImageWidth="{w}" ImageHeight="{h}"/>\n' if w else f'    <Page Image="{i}"/>\n'
        for i, (w, h) in enumerate(sizes)
    )
    optional = "".join(
        f"  <{tag}>{escape(value)}</{tag}>\n" for tag, value in (("Series", meta.series), ("Number", meta.number)) if value
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ComicInfo xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
        f"  <Title>{escape(meta.title)}</Title>\n"
        f"{optional}"
        "  <Notes>Colored with ColorFlow desktop (reference-based manga colorization).</Notes>\n"
        f"  <PageCount>{len(sizes)}</PageCount>\n"
        f"  <BlackAndWhite>{black_and_white(len(sizes), gray_pages)}</BlackAndWhite>\n"
        f"  <Manga>{escape(meta.manga)}</Manga>\n"
        f"  <Pages>\n{pages}  </Pages>\n"
        "</ComicInfo>\n"
    )


def export_cbz(pages: Sequence[tuple[str, Image.Image]], path: Path, title: str | ComicMetadata,
               gray_pages: int = 0) -> Path:
    """A CBZ whose page files sort in reading order (zero-padded numbers) + ComicInfo.xml;
    `gray_pages` of the pages are not colored (original pages or placeholders)."""
    width = max(3, len(str(len(pages))))
    meta = title if isinstance(title, ComicMetadata) else ComicMetadata(title)

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for number, (name, image) in enumerate(pages, start=1):
                archive.writestr(_member(f"{number:0{width}d}_{Path(name).stem}.png"), _png_bytes(image))
            archive.writestr(_member("ComicInfo.xml"), comic_info(meta, [image.size for _, image in pages], gray_pages))

    atomic_write(Path(path), write)
    return Path(path)


def color_layer(colored: Image.Image, ink: Image.Image, floor: int = 32) -> Image.Image:
    """A flat color layer that, with the ink multiplied over it, recomposes the colored page:
    color = colored / ink where the ink is light enough to divide by, the colored page as is
    under dark ink (black line art hides it anyway)."""
    ink_array = np.asarray(ink.convert("L"), dtype=np.float32)[..., None]
    color = np.asarray(colored.convert("RGB"), dtype=np.float32)
    divided = np.clip(color * 255.0 / np.maximum(ink_array, 1.0), 0, 255)
    layer = np.where(ink_array >= floor, divided, color)
    return Image.fromarray((layer + 0.5).astype(np.uint8), "RGB")


def export_ora(colored: Image.Image, ink: Image.Image, path: Path, root: Path | None = None) -> Path:
    """OpenRaster: the original ink as a multiply layer over a color layer. With `root` (the
    project folder), no folder between it and `path` may be a link (`atomic_write`)."""
    ink_rgba = ink.convert("L").convert("RGBA")
    color = color_layer(colored, ink).convert("RGBA")
    w, h = colored.size
    stack = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f'<image version="0.0.3" w="{w}" h="{h}">\n'
        "  <stack>\n"
        f'    <layer name={quoteattr("Ink")} src="data/ink.png" composite-op="svg:multiply" '
        'opacity="1.0" visibility="visible" x="0" y="0"/>\n'
        f'    <layer name={quoteattr("Color")} src="data/color.png" composite-op="svg:src-over" '
        'opacity="1.0" visibility="visible" x="0" y="0"/>\n'
        "  </stack>\n"
        "</image>\n"
    )
    thumbnail = colored.convert("RGB").copy()
    thumbnail.thumbnail((256, 256))

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w") as archive:
            # The mimetype must be the first member, stored uncompressed (OpenRaster spec).
            archive.writestr(_member("mimetype"), "image/openraster")
            archive.writestr(_member("stack.xml", zipfile.ZIP_DEFLATED), stack)
            archive.writestr(_member("data/ink.png"), _png_bytes(ink_rgba))
            archive.writestr(_member("data/color.png"), _png_bytes(color))
            archive.writestr(_member("mergedimage.png"), _png_bytes(colored.convert("RGB")))
            archive.writestr(_member("Thumbnails/thumbnail.png"), _png_bytes(thumbnail))

    atomic_write(Path(path), write, root)
    return Path(path)


def export_psd(colored: Image.Image, ink: Image.Image, path: Path, root: Path | None = None) -> Path:
    """PSD (psd-tools): a "Color" layer under an "Ink" layer in Multiply mode; `root` as for ORA."""
    from psd_tools import PSDImage
    from psd_tools.api.layers import PixelLayer
    from psd_tools.constants import BlendMode

    document = PSDImage.new("RGB", colored.size)
    color = PixelLayer.frompil(color_layer(colored, ink), document, name="Color")
    ink_layer = PixelLayer.frompil(ink.convert("L").convert("RGB"), document, name="Ink")
    ink_layer.blend_mode = BlendMode.MULTIPLY
    document.append(color)
    document.append(ink_layer)
    atomic_write(Path(path), lambda handle: document.save(handle), root)
    return Path(path)


class IncompleteExport(InputError):
    """Some pages of the chapter are not colored; the export was not written."""

    def __init__(self, pages: list[str]) -> None:
        self.pages = pages
        super().__init__(
            f"{len(pages)} page(s) not colored yet ({listed(pages, 6)}): nothing exported; color them first, "
            f"or export with the original pages in their place (--include-uncolored)"
        )


def _colored_outputs(project) -> dict[str, Path]:
    """Page name -> its finished colored PNG, checked to lie inside the project folder (a project
    file is shared and untrusted: an entry leading outside is a ProjectFileError naming it)."""
    return {p.name: project.output_path(p, "colored")
            for p in project.pages if p.status == "done" and p.outputs.get("colored")}


def uncolored_pages(project, chapter) -> list[str]:
    """Chapter pages without a finished colored output, in reading order."""
    colored = _colored_outputs(project)
    return [source.name for source in chapter.sources if source.name not in colored]


def export_project(project, chapter, fmt: str, title: str | None = None, include_uncolored: bool = False,
                   destination: Path | None = None, emit: EventSink = ignore) -> list[Path]:
    """Export a chapter project, in reading order, in one format: png = the per-page PNGs already
    in the project folder; cbz = `<title>-colored.cbz` beside them; ora/psd = `layered/NNN_name.<fmt>`
    with the page's own ink over the color (colored pages only). A CBZ of a chapter with pages
    not colored is refused (IncompleteExport), never written short, unless `include_uncolored`,
    which puts the original pages in their place (a labelled placeholder for a page that could not
    be read, with a Notice naming it to `emit`).

    `destination` (a user's choice in a Save dialog) replaces the default place: the CBZ file
    itself, or the folder that receives the PNG copies / layered files."""
    from engine.io.naming import page_folder_name

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    missing = uncolored_pages(project, chapter) if fmt == "cbz" else []
    if missing and not include_uncolored:
        raise IncompleteExport(missing)
    folder = Path(project.folder)
    colored = _colored_outputs(project)
    done = [(index, source, colored[source.name]) for index, source in enumerate(chapter.sources) if source.name in colored]
    if fmt == "png":
        if destination is None:
            return [path for _, _, path in done]
        copies = []
        for index, source, path in done:
            copy = Path(destination) / f"{page_folder_name(index, source.name)}.png"
            atomic_write_bytes(copy, path.read_bytes())
            copies.append(copy)
        return copies
    if fmt == "cbz":
        if not title:
            title = default_title(project)
        pages, gray_pages = _cbz_pages(chapter, colored, emit)
        meta = ComicMetadata.for_chapter(title, getattr(project, "settings", {}) or {})
        return [export_cbz(pages, Path(destination) if destination else folder / cbz_file_name(title), meta, gray_pages)]
    written = []
    # layered/ is the project's own: never written through a link (a shared project can carry one)
    layered, root = (Path(destination), None) if destination else (folder / "layered", folder)
    for index, source, path in done:
        ink = chapter.load_page(index).image
        target = layered / f"{page_folder_name(index, source.name)}.{fmt}"
        writer = export_ora if fmt == "ora" else export_psd
        written.append(writer(load_image(ImageSource(path), "RGB").image, ink, target, root))
    return written


def _cbz_pages(chapter, colored: dict[str, Path], emit: EventSink) -> tuple[list[tuple[str, Image.Image]], int]:
    """Every page the chapter lists, in reading order: its colored output, else the original page,
    else (it could not be read) a labelled placeholder the size of the chapter's first readable page,
    told to `emit`. Also returns how many of them are not colored."""
    from engine.io.placeholder import PLACEHOLDER_SIZE, placeholder_page, unreadable_reason

    pages: list[tuple[str, Image.Image | None]] = []
    unreadable: dict[int, str] = {}
    for index, source in enumerate(chapter.sources):
        if source.name in colored:
            pages.append((source.name, load_image(ImageSource(colored[source.name]), "RGB").image))
            continue
        reason = chapter.errors.get(source.ref)  # already refused when the chapter opened: not decoded again
        if reason is None:
            try:
                pages.append((source.name, chapter.load_page(index).image.convert("RGB")))
                continue
            except PageDecodeError as exc:
                reason = str(exc)
        unreadable[index] = reason
        pages.append((source.name, None))
    size = next((image.size for _, image in pages if image is not None), PLACEHOLDER_SIZE)
    for index, reason in unreadable.items():
        name = pages[index][0]
        pages[index] = (name, placeholder_page(name, reason, size))
        emit(Notice(f"could not be read ({unreadable_reason(name, reason)}); a labelled placeholder page "
                    "stands in its place in the CBZ", name))
    return pages, sum(1 for source in chapter.sources if source.name not in colored)


def default_title(project) -> str:
    """The chapter's title: the one set in the project (Chapter info), else its input's name."""
    chosen = (getattr(project, "settings", {}) or {}).get("title")
    if isinstance(chosen, str) and chosen.strip():
        return chosen.strip()
    return Path(project.inputs[0]).stem if project.inputs else Path(project.folder).name


# A title's part of a file name: with "-colored.cbz" (12 bytes) and atomic_write's temp name
# (".NAME.XXXXXXXX.tmp", 14 more) it stays under the 255-byte limit of a file name.
TITLE_NAME_BYTES = 200


def cbz_file_name(title: str) -> str:
    """The default name of a chapter's CBZ: `<title>-colored.cbz`, the title made safe and short."""
    return f"{_safe(title)}-colored.cbz"


def _safe(text: str) -> str:
    """A title as part of a file name: letters, digits, '.', '-', '_', at most TITLE_NAME_BYTES
    bytes (the ComicInfo title keeps the whole title)."""
    from engine.io.naming import cut_to_bytes

    safe = re.sub(r"[^\w.-]+", "_", text).strip("._")
    return cut_to_bytes(safe, TITLE_NAME_BYTES).rstrip("._") or "chapter"
