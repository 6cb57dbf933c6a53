"""Per-user folders (platformdirs); nothing is relative to the working directory."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "colorflow"


def cache_dir() -> Path:
    """Cache root; COLORFLOW_CACHE_DIR overrides (tests, portable installs)."""
    override = os.environ.get("COLORFLOW_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME))


def embeddings_dir() -> Path:
    return cache_dir() / "embeddings"


TEXT_EMBEDDINGS_FOLDER = "text-embeddings"  # the T5 prompt embeddings' folder in a cache (icp/text_embeddings.py)


def run_text_embeddings_dir(run_cache_dir: str | os.PathLike | None) -> Path | None:
    """The T5 prompt embeddings' folder inside a run's cache folder (RunSettings.cache_dir); None: the user's."""
    return Path(run_cache_dir) / TEXT_EMBEDDINGS_FOLDER if run_cache_dir else None


def config_dir() -> Path:
    override = os.environ.get("COLORFLOW_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME))
