"""Low-VRAM placement without a GPU: the meta device stands in for the accelerator.

Every model stays on the CPU and accelerate's hooks move it to "meta" when it runs; a torch
function mode records any op that mixes devices (a model on one device fed tensors from
another, as the old `--low-vram` GSRP crash). Meta tensors hold no data, so a run ends where
the first result leaves the device (the conversion to an image): that is the expected stop.
"""

from __future__ import annotations

import traceback

import pytest
import torch
from PIL import Image
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from engine.core.geometry import WorkSize
from engine.rap.canvas import build_canvas, build_mask
from engine.icp.colorize import Colorizer, ColorizeSettings
from engine.gsrp.upscale import Upscaler, UpscaleSettings

SIZE = WorkSize(256, 384)
# Ops that move data between devices on purpose.
TRANSFERS = {"to", "cpu", "cuda", "copy_", "_to_copy", "set_", "empty_like", "__get__", "__set__", "requires_grad_",
             "_has_compatible_shallow_copy_type"}


class DeviceMixes(TorchFunctionMode):
    """Records every torch op whose tensor arguments (0-dim scalars aside) sit on several devices."""

    def __init__(self) -> None:
        super().__init__()
        self.mixes: list[tuple[str, set[str]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name not in TRANSFERS:
            devices = {t.device.type for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.dim() > 0}
            if len(devices) > 1:
                self.mixes.append((name, devices))
        return func(*args, **kwargs)


@pytest.fixture
def meta_components(tiny_models_dir, monkeypatch):
    """Tiny models in low-VRAM mode with "meta" as the accelerator. Offloading a meta model
    back to the CPU would need data meta does not keep, so offload requests are recorded."""
    from accelerate.hooks import UserCpuOffloadHook

    from engine.models.loading import load_diffusion
    from engine.models.sources import resolve_models

    offloaded: list[str] = []

    def record(hook) -> None:
        model = hook.model.model if hasattr(hook.model, "model") else hook.model
        offloaded.append(type(model).__name__)

    monkeypatch.setattr(UserCpuOffloadHook, "offload", record)
    components = load_diffusion(resolve_models(str(tiny_models_dir)), "meta", dtype=torch.float32, low_vram=True)
    assert components.offload is not None
    assert all(p.device.type == "cpu" for p in components.unet.parameters())  # nothing placed up front
    return components, offloaded


def _stopped_at_image_conversion(error: BaseException, function: str) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return any(frame.name == function for frame in frames) and "meta" in str(error)


def test_icp_runs_on_the_accelerator_without_mixing_devices(meta_components):
    components, offloaded = meta_components
    query = Image.new("RGB", (SIZE.width, SIZE.height), (128, 128, 128))
    canvas = build_canvas(query, [[Image.new("RGB", (64, 64), (200, 30, 30))] * 3] * 4, SIZE)
    with DeviceMixes() as mode, pytest.raises(NotImplementedError) as error:
        Colorizer(components)(canvas, build_mask(SIZE), SIZE, ColorizeSettings(steps=2, preview_every=0))
    assert mode.mixes == []
    assert _stopped_at_image_conversion(error.value, "to_image")  # after the decoder ran on the device
    assert all(p.device.type == "meta" for p in components.unet.parameters())  # moved by its hook
    # The text encoder left when the UNet started; the guide left after the last step.
    assert offloaded[:1] == ["CLIPTextModel"] and "ColorGuiderSDModel" in offloaded


def test_gsrp_runs_on_the_accelerator_without_mixing_devices(meta_components):
    components, _ = meta_components
    upscaler = Upscaler(components.vae_runner, components.fusion, components.device, components.dtype)
    colored = Image.new("RGB", (SIZE.width, SIZE.height), (200, 60, 60))
    gray_frame = Image.new("RGB", upscaler.frame_size(SIZE), (128, 128, 128))
    with DeviceMixes() as mode, pytest.raises(NotImplementedError) as error:
        upscaler(colored, gray_frame, UpscaleSettings())
    assert mode.mixes == []
    assert _stopped_at_image_conversion(error.value, "_to_image_truncated")
    assert all(p.device.type == "meta" for p in components.fusion.parameters())
    assert all(p.device.type == "meta" for p in components.vae.parameters())


def test_the_detector_sees_a_model_fed_from_the_wrong_device():
    conv = torch.nn.Conv2d(3, 3, 3).to("meta")
    with DeviceMixes() as mode:
        conv(torch.zeros(1, 3, 8, 8))  # CPU input, meta weights: meta's conv does not complain
    assert mode.mixes and mode.mixes[0][1] == {"cpu", "meta"}
