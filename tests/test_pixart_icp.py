"""ICP for the line-art styles (PixArt-α): the guided transformer forward, the denoising loop, loading.

Expectations come from diffusers' own PixArtTransformer2DModel forward and PixArtAlphaPipeline, forward
hooks, hand computations, and ../shared/reference/SKETCH.md (the official pipeline's facts).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine.core.errors import InputError, ModelError
from engine.core.geometry import WorkSize
from engine.icp.settings import ColorizeSettings

SIZE = WorkSize(64, 96)  # canvas 128x192, latent 16x24, 8x12 = 96 tokens
TEXT_LENGTH, CAPTION = 12, 32
# The scheduler config PixArt-alpha/PixArt-XL-2-1024-MS ships (scheduler/scheduler_config.json).
PIXART_SCHEDULER = {
    "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "beta_end": 0.02,
    "beta_schedule": "linear", "beta_start": 0.0001, "dynamic_thresholding_ratio": 0.995, "euler_at_final": False,
    "lambda_min_clipped": float("-inf"), "lower_order_final": True, "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "solver_order": 2, "solver_type": "midpoint",
    "steps_offset": 0, "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None,
    "use_karras_sigmas": False, "use_lu_lambdas": False, "variance_type": None,
}
TRANSFORMER = dict(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8, num_layers=4,
                   cross_attention_dim=24, caption_channels=CAPTION, sample_size=128, norm_num_groups=8)


def _transformer(seed: int = 0):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(**TRANSFORMER).eval()
    with torch.no_grad():  # diffusers zero-inits a few projections: random values everywhere, so nothing hides
        for parameter in model.parameters():
            if not parameter.abs().any():
                parameter.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module")
def transformer():
    return _transformer()


def _text(batch: int = 2, seed: int = 1):
    """T5-like embeddings and a mask as SKETCH.md says the official tokenizer gives: "" keeps 1 token
    (</s>), "manga" 2; the rest is padding."""
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(batch, TEXT_LENGTH, CAPTION, generator=g)
    mask = torch.zeros(batch, TEXT_LENGTH, dtype=torch.long)
    mask[0, :1] = 1
    mask[1:, :2] = 1
    return embeds, mask


def _micro(batch: int, size: WorkSize = SIZE) -> dict:
    """SKETCH.md: resolution [[2H, 2W]] and aspect ratio [[2H/2W]] of the canvas, per batch row."""
    return {"resolution": torch.tensor([[2.0 * size.height, 2.0 * size.width]]).repeat(batch, 1),
            "aspect_ratio": torch.tensor([[size.height / size.width]]).repeat(batch, 1)}


def _controls(transformer, batch: int, seed: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = (2 * SIZE.height // 8 // 2) * (2 * SIZE.width // 8 // 2)
    inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    return [torch.randn(batch, tokens, inner, generator=g) for _ in range(transformer.config.num_layers // 2)]


def _sample(batch: int = 2, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 2 * SIZE.height // 8, 2 * SIZE.width // 8, generator=g)


# --- the guided forward ---------------------------------------------------------------------


def test_guided_forward_without_controls_is_diffusers_own_forward(transformer):
    from engine.icp.pixart_forward import guided_transformer_forward

    sample, (text, mask) = _sample(), _text()
    t = torch.tensor([700, 700])
    zeros = [torch.zeros_like(c) for c in _controls(transformer, 2)]
    with torch.no_grad():
        stock = transformer(sample, encoder_hidden_states=text, timestep=t, added_cond_kwargs=_micro(2),
                            encoder_attention_mask=mask).sample
        ours = guided_transformer_forward(transformer, sample, t, text, mask, _micro(2), zeros)
        no_controls = guided_transformer_forward(transformer, sample, t, text, mask, _micro(2), [])
        unmasked = transformer(sample, encoder_hidden_states=text, timestep=t, added_cond_kwargs=_micro(2)).sample
    assert ours.shape == (2, 8, *sample.shape[2:])  # learned sigma: 8 channels out
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-5)
    torch.testing.assert_close(no_controls, stock, rtol=0, atol=1e-5)
    assert (unmasked - stock).abs().max() > 1e-3  # the text mask matters, so the bias is checked too


def _stock_with_hooks(transformer, sample, t, text, mask, micro, controls):
    """Reference: diffusers' forward with controls[i] added to block i's output by a forward hook
    (where SKETCH.md says the official transformer adds control_list[i])."""
    handles = [block.register_forward_hook(lambda module, args, output, value=value: output + value)
               for block, value in zip(transformer.transformer_blocks, controls)]
    try:
        return transformer(sample, encoder_hidden_states=text, timestep=t, added_cond_kwargs=micro,
                           encoder_attention_mask=mask).sample
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("control_batch", [1, 2])
def test_controls_join_after_block_i_as_hooks_add_them(transformer, control_batch):
    """Batch-1 controls broadcast over both CFG rows (ours); batch-2 ones are per row (official)."""
    from engine.icp.pixart_forward import guided_transformer_forward

    sample, (text, mask) = _sample(), _text()
    t = torch.tensor([300, 300])
    controls = _controls(transformer, control_batch)
    with torch.no_grad():
        ours = guided_transformer_forward(transformer, sample, t, text, mask, _micro(2), controls)
        reference = _stock_with_hooks(transformer, sample, t, text, mask, _micro(2), controls)
        swapped = guided_transformer_forward(transformer, sample, t, text, mask, _micro(2), controls[::-1])
        plain = transformer(sample, encoder_hidden_states=text, timestep=t, added_cond_kwargs=_micro(2),
                            encoder_attention_mask=mask).sample
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    assert (ours - plain).abs().max() > 1e-3  # the controls reach the output
    assert (swapped - reference).abs().max() > 1e-3  # and their order is seen


# --- the denoising loop ---------------------------------------------------------------------


def _guide(transformer, zero: bool):
    """A guide for the transformer: as built (zero-initialised adapters: every output zero, as the
    official guide before training), or with every zero parameter drawn at random."""
    from engine.icp.pixart_guide import ColorGuidePixArt

    config = transformer.config
    torch.manual_seed(4)
    guide = ColorGuidePixArt(num_attention_heads=config.num_attention_heads, attention_head_dim=config.attention_head_dim,
                             in_channels=4, cond_channels=9, num_layers=config.num_layers, sample_size=128).eval()
    if not zero:
        with torch.no_grad():
            for parameter in guide.parameters():
                if not parameter.abs().any():
                    parameter.normal_(0, 0.2)
    return guide


def _vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(5)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=4, sample_size=64).eval()


def _components(transformer, zero_guide: bool):
    from engine.icp.pixart_components import PixArtComponents
    from engine.icp.text_embeddings import TextEmbeddings

    embeds, mask = _text()
    return PixArtComponents(transformer=transformer, guide=_guide(transformer, zero_guide), vae=_vae(),
                            text=TextEmbeddings(embeds, mask), scheduler_config=dict(PIXART_SCHEDULER),
                            fusion=nn.Identity(), device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="module")
def zero_guided(transformer):
    return _components(transformer, zero_guide=True)


@pytest.fixture(scope="module")
def guided(transformer):
    return _components(transformer, zero_guide=False)


def _canvas_and_mask(size: WorkSize = SIZE, seed: int = 6):
    rng = np.random.default_rng(seed)
    canvas = Image.fromarray(rng.integers(0, 256, (size.canvas[1], size.canvas[0], 3), dtype=np.uint8), "RGB")
    mask = Image.new("L", size.canvas, 255)
    mask.paste(0, size.query_box_in_canvas)
    return canvas, mask


def test_scheduler_is_the_pixart_repos_dpm_solver_as_sketch_md_says():
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler.from_config(PIXART_SCHEDULER)
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [999, 749, 500, 250]


def test_loop_with_a_zero_guide_equals_diffusers_pixart_alpha_pipeline(zero_guided):
    """The whole loop (CFG 4.5 on all 8 channels, learned-sigma split, micro-conditions, DPM-Solver++)
    against diffusers' stock PixArtAlphaPipeline given the same embeddings, masks and start latents."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

    from engine.icp.pixart_colorize import PixArtColorizer

    c = zero_guided
    colorizer = PixArtColorizer(c)
    settings = ColorizeSettings(steps=4, guidance_scale=4.5, preview_every=0)
    start = _sample(batch=1, seed=7)
    canvas, mask = _canvas_and_mask()
    conditioning = colorizer.conditioning(canvas, mask, SIZE, torch.Generator().manual_seed(0))
    ours = colorizer.denoise(start, conditioning, SIZE, settings)
    stock = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=c.vae, transformer=c.transformer,
                                scheduler=DPMSolverMultistepScheduler.from_config(PIXART_SCHEDULER))
    stock.set_progress_bar_config(disable=True)
    expected = stock(prompt=None, negative_prompt=None, prompt_embeds=c.text.embeds[1:],
                     prompt_attention_mask=c.text.mask[1:], negative_prompt_embeds=c.text.embeds[:1],
                     negative_prompt_attention_mask=c.text.mask[:1], latents=start.clone(), guidance_scale=4.5,
                     num_inference_steps=4, height=SIZE.canvas[1], width=SIZE.canvas[0],
                     use_resolution_binning=False, output_type="latent").images
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    no_cfg = colorizer.denoise(start, conditioning, SIZE, replace(settings, guidance_scale=1.0))
    assert (no_cfg - expected).abs().max() > 1e-3  # CFG is seen


