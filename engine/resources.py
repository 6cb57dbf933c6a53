"""Access to files in the repository's resources/ folder (bundled by packaging)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def resources_dir() -> Path:
    """resources/ beside the engine package, or inside a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    base = Path(bundle) if bundle else Path(__file__).resolve().parents[1]
    return base / "resources"


def model_config(name: str) -> dict[str, Any]:
    """A JSON architecture config from resources/models/ (e.g. "sd15-unet")."""
    return json.loads((resources_dir() / "models" / f"{name}.json").read_text(encoding="utf-8"))
