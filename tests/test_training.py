"""Training: dataset preparation, screenstyle mix, patch-wise crops, timestep shift, ICP steps, layout, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.rap.canvas import WorkSize, build_mask, guide_images
from engine.training.data import (
    TrainingSet, crop_sizes, draw_crop_size, guide_images_at, random_crop_box, screen_mix,
)
from engine.training.icp import shift_timesteps, sample_timesteps

SIZE = WorkSize(128, 192)  # canvas 256 x 384


@pytest.fixture(scope="module")
def colored_chapter(tmp_path_factory) -> Path:
    """A colored chapter of 3 pages (the demo's colored references)."""
    from engine.demo import make_demo_chapter

    root = tmp_path_factory.mktemp("colored")
    _, refs = make_demo_chapter(root, pages=1, refs=3, size=(200, 300))
    return refs


@pytest.fixture(scope="module")
def dataset(colored_chapter, tiny_models_dir, tiny_embedder, tmp_path_factory) -> Path:
    from engine.preprocess.screenstyle import load_screenstyle
    from engine.rap.embedding import EmbeddingCache
    from engine.rap.retrieval import Retriever
    from engine.sources import resolve_models
    from engine.training.data import prepare_dataset

    out = tmp_path_factory.mktemp("dataset")
    retriever = Retriever(tiny_embedder, EmbeddingCache(out / ".embeddings"))
    networks = load_screenstyle(resolve_models(str(tiny_models_dir)).colorflow)
    events = []
    prepare_dataset([colored_chapter], out, retriever, networks, SIZE, seed=3, emit=events.append)
    assert [e.step for e in events] == [0, 1, 2, 3]
    return out


def test_prepare_writes_index_with_picks_from_the_other_pages(dataset, colored_chapter):
    index = json.loads((dataset / "index.json").read_text())
    pages = sorted(str(p) for p in colored_chapter.iterdir())
    assert index["work_size"] == [128, 192]
    assert sorted(s["page"] for s in index["samples"]) == pages
    for sample in index["samples"]:
        assert len(sample["picks"]) == 4 and all(len(row) == 3 for row in sample["picks"])
        refs = {p["ref"] for row in sample["picks"] for p in row}
        assert sample["page"] not in refs and refs <= set(pages)
        with Image.open(dataset / sample["screen"]) as screen:
            assert screen.size == (128, 192)


def test_screen_mix_interpolates_between_gray_and_screenvae_output():
    gray = Image.fromarray(np.full((4, 4), 100, np.uint8), "L")
    blended = Image.fromarray(np.full((4, 4), 150, np.uint8), "L")  # G = (S + gray) / 2 -> S = 200
    values = {r: np.asarray(screen_mix(gray, blended, r))[0, 0, 0] for r in (0.0, 0.25, 0.5, 1.0)}
    assert values == {0.0: 100, 0.25: 125, 0.5: 150, 1.0: 200}
    with pytest.raises(ValueError):
        screen_mix(gray, blended, 1.5)


def test_training_set_samples_hold_the_page_and_vary_the_ratio(dataset):
    data = TrainingSet(dataset, seed=1)
    full = data.full_sample(0, epoch=0)
    assert full.gray.size == full.color.size == SIZE.canvas
    x0, y0, x1, y1 = full.page_box
    # gray and colored canvases differ only in the page area; the page is the gray of the colored page
    diff = np.abs(np.asarray(full.gray, int) - np.asarray(full.color, int)).sum(axis=2)
    outside = diff.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0 and diff[y0:y1, x0:x1].max() > 0
    cropped = data.sample(0, epoch=0, crop=(192, 256), multiple=32)
    assert cropped.gray.size == (192, 256)
    bx0, by0, bx1, by1 = cropped.page_box
    assert np.array_equal(np.asarray(cropped.gray.crop(cropped.page_box)), np.asarray(full.gray.crop(full.page_box)))
    assert np.asarray(cropped.mask)[(by0 + by1) // 2, (bx0 + bx1) // 2] == 255
    ratios = {round(data.full_sample(0, epoch=e).ratio, 6) for e in range(4)}
    assert len(ratios) == 4  # drawn anew each epoch, reproducibly
    assert data.full_sample(0, epoch=2).ratio == TrainingSet(dataset, seed=1).full_sample(0, epoch=2).ratio
    small = data.sample(1, epoch=0, crop=(256, 384), downsample=0.5, multiple=32)
    assert small.gray.size == small.mask.size == (128, 192)


def test_crops_always_contain_the_page_region():
    for seed in range(300):
        rng = random.Random(seed)
        size = WorkSize(32 * rng.randint(2, 12), 32 * rng.randint(2, 12))
        canvas, page = size.canvas, size.query_box_in_canvas
        multiple = rng.choice((32, 64))
        if not crop_sizes(canvas, page, multiple)[0]:
            continue
        try:
            crop = draw_crop_size(rng, canvas, page, multiple)
        except ValueError:
            continue
        assert crop[0] % multiple == 0 and crop[1] % multiple == 0
        box = random_crop_box(rng, canvas, page, crop)
        assert (box[2] - box[0], box[3] - box[1]) == crop
        assert 0 <= box[0] <= page[0] and page[2] <= box[2] <= canvas[0]
        assert 0 <= box[1] <= page[1] and page[3] <= box[3] <= canvas[1]
    with pytest.raises(ValueError):
        random_crop_box(random.Random(0), (256, 384), (64, 96, 192, 288), (64, 384))


def test_guide_images_at_the_centre_match_inference():
    canvas = Image.fromarray(np.random.default_rng(0).integers(0, 255, (384, 256, 3), dtype=np.uint8))
    for ours, theirs in zip(guide_images_at(canvas, SIZE.query_box_in_canvas), guide_images(canvas, SIZE)):
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_timestep_shift_matches_hand_values():
    # e^1.5 = 4.481689; t=500: 4.481689 / (4.481689 + 1) * 1000 = 817.574;
    # t=100: 4.481689 / (4.481689 + 9) * 1000 = 332.428; t=750: 4.481689 / (4.481689 + 1/3) * 1000 = 930.772
    got = shift_timesteps(torch.tensor([500.0, 100.0, 750.0, 1000.0]), mu=1.5, total=1000)
    assert torch.allclose(got, torch.tensor([817.574, 332.428, 930.772, 1000.0], dtype=torch.float64), atol=1e-3)
    assert torch.allclose(shift_timesteps(torch.tensor([1.0, 250.0]), mu=0.0), torch.tensor([1.0, 250.0], dtype=torch.float64))
    drawn = sample_timesteps(20000, 1.5, 1000, torch.Generator().manual_seed(0))
    assert drawn.min() >= 0 and drawn.max() <= 999
    # P(t' >= 500) = P(t >= T / (1 + e^1.5)) = 1 - 0.182426 = 0.8176 (uniform t: 0.5)
    assert abs((drawn >= 500).double().mean().item() - 0.8176) < 0.015


def test_training_conditioning_matches_colorizer(tiny_components):
    from engine.icp.colorize import Colorizer
    from engine.training.icp import conditioning

    canvas = Image.fromarray(np.random.default_rng(1).integers(0, 255, (384, 256, 3), dtype=np.uint8))
    mask = build_mask(SIZE)
    expected = Colorizer(tiny_components).conditioning(canvas, mask, SIZE, torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = conditioning(tiny_components.vae, [canvas], [mask], [SIZE.query_box_in_canvas], torch.Generator().manual_seed(5))
    assert got.shape == expected.shape and got.shape[1] == 9
    assert torch.allclose(got, expected, atol=1e-5)


def _state(path: Path) -> dict:
    from engine.models.checkpoints import read_state_dict

    return read_state_dict(path)


def test_icp_training_changes_only_guide_and_lora_then_resumes(dataset, tiny_models_dir, tmp_path):
    from safetensors.torch import load_file

    from engine.models.checkpoints import find_weights, normalise_lora_key
    from engine.pipeline import load_pipeline
    from engine.sources import resolve_models
    from engine.training.icp import ICPTrainConfig, ICPTrainer

    base = resolve_models(str(tiny_models_dir))
    out = tmp_path / "trained"
    lines, events = [], []
    config = ICPTrainConfig(steps=3, downsample=0.5, learning_rate=1e-3, log_every=1, device="cpu", save_every=100)
    trainer = ICPTrainer(base, dataset, out, config, emit=events.append, printer=lines.append)
    assert trainer.train() == 3
    assert [e.step for e in events] == [0, 1, 2, 3] and len(lines) == 3 and "steps/s" in lines[0]

    unet = trainer.accelerator.unwrap_model(trainer.unet).state_dict()
    base_unet = load_file(str(base.sd15 / "unet" / "diffusion_pytorch_model.safetensors"))
    for key, value in base_unet.items():  # peft wraps targets as <module>.base_layer.<param>
        wrapped = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(unet.get(key, unet.get(wrapped)), value), key
    base_guide = _state(find_weights(base.graysd, "diffusion_pytorch_model"))
    saved_guide = load_file(str(out / "colorflow/GraySD/diffusion_pytorch_model.safetensors"))
    assert saved_guide.keys() == base_guide.keys()
    assert any(not torch.equal(saved_guide[k], base_guide[k]) for k in base_guide)
    base_lora = {normalise_lora_key(k): v for k, v in _state(find_weights(base.graysd, "unet_lora")).items()}
    saved_lora = load_file(str(out / "colorflow/GraySD/unet_lora.safetensors"))
    assert saved_lora.keys() == base_lora.keys()
    assert any(not torch.equal(saved_lora[k], base_lora[k]) for k in base_lora)
    assert (out / "sd15").is_symlink() and (out / "sd15").resolve() == base.sd15.resolve()

    pipeline = load_pipeline(str(out), "cpu", cache_dir=tmp_path / "cache", input_style="gray")
    loaded = pipeline.colorizer.c.guide.state_dict()
    assert all(torch.equal(loaded[k], saved_guide[k]) for k in saved_guide)

    resumed = ICPTrainer(base, dataset, out, ICPTrainConfig(steps=4, downsample=0.5, learning_rate=1e-3, device="cpu"),
                         printer=None)
    assert resumed.resume() == 3 and resumed.consumed == 3
    guide = resumed.accelerator.unwrap_model(resumed.guide).state_dict()
    assert all(torch.equal(guide[k], saved_guide[k]) for k in saved_guide)
    assert resumed.train() == 4
    assert json.loads((out / "state/trainer_state.json").read_text())["step"] == 4


def test_train_commands_parse_and_refuse_a_folder_without_index(tiny_models_dir, tmp_path, capsys):
    from engine.cli import build_parser, main

    args = build_parser().parse_args(["train", "icp", "ds", "--out", "o", "--steps", "7", "--resume", "--mu", "1.0"])
    assert (args.train_command, args.steps, args.resume, args.mu, args.lr) == ("icp", 7, True, 1.0, 1e-5)
    args = build_parser().parse_args(["train", "prepare", "a", "b", "--out", "ds", "--size", "256x384"])
    assert [str(c) for c in args.chapters] == ["a", "b"] and str(args.size) == "256x384"
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", "icp", str(empty), "--models", str(tiny_models_dir), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2 and "train prepare" in capsys.readouterr().err
