"""The per-stage memory estimate (engine/pipelines/memory.py), --max-vram and `models list`'s figures.

Expectations come from outside the estimate: the published parameter counts of the official
checkpoints (docs/reference/checkpoints.md), the bytes of the tiny models loaded through the real
loaders, the live bytes of the same code run on real CPU tensors, accelerate's offload hooks
themselves, and by-hand sums. The measured peak RSS of an official-size CPU run is an opt-in slow
test (it needs the make-random folder and ~12 GB of RAM).
"""

from __future__ import annotations

import json
import os
import weakref
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from engine.core.errors import InputError
from engine.core.geometry import WorkSize

GIB = 2**30
SMALL = WorkSize(128, 128)  # the tiny VAE tiles at 64 px: small, so the tiled meta runs stay quick


class CpuLiveBytes(TorchDispatchMode):
    """The test's own count of live CPU tensor bytes (each storage from creation to death)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.refs: dict[int, tuple[weakref.ref, int]] = {}
        self.window: str | None = None  # a named stretch of the run with its own peak
        self.windows: dict[str, int] = {}

    def open(self, name: str) -> None:
        self.window = name
        self.windows[name] = max(self.windows.get(name, 0), self.live)

    def _gone(self, key: int) -> None:
        self.live -= self.refs.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu":
                storage = leaf.untyped_storage()
                if id(storage) not in self.refs:
                    self.refs[id(storage)] = (weakref.ref(storage, lambda _, k=id(storage): self._gone(k)),
                                              storage.nbytes())
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    if self.window:
                        self.windows[self.window] = max(self.windows[self.window], self.live)
        return out


def test_live_bytes_is_the_peak_of_what_is_alive_not_the_sum():
    from engine.core.live_bytes import LiveBytes

    with LiveBytes() as live:
        a = torch.empty(1000, device="meta")  # 4,000 B
        b = a + 1  # 8,000 alive
        del a  # 4,000
        b.view(10, 100).add_(1)  # a view and an in-place result: no new storage
        c = torch.empty(250, device="meta")  # 5,000
        del b, c
    assert (live.peak, live.live) == (8_000, 0)
    # Attention runs as a flash kernel: q, k, v (3 x 1000 x 64 x 4 B), the output and a per-row
    # log-sum-exp (1000 x 4 B); the 1000 x 1000 matrix of the math kernel (4 MB) never appears.
    q, k, v = (torch.empty(1, 1, 1000, 64, device="meta") for _ in range(3))
    with LiveBytes() as live:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert live.peak == 256_000 + 4_000


def test_meta_weights_are_the_bytes_of_the_models_the_loaders_load(tiny_components, tiny_screenstyle, tiny_embedder):
    """The estimate's weights of the tiny architecture equal, model by model, the parameters and
    buffers of the tiny models read from disk by the real strict loaders."""
    from engine.pipelines.meta_forward import measure

    weights = measure("tiny", SMALL, "float32")["weights"]
    c = tiny_components
    loaded = {"unet": c.unet, "guide": c.guide, "vae": c.vae, "text_encoder": c.text_encoder, "fusion": c.fusion,
              "image_encoder": tiny_embedder.model, "rgb_to_screen": tiny_screenstyle.rgb_to_screen,
              "screen_decoder": tiny_screenstyle.decoder}
    assert weights == {name: sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
                       for name, module in loaded.items()}
    assert weights["fusion"] > sum(p.numel() * 4 for p in c.fusion.parameters())  # BatchNorm statistics count
    # On the CPU every model stays in RAM at every stage
    from engine.pipelines.memory import estimate

    on_cpu = estimate(SMALL, "float32", placement="cpu", architecture="tiny")
    assert {stage.weights for stage in on_cpu.stages} == {sum(weights.values())}


def test_official_weights_follow_the_published_parameter_counts():
    """docs/reference/checkpoints.md: guide 842,093,440; LoRA 23,937,024; fusion 84,974,592 + 39,936
    running statistics + 43 int64 counters; SD1.5 UNet 859,520,964, VAE 83,653,863. In fp16 with
    low VRAM, the UNet step holds the VAE, the guide and the UNet; GSRP the VAE and the fusion net."""
    from engine.pipelines.memory import estimate
    from engine.pipelines.meta_forward import model_weights

    vae, guide, unet = 83_653_863 * 2, 842_093_440 * 2, (859_520_964 + 23_937_024) * 2
    fusion = (84_974_592 + 39_936) * 2 + 43 * 8
    fresh = model_weights("official", "float16")  # the networks built now (the estimate reads the shipped table)
    assert (fresh["vae"], fresh["guide"], fresh["unet"], fresh["fusion"]) == (vae, guide, unet, fusion)
    stages = {s.stage: s for s in estimate("512x800", "float16", placement="gpu", low_vram=True,
                                           input_style="gray").stages}
    assert stages["GSRP"].weights == vae + fusion
    # ICP peaks in the UNet step (printed: 1.5 GB of activations + the three models, above the
    # 4.0 GB VAE encode of the conditioning with the VAE alone)
    assert stages["ICP"].phase == "unet" and stages["ICP"].weights == vae + guide + unet
    # fp32 doubles every floating-point byte (the 43 counters stay int64)
    gsrp32 = {s.stage: s for s in estimate("512x800", "float32", placement="gpu", low_vram=True,
                                           input_style="gray").stages}["GSRP"]
    assert gsrp32.weights == 2 * (vae + fusion) - 43 * 8


def test_meta_activation_peaks_are_the_live_bytes_of_the_same_code_on_the_cpu(tiny_components):
    """GSRP and ICP on real CPU tensors (the tiny models), counted by this test's own tracker,
    reach exactly the peak the meta-device forward predicts."""
    from engine.gsrp.upscale import UpscaleSettings, Upscaler
    from engine.icp.colorize import Colorizer, ColorizeSettings
    from engine.pipelines.meta_forward import measure
    from engine.rap.canvas import build_mask

    activations = measure("tiny", SMALL, "float32")["activations"]
    c = tiny_components
    canvas = Image.new("RGB", SMALL.canvas, (128, 128, 128))
    counted = CpuLiveBytes()
    # the UNet steps (from the UNet's first call to the decode) and the decode, as windows of their own
    c.unet_runner.register_forward_pre_hook(lambda module, args: counted.open("unet"))
    c.vae_runner.register_forward_pre_hook(lambda module, args: counted.open("decode") if counted.window else None)
    try:
        with counted, torch.inference_mode():
            Colorizer(c)(canvas, build_mask(SMALL), SMALL, ColorizeSettings(steps=1, preview_every=0))
    finally:
        c.unet_runner._forward_pre_hooks.clear()
        c.vae_runner._forward_pre_hooks.clear()
    icp = max(activations[p] for p in ("encode", "text", "guide", "unet", "decode"))
    # CPU-only extras of the real run (the start noise made on the CPU, the canvas as a tensor)
    # are counted here too, so the count can only be at least the meta peak; both round to the same MiB.
    assert icp <= counted.peak < icp + 2**20
    for phase in ("unet", "decode"):
        assert activations[phase] <= counted.windows[phase] < activations[phase] + 2**20, phase
    upscaler = Upscaler(c.vae_runner, c.fusion, c.device, c.dtype)
    colored = Image.new("RGB", (SMALL.width, SMALL.height), (200, 60, 60))
    gray = Image.new("RGB", upscaler.frame_size(SMALL), (128, 128, 128))
    with CpuLiveBytes() as counted:
        upscaler(colored, gray, UpscaleSettings())
    assert activations["GSRP"] <= counted.peak < activations["GSRP"] + 2**20


def test_the_low_vram_residency_table_is_what_the_offload_hooks_do(tiny_models_dir, monkeypatch):
    """On the meta device as the accelerator (tests/test_low_vram.py), the models the offload
    hooks have moved in and not yet sent back, after each model runs, are memory.OFFLOADED's."""
    from accelerate.hooks import UserCpuOffloadHook

    from engine.icp.colorize import Colorizer, ColorizeSettings
    from engine.models.loading import load_diffusion
    from engine.models.sources import resolve_models
    from engine.pipelines.memory import OFFLOADED
    from engine.rap.canvas import build_mask

    c = load_diffusion(resolve_models(str(tiny_models_dir)), "meta", dtype=torch.float32, low_vram=True)
    names = {id(c.text_encoder): "text_encoder", id(c.unet_runner): "unet", id(c.guide): "guide",
             id(c.vae_runner): "vae", id(c.fusion): "fusion"}
    held: set[str] = set()
    seen: list[tuple[str, frozenset]] = []
    monkeypatch.setattr(UserCpuOffloadHook, "offload", lambda hook: held.discard(names[id(hook.model)]))
    uses = {"vae": 0}

    def after(name):
        def hook(module, args, output):
            held.add(name)
            phase = name if name != "vae" else ("encode" if uses["vae"] == 0 else "decode")
            phase = "text" if name == "text_encoder" else phase
            uses["vae"] += name == "vae"
            seen.append((phase, frozenset(held)))
        return hook

    for module, name in ((c.text_encoder, "text_encoder"), (c.unet_runner, "unet"), (c.guide, "guide"),
                         (c.vae_runner, "vae")):
        module.register_forward_hook(after(name))
    with pytest.raises(NotImplementedError):  # meta results cannot become an image: after the decode
        Colorizer(c)(Image.new("RGB", SMALL.canvas), build_mask(SMALL), SMALL, ColorizeSettings(steps=2, preview_every=0))
    first = {}
    for phase, models in seen:
        first.setdefault(phase, models)
    assert {phase: set(models) for phase, models in first.items()} == {
        phase: set(OFFLOADED[phase]) for phase in ("encode", "text", "guide", "unet", "decode")}


