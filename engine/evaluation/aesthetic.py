"""Aesthetic score (AS): the LAION improved-aesthetic-predictor head on CLIP ViT-L/14 image embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from engine.core.errors import ModelError
from engine.evaluation.weights import evaluation_weights_dir

# christophschuhmann/improved-aesthetic-predictor: a stack of linear layers (no activations)
# with dropouts between the first four, on L2-normalised CLIP ViT-L/14 image embeddings
# (768-d). State-dict keys layers.{0,2,4,6,7}.{weight,bias}; dropout layers hold no weights.
LAYER_SIZES = (768, 1024, 128, 64, 16, 1)
DROPOUTS = (0.2, 0.2, 0.1)
EMBEDDING_DIM = LAYER_SIZES[0]
HEAD_FILENAME = "sac+logos+ava1-l14-linearMSE.pth"
HEAD_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
    "sac%2Blogos%2Bava1-l14-linearMSE.pth"
)
CLIP_REPO = "openai/clip-vit-large-patch14"


def build_aesthetic_head():
    """The predictor with random weights: a module whose `layers` Sequential maps (N, 768) -> (N, 1)."""
    from torch import nn

    modules: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(LAYER_SIZES, LAYER_SIZES[1:])):
        modules.append(nn.Linear(size_in, size_out))
        if index < len(DROPOUTS):
            modules.append(nn.Dropout(DROPOUTS[index]))
    head = nn.Module()
    head.layers = nn.Sequential(*modules)
    return head.eval()


def find_head_weights(path: str | Path | None = None) -> Path:
    """The head's weights (.pth or .safetensors): `path`, else HEAD_FILENAME in the evaluation folder."""
    if path is not None:
        given = Path(path).expanduser()
        if given.is_file():
            return given
        raise ModelError(f"{given}: aesthetic predictor weights file does not exist. {_how_to_get_head()}")
    for name in (HEAD_FILENAME, Path(HEAD_FILENAME).with_suffix(".safetensors").name):
        candidate = evaluation_weights_dir() / name
        if candidate.is_file():
            return candidate
    raise ModelError(f"AS needs the aesthetic predictor weights; none in {evaluation_weights_dir()}. {_how_to_get_head()}")


def _how_to_get_head() -> str:
    return (
        f"ColorFlow never downloads them by itself: on a machine with network, download {HEAD_URL} "
        f"(4 MB) and put it in {evaluation_weights_dir()} as {HEAD_FILENAME}, or give its path "
        "(aesthetic_weights / --aesthetic-weights)"
    )


def find_aesthetic_clip(path: str | Path | None = None) -> Path:
    """The CLIP ViT-L/14 folder the head was trained on: `path`, else the Hugging Face cache's
    snapshot of openai/clip-vit-large-patch14 (looked up offline, never downloaded)."""
    if path is not None:
        given = Path(path).expanduser()
        if (given / "config.json").is_file():
            return given
        raise ModelError(f"{given}: not a CLIP model folder (config.json missing). {_how_to_get_clip()}")
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(CLIP_REPO, "config.json")
    if isinstance(config, str) and (Path(config).parent / "model.safetensors").is_file():
        return Path(config).parent
    raise ModelError(f"AS needs the CLIP ViT-L/14 image encoder; {CLIP_REPO} is not in the Hugging Face cache. {_how_to_get_clip()}")


def _how_to_get_clip() -> str:
    return (
        f"Fetch it once with `hf download {CLIP_REPO} config.json model.safetensors` (1.7 GB, into the "
        "Hugging Face cache), or give a folder holding a CLIP ViT-L/14 config.json and model.safetensors "
        "(aesthetic_clip / --aesthetic-clip)"
    )


class AestheticScorer:
    """Images -> aesthetic scores (about 1..10; the paper reports means near 5)."""

    def __init__(self, head_weights: str | Path, clip_dir: str | Path | None = None, device: str = "cpu",
                 embedder=None) -> None:
        import torch

        from engine.io.checkpoints import load_strict
        from engine.io.weight_files import read_state_dict

        if embedder is None:
            from engine.rap.embedding import ClipEmbedder

            embedder = ClipEmbedder(clip_dir, device=device)
        dim = embedder.model.config.projection_dim
        if dim != EMBEDDING_DIM:
            raise ModelError(
                f"{clip_dir}: gives {dim}-d CLIP embeddings; the aesthetic predictor needs CLIP ViT-L/14 "
                f"({EMBEDDING_DIM}-d). {_how_to_get_clip()}"
            )
        self.embedder = embedder
        self.head = build_aesthetic_head()
        head_weights = Path(head_weights)
        load_strict(self.head, read_state_dict(head_weights), f"{head_weights} (aesthetic predictor head)")
        self.device = torch.device(device)
        self.head.to(self.device)

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, 768) CLIP image embeddings, normalised here to unit length -> (N,) scores."""
        import torch

        vectors = np.asarray(embeddings, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1, norms)
        with torch.inference_mode():
            output = self.head.layers(torch.from_numpy(vectors).to(self.device))
        return output[:, 0].double().cpu().numpy()

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.score_embeddings(self.embedder.embed(images))