def test_one_step_gives_the_x0_prediction_by_hand(zero_guided):
    """The official loop asks the scheduler for pred_original_sample at 1 step (DMD branch), which
    DPMSolverMultistepScheduler's output does not carry; with its final sigma 0 the step's sample is
    that prediction: x0 = (x - sqrt(1 - a) * eps) / sqrt(a), a = alphas_cumprod[999] of the linear betas."""
    from engine.icp.pixart_colorize import PixArtColorizer

    c = zero_guided
    start = _sample(batch=1, seed=8)
    canvas, mask = _canvas_and_mask()
    colorizer = PixArtColorizer(c)
    conditioning = colorizer.conditioning(canvas, mask, SIZE, torch.Generator().manual_seed(0))
    ours = colorizer.denoise(start, conditioning, SIZE, ColorizeSettings(steps=1, guidance_scale=4.5, preview_every=0))
    with torch.no_grad():
        out = c.transformer(torch.cat([start] * 2), encoder_hidden_states=c.text.embeds,
                            timestep=torch.tensor([999, 999]), added_cond_kwargs=_micro(2),
                            encoder_attention_mask=c.text.mask).sample
    uncond, cond = out.chunk(2)
    eps = (uncond + 4.5 * (cond - uncond))[:, :4]
    a = torch.cumprod(1 - torch.linspace(0.0001, 0.02, 1000, dtype=torch.float64), 0)[999]
    x0 = (start.double() - (1 - a).sqrt() * eps.double()) / a.sqrt()
    # x0 is ~156x eps here (1/sqrt(a)): float32 rounding scales with it.
    torch.testing.assert_close(ours.double(), x0, rtol=0, atol=2e-6 * float(x0.abs().max()))


