"""Walk the down/up blocks of a diffusers UNet one resnet(+attention) at a time.

Stock diffusers blocks only expose their outputs per block; ColorFlow needs every
intermediate state (to read guide features, and to add them into the main UNet before each
skip is stored). These two walkers are shared by the guide and the guided UNet forward.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _layer(resnet, attention, hidden: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """One resnet, then its attention (if the block has attentions)."""
    hidden = resnet(hidden, temb)
    if attention is not None:
        hidden = attention(hidden, encoder_hidden_states=context, return_dict=False)[0]
    return hidden


def _layers(block):
    return zip(block.resnets, getattr(block, "attentions", None) or [None] * len(block.resnets))


def down_path(
    blocks: Sequence[torch.nn.Module],
    hidden: torch.Tensor,
    temb: torch.Tensor,
    context: torch.Tensor | None,
    add: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the down blocks; return the final state and every state after each resnet
    (+attention) pair and each downsampler. `add[i]` is added to state i before it is kept."""
    states: list[torch.Tensor] = []
    for block in blocks:
        for resnet, attention in _layers(block):
            hidden = _layer(resnet, attention, hidden, temb, context)
            if add is not None:
                hidden = hidden + add[len(states)]
            states.append(hidden)
        for downsampler in block.downsamplers or []:
            hidden = downsampler(hidden)
            if add is not None:
                hidden = hidden + add[len(states)]
            states.append(hidden)
    return hidden, states


def up_path(
    blocks: Sequence[torch.nn.Module],
    hidden: torch.Tensor,
    skips: Sequence[torch.Tensor],
    temb: torch.Tensor,
    context: torch.Tensor | None,
    add: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the up blocks consuming `skips` from the end; return the final state and every
    state after each resnet(+attention) and each upsampler (with `add[i]` added, if given)."""
    skips = list(skips)
    states: list[torch.Tensor] = []
    for block in blocks:
        for resnet, attention in _layers(block):
            hidden = _layer(resnet, attention, torch.cat([hidden, skips.pop()], dim=1), temb, context)
            if add is not None:
                hidden = hidden + add[len(states)]
            states.append(hidden)
        for upsampler in block.upsamplers or []:
            target = skips[-1].shape[2:] if skips else None
            hidden = upsampler(hidden, target)
            if add is not None:
                hidden = hidden + add[len(states)]
            states.append(hidden)
    return hidden, states
