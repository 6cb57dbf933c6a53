"""Attention through torch's SDPA in every model our inference runs, channels_last and torch.compile
keeping the pixels. Expected attention counts come from each model's config, counted by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.overrides import TorchFunctionMode

from engine.core.geometry import WorkSize
from engine.icp.colorize import ColorizeSettings, Colorizer
from engine.rap.canvas import build_canvas, build_mask

SIZE = WorkSize(128, 128)
# The eager attention paths: diffusers' AttnProcessor (baddbmm, then softmax) and transformers'
# eager_attention_forward (matmul, then softmax). None of our models has a softmax outside attention.
EAGER_OPS = {"softmax", "_softmax", "baddbmm"}


class AttentionCalls(TorchFunctionMode):
    """Counts calls of torch's scaled_dot_product_attention and of the eager attention ops."""

    def __init__(self) -> None:
        super().__init__()
        self.sdpa = 0
        self.eager: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.sdpa += 1
        elif name in EAGER_OPS:
            self.eager.append(name)
        return func(*args, **(kwargs or {}))


def unet_attentions(config) -> int:
    """SD UNet attention layers from its config: each cross-attention down block has
    layers_per_block transformers, each up block one more, the mid block one; every transformer
    holds transformer_layers_per_block blocks of self- and cross-attention (attn1, attn2)."""
    per = config.transformer_layers_per_block * 2
    down = sum(t == "CrossAttnDownBlock2D" for t in config.down_block_types) * config.layers_per_block
    up = sum(t == "CrossAttnUpBlock2D" for t in config.up_block_types) * (config.layers_per_block + 1)
    return (down + up + 1) * per


def guide_attentions(config) -> int:
    """The guide: the same layout with self-attention only (one attention per transformer block)."""
    down = sum(t == "SelfAttnDownBlock2D" for t in config.down_block_types) * config.layers_per_block
    up = sum(t == "SelfAttnUpBlock2D" for t in config.up_block_types) * (config.layers_per_block + 1)
    return (down + up + 1) * config.transformer_layers_per_block


@pytest.fixture(scope="module")
def eager_configured_models(tmp_path_factory, tiny_models_dir):
    """The tiny models with two changes a downloaded or converted folder may carry: both CLIP
    configs ask for transformers' eager attention, and the VAE has its mid-block attention (as
    SD1.5's; the tiny VAE has none)."""
    import shutil

    from diffusers import AutoencoderKL

    from engine.models.sources import models_folder

    root = tmp_path_factory.mktemp("eager-models") / "models"
    shutil.copytree(tiny_models_dir, root)
    paths = models_folder(str(root))
    for folder in (paths.sd15 / "text_encoder", paths.image_encoder):
        config = json.loads((folder / "config.json").read_text())
        config["attn_implementation"] = "eager"
        (folder / "config.json").write_text(json.dumps(config))
    vae_config = dict(AutoencoderKL.load_config(paths.sd15 / "vae"), mid_block_add_attention=True)
    torch.manual_seed(0)
    AutoencoderKL.from_config(vae_config).save_pretrained(paths.sd15 / "vae", safe_serialization=True)
    return paths


