"""The line-art PixArt family's networks: the PixArt guide and the transformer LoRA load strictly from the tiny official layout, manifests at official size, make-tiny's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine.core.errors import ModelError

MANIFEST = Path(__file__).parent / "data" / "pixart-manifest.json"
ALIAS = ("after_proj.weight", "after_proj.bias")


@pytest.fixture(scope="module")
def paths(tiny_models_dir):
    from engine.models.sources import resolve_models

    return resolve_models(str(tiny_models_dir))


@pytest.fixture
def sketch_copy(paths, tmp_path) -> Path:
    """A copy of the tiny sketch/ folder a test may damage."""
    return Path(shutil.copytree(paths.line_art("sketch"), tmp_path / "sketch"))


def _transformer(paths):
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel.from_pretrained(paths.pixart / "transformer").eval()


def _run(transformer, seed: int = 0) -> torch.Tensor:
    """One forward on a small non-square latent (8 x 12 latent -> 4 x 6 patches), a 5-token caption."""
    generator = torch.Generator().manual_seed(seed)
    width = transformer.config.caption_channels
    sample = torch.randn(2, 4, 8, 12, generator=generator)
    text = torch.randn(2, 5, width, generator=generator)
    cond = {"resolution": torch.tensor([[64.0, 96.0]] * 2), "aspect_ratio": torch.tensor([[64 / 96]] * 2)}
    with torch.no_grad():
        return transformer(sample, encoder_hidden_states=text, timestep=torch.tensor([999, 999]),
                           added_cond_kwargs=cond, return_dict=False)[0]


# --- make-tiny ------------------------------------------------------------------------------

def test_make_tiny_writes_the_pixart_base_and_line_art_folders(tiny_models_dir, paths):
    root = Path(tiny_models_dir)
    # The layout of DESIGN.md ("Models directory layout") and SKETCH.md ("Model files").
    expected = [
        "pixart/model_index.json", "pixart/transformer/config.json",
        "pixart/transformer/diffusion_pytorch_model.safetensors", "pixart/vae/config.json",
        "pixart/vae/diffusion_pytorch_model.safetensors", "pixart/scheduler/scheduler_config.json",
        "pixart/text_encoder/config.json", "pixart/text_encoder/model.safetensors.index.json",
        "pixart/tokenizer/spiece.model", "colorflow/LE/erika.pth",
        *(f"colorflow/{style}/{name}" for style in ("sketch", "shading") for name in
          ("config.json", "diffusion_pytorch_model.bin", "transformer_lora.bin", "MultiResNetModel.bin")),
    ]
    assert [name for name in expected if not (root / name).is_file()] == []
    assert paths.pixart == root.resolve() / "pixart"
    assert json.loads((root / "colorflow/sketch/config.json").read_text())["_class_name"] == "ColorGuiderPixArtModel"
    # The two styles are different networks.
    sketch, shading = (torch.load(root / f"colorflow/{s}/transformer_lora.bin", weights_only=True)
                       for s in ("sketch", "shading"))
    assert any(not torch.equal(sketch[k], shading[k]) for k in sketch)


def test_the_tiny_base_loads_with_diffusers_pixart_pipeline_and_the_repo_scheduler(paths):
    """diffusers' own PixArtAlphaPipeline reads the whole folder (model_index.json names every
    part); the scheduler is DPM-Solver++ with the timesteps SKETCH.md measured for 4 steps."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

    pipeline = PixArtAlphaPipeline.from_pretrained(paths.pixart)
    assert isinstance(pipeline.scheduler, DPMSolverMultistepScheduler)
    assert pipeline.transformer.config.caption_channels == pipeline.text_encoder.config.d_model
    assert pipeline.transformer.use_additional_conditions  # as the real model (sample_size 128)
    pipeline.scheduler.set_timesteps(4)
    assert pipeline.scheduler.timesteps.tolist() == [999, 749, 500, 250]
    assert pipeline.scheduler.config.algorithm_type == "dpmsolver++"
    assert pipeline.scheduler.config.final_sigmas_type == "zero" and pipeline.scheduler.sigmas[-1] == 0


# --- the guide ------------------------------------------------------------------------------

