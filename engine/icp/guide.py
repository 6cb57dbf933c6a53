"""The Colorization Guide (paper 3.2): a BrushNet-style copy of the SD1.5 UNet body without
cross-attention, and the guided UNet forward that adds its 28 features into the main UNet.

Built from stock diffusers blocks; its state_dict matches the official GraySD checkpoint
(docs/reference/checkpoints.md) name for name and shape for shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import (
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    DownBlock2D,
    UNetMidBlock2DCrossAttn,
    UpBlock2D,
)
from torch import nn

from engine.icp.unet_walk import down_path, up_path
from engine.io.checkpoints import check_config_types, find_weights, load_strict, reading_model
from engine.io.weight_files import read_config, read_state_dict

# The official config names self-attention-only blocks; stock diffusers builds the same layout
# from its cross-attention blocks with cross_attention_dim=None.
SELF_ATTENTION_DOWN, PLAIN_DOWN = "SelfAttnDownBlock2D", "DownBlock2D"
SELF_ATTENTION_UP, PLAIN_UP = "SelfAttnUpBlock2D", "UpBlock2D"
DOWN_BLOCKS = {SELF_ATTENTION_DOWN: CrossAttnDownBlock2D, PLAIN_DOWN: DownBlock2D}
UP_BLOCKS = {SELF_ATTENTION_UP: CrossAttnUpBlock2D, PLAIN_UP: UpBlock2D}


@dataclass
class GuideFeatures:
    """The guide's outputs after the zero convs: down (12), mid (1) and up (15) at SD1.5 size."""

    down: list[torch.Tensor]
    mid: torch.Tensor
    up: list[torch.Tensor]


def _block(block_type: str, blocks: dict[str, type], kwargs: dict, attention: dict) -> nn.Module:
    """A diffusers block of a config's block type; the self-attention kinds get `attention`."""
    if block_type not in blocks:
        raise ValueError(f"unknown block type {block_type!r} (expected one of {sorted(blocks)})")
    cls = blocks[block_type]
    return cls(**kwargs, **attention) if block_type in (SELF_ATTENTION_DOWN, SELF_ATTENTION_UP) else cls(**kwargs)