def test_guide_gets_x_t_and_the_nine_conditioning_channels_with_the_transformers_timestep(guided):
    """SKETCH.md: guide input (13) = x_t | latent(A) | mask | latent(B), called with the same timestep
    and micro-conditions as the transformer. Ours: the guide runs once per step at batch 1."""
    from engine.icp.pixart_colorize import PixArtColorizer

    from engine.icp.pixart_forward import guided_transformer_forward

    c = guided
    seen, transformer_calls = [], []
    handle = c.guide.register_forward_pre_hook(lambda module, args, kwargs: seen.append((args, kwargs)),
                                              with_kwargs=True)

    def recording_forward(transformer, sample, timestep, text, text_mask, micro, controls):
        transformer_calls.append((sample.shape[0], timestep.tolist(), micro, len(controls)))
        return guided_transformer_forward(transformer, sample, timestep, text, text_mask, micro, controls)

    start = _sample(batch=1, seed=9)
    canvas, mask = _canvas_and_mask()
    colorizer = PixArtColorizer(c, transformer_forward=recording_forward)
    conditioning = colorizer.conditioning(canvas, mask, SIZE, torch.Generator().manual_seed(0))
    assert conditioning.shape == (1, 9, 24, 16)
    try:
        colorizer.denoise(start, conditioning, SIZE, ColorizeSettings(steps=2, guidance_scale=4.5, preview_every=0))
    finally:
        handle.remove()
    assert len(seen) == 2
    args, kwargs = seen[0]
    sample, timestep, micro = [*args, *kwargs.values()][:3]
    assert sample.shape == (1, 13, 24, 16)
    torch.testing.assert_close(sample[:, :4], start)  # DPM-Solver's scale_model_input is the identity
    torch.testing.assert_close(sample[:, 4:], conditioning)
    assert timestep.tolist() == [999]
    torch.testing.assert_close(micro["resolution"], _micro(1)["resolution"])
    torch.testing.assert_close(micro["aspect_ratio"], _micro(1)["aspect_ratio"])
    assert [(b, t) for b, t, _, _ in transformer_calls] == [(2, [999, 999]), (2, [500, 500])]
    torch.testing.assert_close(transformer_calls[0][2]["resolution"], _micro(2)["resolution"])
    assert transformer_calls[0][3] == c.transformer.config.num_layers // 2


