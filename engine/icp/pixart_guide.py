"""The ColorFlow PixArt guide (line-art styles): half of a PixArt-alpha transformer without text, one zero-init adapter per block.

Built from diffusers' own blocks (PatchEmbed, BasicTransformerBlock, AdaLayerNormSingle). Its
config keys are those of the official sketch/ and shading/ config.json (the guide is saved and
loaded like a diffusers model folder); the weights file of the official layout holds one extra pair,
`after_proj.{weight,bias}`, an alias of the last adapter that this module does not carry
(docs/reference: SKETCH.md, "ColorGuiderPixArtModel quirk").
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import PatchEmbed
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle
from torch import nn

from engine.core.errors import ModelError
from engine.io.checkpoints import check_config_types, find_weights, load_strict, reading_model
from engine.io.weight_files import REPAIR_HINT, read_config, read_state_dict

GUIDE_WEIGHTS = "diffusion_pytorch_model"  # the file stem diffusers' from_pretrained reads in sketch/ and shading/
OFFICIAL_CLASS_NAME = "ColorGuiderPixArtModel"  # `_class_name` of the official config.json
ALIAS_PREFIX = "after_proj."  # the official file's duplicate of the last adapter
# The guide's input: noisy latent (4) + latent of the canvas with the page area black (4) + mask (1)
# + latent of the page area alone (4): 13 channels, as the official pipeline concatenates them.
COND_CHANNELS = 9


class ColorGuidePixArt(ModelMixin, ConfigMixin):
    """The PixArt guide: patch embedding over the 13 input channels, num_layers // 2 self-attention
    transformer blocks (no cross-attention: the prompt plays no part), each followed by a
    zero-initialised Linear adapter; the timestep and micro-conditions drive the blocks through
    AdaLayerNormSingle. No caption projection and no output head.

    The constructor takes the official config's keys; `cross_attention_dim`, `caption_channels`,
    `out_channels`, `norm_num_groups` and `dropout` are kept for config parity (the official
    guide builds no module from the first four; dropout is passed to the blocks)."""

    _supports_gradient_checkpointing = True
    _no_split_modules = ["BasicTransformerBlock", "PatchEmbed"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        cond_channels: int = COND_CHANNELS,
        out_channels: int | None = 8,
        num_layers: int = 28,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        cross_attention_dim: int | None = 1152,
        attention_bias: bool = True,
        sample_size: int = 128,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        num_embeds_ada_norm: int | None = 1000,
        upcast_attention: bool = False,
        norm_type: str = "ada_norm_single",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        interpolation_scale: int | None = None,
        use_additional_conditions: bool | None = None,
        caption_channels: int | None = None,
        attention_type: str | None = "default",
    ) -> None:
        super().__init__()
        if norm_type != "ada_norm_single" or num_embeds_ada_norm is None:
            raise ValueError(f"ColorGuidePixArt: norm_type must be 'ada_norm_single' with num_embeds_ada_norm set "
                             f"(got {norm_type!r}, {num_embeds_ada_norm!r})")
        inner = num_attention_heads * attention_head_dim
        self.inner_dim = inner
        # As PixArt-alpha: micro-conditions (resolution, aspect ratio) only for the 1024px models.
        self.use_additional_conditions = (sample_size == 128) if use_additional_conditions is None \
            else bool(use_additional_conditions)
        self.gradient_checkpointing = False
        self.pos_embed = PatchEmbed(
            height=sample_size, width=sample_size, patch_size=patch_size,
            in_channels=in_channels + cond_channels, embed_dim=inner,
            interpolation_scale=interpolation_scale if interpolation_scale is not None else max(sample_size // 64, 1),
        )
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner, num_attention_heads, attention_head_dim, dropout=dropout, cross_attention_dim=None,
                activation_fn=activation_fn, num_embeds_ada_norm=num_embeds_ada_norm, attention_bias=attention_bias,
                upcast_attention=upcast_attention, norm_type=norm_type,
                norm_elementwise_affine=norm_elementwise_affine, norm_eps=norm_eps, attention_type=attention_type,
            )
            for _ in range(num_layers // 2)
        )
        self.adapter_linear = nn.ModuleList(_zero_linear(inner) for _ in range(num_layers // 2))
        self.adaln_single = AdaLayerNormSingle(inner, use_additional_conditions=self.use_additional_conditions)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        added_cond_kwargs: Mapping[str, torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """The adapters' outputs, one (B, tokens, inner_dim) tensor per guide block: the
        transformer adds the i-th to its hidden states after its block i.

        sample: (B, 13, h, w) = x_t | canvas latent with the page black | mask | page latent.
        The positional table follows the latent grid (PatchEmbed recomputes it for h/2 x w/2
        patches with base size sample_size/patch_size and the interpolation scale)."""
        if self.use_additional_conditions and not added_cond_kwargs:
            raise ValueError("ColorGuidePixArt: added_cond_kwargs (resolution, aspect_ratio) are required")
        batch = sample.shape[0]
        hidden = self.pos_embed(sample)
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        modulation, _ = self.adaln_single(
            timesteps, dict(added_cond_kwargs or {}), batch_size=batch, hidden_dtype=hidden.dtype)
        outputs = []
        for block, adapter in zip(self.transformer_blocks, self.adapter_linear):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden = self._gradient_checkpointing_func(block, hidden, None, None, None, modulation, None, None)
            else:
                hidden = block(hidden, timestep=modulation)
            outputs.append(adapter(hidden))
        return outputs


def _zero_linear(width: int) -> nn.Linear:
    linear = nn.Linear(width, width)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def official_guide_config() -> dict[str, Any]:
    """The guide config of the official sketch/ and shading/ folders: the PixArt-XL-2-1024-MS
    transformer's architecture (resources/models/pixart-transformer.json) with the 13-channel input."""
    from engine.core.resources import model_config

    names = inspect.signature(ColorGuidePixArt.__init__).parameters
    transformer = model_config("pixart-transformer")
    return {**{k: v for k, v in transformer.items() if k in names}, "cond_channels": COND_CHANNELS}