def test_guide_loads_every_tensor_of_the_official_layout(paths):
    from engine.icp.pixart_guide import load_pixart_guide

    folder = paths.line_art("sketch")
    guide = load_pixart_guide(folder)
    stored = torch.load(folder / "diffusion_pytorch_model.bin", weights_only=True)
    assert set(ALIAS) <= set(stored)  # the tiny file carries the official alias, as the hub file does
    state = guide.state_dict()
    assert set(state) == set(stored) - set(ALIAS)
    assert all(torch.equal(state[k], stored[k]) for k in state)
    assert len(guide.transformer_blocks) == len(guide.adapter_linear) == 2  # num_layers 4 // 2


def test_guide_with_a_renamed_key_fails_naming_it(sketch_copy):
    from engine.icp.pixart_guide import load_pixart_guide

    file = sketch_copy / "diffusion_pytorch_model.bin"
    state = torch.load(file, weights_only=True)
    state["transformer_blocks.1.attn1.to_query.weight"] = state.pop("transformer_blocks.1.attn1.to_q.weight")
    torch.save(state, file)
    with pytest.raises(ModelError) as error:
        load_pixart_guide(sketch_copy)
    assert "transformer_blocks.1.attn1.to_q.weight" in str(error.value)
    assert "transformer_blocks.1.attn1.to_query.weight" in str(error.value)


@pytest.mark.parametrize("key", ALIAS)
def test_guide_alias_is_refused_when_it_differs_from_the_last_adapter(sketch_copy, key):
    from engine.icp.pixart_guide import load_pixart_guide

    file = sketch_copy / "diffusion_pytorch_model.bin"
    state = torch.load(file, weights_only=True)
    state[key] = state[key] + 1e-3
    torch.save(state, file)
    with pytest.raises(ModelError, match=key.replace(".", r"\.")):
        load_pixart_guide(sketch_copy)


def test_guide_without_the_alias_loads_too(sketch_copy):
    from engine.icp.pixart_guide import load_pixart_guide

    file = sketch_copy / "diffusion_pytorch_model.bin"
    state = torch.load(file, weights_only=True)
    torch.save({k: v for k, v in state.items() if k not in ALIAS}, file)
    assert torch.equal(load_pixart_guide(sketch_copy).adapter_linear[1].weight, state["after_proj.weight"])


