"""Peak memory of encoding the PixArt prompt with T5 loaded whole vs streamed block by block, as a ratio measured in one run.

    python scripts/measure_t5_streaming.py [--d-model 1024] [--layers 12] [--json]

Writes a random T5 v1.1 encoder (vocabulary 32128 like T5-XXL; width and depth as given; fp32,
sharded safetensors) and the tiny T5 tokenizer into a temporary folder, then runs
engine.icp.t5_encoder.encode_whole and encode_streamed on [negative "", prompt "manga"] each in a
fresh process, after the libraries are imported, and prints each one's peak resident memory above
that baseline (Linux VmHWM, reset through /proc/self/clear_refs), its time, the largest difference
between the two results, and the ratio whole / streamed. At T5-XXL size a block is 193 M parameters
(0.77 GB in fp32) and the token embedding 132 M (0.53 GB), against 4.76 B (19 GB) whole.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from pathlib import Path
import torch, transformers, accelerate  # imported before the baseline is taken
from engine.icp import text_embeddings as te
from engine.icp.t5_encoder import encode_streamed, encode_whole
root, mode = Path(sys.argv[1]), sys.argv[2]
ids, mask = te.tokenize(te.load_t5_tokenizer(root / "tokenizer", 10**6), "manga", "", 120)
def high_water():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")
base, start = high_water(), time.perf_counter()
out = encode_whole(root / "text_encoder", ids, mask, "cpu", torch.float32) if mode == "whole" else \
    encode_streamed(root / "text_encoder", ids, mask)
result = {"peak_bytes": high_water() - base, "seconds": time.perf_counter() - start}
torch.save(out, root / f"{mode}.pt")
print(json.dumps(result))
"""


def build(root: Path, d_model: int, layers: int) -> int:
    import torch
    from transformers import T5Config, T5EncoderModel

    from engine.models.tiny_t5 import write_t5_tokenizer

    write_t5_tokenizer(root / "tokenizer")
    config = T5Config(vocab_size=32128, d_model=d_model, d_kv=64, d_ff=d_model * 11 // 4, num_layers=layers,
                      num_heads=d_model // 64, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    torch.manual_seed(0)
    model = T5EncoderModel(config).eval()
    model.save_pretrained(root / "text_encoder", max_shard_size="300MB")
    return sum(p.numel() * 4 for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="t5-streaming-"))
    try:
        weights = build(root, args.d_model, args.layers)
        results = {}
        for mode in ("whole", "streamed"):
            run = subprocess.run([sys.executable, "-c", CHILD, str(root), mode], capture_output=True, text=True,
                                 check=True, cwd=REPO)
            results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
        import torch

        whole_out = torch.load(root / "whole.pt", weights_only=True)  # tensors only: no pickled code runs
        streamed_out = torch.load(root / "streamed.pt", weights_only=True)
        difference = float((whole_out - streamed_out).abs().max())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    whole, streamed = results["whole"], results["streamed"]
    report = {"weights_fp32_bytes": weights, "whole": whole, "streamed": streamed,
              "peak_ratio_whole_over_streamed": whole["peak_bytes"] / streamed["peak_bytes"],
              "largest_difference": difference}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    mib = 1 << 20
    print(f"T5 weights (fp32): {weights / mib:.0f} MiB")
    for mode, result in (("whole", whole), ("streamed", streamed)):
        print(f"{mode:>9}: peak {result['peak_bytes'] / mib:.0f} MiB above the baseline, {result['seconds']:.1f} s")
    print(f"peak whole / streamed: {report['peak_ratio_whole_over_streamed']:.2f}; largest difference between the results: {difference:.2e}")


if __name__ == "__main__":
    main()