def _zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ColorGuiderSDModel(ModelMixin, ConfigMixin):
    """The Colorization Guide. Config keys and defaults follow the official GraySD/config.json.

    Input: noisy latent (4) + conditioning (9) = latent of the canvas with the page area
    blacked out (4), mask (1, 1 on the references), latent of the page area alone (4).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        conditioning_channels: int = 9,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Sequence[str] = (SELF_ATTENTION_DOWN,) * 3 + (PLAIN_DOWN,),
        mid_block_type: str = "UNetMidBlock2DSelfAttn",
        up_block_types: Sequence[str] = (PLAIN_UP,) + (SELF_ATTENTION_UP,) * 3,
        only_cross_attention: bool = False,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,  # kept for config parity; the guide has no cross-attention
        transformer_layers_per_block: int = 1,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: int = 8,
        num_attention_heads: int | None = None,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        projection_class_embeddings_input_dim: int | None = None,
        brushnet_conditioning_channel_order: str = "rgb",
        conditioning_embedding_out_channels: Sequence[int] = (16, 32, 96, 256),
        global_pool_conditions: bool = False,
        addition_embed_type_num_heads: int = 64,
    ) -> None:
        super().__init__()
        unsupported = {
            "class_embed_type": class_embed_type,
            "addition_embed_type": addition_embed_type,
            "encoder_hid_dim_type": encoder_hid_dim_type,
            "num_class_embeds": num_class_embeds,
        }
        for name, value in unsupported.items():
            if value is not None:
                raise ValueError(f"ColorGuiderSDModel: {name}={value!r} is not supported")
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ValueError("down/up block types must match block_out_channels")
        # diffusers' legacy naming: attention_head_dim means the number of heads for SD1.5.
        heads = num_attention_heads or attention_head_dim
        time_dim = block_out_channels[0] * 4
        common = dict(
            temb_channels=time_dim,
            resnet_eps=norm_eps,
            resnet_act_fn=act_fn,
            resnet_groups=norm_num_groups,
            resnet_time_scale_shift=resnet_time_scale_shift,
        )
        # Self-attention only (no text): the official guide has no cross-attention.
        attention = dict(num_attention_heads=heads, cross_attention_dim=None, use_linear_projection=use_linear_projection,
                         upcast_attention=upcast_attention, transformer_layers_per_block=transformer_layers_per_block)

        self.conv_in_condition = nn.Conv2d(
            in_channels + conditioning_channels, block_out_channels[0], kernel_size=3, padding=1
        )
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_dim, act_fn=act_fn)

        self.down_blocks = nn.ModuleList()
        down_channels = [block_out_channels[0]]
        output_channel = block_out_channels[0]
        for i, block_type in enumerate(down_block_types):
            input_channel, output_channel = output_channel, block_out_channels[i]
            is_final = i == len(block_out_channels) - 1
            kwargs = dict(
                in_channels=input_channel,
                out_channels=output_channel,
                num_layers=layers_per_block,
                add_downsample=not is_final,
                downsample_padding=downsample_padding,
                **common,
            )
            self.down_blocks.append(_block(block_type, DOWN_BLOCKS, kwargs, attention))
            down_channels += [output_channel] * layers_per_block + ([] if is_final else [output_channel])

        if mid_block_type != "UNetMidBlock2DSelfAttn":
            raise ValueError(f"unknown mid block type {mid_block_type!r}")
        self.mid_block = UNetMidBlock2DCrossAttn(
            in_channels=block_out_channels[-1],
            output_scale_factor=mid_block_scale_factor,
            **common,
            **attention,
        )

        self.up_blocks = nn.ModuleList()
        up_channels: list[int] = []
        reversed_channels = list(reversed(block_out_channels))
        output_channel = reversed_channels[0]
        for i, block_type in enumerate(up_block_types):
            prev_output_channel, output_channel = output_channel, reversed_channels[i]
            input_channel = reversed_channels[min(i + 1, len(block_out_channels) - 1)]
            is_final = i == len(block_out_channels) - 1
            kwargs = dict(
                in_channels=input_channel,
                out_channels=output_channel,
                prev_output_channel=prev_output_channel,
                num_layers=layers_per_block + 1,
                add_upsample=not is_final,
                resolution_idx=i,
                **common,
            )
            self.up_blocks.append(_block(block_type, UP_BLOCKS, kwargs, attention))
            up_channels += [output_channel] * (layers_per_block + 1) + ([] if is_final else [output_channel])

        self.brushnet_down_blocks = nn.ModuleList(_zero_conv(c) for c in down_channels)
        self.brushnet_mid_block = _zero_conv(block_out_channels[-1])
        self.brushnet_up_blocks = nn.ModuleList(_zero_conv(c) for c in up_channels)

    def time_embed(self, timestep: torch.Tensor | float | int, batch: int, dtype: torch.dtype) -> torch.Tensor:
        device = self.conv_in_condition.weight.device
        timesteps = torch.as_tensor(timestep, device=device).reshape(-1).expand(batch)
        return self.time_embedding(self.time_proj(timesteps).to(dtype))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        conditioning: torch.Tensor,
        conditioning_scale: float = 1.0,
    ) -> GuideFeatures:
        """Features for the main UNet; the text prompt plays no part (no cross-attention)."""
        temb = self.time_embed(timestep, sample.shape[0], sample.dtype)
        hidden = self.conv_in_condition(torch.cat([sample, conditioning], dim=1))
        skips = [hidden]
        hidden, states = down_path(self.down_blocks, hidden, temb, None)
        skips += states
        hidden = self.mid_block(hidden, temb)
        mid = hidden
        _, up_states = up_path(self.up_blocks, hidden, skips, temb, None)
        scale = conditioning_scale
        return GuideFeatures(
            down=[conv(s) * scale for conv, s in zip(self.brushnet_down_blocks, skips)],
            mid=self.brushnet_mid_block(mid) * scale,
            up=[conv(s) * scale for conv, s in zip(self.brushnet_up_blocks, up_states)],
        )

    @classmethod
    def from_unet(cls, unet, conditioning_channels: int = 9) -> "ColorGuiderSDModel":
        """A guide initialised from a UNet (for training): shared weights copied, the UNet's
        conv_in copied into the two latent inputs, mask channel and zero convs at zero."""
        config = unet.config
        down = [SELF_ATTENTION_DOWN if "CrossAttn" in t else PLAIN_DOWN for t in config.down_block_types]
        up = [SELF_ATTENTION_UP if "CrossAttn" in t else PLAIN_UP for t in config.up_block_types]
        guide = cls(
            in_channels=config.in_channels,
            conditioning_channels=conditioning_channels,
            flip_sin_to_cos=config.flip_sin_to_cos,
            freq_shift=config.freq_shift,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=list(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            downsample_padding=config.downsample_padding,
            mid_block_scale_factor=config.mid_block_scale_factor,
            act_fn=config.act_fn,
            norm_num_groups=config.norm_num_groups,
            norm_eps=config.norm_eps,
            cross_attention_dim=config.cross_attention_dim,
            attention_head_dim=config.attention_head_dim,
            num_attention_heads=config.num_attention_heads,
            use_linear_projection=config.use_linear_projection,
            upcast_attention=config.upcast_attention,
        )
        own = guide.state_dict()
        shared = {k: v for k, v in unet.state_dict().items() if k in own and own[k].shape == v.shape}
        guide.load_state_dict(shared, strict=False)
        with torch.no_grad():
            weight = guide.conv_in_condition.weight
            weight.zero_()
            latent = config.in_channels
            weight[:, :latent] = unet.conv_in.weight
            weight[:, latent : 2 * latent] = unet.conv_in.weight
            guide.conv_in_condition.bias.copy_(unet.conv_in.bias)
        return guide


ColorizationGuide = ColorGuiderSDModel


def guided_unet_forward(
    unet,
    sample: torch.Tensor,
    timestep: torch.Tensor | float | int,
    encoder_hidden_states: torch.Tensor,
    features: GuideFeatures | None = None,
) -> torch.Tensor:
    """The SD UNet's noise prediction with the guide's features added (None: stock UNet).

    down[0] joins the conv_in output on its way into the first block while the skip keeps the
    value before the addition; down[1:] join each state before it is stored as a skip; mid
    joins the mid-block output; up joins each up-block state. Features of batch 1 broadcast
    over the CFG batch (the guide's features do not depend on the prompt).
    """
    temb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep))
    hidden = unet.conv_in(sample)
    skips = [hidden]
    if features is not None:
        hidden = hidden + features.down[0]
    hidden, states = down_path(
        unet.down_blocks, hidden, temb, encoder_hidden_states, features.down[1:] if features else None
    )
    skips += states
    hidden = unet.mid_block(hidden, temb, encoder_hidden_states=encoder_hidden_states)
    if features is not None:
        hidden = hidden + features.mid
    hidden, _ = up_path(
        unet.up_blocks, hidden, skips, temb, encoder_hidden_states, features.up if features else None
    )
    hidden = unet.conv_act(unet.conv_norm_out(hidden))
    return unet.conv_out(hidden)


GUIDE_WEIGHTS = "diffusion_pytorch_model"


def load_guide(graysd: Path) -> torch.nn.Module:
    """The Colorization Guide from GraySD/config.json + weights, every key checked; a damaged
    or mismatched file is one ModelError naming it."""
    from accelerate import init_empty_weights

    config_path = graysd / "config.json"
    config = read_config(config_path, "the guide config (GraySD/config.json)")
    check_config_types(config, ColorGuiderSDModel, config_path, "the Colorization Guide")
    with reading_model(config_path, "the guide config (GraySD/config.json)"), init_empty_weights():
        guide = ColorGuiderSDModel.from_config(config)
    weights = find_weights(graysd, GUIDE_WEIGHTS)
    state = read_state_dict(weights)
    load_strict(guide, state, f"{weights} (guide weights for {config_path})")
    return guide
