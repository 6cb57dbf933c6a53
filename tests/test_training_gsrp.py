"""GSRP training: overfit, gradients only in the fusion net, hand-checked loss, layout, colorize with the result, resume."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.core.geometry import WorkSize

SIZE = WorkSize(32, 64)  # GSRP frame 48 x 96 (x1.5): tiny, the CPU is shared
FRAME = (48, 96)
SEED = 3


def _write_index(root: Path, pages: list[Path]) -> Path:
    """A dataset index as `train prepare` writes it; GSRP reads only the pages (picks and
    working-size screens are ICP's), so they are left empty to keep the test fast."""
    from engine.io.fileio import atomic_write_json
    from engine.training.data import INDEX_FILE, INDEX_VERSION

    samples = [{"chapter": "ch", "page": str(p), "sha256": "", "screen": "", "picks": []} for p in pages]
    atomic_write_json(root / INDEX_FILE, {"version": INDEX_VERSION, "work_size": [SIZE.width, SIZE.height],
                                          "seed": SEED, "samples": samples})
    return root


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> list[Path]:
    from engine.io.demo import make_demo_chapter

    _, refs = make_demo_chapter(tmp_path_factory.mktemp("colored"), pages=1, refs=3, size=(160, 320))
    return sorted(refs.iterdir())


@pytest.fixture(scope="module")
def gsrp_dataset(pages, tmp_path_factory) -> Path:
    return _write_index(tmp_path_factory.mktemp("gsrp-ds"), pages)


@pytest.fixture(scope="module")
def one_page(pages, tmp_path_factory) -> Path:
    return _write_index(tmp_path_factory.mktemp("gsrp-one"), pages[:1])


@pytest.fixture(scope="module")
def trained(gsrp_dataset, tiny_models_dir, tmp_path_factory) -> Path:
    """2 steps of `colorflow train gsrp` on 24x24 crops."""
    from engine.cli.main import main

    out = tmp_path_factory.mktemp("gsrp-out") / "trained"
    code = main(["train", "gsrp", str(gsrp_dataset), "--models", str(tiny_models_dir), "--out", str(out), "--steps", "2",
                 "--crop", "24x24", "--input-style", "gray", "--lr", "1e-3", "--device", "cpu", "--log-every", "1"])
    assert code == 0
    return out


def _base(tiny_models_dir):
    from engine.models.sources import resolve_models

    return resolve_models(str(tiny_models_dir))


def _fusion_file_state(graysd: Path) -> dict:
    return torch.load(graysd / "MultiResNetModel.bin", map_location="cpu", weights_only=True)


def test_overfit_one_sample_and_only_the_fusion_net_learns(one_page, tiny_models_dir, tmp_path):
    from safetensors.torch import load_file

    from engine.training.gsrp import GSRPTrainConfig, GSRPTrainer

    base = _base(tiny_models_dir)
    config = GSRPTrainConfig(steps=10, crop=None, gray_input="gray", learning_rate=1e-3, device="cpu",
                             save_every=1000, log_every=4, seed=SEED, tensorboard=False)
    lines, events = [], []
    trainer = GSRPTrainer(base, one_page, tmp_path / "out", config, emit=events.append, printer=lines.append)
    _, fixed = trainer.next_batch()  # the whole frame, grayscale input: the same sample every step
    trainer.batches = 0
    assert fixed[0].color.size == FRAME

    # One backward pass: gradients reach every fusion parameter and no VAE parameter.
    trainer.loss(fixed, torch.Generator().manual_seed(0)).backward()
    fusion = trainer.accelerator.unwrap_model(trainer.fusion)
    assert all(p.grad is not None for p in fusion.parameters())
    assert sum(p.grad.abs().sum().item() > 0 for p in fusion.parameters()) > 0.9 * len(list(fusion.parameters()))
    assert all(p.grad is None and not p.requires_grad for p in trainer.vae.parameters())
    trainer.optimizer.zero_grad()

    with torch.no_grad():
        before = trainer.loss(fixed, torch.Generator().manual_seed(0)).item()
    assert trainer.train() == 10
    with torch.no_grad():
        after = trainer.loss(fixed, torch.Generator().manual_seed(0)).item()
    history = [round(loss, 4) for loss in trainer.losses]
    print(f"\nGSRP overfit (one sample, fixed latent noise): {before:.4f} -> {after:.4f}; per step {history}")
    assert after < 0.8 * before
    assert np.mean(history[-3:]) < np.mean(history[:3])
    assert [e.step for e in events] == list(range(11))
    assert len(lines) == 3 and "steps/s" in lines[0] and "ETA" in lines[0]

    vae_file = load_file(str(base.sd15 / "vae" / "diffusion_pytorch_model.safetensors"))
    vae_now = trainer.vae.state_dict()
    assert all(torch.equal(vae_now[k], v) for k, v in vae_file.items())
    base_fusion = _fusion_file_state(base.graysd)
    saved = _fusion_file_state(tmp_path / "out" / "colorflow" / "GraySD")
    assert saved.keys() == base_fusion.keys()
    weights = [k for k in base_fusion if k.endswith(".weight")]
    assert sum(not torch.equal(saved[k], base_fusion[k]) for k in weights) > 0.9 * len(weights)


def test_reported_loss_equals_l1_computed_by_hand(one_page, tiny_models_dir, tmp_path):
    """Screenstyle gray input, whole frame: the images are rebuilt by hand from the page and the
    loss from the encode/fuse/decode functions inference uses, with the base's fusion net."""
    from engine.gsrp.fusion import load_fusion
    from engine.gsrp.upscale import decode_with_features, encode_with_features
    from engine.preprocess.screenstyle import load_screenstyle, screen_style
    from engine.training.data import sample_rng
    from engine.training.gsrp import GSRPTrainConfig, GSRPTrainer, noise_generator

    base = _base(tiny_models_dir)
    networks = load_screenstyle(base.colorflow)
    config = GSRPTrainConfig(steps=1, crop=None, gray_input="screen", learning_rate=1e-3, device="cpu", seed=SEED,
                             tensorboard=False)
    trainer = GSRPTrainer(base, one_page, tmp_path / "out", config, printer=None, screen_networks=networks)
    vae = trainer.vae
    reference_fusion = load_fusion(base.graysd, vae.config)  # the base weights, loaded independently
    reference_fusion.train()  # BatchNorm on batch statistics, as in training
    assert trainer.train() == 1
    reported = trainer.losses[0]

    # The sample by hand: page 160x320 has the frame's aspect, so framing is a straight bicubic resize.
    with Image.open(json.loads((one_page / "index.json").read_text())["samples"][0]["page"]) as im:
        page = im.convert("RGB")
    target = page.resize(FRAME, Image.BICUBIC)
    low = page.resize((SIZE.width, SIZE.height), Image.BICUBIC).resize(FRAME, Image.BICUBIC)
    blended = np.asarray(screen_style(target, networks, SEED + 0).convert("L"), np.float64)  # G = (S + gray) / 2
    gray_l = np.asarray(target.convert("L"), np.float64)
    ratio = sample_rng(SEED, "ratio", 0, 0).random()
    gray = np.clip(np.rint(gray_l + ratio * 2 * (blended - gray_l)), 0, 255).astype(np.uint8)
    assert 0 < ratio < 1

    def pixels(array):
        return torch.from_numpy(np.asarray(array, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

    with torch.no_grad():
        moments, color_features = encode_with_features(vae, pixels(low))
        _, gray_features = encode_with_features(vae, pixels(np.repeat(gray[..., None], 3, axis=2)))
        mean, logvar = moments.chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=noise_generator(SEED, 0))
        latents = mean + torch.exp(0.5 * logvar) * noise
        decoded = decode_with_features(vae, latents, reference_fusion(color_features, gray_features))
    by_hand = np.abs(decoded[0].permute(1, 2, 0).numpy().astype(np.float64)
                     - (np.asarray(target, np.float64) / 127.5 - 1)).mean()
    print(f"\nGSRP loss: trainer {reported:.6f}, by hand {by_hand:.6f}")
    assert reported == pytest.approx(by_hand, rel=1e-5, abs=1e-6)


def test_crops_lie_on_the_page_content():
    from engine.training.gsrp import frame_crop_box

    for seed in range(300):
        rng = random.Random(seed)
        frame = (8 * rng.randint(4, 40), 8 * rng.randint(4, 40))
        x0, y0 = rng.randint(0, frame[0] // 3), rng.randint(0, frame[1] // 3)
        content = (x0, y0, rng.randint(x0 + 1, frame[0]), rng.randint(y0 + 1, frame[1]))
        crop = (8 * rng.randint(1, frame[0] // 8), 8 * rng.randint(1, frame[1] // 8))
        box = frame_crop_box(rng, frame, content, crop)
        assert (box[2] - box[0], box[3] - box[1]) == crop and box[0] >= 0 and box[1] >= 0
        assert box[2] <= frame[0] and box[3] <= frame[1]
        for lo, hi, a, b in ((content[0], content[2], box[0], box[2]), (content[1], content[3], box[1], box[3])):
            if hi - lo >= b - a:
                assert lo <= a and b <= hi  # inside the content
            else:
                assert a <= lo and hi <= b  # the content whole
    with pytest.raises(ValueError):
        frame_crop_box(random.Random(0), (96, 144), (0, 0, 96, 144), (104, 48))


def test_trained_dir_loads_and_changes_the_colorize_output(trained, tiny_models_dir, tiny_components, tmp_path, capsys):
    from engine.cli.main import main
    from engine.io.demo import make_demo_chapter
    from engine.gsrp.fusion import load_fusion

    base = _base(tiny_models_dir)
    graysd = trained / "colorflow" / "GraySD"
    fusion_file = graysd / "MultiResNetModel.bin"
    assert fusion_file.is_file() and not fusion_file.is_symlink()
    assert (trained / "sd15").resolve() == base.sd15.resolve()
    assert (graysd / "unet_lora.bin").resolve() == (base.graysd / "unet_lora.bin").resolve()
    saved = _fusion_file_state(graysd)  # weights_only: a plain tensor pickle, as the official file
    base_state = _fusion_file_state(base.graysd)
    assert {k: (v.dtype, v.shape) for k, v in saved.items()} == {k: (v.dtype, v.shape) for k, v in base_state.items()}
    loaded = load_fusion(graysd, tiny_components.vae.config).state_dict()  # the strict inference loader
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert json.loads((trained / "state-gsrp" / "trainer_state.json").read_text())["step"] == 2

    chapter, refs = make_demo_chapter(tmp_path / "demo", pages=1, refs=2)
    outputs = []
    for models in (trained, tiny_models_dir):
        out = tmp_path / f"colored-{len(outputs)}"
        code = main(["colorize", str(chapter), "--refs", str(refs), "--out", str(out), "--models", str(models),
                     "--steps", "1", "--size", "256x256", "--input-style", "gray", "--output-size", "gsrp",
                     "--format", "png", "--seed", "1"])
        assert code == 0
        [png] = sorted(out.glob("*.png"))
        with Image.open(png) as image:
            outputs.append(np.asarray(image.convert("RGB"), np.int16))
    capsys.readouterr()
    assert outputs[0].shape == outputs[1].shape and outputs[0].shape[0] == 384  # the page in the 384x384 GSRP frame
    assert np.abs(outputs[0] - outputs[1]).mean() > 0.5


def test_resume_continues_at_the_saved_step_and_matches_an_uninterrupted_run(trained, gsrp_dataset, tiny_models_dir,
                                                                              tmp_path, capsys):
    from engine.cli.main import main

    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed, symlinks=True)
    saved = _fusion_file_state(resumed / "colorflow" / "GraySD")
    capsys.readouterr()
    common = ["--models", str(tiny_models_dir), "--steps", "3", "--crop", "24x24", "--input-style", "gray",
              "--lr", "1e-3", "--device", "cpu"]
    assert main(["train", "gsrp", str(gsrp_dataset), "--out", str(resumed), "--resume", *common]) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    state = json.loads((resumed / "state-gsrp" / "trainer_state.json").read_text())
    assert (state["step"], state["samples_seen"]) == (3, 3)
    straight = tmp_path / "straight"
    assert main(["train", "gsrp", str(gsrp_dataset), "--out", str(straight), *common]) == 0
    # Same weights (and BatchNorm statistics) as 3 uninterrupted steps: model, optimizer moments,
    # data position and latent noise were all restored.
    a, b = (_fusion_file_state(d / "colorflow" / "GraySD") for d in (resumed, straight))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].double(), b[k].double(), rtol=1e-5, atol=1e-6) for k in a)
    assert any(not torch.equal(a[k], saved[k]) for k in a)


def test_icp_and_gsrp_outputs_share_a_folder(tiny_models_dir, tiny_components, tmp_path):
    from engine.gsrp.fusion import FusionNet, vae_feature_channels
    from engine.training import gsrp, icp

    base = _base(tiny_models_dir)
    out = tmp_path / "both"
    icp.write_layout(base, out, tiny_components.guide, tiny_components.unet)
    graysd = out / "colorflow" / "GraySD"
    icp_files = {name: (graysd / name).read_bytes()
                 for name in ("diffusion_pytorch_model.safetensors", "unet_lora.safetensors", "config.json")}
    (graysd / "MultiResNetModel.safetensors").symlink_to(base.graysd / "MultiResNetModel.bin")  # would shadow .bin
    fusion = FusionNet(vae_feature_channels(tiny_components.vae.config))  # fresh weights: differ from the base's
    gsrp.write_layout(base, out, fusion)
    for name, data in icp_files.items():
        assert not (graysd / name).is_symlink() and (graysd / name).read_bytes() == data
    assert not (graysd / "MultiResNetModel.safetensors").exists()
    fusion_bytes = (graysd / "MultiResNetModel.bin").read_bytes()
    icp.write_layout(base, out, tiny_components.guide, tiny_components.unet)  # ICP saving again
    assert not (graysd / "MultiResNetModel.bin").is_symlink()
    assert (graysd / "MultiResNetModel.bin").read_bytes() == fusion_bytes
    assert sorted(p.name.split(".")[0] for p in graysd.glob("MultiResNetModel*")) == ["MultiResNetModel"]
    expected = fusion.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in _fusion_file_state(graysd).items())


