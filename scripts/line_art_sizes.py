"""Where the estimated sizes of the line-art files in resources/models/presets.json come from: parameter counts of the networks built on the meta device, in fp32.

    python scripts/line_art_sizes.py

Prints, for each estimated weight file, the parameters (stored once: tied or aliased tensors count once),
their fp32 bytes and the presets' approx_bytes. Nothing is allocated or downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# T5 v1.1 XXL (google/t5-v1_1-xxl), the text encoder of PixArt-alpha: encoder only.
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", is_encoder_decoder=False)


def _values(shapes: dict[str, list[int]]) -> int:
    total = 0
    for shape in shapes.values():
        count = 1
        for size in shape:
            count *= size
        total += count
    return total


def _stored(module, tied: tuple[str, ...] = ()) -> int:
    """Parameters and persistent buffers, each storage once (as safetensors and torch.save keep them);
    `tied`: keys that save_pretrained drops as copies of another (not tied on the meta device)."""
    seen, total = set(), 0
    for key, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) not in seen and key not in tied:
            seen.add(id(tensor))
            total += tensor.numel()
    return total


def main() -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from engine.core.resources import model_config
    from engine.icp.pixart_guide import alias_keys, guide_shapes, official_guide_config
    from engine.icp.pixart_lora import pixart_lora_shapes
    from engine.models.presets import preset_files
    from engine.preprocess.lines import line_extractor_shapes

    with init_empty_weights():
        transformer = PixArtTransformer2DModel.from_config(model_config("pixart-transformer"))
        vae = AutoencoderKL.from_config(model_config("sd15-vae"))
        t5 = T5EncoderModel(T5Config(**T5_XXL))
    guide = guide_shapes()
    for alias in alias_keys(official_guide_config()["num_layers"]):
        guide.pop(alias)  # the official file's alias of the last adapter: stored once
    values = {"sketch/diffusion_pytorch_model.bin": _values(guide),
              "sketch/transformer_lora.bin": _values(pixart_lora_shapes()),
              "LE/erika.pth": _values(line_extractor_shapes()),
              "transformer/diffusion_pytorch_model.safetensors": _stored(transformer),
              "vae/diffusion_pytorch_model.safetensors": _stored(vae),
              "text_encoder/ (both shards)": _stored(t5, tied=("encoder.embed_tokens.weight",))}
    approx = {f.path: f.approx_bytes for f in preset_files(components=None)}
    approx["text_encoder/ (both shards)"] = sum(size for path, size in approx.items()
                                                if path.startswith("text_encoder/model-0000"))
    print(f"{'file':<50}{'parameters':>15}{'fp32 bytes':>16}{'presets':>16}")
    for path, count in values.items():
        print(f"{path:<50}{count:>15,}{4 * count:>16,}{approx.get(path, 0):>16,}")


if __name__ == "__main__":
    main()
