"""Every user run option, declared once: name, type, allowed values, default, label, help, range.

Derived from RunSettings below, and from nowhere else: the command-line arguments of every
command (engine/cli/options.py), the settings dialog (app/settings.py), the run options kept in
the project file (engine/project/schema.py), and the pipeline settings with their resume key
(engine/pipelines/settings.py). Inside the engine allowed values are the enums below; being StrEnums
they serialise to the strings they always were, so project files and resume keys are unchanged.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass, field, fields
from types import MappingProxyType, NoneType, UnionType
from typing import Any, Mapping

from engine.core.errors import InputError


class InputStyle(enum.StrEnum):
    """How a page becomes the stages' input (the preprocess stage)."""

    SCREEN = "screen"
    GRAY = "gray"
    SKETCH = "sketch"  # line art: the official line extractor's lines, colored by the PixArt family
    SKETCH_SHADING = "sketch-shading"  # line art with shading kept (the official Sketch_Shading style)


LINE_ART_STYLES = (InputStyle.SKETCH, InputStyle.SKETCH_SHADING)  # the styles the PixArt model family colors
# The --input-style choices: the four styles, and "auto": each page's style suggested from its pixels
# (engine/preprocess/style_suggest.py) and applied, the run saying which and why per page.
AUTO_STYLE = "auto"
StyleChoice = enum.StrEnum("StyleChoice", {**{s.name: s.value for s in InputStyle}, "AUTO": AUTO_STYLE})
StyleChoice.__doc__ = "An input style, or auto (chosen per page): the input_style option's values."
# Guidance when none is chosen: each model family's official pipeline default (SKETCH.md: the
# PixArt pipeline 4.5, the SD/gray one 7.5).
FAMILY_GUIDANCE = MappingProxyType({InputStyle.SCREEN: 7.5, InputStyle.GRAY: 7.5,
                                    InputStyle.SKETCH: 4.5, InputStyle.SKETCH_SHADING: 4.5})


def default_guidance(style: str) -> float:
    """The guidance a page of `style` is colored with when none is chosen (its model family's official default)."""
    return FAMILY_GUIDANCE[InputStyle(style)]


def effective_guidance(chosen: float | None, style: str) -> float:
    """The guidance a page of `style` is colored with: the chosen one, else its family's official default."""
    return default_guidance(style) if chosen is None else chosen


class Procedure(enum.StrEnum):
    OURS = "ours"
    OFFICIAL = "official"


class Device(enum.StrEnum):
    AUTO = "auto"
    CUDA = "cuda"
    MPS = "mps"
    CPU = "cpu"


class OutputSize(enum.StrEnum):
    PAGE = "page"
    GSRP = "gsrp"


class DecodeRegion(enum.StrEnum):
    CANVAS = "canvas"
    PAGE = "page"


class BatchNormMode(enum.StrEnum):
    BATCH = "batch"
    RUNNING = "running"


class ExportFormat(enum.StrEnum):
    CBZ = "cbz"
    PNG = "png"
    ORA = "ora"
    PSD = "psd"


MAX_SEED = 2**63 - 1  # torch generators take 64 bits; engine/core/rng.py's stream seeds stay below 2**63 too

PROCEDURE_HELP = (
    "ours or official. official reproduces the official app's procedure exactly "
    "(CPU/fp32 bit for bit): global RNG seeded as its fix_random_seeds, the conditioning latents "
    "sampled per CFG copy (guide at batch 2), the GSRP sample as the next global draw, the "
    "ScreenStyle pass seeded with the seed (the official app leaves it unseeded), the page "
    "centre-cropped to the working aspect, output at 1.5x the working size, no keep-ink. ours "
    "changes: every random draw comes from its own stream of the seed (start noise, conditioning "
    "samples, ScreenStyle, GSRP), the conditioning latents are sampled once and shared by both "
    "CFG halves so the guide runs once per step (half its work), pages are letterboxed, never "
    "cropped, and the output has the page's own size with keep-ink. Same seed, different draws: "
    "the two procedures give different (equally likely) colorings"
)
DECODE_DIFFERENCE = (
    "measured on the tiny random models at 256x384, 10 steps: up to 5 levels, mean 0.64 "
    "(scripts/measure_fidelity.py; trained weights may differ more)"
)


