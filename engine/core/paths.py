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


def config_dir() -> Path:
    override = os.environ.get("COLORFLOW_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME))
