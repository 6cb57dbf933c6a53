"""Random-weight line extractors (LE/erika.pth) written like the official file: a pickled flat tensor dict."""

from __future__ import annotations

from pathlib import Path

# Tiny widths and depths: every kind of block (strided, upsampling, plain, projected skip) is there.
TINY_LINE_EXTRACTOR = dict(widths=(4, 6, 8, 12, 16), depths=(2, 2, 1, 1, 2), up_depths=(2, 1, 1, 1),
                           head_width=4, head_depth=1)
OUTPUT_MEAN, OUTPUT_STD = 200.0, 60.0  # mostly light, like a line image on paper


def write_line_extractor(path: Path, size: str = "tiny") -> None:
    """A LineExtractor of `size` ("tiny", or "official": 43 M values, about 173 MB) with random
    values from the global torch RNG (BatchNorm running statistics too), its output scaled to a
    line image's range on a random page, saved with torch.save at `path` (written atomically)."""
    import torch

    from engine.io.fileio import atomic_write
    from engine.preprocess.lines import LineExtractor

    if size not in ("tiny", "official", "official-size"):
        raise ValueError(f"unknown line extractor size {size!r} (tiny or official)")
    net = LineExtractor(**TINY_LINE_EXTRACTOR) if size == "tiny" else LineExtractor()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        net.eval()
        page = torch.rand(1, 1, 64, 64) * 255
        out = net(page)
        last = net.conv15.model[2]
        scale = OUTPUT_STD / float(out.std().clamp_min(1e-6))
        last.weight.mul_(scale)
        last.bias.copy_((last.bias - out.mean()) * scale + OUTPUT_MEAN)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write(Path(path), lambda handle: torch.save(state, handle))
