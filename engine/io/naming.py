"""Output names: ordered, filesystem-safe names for a chapter's pages."""

from __future__ import annotations

import re
from pathlib import Path


def page_folder_name(index: int, name: str) -> str:
    """A safe, ordered name for page `index` (0-based), e.g. `003_page-10`."""
    stem = Path(name).stem
    safe = re.sub(r"[^\w.-]+", "_", stem).strip("._") or "page"
    return f"{index + 1:03d}_{safe[:60]}"
