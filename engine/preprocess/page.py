"""Page preparation before RAP: the page framed at 1.5W x 1.5H, G (ScreenStyle, plain gray or lines), the query.

The official app fits the page to 1.5W x 1.5H, runs the ScreenStyle pass on it (G), and uses
G everywhere: G downscaled to W x H is RAP's query and the page in the canvas, and G itself is
GSRP's gray guide. G is cached per page (memory and disk), keyed by the page content, the
working size, the framing, the style, the pass's seed and the model files.

The line-art styles (the official Sketch and Sketch_Shading) run the line extractor on the framed
page instead: the line image is GSRP's guide in both, and the query is the line image (sketch) or
the shading composite (sketch-shading) downscaled to W x H. One cached line image serves both.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from engine.core.options import LINE_ART_STYLES, InputStyle
from engine.core.geometry import Box, PageFit, WorkSize, fit_page, fit_reference
from engine.io.cachedir import touch, trim_cache
from engine.io.fileio import atomic_save_image

INPUT_STYLES = tuple(InputStyle)  # as declared in engine/core/options.py
FRAME_SCALE = 1.5  # the official GSRP frame and ScreenStyle input: 1.5 W x 1.5 H
# G frames kept on disk (about 1 MB each at 768x1200): some 2,000 pages, least recently used go first
DISK_LIMIT_BYTES = 2 * 1024**3
FITS = ("letterbox", "crop")  # ours never cuts a page; "crop" is the official centre-crop fit


@dataclass
class PreparedPage:
    """A page ready for the three stages."""

    work_size: WorkSize
    frame: Image.Image  # G (or the line image) at 1.5W x 1.5H (RGB, gray): GSRP's guide
    frame_fit: PageFit  # where the page's pixels sit in the frame
    query: Image.Image  # G, the lines or the shading composite at W x H (RGB): RAP's query and the page in the canvas
    query_fit: PageFit
    style: str
    key: str  # identifies frame and query: equal keys, equal pixels


def frame_size(size: WorkSize) -> tuple[int, int]:
    """1.5 W x 1.5 H (exact: W, H are multiples of 32)."""
    return int(size.width * FRAME_SCALE), int(size.height * FRAME_SCALE)


def _scaled_box(box: Box, factor: float) -> Box:
    return tuple(int(round(v * factor)) for v in box)  # type: ignore[return-value]


def frame_page(page: Image.Image, size: WorkSize, fit: str = "letterbox") -> tuple[Image.Image, PageFit, Image.Image, PageFit]:
    """P: the page in the 1.5x frame with its fit there, and the page at working size with its fit.

    "letterbox": as `fit_page` (never crops), the frame's page box derived from the working-size
    box (x1.5) so both framings agree to the pixel. "crop": the official fit (straight resize
    when aspects are close, else centre crop), the page filling both."""
    fw, fh = frame_size(size)
    if fit == "crop":
        framed, working = _official_fit(page, fw, fh), _official_fit(page, size.width, size.height)
        return framed, PageFit(page.size, (0, 0, fw, fh)), working, PageFit(page.size, (0, 0, size.width, size.height))
    if fit != "letterbox":
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    working, query_fit = fit_page(page, size)
    box = _scaled_box(query_fit.content_box, FRAME_SCALE)
    framed = Image.new("RGB", (fw, fh), (255, 255, 255))
    framed.paste(page.convert("RGB").resize((box[2] - box[0], box[3] - box[1]), Image.BICUBIC), box[:2])
    return framed, PageFit(page.size, box), working, query_fit


def _official_fit(page: Image.Image, width: int, height: int) -> Image.Image:
    """docs/reference/geometry.md "Fit": straight bicubic resize within 15% of the aspect, else centre crop first."""
    return fit_reference(page, (width, height))


class PagePreparer:
    """Turns pages into PreparedPage, running the ScreenStyle pass (or the line extractor) once
    per page and caching G (or the line image)."""

    def __init__(self, networks=None, cache_dir: Path | None = None, memory_items: int = 8,
                 disk_limit_bytes: int = DISK_LIMIT_BYTES, line_extractor=None) -> None:
        self.networks = networks  # ScreenStyleNetworks, needed for style "screen"
        self.line_extractor = line_extractor  # preprocess.lines.LineExtractor, for the line-art styles
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.disk_limit_bytes = disk_limit_bytes
        self._memory: OrderedDict[str, Image.Image] = OrderedDict()
        self._memory_items = memory_items
        self.passes_run = 0  # ScreenStyle passes or line extractions actually computed (not from a cache)

    def key(self, page_sha256: str, size: WorkSize, style: str, fit: str, seed: int,
            pad_value: float | None = None) -> str:
        models = self.networks.fingerprint if (style == "screen" and self.networks is not None) else ""
        text = f"{page_sha256}|{size}|{style}|{fit}|{seed if style == 'screen' else ''}|{models}"
        if style in LINE_ART_STYLES:  # the line image: shared by both line-art styles
            net = self.line_extractor
            text = f"{page_sha256}|{size}|lines|{fit}|{pad_value}|{getattr(net, 'fingerprint', '')}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def prepare(self, page: Image.Image, page_sha256: str, size: WorkSize, style: str = "screen",
                fit: str = "letterbox", seed: int = 0, *, pad_value: float | None = None) -> PreparedPage:
        """`seed` seeds the ScreenStyle pass's global-RNG draws (see screenstyle.py); `pad_value`
        pads the line extractor's input (lines.line_pad_value; None: ours, white)."""
        if style not in INPUT_STYLES:
            raise ValueError(f"input style must be one of {', '.join(INPUT_STYLES)}, got {style!r}")
        framed, frame_fit, working, query_fit = frame_page(page, size, fit)
        if style in LINE_ART_STYLES:
            return self._prepare_lines(framed, frame_fit, query_fit, page_sha256, size, style, fit, pad_value)
        key = self.key(page_sha256, size, style, fit, seed)
        if style == "gray":  # the page itself, as before the ScreenStyle pass existed
            gray = framed.convert("L").convert("RGB")
            return PreparedPage(size, gray, frame_fit, working.convert("L").convert("RGB"), query_fit, style, key)
        frame = self._cached(key)
        if frame is None:
            if self.networks is None:
                from engine.core.errors import ModelError

                raise ModelError("the ScreenStyle networks are not loaded (input style 'screen')")
            from engine.preprocess.screenstyle import screen_style

            frame = screen_style(framed, self.networks, seed)
            self.passes_run += 1
            self._store(key, frame)
        query = frame.resize((size.width, size.height), Image.BICUBIC)
        return PreparedPage(size, frame, frame_fit, query, query_fit, style, key)

    def _prepare_lines(self, framed: Image.Image, frame_fit: PageFit, query_fit: PageFit, page_sha256: str,
                       size: WorkSize, style: str, fit: str, pad_value: float | None) -> PreparedPage:
        """The official extract_line_image / colorize_image wiring (see the module docstring)."""
        from engine.preprocess.lines import OURS_PAD_VALUE, extract_lines, shading_composite

        pad = OURS_PAD_VALUE if pad_value is None else float(pad_value)
        gray = framed.convert("L").convert("RGB")
        lines_key = self.key(page_sha256, size, style, fit, 0, pad)
        lines = self._cached(lines_key, "L")
        if lines is None:
            if self.line_extractor is None:
                from engine.core.errors import ModelError

                raise ModelError(f"the line extractor is not loaded (input style {style!r})")
            lines = extract_lines(gray, self.line_extractor, pad_value=pad)
            self.passes_run += 1
            self._store(lines_key, lines)
        frame = lines.convert("RGB")
        context = frame if style == "sketch" else shading_composite(gray, lines)
        query = context.resize((size.width, size.height), Image.BICUBIC)
        key = hashlib.sha256(f"{lines_key}|{style}".encode()).hexdigest()[:24]
        return PreparedPage(size, frame, frame_fit, query, query_fit, str(style), key)

    def _cached(self, key: str, mode: str = "RGB") -> Image.Image | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.cache_dir is not None:
            path = self.cache_dir / f"{key}.png"
            from engine.core.errors import PageDecodeError
            from engine.io.chapter import ImageSource, load_image

            try:
                frame = load_image(ImageSource(path), mode).image
            except PageDecodeError:  # missing, damaged or replaced: recomputed
                return None
            touch(path)  # recently used: trimmed last
            self._remember(key, frame)
            return frame
        return None

    def _store(self, key: str, frame: Image.Image) -> None:
        self._remember(key, frame)
        if self.cache_dir is not None:
            try:
                atomic_save_image(frame, self.cache_dir / f"{key}.png")
                trim_cache(self.cache_dir, self.disk_limit_bytes, "*.png")
            except OSError:
                pass  # a cache that cannot be written only costs a recompute

    def _remember(self, key: str, frame: Image.Image) -> None:
        self._memory[key] = frame
        while len(self._memory) > self._memory_items:
            self._memory.popitem(last=False)