def test_ours_shares_one_guide_pass_exactly_as_two_official_copies(guided):
    """Ours runs the guide at batch 1 for both CFG halves; with the same conditioning sample in both
    official copies (batch 2) the result is the same: the guide takes no text."""
    from engine.icp.pixart_colorize import PixArtColorizer

    colorizer = PixArtColorizer(guided)
    start = _sample(batch=1, seed=10)
    canvas, mask = _canvas_and_mask()
    conditioning = colorizer.conditioning(canvas, mask, SIZE, torch.Generator().manual_seed(0))
    settings = ColorizeSettings(steps=3, guidance_scale=4.5, preview_every=0)
    ours = colorizer.denoise(start, conditioning, SIZE, settings)
    official = colorizer.denoise(start, torch.cat([conditioning] * 2), SIZE, replace(settings, procedure="official"))
    # Batch 1 vs 2 only reorders float sums; the first step's x0 (~1/sqrt(alphas_cumprod[999]) = 156x eps)
    # scales that rounding, so the bound is relative to the latents' size.
    torch.testing.assert_close(ours, official, rtol=0, atol=2e-6 * float(official.abs().max()))
    with torch.no_grad():
        zero = PixArtColorizer(replace(guided, guide=_guide(guided.transformer, zero=True)))
    assert (zero.denoise(start, conditioning, SIZE, settings) - ours).abs().max() > 1e-3  # the guide is seen


