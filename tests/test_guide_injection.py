"""Guide features enter the UNet where docs/reference/checkpoints.md says: checked against diffusers' own forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.icp.guide import GuideFeatures, guided_unet_forward


@pytest.fixture(scope="module")
def unet(tiny_models_dir):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(Path(tiny_models_dir) / "sd15" / "unet").eval()


def _inputs(unet, batch=2, h=16, w=24):
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(batch, 4, h, w, generator=g)
    text = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    return sample, torch.tensor(500), text


def _pairs(block):
    """The module whose output closes each resnet(+attention) pair of a diffusers block."""
    attentions = getattr(block, "attentions", None)
    return list(attentions) if attentions else list(block.resnets)


def _add_output(value):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + value, *output[1:])
        return output + value

    return hook


def stock_forward_with_hooks(unet, sample, t, text, features: GuideFeatures) -> torch.Tensor:
    """Reference: the stock diffusers UNet forward, with each feature added by a hook at the
    point docs/reference/checkpoints.md names. Written from that text, independent of engine.icp.unet_walk."""
    handles = []
    # down[0]: joins the conv_in output on its way into the first block; the skip saved before
    # the first block keeps the value without it (a pre-hook changes only the block's input).
    def add_to_input(module, args, kwargs):
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = kwargs["hidden_states"] + features.down[0]
        return args, kwargs

    handles.append(unet.down_blocks[0].register_forward_pre_hook(add_to_input, with_kwargs=True))
    # down[1:]: after each resnet(+attention) pair and each downsampler, before it is kept as a skip.
    closing = [m for block in unet.down_blocks for m in [*_pairs(block), *(block.downsamplers or [])]]
    assert len(closing) == len(features.down) - 1
    for module, value in zip(closing, features.down[1:]):
        handles.append(module.register_forward_hook(_add_output(value)))
    # mid: added to the mid-block output.
    handles.append(unet.mid_block.register_forward_hook(_add_output(features.mid)))
    # up: after each up-block resnet(+attention) pair and each upsampler, in order.
    closing = [m for block in unet.up_blocks for m in [*_pairs(block), *(block.upsamplers or [])]]
    assert len(closing) == len(features.up)
    for module, value in zip(closing, features.up):
        handles.append(module.register_forward_hook(_add_output(value)))
    try:
        return unet(sample, t, text).sample
    finally:
        for handle in handles:
            handle.remove()


def _shapes(tiny_components, sample, t):
    with torch.no_grad():
        features = tiny_components.guide(sample[:1], t, torch.zeros(1, 9, *sample.shape[2:]))
    return [f.shape for f in features.down], features.mid.shape, [f.shape for f in features.up]


def _features(shapes, only: tuple[str, int] | None, seed=1) -> GuideFeatures:
    """Random features (batch 1); with `only`, every other feature is zero."""
    g = torch.Generator().manual_seed(seed)
    down_shapes, mid_shape, up_shapes = shapes

    def make(kind, index, shape):
        value = torch.randn(shape, generator=g)
        return value if only is None or only == (kind, index) else torch.zeros(shape)

    return GuideFeatures(
        down=[make("down", i, s) for i, s in enumerate(down_shapes)],
        mid=make("mid", 0, mid_shape),
        up=[make("up", i, s) for i, s in enumerate(up_shapes)],
    )


def _all_single_features(n_down=9, n_up=11):
    return [("down", i) for i in range(n_down)] + [("mid", 0)] + [("up", i) for i in range(n_up)]


@pytest.mark.parametrize("only", _all_single_features())
def test_each_feature_enters_the_unet_at_the_documented_point(unet, tiny_components, only):
    sample, t, text = _inputs(unet)
    features = _features(_shapes(tiny_components, sample, t), only)
    with torch.no_grad():
        ours = guided_unet_forward(unet, sample, t, text, features)
        reference = stock_forward_with_hooks(unet, sample, t, text, features)
        plain = unet(sample, t, text).sample
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    assert (ours - plain).abs().max() > 1e-3  # the feature does reach the output


def test_all_features_together_and_broadcast_over_both_cfg_halves(unet, tiny_components):
    sample, t, text = _inputs(unet)
    features = _features(_shapes(tiny_components, sample, t), None)
    with torch.no_grad():
        ours = guided_unet_forward(unet, sample, t, text, features)
        reference = stock_forward_with_hooks(unet, sample, t, text, features)
        # Batch-1 features serve both CFG rows: each row alone gives the same result.
        rows = [guided_unet_forward(unet, sample[i : i + 1], t, text[i : i + 1], features) for i in range(2)]
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, torch.cat(rows), rtol=0, atol=1e-5)


def test_mid_and_block_end_features_equal_diffusers_controlnet_and_adapter_inputs(unet, tiny_components):
    """Where diffusers' own residual arguments add at the same points, the results are equal:
    the mid feature is ControlNet's mid residual; a feature on the last state of a down block
    is a T2I-Adapter intrablock residual (diffusers adds it in place, so the stored skip
    carries it too, as docs/reference/checkpoints.md says of every down feature but the first)."""
    sample, t, text = _inputs(unet)
    shapes = _shapes(tiny_components, sample, t)
    down_shapes = shapes[0]
    # Tiny UNet: Down(2 + downsampler), Down(2 + downsampler), CrossAttnDown(2): block ends 3, 6, 8.
    assert [type(b).__name__ for b in unet.down_blocks] == ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"]
    block_ends = {3: 0, 6: 1, 8: 2}
    g = torch.Generator().manual_seed(5)
    for index, block in block_ends.items():
        value = torch.randn(down_shapes[index], generator=g)
        ours_features = GuideFeatures([torch.zeros(s) for s in down_shapes], torch.zeros(shapes[1]),
                                      [torch.zeros(s) for s in shapes[2]])
        ours_features.down[index] = value
        intrablock = [torch.zeros(down_shapes[i]) for i in (3, 6, 8)]
        intrablock[block] = value.clone()
        with torch.no_grad():
            ours = guided_unet_forward(unet, sample, t, text, ours_features)
            stock = unet(sample, t, text, down_intrablock_additional_residuals=intrablock).sample
        torch.testing.assert_close(ours, stock, rtol=0, atol=1e-5)
    mid = torch.randn(shapes[1], generator=g)
    features = GuideFeatures([torch.zeros(s) for s in down_shapes], mid, [torch.zeros(s) for s in shapes[2]])
    with torch.no_grad():
        ours = guided_unet_forward(unet, sample, t, text, features)
        stock = unet(sample, t, text, down_block_additional_residuals=tuple(torch.zeros(s) for s in down_shapes),
                     mid_block_additional_residual=mid).sample
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-5)


def _closing_modules(model):
    """Modules whose outputs are the guide's feature points, in docs/reference/checkpoints.md's order."""
    down = [model.conv_in_condition] + [m for b in model.down_blocks for m in [*_pairs(b), *(b.downsamplers or [])]]
    up = [m for b in model.up_blocks for m in [*_pairs(b), *(b.upsamplers or [])]]
    return down, [model.mid_block], up


def test_guide_outputs_each_state_through_its_own_zero_conv(tiny_components):
    """Every guide feature = its zero conv applied to the state recorded (by hooks) at the
    documented point, times the conditioning scale: levels cannot be swapped or dropped."""
    guide = tiny_components.guide
    g = torch.Generator().manual_seed(2)
    sample = torch.randn(1, 4, 16, 24, generator=g)
    conditioning = torch.randn(1, 9, 16, 24, generator=g)
    recorded: dict[int, torch.Tensor] = {}
    handles = []
    down, mid, up = _closing_modules(guide)
    for position, module in enumerate([*down, *mid, *up]):
        def record(module, args, output, position=position):
            recorded[position] = (output[0] if isinstance(output, tuple) else output).clone()

        handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            features = guide(sample, torch.tensor(700), conditioning, conditioning_scale=0.5)
    finally:
        for handle in handles:
            handle.remove()
    states = [recorded[i] for i in range(len(recorded))]
    with torch.no_grad():
        expected_down = [conv(s) * 0.5 for conv, s in zip(guide.brushnet_down_blocks, states[: len(down)])]
        expected_mid = guide.brushnet_mid_block(states[len(down)]) * 0.5
        expected_up = [conv(s) * 0.5 for conv, s in zip(guide.brushnet_up_blocks, states[len(down) + 1 :])]
    assert len(features.down) == len(expected_down) == 9 and len(features.up) == len(expected_up) == 11
    for got, want in zip([*features.down, features.mid, *features.up], [*expected_down, expected_mid, *expected_up]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # Neighbouring levels differ, so a same-shape swap would show.
    assert (features.down[1] - features.down[2]).abs().max() > 1e-3
