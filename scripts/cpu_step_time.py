"""CPU seconds per ICP training step with the tiny models (a 3-page generated chapter, built in a temporary folder).

    python scripts/cpu_step_time.py [--steps 20] [--threads 1] [--downsample 0.5] [--full-canvas]

Prints wall and process-CPU seconds per optimizer step, leaving out the first step (warm-up).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for tiny models)")
    parser.add_argument("--downsample", type=float, default=0.5)
    parser.add_argument("--full-canvas", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from engine.io.demo import make_demo_chapter
    from engine.preprocess.screenstyle import load_screenstyle
    from engine.core.geometry import WorkSize
    from engine.rap.embedding import ClipEmbedder, EmbeddingCache
    from engine.rap.retrieval import Retriever
    from engine.models.sources import make_tiny, resolve_models
    from engine.training.data import prepare_dataset
    from engine.training.icp import ICPTrainConfig, ICPTrainer

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_tiny(root / "models")
        base = resolve_models(str(root / "models"))
        _, chapter = make_demo_chapter(root / "colored", pages=1, refs=3, size=(200, 300))
        retriever = Retriever(ClipEmbedder(base.image_encoder), EmbeddingCache(root / "embeddings"))
        prepare_dataset([chapter], root / "dataset", retriever, load_screenstyle(base.colorflow), WorkSize(128, 192))
        config = ICPTrainConfig(steps=args.steps + 1, downsample=args.downsample, full_canvas=args.full_canvas,
                                learning_rate=1e-3, device="cpu", save_every=10**9, tensorboard=False)
        trainer = ICPTrainer(base, root / "dataset", root / "out", config, printer=None)
        trainer.train(until=1)
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.train(until=args.steps + 1)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"tiny models, canvas 256x384, downsample {args.downsample}{' full canvas' if args.full_canvas else ' crops'}, "
          f"batch 1, {args.threads} thread(s): {wall / args.steps:.3f} s/step wall, {cpu / args.steps:.3f} s/step CPU "
          f"over {args.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
