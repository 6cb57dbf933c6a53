"""Image embedders for retrieval (the Embedder protocol, CLIP) and the on-disk embedding cache."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np
from PIL import Image

from engine.core.errors import ModelError
from engine.io.fileio import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Bump when page/reference fitting or patch cropping changes, so old cached vectors are unused.
GEOMETRY_VERSION = 1
EMBED_BATCH = 16  # images per CLIP forward (the memory estimate runs one such batch)


class Embedder(Protocol):
    """Turns images into L2-normalised vectors; `encoder_id` names the exact weights."""

    encoder_id: str
    images_embedded: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, D) float32, each row of unit length."""
        ...


def fingerprint_model_dir(model_dir: Path) -> str:
    """A short id for a model folder: its config plus size and edges of each weight file.

    Hashing whole multi-GB files on every start would take seconds; config + size + the first
    and last MiB change whenever the weights do in practice.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 1 << 20:
                handle.seek(max(0, size - (1 << 20)))
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def _clip_processor():
    # transformers >= 5 names the PIL-only processor separately (no torchvision needed).
    try:
        from transformers import CLIPImageProcessorPil as processor_class
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as processor_class
    return processor_class()


class ClipEmbedder:
    """The official RAP encoder: CLIPVisionModelWithProjection `image_embeds`, cosine-normalised.

    Uses CLIPImageProcessor defaults like the official app (shortest side 224 bicubic, centre
    crop 224, OpenAI CLIP mean/std). Batched, no-grad, on the chosen device.
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        dtype: "torch.dtype | None" = None,
        batch_size: int = EMBED_BATCH,
    ) -> None:
        import torch
        from transformers import CLIPVisionModelWithProjection
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ModelError(f"{model_dir}: no CLIP image encoder here (config.json missing)")
        self.encoder_id = f"clip-{fingerprint_model_dir(model_dir)}"
        self.device = self.home_device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.batch_size = batch_size
        from engine.io.checkpoints import load_pretrained, reading_model

        model = load_pretrained(CLIPVisionModelWithProjection, model_dir, "the CLIP image encoder",
                                "model.safetensors", torch_dtype=self.dtype, use_safetensors=True)
        with reading_model(model_dir, "the CLIP image encoder"):
            self.model = model.to(self.device)
        self.model.eval()
        self.processor = _clip_processor()
        self.images_embedded = 0
        self.forward_passes = 0

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if self.device != self.home_device:  # released for diffusion earlier: come back
            self.model.to(self.home_device)
            self.device = self.home_device
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
                output = self.model(pixel_values=pixels.to(self.device, self.dtype))
                vectors = torch.nn.functional.normalize(output.image_embeds.float(), dim=-1)
                chunks.append(vectors.cpu().numpy())
                self.forward_passes += 1
                self.images_embedded += len(batch)
        if not chunks:
            return np.zeros((0, self.model.config.projection_dim), np.float32)
        return np.concatenate(chunks).astype(np.float32)

    def release(self) -> None:
        """Move the encoder off the GPU so diffusion gets the memory (it returns on the next
        `embed`; cached embeddings usually make that unnecessary)."""
        import torch

        self.model.to("cpu")
        self.device = torch.device("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class EmbeddingCache:
    """Patch embeddings by (encoder id, image sha256, working size, crop boxes).

    In memory always; persisted under `root` (one .npz per image and size) when given, so
    reopening a chapter or adding a reference embeds only what is new.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else None
        self._memory: dict[str, np.ndarray] = {}

    def _key(self, encoder_id: str, sha256: str, size: str, role: str) -> str:
        return f"{encoder_id}/{sha256[:2]}/{sha256}_{size}_{role}_g{GEOMETRY_VERSION}"

    def get(
        self, encoder_id: str, sha256: str, size: str, role: str, boxes: np.ndarray
    ) -> np.ndarray | None:
        key = self._key(encoder_id, sha256, size, role)
        if key in self._memory:
            return self._memory[key]
        if self.root is None:
            return None
        path = self.root / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                if not np.array_equal(data["boxes"], boxes):
                    return None
                vectors = data["embeddings"].astype(np.float32)
        except (FileNotFoundError, OSError, ValueError, KeyError):
            return None  # missing or damaged entry: recompute and overwrite
        self._memory[key] = vectors
        return vectors

    def put(
        self,
        encoder_id: str,
        sha256: str,
        size: str,
        role: str,
        boxes: np.ndarray,
        vectors: np.ndarray,
    ) -> None:
        key = self._key(encoder_id, sha256, size, role)
        self._memory[key] = vectors
        if self.root is None:
            return
        buffer = io.BytesIO()
        np.savez(buffer, boxes=boxes, embeddings=vectors)
        atomic_write(self.root / f"{key}.npz", lambda handle: handle.write(buffer.getvalue()))
