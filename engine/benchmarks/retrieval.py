"""Benchmarks that measure ratios within one run (not timed tests)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any


def bench_retrieval(pages: int = 20, refs: int = 20, seed: int = 0) -> dict[str, Any]:
    """Cached retrieval (references embedded once per chapter, on disk) against the official
    procedure (every reference re-embedded for every page), on a generated chapter."""
    from engine.io.chapter import list_images, open_chapter
    from engine.io.demo import make_demo_chapter
    from engine.rap.embedding import ClipEmbedder, EmbeddingCache
    from engine.models.sources import make_tiny
    from engine.rap.retrieval import Retriever

    with tempfile.TemporaryDirectory(prefix="colorflow-bench-") as tmp:
        root = Path(tmp)
        chapter_dir, refs_dir = make_demo_chapter(root / "data", pages=pages, refs=refs, seed=seed)
        models = make_tiny(root / "models")
        chapter = open_chapter(chapter_dir)
        references = list_images([refs_dir])
        page_images = [chapter.load_page(i) for i in range(len(chapter.sources))]

        def run(fresh_retriever_per_page: bool, cache_root: Path | None) -> tuple[float, int, int]:
            embedder = ClipEmbedder(models.image_encoder)
            retriever = Retriever(embedder, EmbeddingCache(cache_root))
            start = time.perf_counter()
            for page in page_images:
                if fresh_retriever_per_page:
                    retriever = Retriever(embedder, EmbeddingCache(None))
                retriever.retrieve(page, references)
            return time.perf_counter() - start, embedder.images_embedded, embedder.forward_passes

        per_page_s, per_page_images, per_page_passes = run(True, None)
        cached_s, cached_images, cached_passes = run(False, root / "cache")
        reopen_s, reopen_images, _ = run(False, root / "cache")
    return {
        "pages": pages,
        "references": refs,
        "per_page_reembed_images_encoded": per_page_images,
        "per_page_reembed_forward_batches": per_page_passes,
        "per_page_reembed_seconds": round(per_page_s, 3),
        "cached_images_encoded": cached_images,
        "cached_forward_batches": cached_passes,
        "cached_seconds": round(cached_s, 3),
        "reopened_images_encoded": reopen_images,
        "reopened_seconds": round(reopen_s, 3),
        "encoder_images_ratio": round(per_page_images / max(cached_images, 1), 2),
        "wall_time_ratio": round(per_page_s / max(cached_s, 1e-9), 2),
    }