# By hand from the printed estimate of the tiny models at 128x128, fp32, input style gray, on an
# accelerator (`estimate(SMALL, "float32", placement="gpu", architecture="tiny", input_style="gray",
# low_vram=..., vae_tiling=...)`), in GiB: nothing 0.02978, tiling 0.02847, offload 0.01738,
# offload and tiling 0.01715.
@pytest.mark.parametrize("limit, choice", [
    (0.0300, (False, False)),  # above nothing's peak: nothing changes
    (0.0290, (False, True)),  # between tiling and nothing: VAE tiling
    (0.0250, (True, False)),  # below tiling, above offload: model offload
    (0.0172, (True, True)),  # between both and offload alone: both
])
def test_max_vram_picks_the_least_costly_measure_that_fits(tiny_models_dir, limit, choice, tmp_path):
    from engine.pipelines.page import load_pipeline

    pipeline = load_pipeline(str(tiny_models_dir), "meta", cache_dir=tmp_path, input_style="gray", max_vram=limit,
                             work_size=SMALL)
    components = pipeline.colorizer.components
    assert ((components.offload is not None), bool(components.vae.use_tiling)) == choice
    words = {(False, False): "no memory measure needed", (False, True): ": VAE tiling",
             (True, False): "model offload (", (True, True): "model offload and VAE tiling"}[choice]
    assert pipeline.memory_note.startswith(f"max VRAM {limit:g} GiB") and words in pipeline.memory_note


