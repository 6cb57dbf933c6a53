"""GSRP levels: each encoder feature and each fused map sits where docs/reference/checkpoints.md says."""

from __future__ import annotations

import pytest
import torch

from engine.gsrp.upscale import decode_with_features, encode_with_features


@pytest.fixture(scope="module")
def vae(tiny_components):
    return tiny_components.vae


def _add_to_input(value):
    def hook(module, args, kwargs):
        if args:
            return (args[0] + value, *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = kwargs["hidden_states"] + value
        return args, kwargs

    return hook


def stock_decode_with_hooks(vae, latents: torch.Tensor, fused: list[torch.Tensor]) -> torch.Tensor:
    """Reference: diffusers' own `vae.decode`, with the fused maps added by hooks where
    docs/reference/checkpoints.md puts them: level i (0-3) before up block 3 - i; level 4 after the
    decoder's conv_in, before its mid block."""
    decoder = vae.decoder
    n_up = len(decoder.up_blocks)
    handles = [decoder.conv_in.register_forward_hook(lambda m, a, out: out + fused[4])]
    for level in range(4):
        block = decoder.up_blocks[n_up - 1 - level]
        handles.append(block.register_forward_pre_hook(_add_to_input(fused[level]), with_kwargs=True))
    try:
        return vae.decode(latents, return_dict=False)[0]
    finally:
        for handle in handles:
            handle.remove()


def _fused_shapes(vae, latents):
    """Shapes of the maps the decoder takes: conv_in output for level 4, each up block's input."""
    shapes = {}
    decoder = vae.decoder
    handles = [decoder.conv_in.register_forward_hook(lambda m, a, out: shapes.__setitem__(4, out.shape))]
    n_up = len(decoder.up_blocks)
    for level in range(4):
        def record(module, args, kwargs, level=level):
            x = args[0] if args else kwargs["hidden_states"]
            shapes[level] = x.shape

        handles.append(decoder.up_blocks[n_up - 1 - level].register_forward_pre_hook(record, with_kwargs=True))
    with torch.no_grad():
        vae.decode(latents)
    for handle in handles:
        handle.remove()
    return [shapes[i] for i in range(5)]


@pytest.mark.parametrize("level", range(5))
def test_each_fused_level_enters_the_decoder_at_its_documented_stage(vae, level):
    g = torch.Generator().manual_seed(level)
    latents = torch.randn(1, 4, 8, 12, generator=g)
    shapes = _fused_shapes(vae, latents)
    # Levels 3 and 4 have the same shape (both deepest): only a value tag tells them apart.
    assert shapes[3] == shapes[4]
    fused = [torch.full(s, 0.0) for s in shapes]
    fused[level] = torch.full(shapes[level], 0.5 + level) + 0.1 * torch.randn(shapes[level], generator=g)
    with torch.no_grad():
        ours = decode_with_features(vae, latents, fused)
        reference = stock_decode_with_hooks(vae, latents, fused)
        plain = vae.decode(latents).sample
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    assert (ours - plain).abs().max() > 1e-3


def test_encoder_features_are_conv_in_then_each_down_block_output(vae):
    """Recorded by hooks on diffusers' own encoder while it runs its stock forward."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, 64, 96, generator=g)
    recorded = []
    encoder = vae.encoder
    modules = [encoder.conv_in, *encoder.down_blocks]
    handles = [m.register_forward_hook(lambda m, a, out: recorded.append(out.clone())) for m in modules]
    try:
        with torch.no_grad():
            stock_moments = vae.encode(pixels).latent_dist.parameters
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        moments, features = encode_with_features(vae, pixels)
    assert len(features) == 5
    for got, want in zip(features, recorded):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(moments, stock_moments, rtol=0, atol=1e-5)


def test_fusion_branch_i_fuses_color_then_gray_of_level_i(tiny_components):
    fusion = tiny_components.fusion.eval()
    g = torch.Generator().manual_seed(3)
    channels = fusion.channels
    color = [torch.randn(1, c, 8, 8, generator=g) for c in channels]
    gray = [torch.randn(1, c, 8, 8, generator=g) for c in channels]
    with torch.no_grad():
        fused = fusion(color, gray)
        for level, branch in enumerate(fusion.two_layer_resnets):
            expected = branch(torch.cat([color[level], gray[level]], dim=1))
            torch.testing.assert_close(fused[level], expected, rtol=0, atol=0)
            swapped = branch(torch.cat([gray[level], color[level]], dim=1))
            assert (fused[level] - swapped).abs().max() > 1e-3  # color first, gray second matters
