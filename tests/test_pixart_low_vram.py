"""The line-art family (PixArt-α) in low-VRAM mode and after an out-of-memory error, without a GPU: the
meta device stands in for the accelerator, as in test_low_vram.py (its device-mixing detector).

Every model waits on the CPU and accelerate's hooks move it to "meta" when it runs; meta tensors hold
no data, so a run ends where the first result leaves the device (the conversion to an image)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from test_low_vram import DeviceMixes, _stopped_at_image_conversion

from engine.core.geometry import WorkSize
from engine.gsrp.upscale import Upscaler, UpscaleSettings
from engine.icp.colorize import ColorizeSettings
from engine.rap.canvas import build_canvas, build_mask

SIZE = WorkSize(128, 192)
HOOKED = {"transformer", "guide", "vae", "fusion"}  # every PixArt-family model but the cached T5 embeddings


@pytest.fixture
def meta_pixart(tiny_models_dir, tmp_path, monkeypatch):
    """The tiny sketch family loaded for "meta" as `load_pipeline` loads it on an accelerator (no
    low-VRAM): offloading a meta model back to the CPU would need data meta does not keep, so the
    hooks' offload requests are recorded instead."""
    from accelerate.hooks import UserCpuOffloadHook

    from engine.models.pixart_loading import load_pixart_diffusion
    from engine.models.sources import resolve_models

    offloaded: list[str] = []

    def record(hook) -> None:
        model = hook.model.model if hasattr(hook.model, "model") else hook.model
        offloaded.append(type(model).__name__)

    monkeypatch.setattr(UserCpuOffloadHook, "offload", record)
    paths = resolve_models(str(tiny_models_dir))
    # The prompt embeddings are computed on the CPU first (T5 cannot run on meta), then the family loads.
    load_pixart_diffusion(paths, "sketch", "cpu", dtype=torch.float32, cache_dir=tmp_path / "text")
    real_to = torch.nn.Module.to

    def stay_on_cpu(module, *args, **kwargs):  # the load's placement on "meta" keeps the weights (meta has none)
        if any(str(a) == "meta" for a in (*args, *kwargs.values())):
            return module
        return real_to(module, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.Module, "to", stay_on_cpu)
        components = load_pixart_diffusion(paths, "sketch", "meta", dtype=torch.float32, cache_dir=tmp_path / "text")
    return components, offloaded


def _canvas():
    query = Image.new("RGB", (SIZE.width, SIZE.height), (128, 128, 128))
    return build_canvas(query, [[Image.new("RGB", (64, 64), (200, 30, 30))] * 3] * 4, SIZE), build_mask(SIZE)


def test_the_lowest_memory_mode_offloads_the_pixart_family_and_a_sketch_page_runs_on_the_accelerator(meta_pixart):
    from engine.icp.pixart_colorize import PixArtColorizer
    from engine.models.loading import use_lowest_memory

    components, offloaded = meta_pixart
    assert components.device.type == "meta" and components.offload is None and not components.vae.use_tiling
    changed = use_lowest_memory(components)  # what the chapter's retry does after an out-of-memory error
    assert changed == ["tiled VAE", "models offloaded to the CPU between uses"]
    assert set(components.offload.hooks) == HOOKED and components.vae.use_tiling
    models = (components.transformer, components.guide, components.vae, components.fusion)
    assert all(p.device.type == "cpu" for m in models for p in m.parameters())  # waiting on the CPU
    assert use_lowest_memory(components) == []  # nothing lower: a second out-of-memory error fails the page

    canvas, mask = _canvas()
    with DeviceMixes() as mode, pytest.raises(NotImplementedError) as error:
        PixArtColorizer(components)(canvas, mask, SIZE, ColorizeSettings(steps=2, guidance_scale=4.5,
                                                                         preview_every=0))
    assert mode.mixes == []
    assert _stopped_at_image_conversion(error.value, "to_image")  # after the decoder ran on the device
    assert all(p.device.type == "meta" for p in components.transformer.parameters())  # moved by its hook
    assert "ColorGuidePixArt" in offloaded  # the guide left after the last step

    upscaler = Upscaler(components.vae_runner, components.fusion, components.device, components.dtype)
    gray_frame = Image.new("RGB", upscaler.frame_size(SIZE), (128, 128, 128))
    with DeviceMixes() as mode, pytest.raises(NotImplementedError) as error:
        upscaler(Image.new("RGB", (SIZE.width, SIZE.height), (200, 60, 60)), gray_frame, UpscaleSettings())
    assert mode.mixes == []
    assert _stopped_at_image_conversion(error.value, "_to_image_truncated")
    assert all(p.device.type == "meta" for p in components.fusion.parameters())
