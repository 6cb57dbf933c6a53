"""The --resume key changes with every input of a colored page and with nothing else."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from engine.core.geometry import REFERENCE_PATCHES, WorkSize, reference_boxes
from engine.rap.canvas import cell_box
from engine.io.chapter import ImageSource, PageImage, list_images, load_image
from engine.icp.colorize import ColorizeSettings
from engine.rap.curation import Choices, Target
from engine.io.demo import make_demo_chapter
from engine.rap.embedding import EmbeddingCache
from engine.models import ModelPaths, fingerprint_models
from engine.pipelines.page import load_pipeline
from engine.pipelines.settings import PipelineSettings
from engine.rap.retrieval import Candidate, Pick, PageRetrieval, Retriever
from engine.gsrp.upscale import UpscaleSettings

SIZE = WorkSize(256, 384)
MODELS_ID = "models-a|clip-a"
BASE = PipelineSettings(ColorizeSettings(steps=4), UpscaleSettings(), keep_ink=True, size=SIZE)


class ThumbnailEmbedder:
    """Unit vectors of a centred 4x4 gray thumbnail: real, deterministic picks without a model."""

    encoder_id = "thumbnail-4x4"
    images_embedded = 0

    def embed(self, images) -> np.ndarray:
        rows = [np.asarray(im.convert("L").resize((4, 4), Image.BILINEAR), np.float32).ravel() for im in images]
        vectors = np.stack(rows) - 128.0
        return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-6)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """One colored page's inputs, as colorize_chapter hands them to PipelineSettings.key."""

    settings: PipelineSettings
    page: PageImage
    retrieval: PageRetrieval
    models_id: str
    references: tuple[ImageSource, ...]

    def key(self) -> str:
        return self.settings.key(self.page, self.retrieval, self.models_id)

    def retrieve(self, choices: Choices) -> "Inputs":
        """The same page retrieved again, fresh retriever, with these pins/rejects."""
        return dataclasses.replace(self, retrieval=retrieve(self.page, self.references, choices))

    def with_settings(self, **changes) -> "Inputs":
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, **changes))

    def with_colorize(self, **changes) -> "Inputs":
        return self.with_settings(colorize=dataclasses.replace(self.settings.colorize, **changes))

    def with_upscale(self, **changes) -> "Inputs":
        return self.with_settings(upscale=dataclasses.replace(self.settings.upscale, **changes))

    def with_retrieval(self, **changes) -> "Inputs":
        return dataclasses.replace(self, retrieval=dataclasses.replace(self.retrieval, **changes))


def retrieve(page: PageImage, references, choices: Choices) -> PageRetrieval:
    return Retriever(ThumbnailEmbedder(), EmbeddingCache()).retrieve(page, references, choices, SIZE)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Inputs:
    chapter, refs = make_demo_chapter(tmp_path_factory.mktemp("key"), pages=1, refs=3)
    page = load_image(ImageSource(chapter / "1.png"), "L")
    references = tuple(list_images([refs]))
    return Inputs(BASE, page, retrieve(page, references, Choices()), MODELS_ID, references)


def picked(inputs: Inputs) -> list[list[tuple[str, str]]]:
    return [[(p.candidate.ref, p.candidate.patch) for p in row] for row in inputs.retrieval.picks]


def other_pick_for_first_query(base: Inputs) -> Inputs:
    """Query patch TL gets another reference patch as its 1st pick; nothing else changes."""
    row = base.retrieval.picks[0]
    taken = {(p.candidate.ref, p.candidate.patch) for p in row}
    ref = row[0].candidate.ref
    patch, box = next((n, b) for n, b in zip(REFERENCE_PATCHES, reference_boxes(SIZE)) if (ref, n) not in taken)
    swapped = Pick(Candidate(ref, patch, box), row[0].score)
    return base.with_retrieval(picks=[[swapped, *row[1:]], *base.retrieval.picks[1:]])