@dataclass(frozen=True)
class Described:
    """What RunSettings declares about an option besides its name, type and default."""

    label: str  # the settings dialog's row
    help: str  # the command line's help and the dialog's tooltip
    range: tuple[float, float | None] | None = None  # numbers: lowest and highest allowed (None: no limit)
    range_words: str = ""  # the range in words, where clearer than "between A and B"
    default_words: str = ""  # what the default means, where it is not the value itself (None)
    choice_labels: tuple[tuple[str, str], ...] = ()  # the dialog's text for each allowed value
    hint: str = ""  # the dialog's text beside a check box
    suggestions: tuple[str, ...] = ()  # usual values of an open text option (the dialog offers them)
    flag: str = ""  # the command-line flag, where it is not --name-with-dashes
    metavar: str = ""  # what the command line's help calls the value, where not the name (e.g. DIR)
    const: str = ""  # a flag whose value may be left out (--ray [ADDRESS]): the value it then takes
    in_project: bool = False  # recorded in the project file's settings (how the chapter was made)


def _declare(default: Any, **described: Any) -> Any:
    return field(default=default, metadata={"option": Described(**described)})


@dataclass(frozen=True)
class RunSettings:
    """Every option of a run that a user chooses, each declared once. Text (a settings file, a
    command line) becomes the enums; a value outside the declared ones is an OptionValueError."""

    models: str = _declare(
        "official", label="Models", suggestions=("official", "tiny"),
        help="model source: 'official' (hub download, real colors), 'tiny' (small random models, "
        "offline, meaningless colors, for trying things out) or a directory in the ColorFlow layout")
    device: Device = _declare(Device.AUTO, label="Device",
                              help="where models run: auto = CUDA, then Apple MPS, then CPU")
    steps: int = _declare(10, label="Denoising steps", range=(1, 100), help="denoising steps, 10 as official")
    guidance: float | None = _declare(
        None, label="Guidance", range=(0, None),
        default_words="auto: the official default of the page's model family, 7.5 (screen, gray) or 4.5 (sketch, "
        "sketch-shading)", help="classifier-free guidance scale")
    seed: int = _declare(
        0, label="Seed", range=(0, MAX_SEED), range_words="a non-negative integer",
        help="random seed: same seed, same result; it also seeds the ScreenStyle pass")
    size: str | None = _declare(
        None, label="Working size", default_words="the official size nearest in aspect to each page",
        help="working size WxH: 640x640, 512x800, 800x512 or multiples of 64 from 256 to 2048")
    input_style: StyleChoice = _declare(
        StyleChoice.SCREEN, label="Input style", in_project=True,
        choice_labels=(("screen", "ScreenStyle pass (official)"), ("gray", "plain grayscale"),
                       ("sketch", "line art (official Sketch)"), ("sketch-shading", "line art with shading (official Sketch_Shading)"),
                       ("auto", "auto: suggested per page")),
        help="screen (as the official app): each page goes through the official ScreenStyle pass first, "
        "and G, a 50/50 blend of the page's grayscale and its ScreenVAE re-screening, is what retrieval, "
        "the canvas and GSRP see (the weights were trained on such inputs); gray: the plain grayscale page; "
        "sketch and sketch-shading (the official app's line-art styles): the official line extractor's lines "
        "(sketch-shading keeps the page's dark and mid-gray areas as flat shading), colored by the PixArt-alpha "
        "model family (the ColorFlow sketch/ or shading/ weights; a frame that is not a multiple of 16, never one "
        "of our working sizes, is padded for the line extractor with white paper, by --procedure official with "
        "the official 1.0, nearly black); auto (ours, not in the official app): each page's "
        "style suggested from its pixels (share of mid-gray and screentone pixels vs pure line pixels) and applied, "
        "the run saying per page which and why. A page's own style in the project overrides the chapter's")
    procedure: Procedure = _declare(
        Procedure.OURS, label="Procedure", in_project=True, help=PROCEDURE_HELP,
        choice_labels=(("ours", "ours (faster, own noise streams)"),
                       ("official", "official (the official app, draw for draw)")))
    output_size: OutputSize | None = _declare(
        None, label="Output size", in_project=True, default_words="page; gsrp with the official procedure",
        help="page: each page at its own size; gsrp: 1.5x the working size, as the official app "
        "(useful to upscale small scans)")
    keep_ink: bool | None = _declare(
        None, label="Keep ink", default_words="on; off with the official procedure",
        hint="take lightness from the original page (line art stays exact)",
        help="take lightness from the original page so line art, text and screentone stay "
        "pixel-faithful; color only from the model. On line-art pages (sketch, sketch-shading) the page's "
        "ink is multiplied over the colors instead, as a line layer in multiply mode: black lines stay black, "
        "white paper takes the model's color (lightness from the page would leave the paper white)")
    low_vram: bool = _declare(
        False, label="Low VRAM", hint="keep every model on the CPU except while it runs (8 GB cards; slower)",
        help="every model stays on the CPU and moves to the GPU only while it runs (accelerate offload "
        "hooks, as diffusers' model CPU offload; 8 GB cards). Same pixels, slower")
    compile: bool = _declare(
        False, label="Compile models", hint="torch.compile the UNet and guide (for GPUs; the first page compiles)",
        help="torch.compile the guided UNet step and the Colorization Guide (the VAE stays uncompiled): the "
        "first page is slower while they compile (147 s on a 2-core CPU), later steps faster only where the "
        "backend pays: on that CPU (fp32) a step was 1.28x SLOWER, so it is meant for GPUs; measure yours with "
        "`colorflow bench speedups`. Same pixels within fp32 tolerance, not bit for bit (so --procedure "
        "official is then no longer the official app's exact pixels). Works with --low-vram (the offload "
        "hooks wrap the compiled code). On the CPU, torch's inductor backend needs a C/C++ compiler")
    decode: DecodeRegion = _declare(
        DecodeRegion.CANVAS, label="Decode",
        help="canvas (as official): decode the whole 2Wx2H canvas latent and cut out the page; page: "
        "decode only the page region plus 64 px, less memory but NOT the same pixels (the VAE "
        "decoder's norms and attention see the whole latent): " + DECODE_DIFFERENCE)
    vae_tiling: bool = _declare(False, label="VAE tiling",
                                help="encode/decode the canvas in tiles (least memory; changes pixels slightly)")
    max_vram: float | None = _declare(
        None, label="Max VRAM (GiB)", range=(0.5, None), range_words="a number of GiB, at least 0.5",
        default_words="no limit: the memory options as chosen",
        help="GPU memory limit in GiB (2^30 bytes): before loading, picks the least costly of nothing, VAE tiling, "
        "model offload (as --low-vram) and both whose estimated peak at the working size (every official size "
        "when --size is not given) fits, keeping --low-vram and --vae-tiling when set, and says which; when none "
        "fits, an error before any model loads (it says whether --decode page, which changes the pixels, "
        "would fit). The estimate (colorflow models list --size) counts weights and activations from "
        "meta-device forwards (the line-art styles: their PixArt-alpha family and line extractor, T5 never "
        "resident as its prompt embeddings are cached), one page per denoising call (--batch-pages N needs more), not the CUDA context "
        "(~0.5 GiB) or allocator caching: leave some room. GPUs only: on the CPU it changes nothing (says so); "
        "RAM use there is shown by models list")
    batch_pages: int = _declare(
        1, label="Pages per denoising call", range=(1, 8),
        help="N pages of one working size in one denoising call (each keeps its own seed and canvas), for "
        "GPUs with room: faster, N times the diffusion memory; pixels within fp32 tolerance of one page at "
        "a time before keep-ink (not identical: a larger batch changes the order of float sums); keep-ink can "
        "turn those 1-level shifts into larger ones on pixels at the edge of the color gamut (official-size random "
        "weights, 256x256: up to 81 levels on ~1.5% of pixels). Out of memory, the pages "
        "are colored one at a time. Fixed to 1 by --procedure official, which also runs each page's "
        "decoding, ScreenStyle pass and retrieval after the page before (global-RNG draws); with ours they "
        "run while the GPU colors the page before, the same pixels")
    gsrp_batchnorm: BatchNormMode = _declare(
        BatchNormMode.BATCH, label="GSRP BatchNorm",
        help="GSRP fusion BatchNorm: per-call statistics like the official app (batch) or the stored "
        "running statistics")
    export_format: ExportFormat = _declare(
        ExportFormat.CBZ, label="Export format", flag="--format",
        help="png: one PNG per page (always written); cbz: also <chapter>-colored.cbz with ComicInfo.xml; "
        "ora/psd: also layered/NNN_name.ora|psd with the ink as a multiply layer over the color, for "
        "Krita/GIMP/Photoshop/Clip Studio")
    cache_dir: str | None = _declare(None, label="Cache folder", default_words="the per-user cache folder",
                                     help="embedding and ScreenStyle cache folder")
    series: str | None = _declare(
        None, label="Series library", metavar="DIR", default_words="none: this chapter's references only",
        help="the folder of a series library (colorflow series new): its references, pins and rejects join the "
        "chapter's (for the same reference the chapter's and a page's own choice win), and the chapter is "
        "registered in it; with it --refs may be left out. A chapter already linked to a library (in the app, or "
        "by an earlier --series run) uses that one without --series")
    rolling_refs: bool = _declare(
        False, label="Rolling references", hint="accepted pages serve as references for the other pages",
        help="accepted pages (colored pages the colorist accepted) of this chapter, and with --series those of "
        "the series' earlier chapters, join the references; a page never retrieves its own result")
    ray: str | None = _declare(
        None, label="Ray cluster", metavar="ADDRESS", const="local",
        default_words="off: this process colors the pages",
        help="color the pages on Ray workers, each holding its own copy of the models (needs the studio extra: "
        "pip install \"colorflow-desktop[studio]\"). --ray alone (or local) starts Ray on this machine; an ADDRESS "
        "(HOST:6379 of `ray start --head`, or ray://HOST:10001) joins that cluster. Retrieval and each page's "
        "preparation run here; workers get the prepared pages and send the colored ones back; the project is "
        "written only here. Not with --procedure official or --batch-pages above 1. Give --ray after INPUT, "
        "or as --ray=ADDRESS")
    workers: int | None = _declare(
        None, label="Ray workers", range=(1, None), default_words="one per GPU Ray sees; 1 when it sees none",
        help="Ray workers (with --ray): each loads the models once and colors one page at a time on one GPU "
        "(on a Ray without GPUs, one CPU each)")

    def __post_init__(self) -> None:
        for option in OPTIONS.values():
            object.__setattr__(self, option.name, option.parse(getattr(self, option.name)))


