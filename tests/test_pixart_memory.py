"""The memory estimate (--max-vram, `models list --size`) of the line-art styles: their own family (PixArt-α
transformer + LoRA, guide, VAE, fusion net, line extractor), never T5, from meta-device forwards."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from engine.core.geometry import WorkSize

GIB = 2**30
SIZE = WorkSize(512, 800)
# The official files' sizes on the hub (resources/models/presets.json, fp32 tensors): what the
# networks built on the meta device must weigh, as loaded in fp32.
HUB_BYTES = {"transformer": 2_445_420_000 + 441_940_000,  # PixArt-XL-2-1024-MS + sketch/transformer_lora.bin
             "guide": 1_007_760_000, "vae": 334_643_268, "fusion": 340_100_000, "line_extractor": 173_000_000}
# Non-persistent buffers not in the files: the 2D sin-cos position table (64 x 64 patches x 1152, fp32) that
# the transformer and the guide each rebuild.
POSITION_TABLE = 64 * 64 * 1152 * 4


def test_the_official_line_art_networks_weigh_what_the_hub_files_do():
    from engine.pipelines.meta_forward import module_bytes
    from engine.pipelines.meta_forward_pixart import pixart_meta_networks

    networks = pixart_meta_networks("official")
    weights = {name: module_bytes(module) for name, module in vars(networks).items()}
    assert "text_encoder" not in weights  # T5 is never resident (cached embeddings)
    for name in ("transformer", "guide"):
        assert weights[name] == pytest.approx(HUB_BYTES[name] + POSITION_TABLE, rel=0.005), name
    for name in ("vae", "fusion", "line_extractor"):
        assert weights[name] == pytest.approx(HUB_BYTES[name], rel=0.005), name


def test_a_line_art_estimate_is_the_pixart_family_without_t5():
    """At an official size (from the shipped table): the ICP stage on a GPU in fp16 holds the line
    extractor (fp32, it stays) and the four PixArt-family networks in fp16: half the hub's fp32 bytes."""
    from engine.pipelines.memory import estimate

    for style in ("sketch", "sketch-shading"):
        found = estimate(SIZE, "float16", placement="gpu", input_style=style)
        assert [s.stage for s in found.stages] == ["Lines", "RAP", "ICP", "GSRP"]
        icp = next(s for s in found.stages if s.stage == "ICP")
        family = sum(HUB_BYTES[n] for n in ("transformer", "guide", "vae", "fusion")) / 2
        expected = family + HUB_BYTES["line_extractor"] + POSITION_TABLE  # (2 tables in fp16)
        assert icp.weights == pytest.approx(expected, rel=0.01)
    gray = estimate(SIZE, "float16", placement="gpu", input_style="gray")
    assert [s.stage for s in gray.stages] == ["RAP", "ICP", "GSRP"] and gray.peak != found.peak


def test_max_vram_for_a_line_art_style_plans_with_its_own_family():
    from engine.pipelines.memory import estimate, plan_for_limit

    sketch = {o: estimate(SIZE, "float16", low_vram=o, input_style="sketch").peak for o in (False, True)}
    gray = {o: estimate(SIZE, "float16", low_vram=o, input_style="gray").peak for o in (False, True)}
    assert sketch[True] < sketch[False]  # offload lowers the line-art peak as well
    # a limit between the two families' peaks without any measure: the larger one needs a measure, the other none
    big, small = ("sketch", "gray") if sketch[False] > gray[False] else ("gray", "sketch")
    limit = (sketch[False] + gray[False]) / 2 / GIB
    plans = {style: plan_for_limit(limit, SIZE, "float16", input_style=style) for style in ("sketch", "gray")}
    assert plans["sketch"].estimate.stages[0].stage == "Lines"
    assert (plans[small].low_vram, plans[small].vae_tiling) == (False, False)
    assert plans[big].low_vram or plans[big].vae_tiling


def test_models_list_shows_the_line_art_estimate(capsys):
    from engine.cli.main import main

    assert main(["models", "list", "--size", "640x640", "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    rows = memory["line_art_estimates"]
    assert set(rows) == {"GPU fp16", "GPU fp16, low VRAM", "CPU fp32 (RAM)"}
    for row in rows.values():
        assert set(row["stages"]) == {"Lines", "RAP", "ICP", "GSRP"}
    assert main(["models", "list", "--size", "640x640"]) == 0
    text = capsys.readouterr().out
    block = text[text.index("line-art styles"):]
    assert f"peak {rows['GPU fp16']['peak_gib']:5.2f} GiB" in block


def test_the_pixart_low_vram_residency_table_is_what_the_offload_hooks_do(tiny_models_dir, tmp_path, monkeypatch):
    """On the meta device as the accelerator (tests/test_low_vram.py), the largest set of models the
    offload hooks hold after each model runs, phase by phase over two steps, is memory.PIXART_OFFLOADED's."""
    from accelerate.hooks import UserCpuOffloadHook

    from engine.icp.colorize import ColorizeSettings
    from engine.icp.pixart_colorize import PixArtColorizer
    from engine.models.pixart_loading import load_pixart_diffusion
    from engine.models.sources import resolve_models
    from engine.pipelines.memory import PIXART_OFFLOADED
    from engine.rap.canvas import build_mask

    paths = resolve_models(str(tiny_models_dir))
    load_pixart_diffusion(paths, "sketch", "cpu", dtype=torch.float32, cache_dir=tmp_path)  # T5 cannot run on meta
    c = load_pixart_diffusion(paths, "sketch", "meta", dtype=torch.float32, low_vram=True, cache_dir=tmp_path)
    names = {id(c.transformer_runner): "transformer", id(c.guide): "guide", id(c.vae_runner): "vae",
             id(c.fusion): "fusion"}
    held: set[str] = set()
    largest: dict[str, set[str]] = {}
    monkeypatch.setattr(UserCpuOffloadHook, "offload", lambda hook: held.discard(names[id(hook.model)]))

    def after(name):
        def hook(module, args, output):
            held.add(name)
            phase = ("decode" if "transformer" in largest else "encode") if name == "vae" else name
            largest[phase] = largest.get(phase, set()) | held
        return hook

    for module, name in ((c.transformer_runner, "transformer"), (c.guide, "guide"), (c.vae_runner, "vae")):
        module.register_forward_hook(after(name))
    size = WorkSize(128, 192)
    with pytest.raises(NotImplementedError):  # meta results cannot become an image: after the decode
        PixArtColorizer(c)(Image.new("RGB", size.canvas), build_mask(size), size,
                           ColorizeSettings(steps=2, guidance_scale=4.5, preview_every=0))
    assert largest == {phase: set(PIXART_OFFLOADED[phase]) for phase in ("encode", "guide", "transformer", "decode")}


def test_the_shipped_line_art_rows_are_what_the_meta_forwards_give_now():
    """resources/models/memory-estimates.json's line-art rows against a fresh run of the default size;
    out of date: python scripts/memory_table.py."""
    from engine.core.resources import model_config
    from engine.pipelines.memory import table_key
    from engine.pipelines.meta_forward_pixart import measure_pixart

    shipped = model_config("memory-estimates")["entries"]
    assert shipped[table_key("pixart-official", SIZE, "float16", False, "canvas")] == measure_pixart(
        "official", SIZE, "float16")