def pin_an_unpicked_patch(base: Inputs) -> Inputs:
    used = {pair for row in picked(base) for pair in row}
    ref, patch = next(
        (r.ref, name) for r in base.references for name in REFERENCE_PATCHES if (r.ref, name) not in used
    )
    return base.retrieve(Choices(pins=[Target(ref, patch)]))


def reject_the_top_pick(base: Inputs) -> Inputs:
    ref, patch = picked(base)[0][0]
    return base.retrieve(Choices(rejects=[Target(ref, patch)]))


def reference_edited_in_place(base: Inputs) -> Inputs:
    """Same picks, other pixels in one reference cell (a reference file repainted in place)."""
    canvas = base.retrieval.canvas.copy()
    x0, y0, _, _ = cell_box(SIZE, 0, 0)
    canvas.paste((255, 0, 0), (x0, y0, x0 + 8, y0 + 8))
    return base.with_retrieval(canvas=canvas)


def other_page_content(base: Inputs) -> Inputs:
    image = base.page.image.copy()
    image.putpixel((0, 0), 255 - image.getpixel((0, 0)))
    return dataclasses.replace(base, page=PageImage(base.page.source, image, "0" * 64))


# Every input that changes a colored page -> how to change only that input.
CHANGES: dict[str, Callable[[Inputs], Inputs]] = {
    "pick for one query patch": other_pick_for_first_query,
    "pin": pin_an_unpicked_patch,
    "reject": reject_the_top_pick,
    "reference pixels": reference_edited_in_place,
    "page content": other_page_content,
    "working size": lambda b: b.with_retrieval(work_size=WorkSize(320, 448)),
    "keep_ink": lambda b: b.with_settings(keep_ink=False),
    "input_style": lambda b: b.with_settings(input_style="gray"),
    "output_size": lambda b: b.with_settings(output_size="gsrp"),
    "models": lambda b: dataclasses.replace(b, models_id="models-b|clip-a"),
    "colorize.steps": lambda b: b.with_colorize(steps=5),
    "colorize.seed": lambda b: b.with_colorize(seed=1),
    "colorize.guidance_scale": lambda b: b.with_colorize(guidance_scale=5.0),
    "colorize.prompt": lambda b: b.with_colorize(prompt="comic"),
    "colorize.negative_prompt": lambda b: b.with_colorize(negative_prompt="blurry"),
    "colorize.conditioning_scale": lambda b: b.with_colorize(conditioning_scale=0.5),
    "colorize.procedure": lambda b: b.with_colorize(procedure="official"),
    "colorize.decode": lambda b: b.with_colorize(decode="page"),
    "colorize.decode_margin": lambda b: b.with_colorize(decode_margin=32),  # counts with decode="page"
    "upscale.scale": lambda b: b.with_upscale(scale=2.0),
    "upscale.batch_norm": lambda b: b.with_upscale(batch_norm="running"),
    "upscale.seed": lambda b: b.with_upscale(seed=1),
    "upscale.procedure": lambda b: b.with_upscale(procedure="official"),
}