def test_every_attention_runs_through_sdpa(eager_configured_models):
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from engine.icp.guide import guided_unet_forward
    from engine.models.loading import load_diffusion
    from engine.rap.embedding import ClipEmbedder

    paths = eager_configured_models
    c = load_diffusion(paths, "cpu")
    embedder = ClipEmbedder(paths.image_encoder)
    unet, guide, vae = c.unet.config, c.guide.config, c.vae.config
    assert vae.mid_block_add_attention and unet_attentions(unet) == 12 and guide_attentions(guide) == 6  # the tiny sizes
    sample, conditioning = torch.randn(1, 4, 16, 16), torch.randn(1, 9, 16, 16)
    ids = c.tokenizer(["", "manga"], padding="max_length", max_length=c.tokenizer.model_max_length,
                      return_tensors="pt").input_ids
    text = torch.randn(2, ids.shape[1], unet.cross_attention_dim)
    runs = {
        "text encoder": (lambda: c.text_encoder(ids), c.text_encoder.config.num_hidden_layers),
        "image encoder": (lambda: embedder.embed([Image.new("RGB", (64, 64), (9, 99, 199))]),
                          embedder.model.config.num_hidden_layers),
        "guided UNet step": (lambda: guided_unet_forward(c.unet, torch.cat([sample] * 2), 999, text,
                                                         c.guide(sample, 999, conditioning)),
                             unet_attentions(unet) + guide_attentions(guide)),
        "VAE decode": (lambda: c.vae.decode(sample), 1),  # the decoder's mid block
        "VAE encode": (lambda: c.vae.encode(torch.randn(1, 3, 64, 64)), 1),  # the encoder's mid block
    }
    for what, (run, expected) in runs.items():
        with torch.inference_mode(), AttentionCalls() as calls:
            run()
        assert (calls.sdpa, calls.eager) == (expected, []), what
    # Second check, by type: diffusers' SDPA processor on every Attention, transformers' sdpa.
    for model in (c.unet, c.guide, c.vae):
        processors = {type(m.processor) for m in model.modules() if isinstance(m, Attention)}
        assert processors == {AttnProcessor2_0}
    assert c.text_encoder.config._attn_implementation == embedder.model.config._attn_implementation == "sdpa"


def test_channels_last_keeps_the_pixels(tiny_models_dir):
    """ICP (2 steps, decode) and GSRP with the UNet, guide and VAE in channels_last give the
    pixels of the contiguous models within fp32 tolerance; the weights really are NHWC."""
    from engine.gsrp.upscale import Upscaler
    from engine.models.loading import load_diffusion
    from engine.models.sources import resolve_models

    paths = resolve_models(str(tiny_models_dir))
    rng = np.random.default_rng(3)
    page = Image.fromarray(rng.integers(0, 255, (SIZE.height, SIZE.width), np.uint8), "L").convert("RGB")
    refs = [Image.fromarray(rng.integers(0, 255, (SIZE.height, SIZE.width, 3), np.uint8)) for _ in range(12)]
    canvas, mask = build_canvas(page, [refs[:3], refs[3:6], refs[6:9], refs[9:]], SIZE), build_mask(SIZE)
    gray = page.resize((192, 192))
    results = []
    for channels_last in (False, True):
        c = load_diffusion(paths, "cpu", channels_last=channels_last)
        conv = c.unet.conv_in.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert c.vae.decoder.conv_out.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        colored = Colorizer(c)(canvas, mask, SIZE, ColorizeSettings(steps=2, seed=5))
        upscaled = Upscaler(c.vae_runner, c.fusion, c.device, c.dtype)(colored, gray)
        results.append([np.asarray(colored, np.int16), np.asarray(upscaled, np.int16)])
    # Float sums in another order: a level here and there (GSRP truncates to uint8, so a 1e-6 shift
    # can flip a level), within the golden tests' +-2 levels (tests/test_golden.py).
    for plain, nhwc in zip(*results):
        difference = np.abs(plain - nhwc)
        assert difference.max() <= 2 and difference.mean() < 0.1
    assert results[0][0].std() > 5  # a real image, not a constant that any layout reproduces


def test_compile_reaches_the_models_and_wraps_under_low_vram_hooks(tiny_models_dir, tiny_components):
    """--compile compiles the guided UNet step (the UNet's runner) and the guide, not the VAE;
    with --low-vram the offload hooks wrap the compiled forwards (the model is moved before the
    compiled code runs). "meta" stands in for the accelerator, as in test_low_vram."""
    from engine.models import kernels
    from engine.models.loading import load_diffusion
    from engine.models.sources import resolve_models
    from engine.pipelines.page import load_pipeline

    pipeline = load_pipeline(str(tiny_models_dir), "cpu", compile=True, cache_dir=tiny_models_dir / "cache")
    c = pipeline.colorizer.components
    assert (kernels.is_compiled(c.unet_runner), kernels.is_compiled(c.guide), kernels.is_compiled(c.vae_runner)) == (
        True, True, False)
    assert not kernels.is_compiled(tiny_components.unet_runner) and not kernels.is_compiled(tiny_components.guide)
    low = load_diffusion(resolve_models(str(tiny_models_dir)), "meta", dtype=torch.float32, low_vram=True, compile=True)
    for module in (low.unet_runner, low.guide):
        assert hasattr(module, "_hf_hook") and kernels.is_compiled(module)
        assert module.forward is not module._old_forward  # the hook's wrapper outside the compiled code


