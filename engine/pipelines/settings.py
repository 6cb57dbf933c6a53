"""Run options (engine/core/options.py) turned into the settings of the stages, once: pipeline_settings.

The procedure's rules (the official one outputs 1.5x the working size from the whole canvas
without keep-ink) are applied here and nowhere else; PipelineSettings.key is the resume key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from PIL import Image

from engine.core.options import (
    AUTO_STYLE,
    OPTIONS,
    PROJECT_OPTIONS,
    InputStyle,
    StyleChoice,
    OutputSize,
    Procedure,
    RunSettings,
    check_option,
    effective_guidance,
    fixed_by,
)
from engine.core.errors import InputError
from engine.gsrp.settings import UpscaleSettings
from engine.icp.settings import ColorizeSettings
from engine.core.geometry import WorkSize
from engine.core.rng import SCREENSTYLE, check_seed, stream_seed

if TYPE_CHECKING:
    from engine.io.chapter import PageImage
    from engine.rap.retrieval import PageRetrieval


@dataclass(frozen=True)
class InputSettings:
    """How a page becomes the stages' input: working size, input style, procedure and seed."""

    style: InputStyle = InputStyle.SCREEN  # screen: the official ScreenStyle pass (G); gray: plain grayscale
    procedure: Procedure = Procedure.OURS
    seed: int = 0
    size: WorkSize | None = None

    def __post_init__(self) -> None:
        style = check_option("input_style", self.style)
        if style == AUTO_STYLE:
            raise InputError("input style auto is chosen per page: a page is prepared with its own style")
        object.__setattr__(self, "style", InputStyle(style))
        object.__setattr__(self, "procedure", check_option("procedure", self.procedure))
        check_seed(self.seed)

    @property
    def fit(self) -> str:
        return "crop" if self.procedure == Procedure.OFFICIAL else "letterbox"

    @property
    def screen_seed(self) -> int:
        """The official app leaves the pass unseeded; its exact procedure here seeds it with the
        seed, ours with the seed's own ScreenStyle stream."""
        return self.seed if self.procedure == Procedure.OFFICIAL else stream_seed(self.seed, SCREENSTYLE)


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that determines a colored page, besides the inputs and the models. Made from
    the user's options by pipeline_settings; tests build it by hand to vary one field."""

    colorize: ColorizeSettings
    upscale: UpscaleSettings
    keep_ink: bool = True
    size: WorkSize | None = None
    # See InputSettings. A chapter's settings may say "auto" (each page's suggested style); a page is
    # colored with for_style(its own style).
    input_style: StyleChoice = InputStyle.SCREEN
    output_size: OutputSize = OutputSize.PAGE  # page: the page's own size; gsrp: 1.5x the working size
    # Pages per denoising call. Not in the resume key (key() lists its parts): a page batched with
    # others differs from the page alone only within fp32 tolerance, the same seed and settings
    # made it, so a resumed run with another N keeps it, as it keeps pages made with vae_tiling or
    # low_vram (load options that are not in the key either; the out-of-memory retry switches to
    # tiling within a run).
    batch_pages: int = 1
    # No guidance was chosen: each page takes its model family's official default (for_style). Not
    # in the key: the key holds the guidance a page is colored with (colorize.guidance_scale).
    family_guidance: bool = False

    def for_style(self, style: str) -> "PipelineSettings":
        """These settings for a page of `style` (the page's own, the chapter's or auto's pick), with
        its family's guidance when none was chosen."""
        style = InputStyle(style)
        guidance = effective_guidance(None if self.family_guidance else self.colorize.guidance_scale, style)
        return replace(self, input_style=style, colorize=replace(self.colorize, guidance_scale=guidance))

    def check(self) -> None:
        """Consistent settings, before any model is loaded."""
        self.colorize.check()
        check_option("output_size", self.output_size)
        check_option("batch_pages", self.batch_pages)
        if self.upscale.procedure != self.colorize.procedure:
            raise InputError("ICP and GSRP must follow the same procedure")
        if check_option("input_style", self.input_style) != AUTO_STYLE:
            self.inputs  # validates the input style

    @property
    def procedure(self) -> Procedure:
        return self.colorize.procedure

    @property
    def inputs(self) -> InputSettings:
        return InputSettings(self.input_style, self.procedure, self.colorize.seed, self.size)

    def recorded(self) -> dict[str, str]:
        """The run options a project keeps with the chapter (so a reopened project shows how it was made)."""
        return {name: str(getattr(self, name)) for name in PROJECT_OPTIONS}

    def key(self, page: PageImage, retrieval: PageRetrieval, models_id: str) -> str:
        """Hash of everything a colored page is made from: settings, page content, picks, the
        ICP canvas, the working size (which fixes the mask) and the models. Equal keys, equal
        output; what only shows progress (preview_every) or explains the picks (scores, pinned
        flags, warnings) is left out, so it never forces a recompute. Enums hash as their
        strings, so keys of existing projects stay the same (tests/test_options.py)."""
        colorize = asdict(self.colorize)
        colorize.pop("preview_every", None)  # how often a preview is shown, not what is drawn
        parts = {
            "colorize": colorize,
            "upscale": asdict(self.upscale),
            "keep_ink": self.keep_ink,
            "input_style": self.input_style,
            "output_size": self.output_size,
            "work_size": str(retrieval.work_size),
            "page": page.sha256,
            # Which reference patch fills each canvas cell, in rank (= placement) order.
            "picks": [
                [[p.candidate.ref, p.candidate.patch, list(p.candidate.box or ())] for p in row]
                for row in retrieval.picks
            ],
            # ICP's own input: also catches a reference file edited in place (same picks).
            "canvas": _image_sha256(retrieval.canvas),
            "models": models_id,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _image_sha256(image: Image.Image) -> str:
    digest = hashlib.sha256(f"{image.mode} {image.size[0]}x{image.size[1]}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _style_or(choice: str, unset: InputStyle = InputStyle.SCREEN) -> InputStyle:
    return unset if choice == AUTO_STYLE else InputStyle(choice)


def pipeline_settings(options: RunSettings) -> PipelineSettings:
    """The settings of the stages for a run's options, checked before any model loads. A
    procedure decides some options (core.options.fixed_by): left unset they take its value, set
    otherwise they are refused; unset under ours, keep-ink is on and pages keep their own size."""
    fixed = fixed_by(options.procedure)
    against = [(name, getattr(options, name)) for name, value in fixed.items() if getattr(options, name) not in (None, value)]
    if against:
        drop = ", ".join(OPTIONS[name].flag + ("" if value is True else f" {value}") for name, value in against)
        raise InputError(f"--procedure {options.procedure} outputs 1.5x the working size from the whole canvas "
                         f"without keep-ink, one page at a time: drop {drop}")

    def chosen(name: str, unset: object) -> object:
        value = getattr(options, name)
        return fixed.get(name, unset if value is None else value)

    try:
        size = WorkSize.parse(options.size) if options.size else None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    settings = PipelineSettings(
        colorize=ColorizeSettings(steps=options.steps, seed=options.seed,
                                  # auto: each page's own by for_style; the screen family's until then
                                  guidance_scale=effective_guidance(options.guidance, _style_or(options.input_style)),
                                  procedure=options.procedure, decode=chosen("decode", options.decode)),
        upscale=UpscaleSettings(batch_norm=options.gsrp_batchnorm, seed=options.seed, procedure=options.procedure),
        keep_ink=chosen("keep_ink", True),
        size=size,
        input_style=options.input_style,
        output_size=chosen("output_size", OutputSize.PAGE),
        batch_pages=chosen("batch_pages", options.batch_pages),
        family_guidance=options.guidance is None,
    )
    settings.check()
    return settings