# Inputs that change nothing on the page: they must never force a recompute.
NO_CHANGE: dict[str, Callable[[Inputs], Inputs]] = {
    "colorize.preview_every": lambda b: b.with_colorize(preview_every=0),
    "retrieval scores": lambda b: b.with_retrieval(
        picks=[[dataclasses.replace(p, score=p.score / 2) for p in row] for row in b.retrieval.picks]
    ),
    "retrieval warnings": lambda b: b.with_retrieval(warnings=["a warning"]),
    # The requested size counts through the work size the retrieval ran at, not by itself.
    "size": lambda b: b.with_settings(size=None),
    "everything rebuilt from scratch": lambda b: b.retrieve(Choices()),
    # Pages per denoising call: within fp32 tolerance of one at a time, like vae_tiling/low_vram
    # (how the run is carried out, not what the page is made from).
    "batch_pages": lambda b: b.with_settings(batch_pages=4),
    # Whether the guidance was chosen or is the family's default: the key holds the guidance itself
    # (issue 24: an unset guidance under screen colors as an explicit 7.5)
    "family_guidance": lambda b: b.with_settings(family_guidance=True),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_key_changes_with_each_input_of_the_colored_page(base, name):
    changed = CHANGES[name](base)
    if name in ("pin", "reject"):  # these act through retrieval: it must really pick otherwise
        assert picked(changed) != picked(base)
    assert changed.key() != base.key()


@pytest.mark.parametrize("name", sorted(NO_CHANGE))
def test_key_ignores_what_does_not_change_the_page(base, name):
    assert NO_CHANGE[name](base).key() == base.key()


def test_every_setting_field_is_covered():
    """A new settings field must be given a case above, or be declared display-only."""
    colorize = {f"colorize.{f.name}" for f in dataclasses.fields(ColorizeSettings)}
    upscale = {f"upscale.{f.name}" for f in dataclasses.fields(UpscaleSettings)}
    pipeline = {f.name for f in dataclasses.fields(PipelineSettings)} - {"colorize", "upscale"}
    assert colorize | upscale | pipeline <= set(CHANGES) | set(NO_CHANGE)


def test_same_inputs_give_the_same_key(base):
    assert base.key() == base.key()
    assert dataclasses.replace(base).key() == base.key()


# --- model files ------------------------------------------------------------------------------

def paths_of(root: Path) -> ModelPaths:
    """The folder's roots, without its record (a run refuses changed files: tests/test_model_record.py)."""
    from engine.models.sources import models_folder

    return models_folder(str(root))


def test_model_fingerprint_is_stable_for_the_same_files(models_copy):
    assert fingerprint_models(paths_of(models_copy)) == fingerprint_models(paths_of(models_copy))


@pytest.mark.parametrize(
    "weight", ["colorflow/GraySD/unet_lora.bin", "sd15/unet/diffusion_pytorch_model.safetensors", "sd15/scheduler/scheduler_config.json"]
)
def test_model_fingerprint_changes_when_a_file_is_touched(models_copy, weight):
    before = fingerprint_models(paths_of(models_copy))
    path = models_copy / weight
    stat = path.stat()
    # Retrained in place: same name and size, a later mtime (set explicitly: no clock races).
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint_models(paths_of(models_copy)) != before


def test_model_fingerprint_changes_when_a_weight_is_replaced(models_copy):
    before = fingerprint_models(paths_of(models_copy))
    path = models_copy / "colorflow" / "GraySD" / "MultiResNetModel.bin"
    stat = path.stat()
    path.write_bytes(path.read_bytes() + b"\0")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only the size tells them apart
    assert fingerprint_models(paths_of(models_copy)) != before


def test_model_fingerprint_changes_when_sd15_points_elsewhere(models_copy, tmp_path):
    paths = paths_of(models_copy)
    elsewhere = tmp_path / "other-sd15"
    shutil.copytree(paths.sd15, elsewhere)  # copy2: same names, sizes and mtimes
    assert fingerprint_models(ModelPaths(elsewhere, paths.colorflow)) != fingerprint_models(paths)


def test_model_fingerprint_ignores_hidden_download_metadata(models_copy):
    before = fingerprint_models(paths_of(models_copy))
    metadata = models_copy / "colorflow" / ".cache" / "huggingface" / "download" / "x.metadata"
    metadata.parent.mkdir(parents=True)
    metadata.write_text("etag")
    assert fingerprint_models(paths_of(models_copy)) == before


def test_load_pipeline_models_id_follows_the_model_files(models_copy):
    """Weights retrained in place give the loaded pipeline another models id (so --resume recomputes)."""
    first = load_pipeline(str(models_copy))
    assert load_pipeline(str(models_copy), retriever=first.retriever).models_id == first.models_id
    path = models_copy / "colorflow" / "GraySD" / "diffusion_pytorch_model.bin"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_pipeline(str(models_copy), retriever=first.retriever).models_id != first.models_id