class RandomDraws(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every random op's output in order (as tests/test_procedure.py does for the SD path)."""

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in ("randn", "normal", "normal_", "bernoulli", "bernoulli_", "rand",
                                            "uniform_", "randint", "multinomial"):
            self.draws.append((out if isinstance(out, torch.Tensor) else args[0]).detach().clone())
        return out


def test_official_procedure_draws_in_the_official_order(guided):
    """SKETCH.md "RNG": start noise from a CPU generator seeded with the seed; then from the global
    RNG (seeded by fix_random_seeds): image A's samples for both CFG copies, then image B's; DPM-Solver++
    draws nothing; the guide runs at the CFG batch of 2. Expected tensors from plain torch calls."""
    from engine.core.rng import official_seeding
    from engine.icp.pixart_colorize import PixArtColorizer

    calls = []
    handle = guided.guide.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    canvas, mask = _canvas_and_mask()
    settings = ColorizeSettings(steps=3, guidance_scale=4.5, seed=11, procedure="official", preview_every=0)
    try:
        with RandomDraws() as mode, official_seeding(11):
            page = PixArtColorizer(guided)(canvas, mask, SIZE, settings)
    finally:
        handle.remove()
    assert page.size == (SIZE.width, SIZE.height)
    latent = (1, 4, 2 * SIZE.height // 8, 2 * SIZE.width // 8)
    start = torch.randn(latent, generator=torch.Generator().manual_seed(11))
    torch.manual_seed(11)
    image_a, image_b = torch.randn((2, *latent[1:])), torch.randn((2, *latent[1:]))
    assert [tuple(d.shape) for d in mode.draws] == [latent, image_a.shape, image_b.shape]
    for drawn, expected in zip(mode.draws, [start, image_a, image_b]):
        assert torch.equal(drawn, expected)
    assert calls == [2, 2, 2]


def test_ours_is_reproducible_and_batches_pages_as_alone(guided):
    from engine.icp.pixart_colorize import PixArtColorizer

    colorizer = PixArtColorizer(guided)
    canvas, mask = _canvas_and_mask()
    other, _ = _canvas_and_mask(seed=12)
    first = ColorizeSettings(steps=2, guidance_scale=4.5, seed=1, preview_every=0)
    second = replace(first, seed=2)
    alone = [colorizer(canvas, mask, SIZE, first), colorizer(other, mask, SIZE, second)]
    again = colorizer(canvas, mask, SIZE, first)
    batch = colorizer.colorize_batch([canvas, other], [mask, mask], SIZE, [first, second])
    assert np.array_equal(np.asarray(alone[0]), np.asarray(again))
    for a, b in zip(alone, batch):
        assert np.abs(np.asarray(a, int) - np.asarray(b, int)).max() <= 1
    assert np.abs(np.asarray(alone[0], int) - np.asarray(alone[1], int)).mean() > 1


def test_previews_every_step_and_cancel_within_one_step(guided):
    from engine.icp.colorize import Interrupted
    from engine.icp.pixart_colorize import PixArtColorizer
    from engine.icp.pixart_forward import guided_transformer_forward

    canvas, mask = _canvas_and_mask()
    steps = []
    settings = ColorizeSettings(steps=3, guidance_scale=4.5, preview_every=1)
    PixArtColorizer(guided)(canvas, mask, SIZE, settings, steps.append)
    assert [(s.step, s.total) for s in steps] == [(1, 3), (2, 3), (3, 3)]
    assert [s.timestep for s in steps] == [999, 666, 333]
    assert all(s.preview is not None and s.preview.size == (SIZE.width // 8, SIZE.height // 8) for s in steps)
    runs = []

    def counted(*args):
        runs.append(1)
        return guided_transformer_forward(*args)

    with pytest.raises(Interrupted, match="after step 1 of 3"):
        PixArtColorizer(guided, transformer_forward=counted)(canvas, mask, SIZE, settings, lambda info: False)
    assert len(runs) == 1  # stopped within the first step: no second transformer pass


def test_inputs_are_checked_before_any_model_runs(guided):
    from engine.icp.pixart_colorize import PixArtColorizer

    canvas, mask = _canvas_and_mask()
    colorizer = PixArtColorizer(guided)
    with pytest.raises(InputError, match="canvas"):
        colorizer(canvas.crop((0, 0, 64, 64)), mask, SIZE, ColorizeSettings())
    with pytest.raises(InputError, match="prompt"):
        colorizer(canvas, mask, SIZE, ColorizeSettings(prompt="a cat"))


def test_offload_hooks_and_the_lowest_memory_switch_keep_the_result():
    """Low VRAM: every model use goes through a hooked forward (Runner), so the loop gives the same
    latents with the hooks installed; the out-of-memory fallback (loading.use_lowest_memory) knows
    this family (on the CPU: the VAE tiled, no offload)."""
    from engine.icp.pixart_colorize import PixArtColorizer
    from engine.icp.pixart_components import install_pixart_offload
    from engine.models.loading import use_lowest_memory

    c = _components(_transformer(seed=13), zero_guide=False)
    start = _sample(batch=1, seed=14)
    canvas, mask = _canvas_and_mask()
    settings = ColorizeSettings(steps=2, guidance_scale=4.5, preview_every=0)
    conditioning = PixArtColorizer(c).conditioning(canvas, mask, SIZE, torch.Generator().manual_seed(0))
    plain = PixArtColorizer(c).denoise(start, conditioning, SIZE, settings)
    offload = install_pixart_offload(c)
    assert set(offload.hooks) == {"transformer", "guide", "vae", "fusion"}
    torch.testing.assert_close(PixArtColorizer(c).denoise(start, conditioning, SIZE, settings), plain, rtol=0, atol=0)
    c.offload = None
    assert use_lowest_memory(c) == ["tiled VAE"] and c.vae.use_tiling


# --- loading --------------------------------------------------------------------------------


def test_loading_without_the_pixart_base_or_a_style_folder_names_what_is_missing(tiny_models_dir, tmp_path):
    import shutil

    from engine.models.pixart_loading import load_pixart_diffusion
    from engine.models.sources import resolve_models

    paths = resolve_models(str(tiny_models_dir))
    with pytest.raises(ModelError, match="(?is)pixart.*colorflow models download --line-art"):
        load_pixart_diffusion(replace(paths, pixart=None), "sketch", cache_dir=tmp_path)
    colorflow = tmp_path / "colorflow"
    shutil.copytree(paths.colorflow, colorflow)
    shutil.rmtree(colorflow / "shading")
    with pytest.raises(ModelError, match="(?s)sketch-shading.*shading/.*colorflow models download --line-art"):
        load_pixart_diffusion(replace(paths, colorflow=colorflow), "sketch-shading", cache_dir=tmp_path)
    with pytest.raises(ModelError, match="not a line-art style"):
        load_pixart_diffusion(paths, "gray", cache_dir=tmp_path)


def test_tiny_line_art_models_load_through_the_strict_loaders(tiny_models_dir, tmp_path):
    """make-tiny's PixArt family loads: the LoRA really attached and loaded (its tensors are the
    file's), the guide fits the transformer, the scheduler is the repo's DPM-Solver++, and the T5
    embeddings are [negative "", prompt "manga"] with the masks SKETCH.md gives."""
    from engine.io.weight_files import read_state_dict
    from engine.models.pixart_loading import load_pixart_diffusion
    from engine.models.sources import resolve_models

    paths = resolve_models(str(tiny_models_dir))
    c = load_pixart_diffusion(paths, "sketch", cache_dir=tmp_path)
    lora = read_state_dict(paths.line_art("sketch") / "transformer_lora.bin")
    state = c.transformer.state_dict()
    loaded = [k for k in state if ".lora_" in k]
    assert len(loaded) == len(lora) > 0
    key = next(k for k in lora if "transformer_blocks.0.attn1.to_q.lora_B" in k)
    ours = next(k for k in loaded if "transformer_blocks.0.attn1.to_q.lora_B" in k)
    assert torch.equal(state[ours], lora[key]) and lora[key].abs().max() > 0
    assert c.scheduler_config["_class_name"] == "DPMSolverMultistepScheduler"
    # Rows [negative, prompt]: "" is </s> alone; "manga" is its pieces (1 with the real T5 vocabulary,
    # more with the tiny one) and </s>; the rest padding.
    negative, prompt = c.text.mask.tolist()
    assert c.text.embeds.shape[0] == 2 and sum(negative) == 1 and sum(prompt) >= 2
    assert prompt == sorted(prompt, reverse=True) and negative == sorted(negative, reverse=True)
    assert c.prompts == ("manga", "") and c.vae_scale == 8 and c.offload is None
    shading = load_pixart_diffusion(paths, "sketch-shading", cache_dir=tmp_path)
    assert any((a - b).abs().max() > 0 for a, b in zip(shading.guide.state_dict().values(), c.guide.state_dict().values()))


# --- a sketch page through load_pipeline: RAP -> ICP (PixArt) -> GSRP -------------------------

PAGE_SIZE = WorkSize(128, 192)


@pytest.fixture(scope="module")
def sketch_pipeline(tiny_models_dir, tmp_path_factory):
    from engine.pipelines.page import load_pipeline

    return load_pipeline(str(tiny_models_dir), "cpu", cache_dir=tmp_path_factory.mktemp("cache"),
                         input_style="sketch")


@pytest.fixture(scope="module")
def line_page_and_refs(tmp_path_factory):
    """A white page with black ink lines, and two colored references."""
    from PIL import ImageDraw

    from engine.io.chapter import ImageSource, PageImage
    from engine.io.demo import make_demo_chapter

    folder = tmp_path_factory.mktemp("line-data")
    _, refs = make_demo_chapter(folder, pages=1, refs=2, size=(128, 192))
    image = Image.new("L", (128, 192), 255)
    draw = ImageDraw.Draw(image)
    for i in range(8):
        draw.line([(4 + 15 * i, 4), (120 - 9 * i, 186)], fill=0, width=2)
    draw.ellipse((30, 40, 100, 120), outline=0, width=3)
    path = folder / "lines.png"
    image.save(path)
    return PageImage(ImageSource(path), image, "2" * 64), [ImageSource(p) for p in sorted(refs.iterdir())]


def _settings(procedure: str = "ours", style: str = "sketch", preview_every: int = 1):
    from engine.gsrp.upscale import UpscaleSettings
    from engine.pipelines.settings import PipelineSettings

    official = procedure == "official"
    return PipelineSettings(ColorizeSettings(steps=2, guidance_scale=4.5, seed=3, procedure=procedure,
                                             preview_every=preview_every),
                            UpscaleSettings(seed=3, procedure=procedure), keep_ink=False, size=PAGE_SIZE,
                            input_style=style, output_size="gsrp" if official else "page")


def test_a_sketch_page_runs_rap_icp_pixart_gsrp_end_to_end(sketch_pipeline, line_page_and_refs):
    from engine.core.events import Preview, Progress
    from engine.icp.pixart_colorize import PixArtColorizer
    from engine.rap.curation import Choices

    pipeline = sketch_pipeline
    page, refs = line_page_and_refs
    c = pipeline.colorizer.components
    assert isinstance(pipeline.colorizer, PixArtColorizer)
    assert pipeline.upscaler.vae is c.vae_runner and pipeline.upscaler.fusion is c.fusion  # GSRP on the PixArt VAE
    settings = _settings()
    prepared = pipeline.prepare(page, settings.inputs)
    retrieval = pipeline.retrieve(page, refs, Choices(), prepared)
    x, y = PAGE_SIZE.width // 2, PAGE_SIZE.height // 2  # the canvas centre is the line image (SKETCH.md wiring)
    centre = retrieval.canvas.crop((x, y, x + PAGE_SIZE.width, y + PAGE_SIZE.height))
    assert np.array_equal(np.asarray(centre), np.asarray(prepared.query))
    events = []
    colored = pipeline.color(page, retrieval, prepared, settings, emit=events.append)
    assert colored.size == page.image.size and colored.mode == "RGB"
    icp = [(e.step, e.total) for e in events if isinstance(e, Progress) and e.stage == "ICP"]
    assert icp == [(1, 2), (2, 2)]
    assert [e.step for e in events if isinstance(e, Progress) and e.stage == "GSRP"] == [0, 1]
    assert sum(isinstance(e, Preview) for e in events) == 2
    again = pipeline.color(page, retrieval, prepared, settings)
    assert np.array_equal(np.asarray(colored), np.asarray(again))  # the seed decides everything


def test_cancel_during_a_sketch_page_stops_within_one_step(sketch_pipeline, line_page_and_refs):
    from engine.core.events import CancelToken, Progress
    from engine.icp.colorize import Interrupted
    from engine.rap.curation import Choices

    pipeline = sketch_pipeline
    page, refs = line_page_and_refs
    settings = _settings(preview_every=0)
    prepared = pipeline.prepare(page, settings.inputs)
    retrieval = pipeline.retrieve(page, refs, Choices(), prepared)
    cancel, steps = CancelToken(), []

    def emit(event):
        if isinstance(event, Progress) and event.stage == "ICP":
            steps.append(event.step)
            cancel.cancel()

    with pytest.raises(Interrupted):
        pipeline.color(page, retrieval, prepared, settings, emit=emit, cancel=cancel)
    assert steps == [1]


def test_official_procedure_on_a_sketch_page_draws_in_the_official_order(sketch_pipeline, line_page_and_refs):
    """SKETCH.md "RNG", through ColorFlowPipeline unchanged: start noise from a generator seeded with
    the seed, then the global RNG: image A (2 copies), image B (2 copies), then GSRP's sample at 1.5x."""
    from engine.rap.curation import Choices

    pipeline = sketch_pipeline
    page, refs = line_page_and_refs
    settings = _settings("official", preview_every=0)
    prepared = pipeline.prepare(page, settings.inputs)
    retrieval = pipeline.retrieve(page, refs, Choices(), prepared)
    with RandomDraws() as mode:
        colored = pipeline.color(page, retrieval, prepared, settings)
    assert colored.size == (3 * PAGE_SIZE.width // 2, 3 * PAGE_SIZE.height // 2)
    latent = (1, 4, 2 * PAGE_SIZE.height // 8, 2 * PAGE_SIZE.width // 8)
    start = torch.randn(latent, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(3)
    image_a, image_b = torch.randn((2, *latent[1:])), torch.randn((2, *latent[1:]))
    gsrp = torch.randn((1, 4, 3 * PAGE_SIZE.height // 16, 3 * PAGE_SIZE.width // 16))
    assert [tuple(d.shape) for d in mode.draws] == [latent, image_a.shape, image_b.shape, gsrp.shape]
    for drawn, expected in zip(mode.draws, [start, image_a, image_b, gsrp]):
        assert torch.equal(drawn, expected)