def test_gsrp_command_parses_and_refuses_bad_input(gsrp_dataset, tiny_models_dir, tmp_path, capsys):
    from engine.cli.main import build_parser, main

    args = build_parser().parse_args(["train", "gsrp", "ds", "--out", "o", "--crop", "full", "--resume"])
    assert (args.train_command, args.crop, args.resume, args.steps, args.lr, args.input_style) == \
        ("gsrp", None, True, 30000, 1e-5, "screen")
    assert build_parser().parse_args(["train", "gsrp", "ds", "--out", "o", "--crop", "256"]).crop == (256, 256)
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", "gsrp", str(empty), "--models", str(tiny_models_dir), "--out", str(tmp_path / "o"),
                 "--device", "cpu"])
    assert code == 2 and "train prepare" in capsys.readouterr().err
    code = main(["train", "gsrp", str(gsrp_dataset), "--models", str(tiny_models_dir), "--out", str(tmp_path / "o"),
                 "--resume", "--input-style", "gray", "--device", "cpu"])
    assert code == 2 and "nothing to resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "gsrp", "ds", "--out", "o", "--crop", "0x8"])


def test_gsrp_keeps_an_ema_samples_the_held_out_page_and_logs_beside_icps_files(gsrp_dataset, tiny_models_dir, tmp_path):
    """The loop ICP runs serves GSRP too. diffusers' EMAModel: decay 0 at the first update (EMA =
    weights), then min(d, (1+k)/(10+k)) at the (k+1)-th: with d = 0.2, 2/11 at step 2; the written
    fusion file holds the EMA. The last page is held out and super-resolved into samples-gsrp/; the
    losses go to log-gsrp.jsonl and TensorBoard's logs/gsrp; ICP's log and samples in DIR are kept."""
    from accelerate.utils import is_tensorboard_available

    from engine.training.gsrp import GSRPTrainConfig, GSRPTrainer

    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    (out / "log.jsonl").write_text('{"step": 1, "loss": 0.5}\n')  # as `train icp` left them
    config = GSRPTrainConfig(steps=2, crop=(24, 24), gray_input="gray", learning_rate=1e-3, device="cpu", seed=SEED,
                             ema_decay=0.2, sample_every=2, log_every=1, save_every=100)
    trainer = GSRPTrainer(_base(tiny_models_dir), gsrp_dataset, out, config, printer=None)
    assert trainer.held_out == 2 and {trainer.index_at(p)[1] for p in range(40)} == {0, 1}
    fusion = trainer.accelerator.unwrap_model(trainer.fusion)
    live = []
    for step in (1, 2):
        trainer.train(until=step)
        live.append({n: p.detach().clone().double() for n, p in fusion.named_parameters()})
    saved = _fusion_file_state(out / "colorflow" / "GraySD")
    for name, weight in live[1].items():
        hand = 2 / 11 * live[0][name] + 9 / 11 * weight
        assert torch.allclose(saved[name].double(), hand, atol=1e-6), name
    assert any(not torch.allclose(saved[n].double(), live[1][n], atol=1e-6) for n in live[1])
    assert all(torch.equal(p.detach().double(), live[1][n]) for n, p in fusion.named_parameters())  # put back

    assert [p.name for p in (out / "samples-gsrp").iterdir()] == ["step_000002.png"]
    with Image.open(out / "samples-gsrp" / "step_000002.png") as image:
        assert image.size == FRAME and image.mode == "RGB"
    logged = [json.loads(line) for line in (out / "log-gsrp.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == [1, 2] and [e["loss"] for e in logged] == trainer.losses
    assert (out / "log.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n' and not any((out / "samples").iterdir())
    if is_tensorboard_available():
        assert list((out / "logs" / "gsrp").rglob("events.out.tfevents.*"))
    resumed = GSRPTrainer(_base(tiny_models_dir), gsrp_dataset, out, config, printer=None)
    assert resumed.resume() == 2 and resumed.ema.optimization_step == 2
    assert all(torch.equal(a, b) for a, b in zip(resumed.ema.shadow_params, trainer.ema.shadow_params))


def test_a_gsrp_state_written_before_the_shared_loop_resumes(trained, gsrp_dataset, tiny_models_dir, tmp_path, capsys):
    """Its trainer_state.json counted samples per process as "consumed"; it resumes at its step and
    data position and goes on in the current format."""
    from engine.cli.main import main

    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed, symlinks=True)
    state_file = resumed / "state-gsrp" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({"step": state["step"], "consumed": 2, "config": state["config"]}))
    capsys.readouterr()
    assert main(["train", "gsrp", str(gsrp_dataset), "--out", str(resumed), "--resume", "--models", str(tiny_models_dir),
                 "--steps", "3", "--crop", "24x24", "--input-style", "gray", "--lr", "1e-3", "--device", "cpu"]) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    state = json.loads(state_file.read_text())
    assert (state["step"], state["samples_seen"]) == (3, 3)