def test_max_vram_keeps_what_the_user_chose_and_refuses_an_impossible_limit(tiny_models_dir, tmp_path, monkeypatch):
    from engine.pipelines import page

    kept = page.load_pipeline(str(tiny_models_dir), "meta", cache_dir=tmp_path, input_style="gray", max_vram=1.0,
                              work_size=SMALL, low_vram=True)
    assert kept.colorizer.components.offload is not None and "model offload" in kept.memory_note
    monkeypatch.setattr(page, "load_retriever", lambda *a, **k: pytest.fail("a model loaded"))
    with pytest.raises(InputError, match=r"--max-vram 0.001: no choice fits.*GiB at 64x64.*--decode page") as caught:
        page.load_pipeline(str(tiny_models_dir), "meta", cache_dir=tmp_path, input_style="gray", max_vram=0.001,
                           work_size=WorkSize(64, 64))  # (64x64: few VAE tiles, a quick meta run)
    assert "\n" not in str(caught.value)


def test_max_vram_changes_nothing_on_the_cpu(tiny_models_dir, tmp_path):
    from engine.pipelines.memory import choose_for_limit

    assert choose_for_limit(0.01, "cpu", str(tiny_models_dir))[:2] == (False, False)
    assert "nothing changed on the CPU" in choose_for_limit(0.01, "cpu", str(tiny_models_dir))[2]