class OptionValueError(InputError, ValueError):
    """A value outside an option's declared ones; `problem` says it without the option's name."""

    def __init__(self, option: Option, problem: str) -> None:
        super().__init__(f"{option.words} {problem}")
        self.option, self.problem = option, problem


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _is_kind(value: Any, kind: type) -> bool:
    if kind in (int, float) and isinstance(value, bool):  # True is an int to Python, not to a user
        return False
    return isinstance(value, (int, float) if kind is float else kind)


@dataclass(frozen=True)
class Option:
    """One declared option, as the command line, the dialog and the checks read it."""

    name: str
    kind: type  # bool, int, float, str or one of the enums above
    optional: bool  # None allowed: it means the default_words
    default: Any
    about: Described

    @property
    def flag(self) -> str:
        return self.about.flag or "--" + self.name.replace("_", "-")

    @property
    def words(self) -> str:
        return self.name.replace("_", " ")

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values of an enum option, in declared order; () for other options."""
        return tuple(member.value for member in self.kind) if issubclass(self.kind, enum.Enum) else ()

    def choice_label(self, value: str) -> str:
        return dict(self.about.choice_labels).get(value, value)

    def parse(self, value: Any) -> Any:
        """`value` as this option's type (an enum member from its text), checked against the declaration."""
        if value is None and self.optional:
            return None
        if self.choices:
            try:
                return self.kind(value)
            except ValueError:
                raise OptionValueError(self, f"must be one of {', '.join(self.choices)}, got {value!r}") from None
        if not _is_kind(value, self.kind):
            raise OptionValueError(self, f"must be {_KIND_WORDS[self.kind]}, got {value!r}")
        if self.about.range is not None:
            self.check_range(value)
        return float(value) if self.kind is float else value

    def check_range(self, value: float) -> None:
        low, high = self.about.range
        if low <= value and (high is None or value <= high):
            return
        if self.about.range_words:
            raise OptionValueError(self, f"must be {self.about.range_words}, got {value}")
        raise OptionValueError(self, f"must be at least {low}, got {value}" if high is None
                               else f"must be between {low} and {high}, got {value}")


