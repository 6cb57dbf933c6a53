"""Training: dataset preparation, screenstyle mix, patch-wise crops, timestep shift, ICP steps, layout, resume."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.core.geometry import WorkSize
from engine.training.data import TrainingSet, crop_sizes, draw_crop_size, random_crop_box, screen_mix
from engine.training.icp import shift_timesteps, sample_timesteps

SIZE = WorkSize(128, 192)  # canvas 256 x 384


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


def test_guide_images_black_out_the_page_box_wherever_a_crop_puts_it():
    from engine.icp.conditioning import guide_images

    canvas = Image.new("RGB", (96, 64), (10, 200, 10))
    canvas.paste((99, 99, 99), (8, 40, 40, 64))  # a page box at the bottom left, as a training crop leaves it
    refs_only, page_only = guide_images(canvas, (8, 40, 40, 64))
    for point, outside in (((20, 50), False), ((8, 40), False), ((39, 63), False), ((7, 50), True), ((20, 39), True),
                           ((40, 50), True), ((95, 0), True)):
        assert refs_only.getpixel(point) == ((10, 200, 10) if outside else (0, 0, 0)), point
        assert page_only.getpixel(point) == ((0, 0, 0) if outside else (99, 99, 99)), point
    centre = WorkSize(640, 640)  # inference: the page box at the canvas centre
    canvas = Image.new("RGB", centre.canvas, (10, 200, 10))
    canvas.paste((99, 99, 99), (320, 320, 960, 960))
    refs_only, page_only = guide_images(canvas, centre.query_box_in_canvas)
    assert refs_only.getpixel((640, 640)) == page_only.getpixel((5, 5)) == (0, 0, 0)
    assert refs_only.getpixel((5, 5)) == (10, 200, 10) and page_only.getpixel((640, 640)) == (99, 99, 99)


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


def test_conditioning_of_a_page_box_off_the_centre_is_latents_of_the_hand_built_images():
    """Training crops move the page box; the stage's conditioning (which inference also calls) must
    follow it: channels 0-3 the latent of the canvas with the box black, 4 the mask on the latent
    grid, 5-8 the latent of the box alone. The stub VAE's latent is known (test_icp_loop.StubVAE)."""
    import torch.nn.functional as F
    from test_icp_loop import SCALE, SCALING_FACTOR, StubVAE

    from engine.icp.conditioning import conditioning
    from engine.core.offload import Runner

    canvas = Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 192, 3), dtype=np.uint8))
    box = (16, 64, 112, 128)  # bottom left, on the 8-pixel grid
    mask = Image.new("L", canvas.size, 0)
    mask.paste(255, box)
    got = conditioning(Runner(StubVAE()), canvas, mask, box, torch.Generator().manual_seed(5),
                       device=torch.device("cpu"), dtype=torch.float32)
    refs_only = np.asarray(canvas).copy()
    refs_only[64:128, 16:112] = 0
    page_only = np.zeros_like(refs_only)
    page_only[64:128, 16:112] = np.asarray(canvas)[64:128, 16:112]
    mask_grid = F.interpolate(torch.from_numpy(1.0 - np.asarray(mask, np.float32) / 255)[None, None],
                              size=(128 // SCALE, 192 // SCALE), mode="bilinear", align_corners=False)
    assert got.shape == (1, 9, 128 // SCALE, 192 // SCALE)
    for channels, expected in ((slice(0, 4), StubVAE.expected_latent(Image.fromarray(refs_only)) * SCALING_FACTOR),
                               (slice(4, 5), mask_grid),
                               (slice(5, 9), StubVAE.expected_latent(Image.fromarray(page_only)) * SCALING_FACTOR)):
        torch.testing.assert_close(got[:, channels], expected, rtol=0, atol=1e-5)
    assert got[0, 4, 9, 5].item() == 0.0 and got[0, 4, 2, 20].item() == 1.0  # in the box / on the references


def _state(path: Path) -> dict:
    from engine.io.weight_files import read_state_dict

    return read_state_dict(path)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (on a shared 2-core machine two threads spin against
    each other); one thread also makes float sums the same in every process of a test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(**changes):
    from engine.training.icp import ICPTrainConfig

    base = dict(steps=3, downsample=0.5, learning_rate=1e-3, log_every=1, device="cpu", save_every=100,
                tensorboard=False)
    return ICPTrainConfig(**{**base, **changes})


def _trainer(base, dataset, out, printer=None, emit=None, **changes):
    from engine.training.icp import ICPTrainer

    kwargs = {"emit": emit} if emit else {}
    return ICPTrainer(base, dataset, out, _config(**changes), printer=printer, **kwargs)


def _trained(trainer) -> dict:
    """name -> tensor of the trainable weights (guide + LoRA) of a trainer's model."""
    return {n: p.detach().clone() for n, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()
            if p.requires_grad}


def test_icp_training_changes_only_guide_and_lora_keeps_a_light_state_and_resumes_exactly(dataset, tiny_models_dir,
                                                                                           tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from engine.io.checkpoints import find_weights, normalise_lora_key
    from engine.pipelines.page import load_pipeline
    from engine.models.sources import resolve_models

    base = resolve_models(str(tiny_models_dir))
    out = tmp_path / "trained"
    lines, events = [], []
    trainer = _trainer(base, dataset, out, printer=lines.append, emit=events.append, steps=5, save_every=3)
    assert trainer.train(until=3) == 3
    assert [e.step for e in events] == [0, 1, 2, 3] and len(lines) == 3
    assert "steps/s" in lines[0] and "ETA" in lines[0]
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]

    unet = trainer.unet.state_dict()
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

    # The resume state holds the guide and the LoRA, never the frozen UNet base.
    state_file = out / "state" / "model.safetensors"
    with safe_open(str(state_file), "pt") as handle:
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    expected = {f"guide.{k}": tuple(v.shape) for k, v in base_guide.items()}
    expected.update({f"unet.{k}": tuple(v.shape) for k, v in base_lora.items()})
    assert shapes == expected
    frozen = {f"unet.{k}" for k in base_unet} | {
        f"unet.{k}".replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias") for k in base_unet}
    assert not frozen & shapes.keys()
    trainable_numel = sum(v.numel() for v in base_guide.values()) + sum(v.numel() for v in base_lora.values())
    frozen_bytes = 4 * sum(v.numel() for v in base_unet.values())
    assert 4 * trainable_numel <= state_file.stat().st_size < 4 * trainable_numel + 200_000 < 4 * trainable_numel + frozen_bytes
    assert sorted(p.name for p in (out / "state").iterdir()) == [
        "model.safetensors", "optimizer.bin", "random_states_0.pkl", "scheduler.bin", "trainer_state.json"]

    pipeline = load_pipeline(str(out), "cpu", cache_dir=tmp_path / "cache", input_style="gray")
    loaded = pipeline.colorizer.components.guide.state_dict()
    assert all(torch.equal(loaded[k], saved_guide[k]) for k in saved_guide)

    # Interrupted after step 3 (trainer torn down), resumed in a new trainer up to step 5 ...
    optimizer_at_3 = {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"][0].items()}
    del trainer
    resumed = _trainer(base, dataset, out, steps=5, save_every=3)
    assert resumed.resume() == 3 and resumed.batches == 3
    assert all(torch.equal(resumed.guide.state_dict()[k], saved_guide[k]) for k in saved_guide)
    assert all(torch.equal(v, optimizer_at_3[k]) for k, v in resumed.optimizer.state_dict()["state"][0].items())
    assert resumed.train() == 5
    assert json.loads((out / "state/trainer_state.json").read_text())["step"] == 5
    # ... ends with the very weights and optimizer moments of 5 uninterrupted steps: every random
    # draw is keyed by the sample's position, and the state holds exact fp32 copies.
    straight = _trainer(base, dataset, tmp_path / "straight", steps=5, save_every=100)
    assert straight.train() == 5
    ours, theirs = _trained(resumed), _trained(straight)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    moments = resumed.optimizer.state_dict()["state"], straight.optimizer.state_dict()["state"]
    assert all(torch.equal(moments[0][i]["exp_avg_sq"], moments[1][i]["exp_avg_sq"]) for i in moments[1])
    assert resumed.losses == straight.losses[3:]


def test_overfitting_one_sample_lowers_the_loss(dataset, tiny_models_dir, tmp_path):
    """30 steps on one sample: the noise-prediction loss falls well below its start (it stays
    near 1.0 = the noise variance when the learning rate is 0, i.e. when nothing trains)."""
    from engine.models.sources import resolve_models

    one = tmp_path / "one"
    shutil.copytree(dataset, one)
    index = json.loads((one / "index.json").read_text())
    index["samples"] = index["samples"][:1]
    (one / "index.json").write_text(json.dumps(index))
    trainer = _trainer(resolve_models(str(tiny_models_dir)), one, tmp_path / "out", steps=30, learning_rate=3e-3,
                       full_canvas=True, save_every=1000, log_every=1000)
    assert trainer.train() == 30
    losses = trainer.losses
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"overfit: loss {losses[0]:.3f} -> {losses[-1]:.3f}; mean of first 5 {first:.3f}, of last 5 {last:.3f}")
    assert first > 0.8  # a random tiny UNet predicts ~0: the loss starts near Var(noise) = 1
    assert last < 0.5 * first, losses


def test_from_scratch_guide_leaves_the_unet_output_unchanged_at_step_zero(dataset, tiny_models_dir, tmp_path):
    from diffusers import UNet2DConditionModel

    from engine.models.sources import resolve_models

    base = resolve_models(str(tiny_models_dir))
    trainer = _trainer(base, dataset, tmp_path / "out", from_scratch=True)
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(2, 4, 24, 16, generator=generator)
    cond = torch.randn(2, 9, 24, 16, generator=generator)
    timesteps = torch.tensor([10, 900])
    text = trainer.text.expand(2, -1, -1)
    with torch.no_grad():
        features = trainer.guide(noisy, timesteps, cond)
        ours = trainer.model(noisy, timesteps, cond, text)
        plain = UNet2DConditionModel.from_pretrained(base.sd15 / "unet")(noisy, timesteps, encoder_hidden_states=text).sample
    assert all(not f.any() for f in [*features.down, features.mid, *features.up])  # zero convs at zero
    assert torch.equal(ours, plain)
    lora = [p for n, p in trainer.unet.named_parameters() if ".lora_B." in n]
    assert len(lora) > 0 and not any(p.any() for p in lora)  # a fresh LoRA adds nothing yet


def test_ema_follows_diffusers_decay_and_becomes_the_saved_weights(dataset, tiny_models_dir, tmp_path):
    """diffusers' EMAModel: decay 0 at the first update (EMA = weights), then min(d, (1+k)/(10+k))
    at the (k+1)-th. With d = 0.2: 2/11 at step 2, 0.2 at step 3."""
    from safetensors.torch import load_file

    from engine.models.sources import resolve_models

    base = resolve_models(str(tiny_models_dir))
    out = tmp_path / "out"
    trainer = _trainer(base, dataset, out, ema_decay=0.2)
    weights = []
    for step in (1, 2, 3):
        trainer.train(until=step)
        weights.append(_trained(trainer))
    hand = {}
    for name in weights[0]:
        e1 = weights[0][name].double()
        e2 = 2 / 11 * e1 + 9 / 11 * weights[1][name].double()
        hand[name] = 0.2 * e2 + 0.8 * weights[2][name].double()
    names = list(weights[0])
    for name, shadow in zip(names, trainer.ema.shadow_params):
        assert torch.allclose(shadow.double(), hand[name], atol=1e-6), name
    assert any(not torch.allclose(hand[n], weights[2][n].double(), atol=1e-6) for n in names)
    assert all(torch.equal(v, weights[2][k]) for k, v in _trained(trainer).items())  # live weights put back
    guide = load_file(str(out / "colorflow/GraySD/diffusion_pytorch_model.safetensors"))
    lora = load_file(str(out / "colorflow/GraySD/unet_lora.safetensors"))
    for key, value in guide.items():
        assert torch.allclose(value.double(), hand[f"guide.{key}"], atol=1e-6), key
    for key, value in lora.items():
        assert torch.allclose(value.double(), hand[f"unet.{key}"], atol=1e-6), key
    resumed = _trainer(base, dataset, out, ema_decay=0.2)
    assert resumed.resume() == 3
    assert all(torch.equal(a, b) for a, b in zip(resumed.ema.shadow_params, trainer.ema.shadow_params))
    assert resumed.ema.optimization_step == 3


def test_icp_clips_the_gradients_to_the_configured_norm(dataset, tiny_models_dir, tmp_path):
    """max_grad_norm reaches the loop: after clipping, the trainable gradients' total norm is the
    configured one (their norm before it is far larger); 0 turns clipping off."""
    from engine.models.sources import resolve_models

    base = resolve_models(str(tiny_models_dir))
    for limit in (1e-3, 0.0):
        trainer = _trainer(base, dataset, tmp_path / f"out-{limit}", steps=1, max_grad_norm=limit)
        norms = []
        clip = trainer.accelerator.clip_grad_norm_

        def recording_clip(parameters, max_norm, *args, **kwargs):
            parameters = list(parameters)
            before = clip(parameters, max_norm, *args, **kwargs)
            after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
            norms.append((max_norm, before.item(), after.item()))
            return before

        trainer.accelerator.clip_grad_norm_ = recording_clip
        assert trainer.train() == 1
        if limit:
            [(max_norm, before, after)] = norms
            assert max_norm == limit and before > 100 * limit and after == pytest.approx(limit, rel=1e-3)
        else:
            assert norms == []


def test_samples_of_the_held_out_page_and_tensorboard_logs(dataset, tiny_models_dir, tmp_path):
    from accelerate.utils import is_tensorboard_available

    from engine.models.sources import resolve_models

    out = tmp_path / "out"
    lines = []
    trainer = _trainer(resolve_models(str(tiny_models_dir)), dataset, out, printer=lines.append, steps=2,
                       sample_every=2, sample_steps=2, tensorboard=True, log_every=100)
    assert trainer.held_out == 2 and trainer.train_indices == [0, 1]
    assert {trainer.index_at(p)[1] for p in range(40)} == {0, 1}  # never trained on
    assert trainer.train() == 2
    samples = sorted((out / "samples").iterdir())
    assert [p.name for p in samples] == ["step_000002.png"]
    with Image.open(samples[0]) as image:
        assert image.size == (SIZE.width, SIZE.height) and image.mode == "RGB"
    if is_tensorboard_available():
        assert list((out / "logs").rglob("events.out.tfevents.*"))
    else:
        assert any("TensorBoard logging off" in line for line in lines)


def test_accelerate_configs_parse_with_accelerate_classes():
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    folder = Path(__file__).resolve().parents[1] / "resources" / "accelerate"
    configs = {p.stem: ClusterConfig.from_yaml_file(str(p)) for p in sorted(folder.glob("*.yaml"))}
    assert set(configs) == {"ddp", "fsdp", "zero2"}
    assert configs["ddp"].distributed_type.value == "MULTI_GPU"
    fsdp = configs["fsdp"]
    assert fsdp.distributed_type.value == "FSDP" and fsdp.fsdp_config["fsdp_use_orig_params"] is True
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    zero = configs["zero2"]
    assert zero.distributed_type.value == "DEEPSPEED" and zero.deepspeed_config["zero_stage"] == 2
    options = {o for action in launch_command_parser()._actions for o in action.option_strings}
    for config in configs.values():
        assert config.mixed_precision == "bf16"
        nested = [*(config.fsdp_config or {}), *(config.deepspeed_config or {})]
        assert all(f"--{key}" in options for key in nested), nested  # each is an `accelerate launch` option


def test_train_commands_parse_and_refuse_a_folder_without_index(tiny_models_dir, tmp_path, capsys):
    from engine.cli.main import build_parser, main

    args = build_parser().parse_args(["train", "icp", "ds", "--out", "o", "--steps", "7", "--resume", "--mu", "1.0"])
    assert (args.train_command, args.steps, args.resume, args.mu, args.lr) == ("icp", 7, True, 1.0, 1e-5)
    args = build_parser().parse_args(["train", "prepare", "a", "b", "--out", "ds", "--size", "256x384"])
    assert [str(c) for c in args.chapters] == ["a", "b"] and str(args.size) == "256x384"
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", "icp", str(empty), "--models", str(tiny_models_dir), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2 and "train prepare" in capsys.readouterr().err


def test_memory_estimate_counts_the_official_parameters(monkeypatch):
    """scripts/estimate_memory.py builds the official models on the meta device; its counts are the
    published ones (docs/reference/checkpoints.md: guide 842,093,440, LoRA 23,937,024; SD1.5: UNet 859,520,964,
    VAE 83,653,863, text encoder 123,060,480) and the static rows are 4/4/8/2 bytes per parameter."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "estimate_memory.py"
    spec = importlib.util.spec_from_file_location("estimate_memory", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "estimate_memory", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    model, counts = module.official_model()
    assert (counts.guide, counts.lora, counts.unet_base, counts.vae, counts.text) == (
        842_093_440, 23_937_024, 859_520_964, 83_653_863, 123_060_480)
    assert all(p.is_meta for p in model.parameters())
    text = module.table(counts, [], 1, 8, model)
    # (842,093,440 + 23,937,024) x 4 B = 3.464 GB; x 8 B = 6.928 GB; 859,520,964 x 2 B = 1.719 GB
    for row in ("fp32 master (computed) | 3.46 |", "their gradients, fp32 (computed) | 3.46 |",
                "exp_avg_sq, fp32 (computed) | 6.93 |", "UNet base, bf16 (computed) | 1.72 |"):
        assert row in text, row
