"""Memory per GPU of ICP training (guide + LoRA, bf16 autocast): weights/gradients/AdamW computed from the official architecture on the meta device, activations estimated from a meta forward.

    python scripts/estimate_memory.py [--size 512x800] [--size 1024x1600] [--batch 1] [--processes 8]

Nothing is downloaded and no memory is allocated: the SD1.5 UNet (with the official rank-64 LoRA),
the Colorization Guide (official GraySD config), the VAE and the text encoder are instantiated on
PyTorch's meta device, so parameter counts are exact. The trainer keeps the trained weights in
fp32 (master weights) and casts the frozen ones to bf16, as engine/training/icp.py does.
Activations: the bytes of the tensors autograd saves for backward in one meta forward of the
guided UNet at the given pixel size (latent = size / 8), deduplicated by tensor, minus the
weights themselves and minus the L x L attention matrices (PyTorch's flash / memory-efficient
SDPA kernels on CUDA keep only q, k, v, the output and a log-sum-exp), plus the bf16 copies of the
fp32 trained weights that autocast makes. Not counted: allocator fragmentation, the CUDA context
and kernel workspaces (~1 GB), the VAE encode of the batch (no grad, freed before the forward).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

GB = 1e9

@dataclass
class Counts:
    """Parameter counts of the official models."""

    guide: int
    lora: int
    unet_base: int
    vae: int
    text: int

    @property
    def trained(self) -> int:
        return self.guide + self.lora


def official_model():
    """(GuidedDenoiser on the meta device with the guide + LoRA trainable, Counts); the networks come from
    the engine's one builder of the official architectures (engine/models/meta_networks.py)."""
    from engine.models.meta_networks import meta_networks
    from engine.training.icp_model import GuidedDenoiser

    networks = meta_networks()  # official sizes; the UNet with the official rank-64 LoRA
    unet, guide = networks.unet.train(), networks.guide.train()
    guide.requires_grad_(True)
    for name, parameter in unet.named_parameters():
        parameter.requires_grad_(".lora_" in name)
    counts = Counts(
        guide=sum(p.numel() for p in guide.parameters()),
        lora=sum(p.numel() for n, p in unet.named_parameters() if ".lora_" in n),
        unet_base=sum(p.numel() for n, p in unet.named_parameters() if ".lora_" not in n),
        vae=sum(p.numel() for p in networks.vae.parameters()),
        text=sum(p.numel() for p in networks.text_encoder.parameters()),
    )
    return GuidedDenoiser(guide, unet), counts


def activation_bytes(model, width: int, height: int, batch: int = 1) -> dict:
    """Bytes autograd saves in a bf16 meta forward at width x height pixels (see the module doc)."""
    import torch

    model = model.to(torch.bfloat16)
    meta = dict(device="meta", dtype=torch.bfloat16)
    lh, lw = height // 8, width // 8
    saved: dict[int, torch.Tensor] = {}

    def pack(tensor):
        saved[id(tensor)] = tensor  # kept alive, so ids stay unique
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.empty(batch, 4, lh, lw, **meta), torch.zeros(batch, dtype=torch.long, device="meta"),
              torch.empty(batch, 9, lh, lw, **meta), torch.empty(batch, 77, 768, **meta))
    weights = {id(p) for p in model.parameters()}
    tokens = {lh * lw // 4**k for k in range(4)}  # sequence lengths of the attention layers
    total = attention = 0
    for key, tensor in saved.items():
        if key in weights:
            continue
        size = tensor.numel() * tensor.element_size()
        if tensor.dim() >= 2 and tensor.shape[-1] == tensor.shape[-2] and tensor.shape[-1] in tokens:
            attention += size
        else:
            total += size
    return {"saved": total, "attention_matrices": attention}


def table(counts: Counts, sizes: list[tuple[int, int]], batch: int, processes: int, model) -> str:
    """The README table (markdown)."""
    n = counts.trained
    static = [
        ("guide + LoRA weights, fp32 master (computed)", 4 * n),
        ("their gradients, fp32 (computed)", 4 * n),
        ("AdamW moments exp_avg + exp_avg_sq, fp32 (computed)", 8 * n),
        ("frozen SD1.5 UNet base, bf16 (computed)", 2 * counts.unet_base),
        ("VAE + text encoder, bf16 (computed)", 2 * (counts.vae + counts.text)),
    ]
    rows = ["| part | GB per GPU |", "|---|---:|"]
    rows += [f"| {name} | {value / GB:.2f} |" for name, value in static]
    base = sum(v for _, v in static)
    rows.append(f"| **static total, DDP / one GPU** | **{base / GB:.2f}** |")
    rows.append(f"| + DDP gradient buckets, fp32 (computed; not with one GPU) | {4 * n / GB:.2f} |")
    rows.append(f"| + EMA (`--ema-decay`), fp32 (computed) | {4 * n / GB:.2f} |")
    sharded = base - 12 * n + 12 * n / processes
    rows.append(f"| static total, ZeRO-2 / FSDP SHARD_GRAD_OP on {processes} GPUs (computed) | {sharded / GB:.2f} |")
    for width, height in sizes:
        act = activation_bytes(model, width, height, batch)
        autocast_copies = 2 * n
        estimate = act["saved"] + autocast_copies
        rows.append(f"| activations at {width}x{height}, batch {batch} (estimated; flash/efficient attention) "
                    f"| {estimate / GB:.2f} |")
        rows.append(f"| **total at {width}x{height}, DDP (estimated)** | **{(base + 4 * n + estimate) / GB:.2f}** |")
        rows.append(f"| (L x L attention matrices if the math SDPA kernel ran: +{act['attention_matrices'] / GB:.1f} GB) | |")
    return "\n".join(rows)


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    if width % 8 or height % 8:
        raise argparse.ArgumentTypeError(f"{text}: use multiples of 8 (the VAE's latent grid)")
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_size, action="append", metavar="WxH",
                        help="training input in pixels (default 512x800 and 1024x1600)")
    parser.add_argument("--batch", type=int, default=1, help="batch per GPU (default 1)")
    parser.add_argument("--processes", type=int, default=8, help="GPUs for the sharded row (default 8)")
    args = parser.parse_args(argv)
    model, counts = official_model()
    print(f"parameters: guide {counts.guide:,}  LoRA {counts.lora:,}  UNet base {counts.unet_base:,}  "
          f"VAE {counts.vae:,}  text encoder {counts.text:,}  (trained: {counts.trained:,})")
    print(table(counts, args.size or [(512, 800), (1024, 1600)], args.batch, args.processes, model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