def _options() -> dict[str, Option]:
    hints = typing.get_type_hints(RunSettings)
    found = {}
    for declared in fields(RunSettings):
        kind, optional = hints[declared.name], False
        if isinstance(kind, UnionType):  # X | None
            kind, optional = next(a for a in typing.get_args(kind) if a is not NoneType), True
        option = Option(declared.name, kind, optional, declared.default, declared.metadata["option"])
        labelled = {value for value, _ in option.about.choice_labels}
        if labelled and labelled != set(option.choices):  # a new value needs its label in the dialog
            raise TypeError(f"option {option.name}: label each of {', '.join(option.choices)}")
        found[option.name] = option
    return found


OPTIONS: Mapping[str, Option] = MappingProxyType(_options())
PROJECT_OPTIONS = tuple(name for name, option in OPTIONS.items() if option.about.in_project)

# What the official procedure fixes, as the official app outputs: no keep-ink, 1.5x the working
# size, the whole canvas decoded, one page at a time (its random draws come from the global RNG,
# page after page). pipeline_settings (engine/pipelines/settings.py) applies it and
# refuses a choice against it; the settings dialog greys these options out.
OFFICIAL_FIXES: Mapping[str, Any] = MappingProxyType(
    {"keep_ink": False, "output_size": OutputSize.GSRP, "decode": DecodeRegion.CANVAS, "batch_pages": 1})


def fixed_by(procedure: Procedure) -> Mapping[str, Any]:
    """The options a procedure decides, with their values."""
    return OFFICIAL_FIXES if procedure == Procedure.OFFICIAL else MappingProxyType({})


def check_option(name: str, value: Any) -> Any:
    """One option's value checked against its declaration (OptionValueError), as its type."""
    return OPTIONS[name].parse(value)
