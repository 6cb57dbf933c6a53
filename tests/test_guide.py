"""The Colorization Guide, guided UNet forward, LoRA and strict checkpoint loading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from engine.io.checkpoints import normalise_lora_key
from engine.io.weight_files import read_state_dict
from engine.cli.main import main
from engine.core.errors import ModelError
from engine.icp.guide import ColorGuiderSDModel, guided_unet_forward
from engine.models.loading import load_diffusion, load_guide
from engine.models.sources import resolve_models

MANIFEST = json.loads((Path(__file__).parent / "data" / "colorflow-checkpoints.json").read_text())


def test_models_layout_equals_official_manifest(capsys):
    assert main(["models", "layout", "--json"]) == 0
    layout = json.loads(capsys.readouterr().out)
    for network in ("guider", "unet_lora", "multires"):
        expected = MANIFEST[network]["keys"]
        assert len(layout[network]) == MANIFEST[network]["num_keys"]
        differences = {k for k in set(expected) | set(layout[network]) if expected.get(k) != layout[network].get(k)}
        assert differences == set(), f"{network}: {sorted(differences)[:5]}"


def test_guide_config_matches_official_config():
    from accelerate import init_empty_weights

    with init_empty_weights():
        guide = ColorGuiderSDModel()
    ours = json.loads(guide.to_json_string())
    official = dict(MANIFEST["guider"]["config"])
    for volatile in ("_diffusers_version",):
        ours.pop(volatile), official.pop(volatile)
    assert ours == official
    params = sum(p.numel() for p in guide.parameters())
    assert params == MANIFEST["guider"]["param_count"]


def _inputs(unet, seed=0, batch=2, h=16, w=24):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, h, w, generator=g)
    text = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    return sample, torch.tensor(500), text


def test_guided_forward_without_features_is_the_stock_unet(tiny_models_dir):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(tiny_models_dir) / "sd15" / "unet").eval()
    sample, t, text = _inputs(unet)
    with torch.no_grad():
        stock = unet(sample, t, text).sample
        ours = guided_unet_forward(unet, sample, t, text, None)
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-5)


def test_fresh_guide_leaves_base_prediction_unchanged(tiny_models_dir):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(tiny_models_dir) / "sd15" / "unet").eval()
    guide = ColorGuiderSDModel.from_unet(unet).eval()
    sample, t, text = _inputs(unet)
    conditioning = torch.randn(1, 9, 16, 24)
    with torch.no_grad():
        features = guide(sample[:1], t, conditioning)
        assert len(features.down) == len(guide.brushnet_down_blocks)
        assert all(f.abs().max() == 0 for f in [*features.down, features.mid, *features.up])
        guided = guided_unet_forward(unet, sample, t, text, features)
        base = unet(sample, t, text).sample
    torch.testing.assert_close(guided, base, rtol=0, atol=1e-5)
    # from_unet copied the UNet's weights into the shared blocks
    torch.testing.assert_close(guide.down_blocks[0].resnets[0].conv1.weight, unet.down_blocks[0].resnets[0].conv1.weight)


def test_trained_guide_changes_prediction(tiny_components):
    c = tiny_components
    sample, t, text = _inputs(c.unet)
    with torch.no_grad():
        features = c.guide(sample[:1], t, torch.randn(1, 9, 16, 24))
        assert len(features.down) == 9 and len(features.up) == 11  # tiny UNet: 3 levels x 2 layers
        guided = guided_unet_forward(c.unet, sample, t, text, features)
        base = guided_unet_forward(c.unet, sample, t, text, None)
    assert (guided - base).abs().max() > 1e-3


def test_tiny_checkpoints_load_strictly(tiny_models_dir):
    paths = resolve_models(str(tiny_models_dir))
    guide = load_guide(paths.graysd)
    state = read_state_dict(paths.graysd / "diffusion_pytorch_model.bin")
    assert set(guide.state_dict()) == set(state)
    for key, tensor in state.items():
        assert torch.equal(guide.state_dict()[key], tensor)


def test_renamed_guide_key_fails_naming_it(models_copy):
    path = models_copy / "colorflow" / "GraySD" / "diffusion_pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    state["brushnet_mid_block.weights"] = state.pop("brushnet_mid_block.weight")
    torch.save(state, path)
    with pytest.raises(ModelError) as error:
        load_guide(path.parent)
    message = str(error.value)
    assert "missing key(s): brushnet_mid_block.weight" in message
    assert "unexpected key(s): brushnet_mid_block.weights" in message


def test_misshaped_fusion_key_fails_naming_it(models_copy):
    path = models_copy / "colorflow" / "GraySD" / "MultiResNetModel.bin"
    state = torch.load(path, weights_only=True)
    state["two_layer_resnets.0.block1.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"mis-shaped key\(s\): two_layer_resnets.0.block1.conv1.weight"):
        load_diffusion(resolve_models(str(models_copy)))


@pytest.mark.parametrize(
    "spelling",
    ["peft-default", "peft-plain", "diffusers-unet-prefix", "old-lora-up-down", "base-model-prefix"],
)
def test_lora_key_variants_load_identically(models_copy, tiny_components, spelling):
    path = models_copy / "colorflow" / "GraySD" / "unet_lora.bin"
    state = torch.load(path, weights_only=True)

    def respell(key: str) -> str:
        if spelling == "peft-plain":
            return key.replace(".default.", ".")
        if spelling == "diffusers-unet-prefix":
            return "unet." + key.replace(".default.", ".")
        if spelling == "old-lora-up-down":
            return "unet." + key.replace(".lora_A.default.", ".lora.down.").replace(".lora_B.default.", ".lora.up.")
        if spelling == "base-model-prefix":
            return "base_model.model." + key
        return key

    torch.save({respell(k): v for k, v in state.items()}, path)
    assert all(normalise_lora_key(respell(k)) == k for k in state)
    components = load_diffusion(resolve_models(str(models_copy)))
    loaded = {k: v for k, v in components.unet.state_dict().items() if ".lora_" in k}
    reference = {k: v for k, v in tiny_components.unet.state_dict().items() if ".lora_" in k}
    assert loaded.keys() == reference.keys() == state.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in loaded)


def test_lora_with_missing_tensor_fails_loudly(models_copy):
    path = models_copy / "colorflow" / "GraySD" / "unet_lora.bin"
    state = torch.load(path, weights_only=True)
    dropped = sorted(state)[0]
    del state[dropped]
    torch.save(state, path)
    with pytest.raises(ModelError, match="LoRA file .* 1 missing key"):
        load_diffusion(resolve_models(str(models_copy)))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_a_command_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "unet_lora.bin"
    with path.open("wb") as handle:
        pickle.dump({"weight": _Exploit(marker)}, handle)
    with pytest.raises(ModelError, match="refused or unreadable"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage",
    ["tokenizer-json", "tokenizer-official-layout", "scheduler-json", "guide-config-types", "text-encoder-config"],
)
def test_broken_model_files_give_one_line_naming_the_file(models_copy, demo_data, tmp_path, capsys, damage):
    sd15, graysd = models_copy / "sd15", models_copy / "colorflow" / "GraySD"
    if damage == "tokenizer-json":
        (sd15 / "tokenizer" / "tokenizer.json").write_text("{broken")
        named = "tokenizer"
    elif damage == "tokenizer-official-layout":  # the official folder has no tokenizer.json
        (sd15 / "tokenizer" / "tokenizer.json").unlink()
        (sd15 / "tokenizer" / "vocab.json").write_text("{broken")
        named = "tokenizer"
    elif damage == "scheduler-json":
        (sd15 / "scheduler" / "scheduler_config.json").write_text("[1, 2")
        named = "scheduler_config.json"
    elif damage == "guide-config-types":
        config = json.loads((graysd / "config.json").read_text())
        config["block_out_channels"] = "wide"
        (graysd / "config.json").write_text(json.dumps(config))
        named = "GraySD"
    else:
        (sd15 / "text_encoder" / "config.json").write_text("{}")
        named = "text_encoder"
    chapter, refs = demo_data
    code = main(["colorize", str(chapter), "--refs", str(refs), "--out", str(tmp_path / "out"), "--models",
                 str(models_copy), "--steps", "1", "--input-style", "gray", "--size", "256x384"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("colorflow: error: ") and named in err[0], err
    assert "Traceback" not in err[0]