def test_bench_speedups_command_reports_ratios_to_its_own_baseline(tiny_models_dir, tiny_components, capsys):
    """`colorflow bench speedups --json`: every variant asked for, timed, with finite positive
    ratios to the baseline of the same run and outputs matching it; the attention modules counted
    as the configs give them."""
    import math

    from engine.benchmarks.speedups import speedups_text
    from engine.cli.main import main

    code = main(["bench", "speedups", "--models", str(tiny_models_dir), "--device", "cpu", "--size", "128x128",
                 "--variants", "channels_last,math_attention", "--repeats", "2", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["size"], result["canvas"], result["latent"], result["dtype"]) == ("128x128", "256x256", "32x32",
                                                                                      "float32")
    assert list(result["variants"]) == list(result["ratios"]) == ["baseline", "channels_last", "math_attention"]
    assert result["ratios"]["baseline"] == {"step": 1.0, "decode": 1.0}
    for name, ratio in result["ratios"].items():
        cell = result["variants"][name]
        assert all(math.isfinite(v) and v > 0 for v in ratio.values()), name
        assert len(cell["step_times"]) == len(cell["decode_times"]) == 2 and cell["step_s"] > 0 and cell["decode_s"] > 0
        assert cell["step_max_abs_diff"] < 1e-3 and cell["decode_max_level_diff"] <= 1, name
        assert math.isclose(ratio["step"], cell["step_s"] / result["variants"]["baseline"]["step_s"], rel_tol=1e-3)
    assert result["attention_modules"] == {"unet": unet_attentions(tiny_components.unet.config),
                                           "guide": guide_attentions(tiny_components.guide.config), "vae": 0}
    assert "math_attention" in speedups_text(result) and result["random_weights"] == "tiny"


@pytest.mark.slow  # 18-54 s here: dynamo traces the tiny UNet and guide for ~15 s even with a backend that generates no code
def test_colorize_compile_gives_the_uncompiled_page(tiny_models_dir, one_page_chapter, tmp_path, monkeypatch):
    """`colorize --compile` runs compiled code (graphs captured for the guide and the guided UNet
    step) and writes the page the plain run writes, within fp32 tolerance."""
    from torch._dynamo.utils import counters

    from engine.cli.main import main
    from engine.models import kernels

    monkeypatch.setattr(kernels, "COMPILE_BACKEND", "aot_eager")  # AOTAutograd's graphs, no C++ compiler
    torch._dynamo.reset()
    counters.clear()
    pages, refs = one_page_chapter
    outputs = []
    for extra in ([], ["--compile"]):
        out = tmp_path / f"out{len(outputs)}"
        code = main(["colorize", str(pages), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
                     "--device", "cpu", "--size", "256x256", "--steps", "2", "--cache-dir", str(tmp_path / "cache"),
                     *extra])
        assert code == 0
        (page,) = sorted(out.glob("*.png"))
        outputs.append(np.asarray(Image.open(page).convert("RGB"), np.int16))
        if not extra:
            assert counters["stats"]["unique_graphs"] == 0  # nothing compiled without the option
    assert counters["stats"]["unique_graphs"] >= 2  # the guide and the guided UNet step, at least
    difference = np.abs(outputs[0] - outputs[1])
    assert difference.max() <= 2 and difference.mean() < 0.1
    assert outputs[0].std() > 1  # colored, not a flat page any run would reproduce
