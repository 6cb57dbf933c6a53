"""Where evaluation-only weights (FID Inception, aesthetic head) are looked for; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from engine.core.paths import cache_dir


def evaluation_weights_dir() -> Path:
    """ColorFlow's folder for evaluation weights that users fetch by hand: <cache>/evaluation."""
    return cache_dir() / "evaluation"