def test_models_list_shows_the_estimate_per_stage(capsys):
    """The official sizes come from the shipped table: `models list --size 640x640` prints (and --json
    gives) each row's peak, the largest of its stages, with the weights of the published counts."""
    from engine.cli.main import main

    assert main(["models", "list", "--size", "640x640", "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    assert memory["size"] == "640x640"
    rows = memory["estimates"]
    assert set(rows) == {"GPU fp16", "GPU fp16, low VRAM", "CPU fp32 (RAM)"}
    for row in rows.values():
        stages = row["stages"]
        assert set(stages) == {"ScreenStyle", "RAP", "ICP", "GSRP"}
        assert row["peak_gib"] == pytest.approx(max(s["total_gib"] for s in stages.values()), abs=1e-3)
    # low VRAM's GSRP holds the ScreenStyle networks (fp32) and the VAE + fusion net (fp16)
    gsrp = rows["GPU fp16, low VRAM"]["stages"]["GSRP"]["weights_gib"]
    published = (83_653_863 * 2 + (84_974_592 + 39_936) * 2 + 43 * 8) / GIB
    assert published < gsrp < published + 0.2  # + ScreenStyle's two U-Nets (about 26 M fp32 values)
    assert main(["models", "list", "--size", "640x640"]) == 0
    text = capsys.readouterr().out
    lines = [line.strip() for line in text.splitlines()]
    assert any("estimated peak of the official models at 640x640" in line for line in lines)
    for label, row in rows.items():
        line = next(line for line in lines if line.startswith(label + " "))
        assert f"peak {row['peak_gib']:5.2f} GiB" in line


@pytest.mark.slow
def test_the_shipped_table_is_what_the_meta_forwards_give_now():
    """resources/models/memory-estimates.json (read by `models list` without torch) against a fresh
    run of the default size; out of date: python scripts/memory_table.py."""
    from engine.core.resources import model_config
    from engine.pipelines.memory import ESTIMATE_VERSION, table_key
    from engine.pipelines.meta_forward import measure

    shipped = model_config("memory-estimates")
    assert shipped["version"] == ESTIMATE_VERSION
    size = WorkSize(512, 800)
    assert shipped["entries"][table_key("official", size, "float16", False, "canvas")] == measure("official", size,
                                                                                                 "float16")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("COLORFLOW_OFFICIAL_RANDOM"),
                    reason="opt-in: COLORFLOW_OFFICIAL_RANDOM=DIR of `colorflow models make-random` (~12 GB RAM, minutes)")
@pytest.mark.parametrize("size", ["256x256", "256x384"])
def test_estimate_is_within_15_percent_of_the_measured_peak_rss_at_official_size(size):
    """Issue 23: one page colored on the CPU in fp32 with official-size random weights; each stage's
    peak RSS above the process before loading vs the CPU estimate (run one such process at a time:
    flock /tmp/official-size.lock python -m pytest ... on a shared machine)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from measure_memory import compare

    result = compare(os.environ["COLORFLOW_OFFICIAL_RANDOM"], size)
    for stage, row in result["stages"].items():
        assert 0.85 <= row["ratio"] <= 1.15, (stage, row)
