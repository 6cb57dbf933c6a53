"""ColorFlow's resource files (resources/, installed as the package colorflow_resources), read through importlib.resources."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from engine.core.errors import ColorFlowError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# The same name in a checkout's editable install, an installed wheel and the desktop bundle
# (setup.py, packaging/spec_helpers.py): no path relative to the source tree.
RESOURCES_PACKAGE = "colorflow_resources"


def resource(*parts: str) -> Traversable:
    """A file or folder of resources/ by its path parts, e.g. resource("models", "presets.json")."""
    try:
        node = files(RESOURCES_PACKAGE)
    except ModuleNotFoundError as exc:  # an editable install made before resources/ became a package
        raise ColorFlowError(f"ColorFlow's resources are not installed (no package {RESOURCES_PACKAGE}); "
                         f"reinstall ColorFlow: `pip install .` (in a checkout: `pip install -e .`)") from exc
    for part in parts:
        node = node / part
    return node


def model_config(name: str) -> dict[str, Any]:
    """A JSON architecture config or the presets from resources/models/ (e.g. "sd15-unet")."""
    return json.loads(resource("models", f"{name}.json").read_text(encoding="utf-8"))