def _tiny_guide_config(paths) -> dict:
    config = json.loads((paths.line_art("sketch") / "config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def test_guide_forward_one_token_sequence_per_block_zero_until_trained(paths):
    """A fresh guide (zero-init adapters, as the official one) adds nothing; its outputs are
    num_layers // 2 tensors of (B, (h/2) * (w/2), heads * head_dim) for a non-square latent."""
    from engine.icp.pixart_guide import ColorGuidePixArt

    torch.manual_seed(0)
    guide = ColorGuidePixArt(**_tiny_guide_config(paths)).eval()
    sample = torch.randn(2, 13, 8, 12)
    cond = {"resolution": torch.tensor([[64.0, 96.0]] * 2), "aspect_ratio": torch.tensor([[64 / 96]] * 2)}
    with torch.no_grad():
        outputs = guide(sample, torch.tensor([500, 500]), cond)
    assert [tuple(o.shape) for o in outputs] == [(2, 4 * 6, 2 * 12)] * 2
    assert all(torch.count_nonzero(o) == 0 for o in outputs)


def test_guide_output_i_comes_after_block_i_and_follows_timestep_and_micro_conditions(paths):
    from engine.icp.pixart_guide import load_pixart_guide

    guide = load_pixart_guide(paths.line_art("sketch"))
    sample = torch.randn(1, 13, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = {"resolution": torch.tensor([[64.0, 64.0]]), "aspect_ratio": torch.tensor([[1.0]])}

    def run(timestep=500, conditions=cond):
        with torch.no_grad():
            return guide(sample, torch.tensor([timestep]), conditions)

    first = run()
    assert all(torch.count_nonzero(o) > 0 for o in first)
    with torch.no_grad():
        guide.transformer_blocks[1].ff.net[2].weight.add_(0.5)  # the second block only
    second = run()
    assert torch.equal(second[0], first[0]) and not torch.allclose(second[1], first[1])
    assert not torch.allclose(run(timestep=100)[0], second[0])
    other = {"resolution": torch.tensor([[128.0, 64.0]]), "aspect_ratio": torch.tensor([[2.0]])}
    assert not torch.allclose(run(conditions=other)[0], second[0])
    with pytest.raises(ValueError, match="added_cond_kwargs"):
        guide(sample, torch.tensor([500]), None)


# --- the transformer LoRA -------------------------------------------------------------------

def test_lora_loads_strictly_and_changes_the_transformer(paths):
    from engine.icp.pixart_lora import load_pixart_lora

    transformer = _transformer(paths)
    base = _run(transformer)
    # SKETCH.md: on a 4-block PixArt the official targets hit 4 x 10 block modules + 11 others.
    assert load_pixart_lora(transformer, paths.line_art("sketch") / "transformer_lora.bin") == 102
    stored = torch.load(paths.line_art("sketch") / "transformer_lora.bin", weights_only=True)
    state = transformer.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stored.items())
    assert "pos_embed.proj.lora_A.default.weight" in stored  # the Conv2d patch embedding has a conv LoRA
    assert not torch.allclose(_run(transformer), base, atol=1e-4)


def test_lora_with_zero_up_weights_leaves_diffusers_transformer_output_unchanged(paths, tmp_path):
    from engine.icp.pixart_lora import load_pixart_lora

    stored = torch.load(paths.line_art("sketch") / "transformer_lora.bin", weights_only=True)
    zeroed = {k: torch.zeros_like(v) if ".lora_B." in k else v for k, v in stored.items()}
    torch.save(zeroed, tmp_path / "transformer_lora.bin")
    plain = _run(_transformer(paths))
    adapted = _transformer(paths)
    load_pixart_lora(adapted, tmp_path / "transformer_lora.bin")
    torch.testing.assert_close(_run(adapted), plain, rtol=0, atol=1e-6)


def test_lora_with_a_renamed_key_fails_naming_it(paths, tmp_path):
    from engine.icp.pixart_lora import load_pixart_lora

    stored = torch.load(paths.line_art("sketch") / "transformer_lora.bin", weights_only=True)
    good = "transformer_blocks.3.attn2.to_k.lora_A.default.weight"
    stored["transformer_blocks.3.attn2.to_key.lora_A.default.weight"] = stored.pop(good)
    torch.save(stored, tmp_path / "transformer_lora.bin")
    with pytest.raises(ModelError) as error:
        load_pixart_lora(_transformer(paths), tmp_path / "transformer_lora.bin")
    assert good in str(error.value) and "to_key" in str(error.value)
    assert "PixArt transformer" in str(error.value)


def test_lora_in_diffusers_save_spelling_loads(paths, tmp_path):
    """diffusers' LoRA files prefix `transformer.` and drop the adapter name: the same tensors."""
    from engine.icp.pixart_lora import load_pixart_lora

    stored = torch.load(paths.line_art("sketch") / "transformer_lora.bin", weights_only=True)
    renamed = {"transformer." + k.replace(".default.weight", ".weight"): v for k, v in stored.items()}
    torch.save(renamed, tmp_path / "transformer_lora.bin")
    assert load_pixart_lora(_transformer(paths), tmp_path / "transformer_lora.bin") == len(stored)


# --- official-size manifests ----------------------------------------------------------------

def test_official_size_guide_and_lora_keys_equal_the_manifest_of_the_official_classes():
    """tests/data/pixart-manifest.json: built from the official ColorGuiderPixArtModel and the
    official PixArt transformer with the official add_adapter (its "source" says how). The guide's
    manifest holds the official after_proj alias; guide_shapes lists it too (a file key)."""
    from engine.icp.pixart_guide import guide_shapes
    from engine.icp.pixart_lora import official_transformer_config, pixart_lora_shapes

    manifest = json.loads(MANIFEST.read_text())
    assert guide_shapes() == manifest["guide"]
    assert manifest["guide"]["after_proj.weight"] == manifest["guide"]["adapter_linear.13.weight"]
    assert manifest["guide"]["pos_embed.proj.weight"] == [1152, 13, 2, 2]  # 13 input channels
    lora = pixart_lora_shapes()
    assert lora == manifest["transformer_lora"]
    assert len(lora) == 582  # SKETCH.md: 28 x 10 + 11 modules, A and B each
    config = official_transformer_config()
    assert {k: config[k] for k in manifest["transformer_config"]} == manifest["transformer_config"]
