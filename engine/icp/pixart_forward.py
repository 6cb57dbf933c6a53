"""The PixArt-α transformer's noise prediction with the ColorFlow guide's outputs added after its first blocks.

diffusers' PixArtTransformer2DModel.forward, walked here over the model's own submodules (patch
embedding, adaLN-single, caption projection, blocks, output modulation) so the guide's token
tensors can join the hidden states: controls[i] is added after transformer block i, for i below
len(controls) (the first num_layers//2 blocks with the official guide). No controls: diffusers' forward.
"""

from __future__ import annotations

from typing import Sequence

import torch

# diffusers' (and the official pipeline's) text-mask bias: 0 where a token is kept, -10000 (not -inf)
# where it is padding.
MASKED_TOKEN_BIAS = -10000.0


def text_mask_bias(text_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A (B, L) keep-mask (1 keep, 0 padding) as the (B, 1, L) additive attention bias."""
    if text_mask is None or text_mask.ndim != 2:
        return text_mask
    return ((1 - text_mask.to(dtype)) * MASKED_TOKEN_BIAS).unsqueeze(1)


def unpatchify(tokens: torch.Tensor, height: int, width: int, patch: int, channels: int) -> torch.Tensor:
    """(B, h*w, p*p*C) patch tokens back to a (B, C, h*p, w*p) latent, as the model lays them out."""
    tokens = tokens.reshape(-1, height, width, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", tokens).reshape(-1, channels, height * patch, width * patch)


def guided_transformer_forward(
    transformer,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor | None,
    added_cond_kwargs: dict,
    controls: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The transformer's output (B, out_channels, h, w) for a latent `sample` (B, C, h, w), a
    timestep per row (B,), T5 embeddings `text` (B, L, D) with their keep-mask (B, L), and the
    micro-conditions (resolution, aspect_ratio). Controls of batch 1 broadcast over the CFG rows
    (the guide's outputs do not depend on the prompt)."""
    controls = list(controls or [])
    blocks = transformer.transformer_blocks
    if len(controls) > len(blocks):
        raise ValueError(f"{len(controls)} guide outputs for a transformer of {len(blocks)} blocks")
    batch = sample.shape[0]
    patch = transformer.config.patch_size
    height, width = sample.shape[-2] // patch, sample.shape[-1] // patch
    hidden = transformer.pos_embed(sample)
    bias = text_mask_bias(text_mask, hidden.dtype)
    time, embedded_time = transformer.adaln_single(timestep, added_cond_kwargs, batch_size=batch,
                                                   hidden_dtype=hidden.dtype)
    if transformer.caption_projection is not None:
        text = transformer.caption_projection(text).view(batch, -1, hidden.shape[-1])
    for index, block in enumerate(blocks):
        hidden = block(hidden, encoder_hidden_states=text, encoder_attention_mask=bias, timestep=time)
        if index < len(controls):
            hidden = hidden + controls[index]
    table = transformer.scale_shift_table
    shift, scale = (table[None] + embedded_time[:, None].to(table.device)).chunk(2, dim=1)
    hidden = transformer.norm_out(hidden) * (1 + scale.to(hidden.device)) + shift.to(hidden.device)
    hidden = transformer.proj_out(hidden).squeeze(1)
    return unpatchify(hidden, height, width, patch, transformer.out_channels)