def alias_keys(num_layers: int) -> dict[str, str]:
    """The official file's alias keys -> the adapter keys they duplicate."""
    last = num_layers // 2 - 1
    return {f"{ALIAS_PREFIX}{name}": f"adapter_linear.{last}.{name}" for name in ("weight", "bias")}


def guide_shapes(config: dict | None = None) -> dict[str, list[int]]:
    """Key -> shape of a guide weights file in the official layout (default: the official
    config): this module's state dict plus the `after_proj.*` alias of the last adapter that the
    official file also holds. Built on the meta device (no memory, no time)."""
    from accelerate import init_empty_weights

    config = official_guide_config() if config is None else config
    with init_empty_weights():
        guide = ColorGuidePixArt.from_config(config)
    shapes = {key: list(value.shape) for key, value in guide.state_dict().items()}
    for alias, key in alias_keys(guide.config.num_layers).items():
        shapes[alias] = shapes[key]
    return shapes


def drop_alias(state: dict[str, torch.Tensor], num_layers: int, where: Path) -> dict[str, torch.Tensor]:
    """The state without the official `after_proj.*` alias, which is accepted only where it
    equals the last adapter it duplicates (a different one would mean a file this guide does not
    describe); a ModelError names each alias key that differs."""
    differing = []
    for alias, key in alias_keys(num_layers).items():
        if alias not in state:
            continue
        tensor = state.pop(alias)
        if key in state and not (tensor.shape == state[key].shape and torch.equal(tensor, state[key])):
            differing.append(f"{alias} (differs from {key})")
    if differing:
        raise ModelError(f"{where}: the guide weights hold {', '.join(differing)}; the official file's "
                         f"after_proj is a copy of the last adapter; {REPAIR_HINT}")
    return state


def load_pixart_guide(folder: Path) -> ColorGuidePixArt:
    """The PixArt guide from folder/config.json + diffusion_pytorch_model.{safetensors|bin},
    every key checked (the official alias checked, then dropped); a damaged or mismatched file is
    one ModelError naming it."""
    from accelerate import init_empty_weights

    folder = Path(folder)
    config_path = folder / "config.json"
    what = f"the PixArt guide config ({config_path.parent.name}/config.json)"
    config = read_config(config_path, what)
    check_config_types(config, ColorGuidePixArt, config_path, "the PixArt guide")
    with reading_model(config_path, what), init_empty_weights():
        guide = ColorGuidePixArt.from_config(config)
    weights = find_weights(folder, GUIDE_WEIGHTS)
    state = drop_alias(read_state_dict(weights), guide.config.num_layers, weights)
    load_strict(guide, state, f"{weights} (PixArt guide weights for {config_path})")
    return guide.eval()
