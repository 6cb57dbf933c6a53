"""Output names: ordered, filesystem-safe names for a chapter's pages."""

from __future__ import annotations

import re
from pathlib import Path


def page_folder_name(index: int, name: str) -> str:
    """A safe, ordered name for page `index` (0-based), e.g. `003_page-10`."""
    return f"{index + 1:03d}_{safe_stem(name, 'page')}"


def safe_stem(name: str, fallback: str) -> str:
    """`safe_name` of a file name's stem (its last part, without suffix)."""
    return safe_name(Path(name).stem, fallback)


def safe_name(text: str, fallback: str) -> str:
    """A file-name-safe form of `text`: letters, digits, '_', '-' and inner dots only, never empty
    (`fallback`), never '.' or '..', so it cannot name another folder. 60 characters, and at most 180
    bytes: with a temp file's prefix and suffix around it the name stays under the 255 bytes file
    systems allow, also for 4-byte characters (emoji)."""
    safe = re.sub(r"[^\w.-]+", "_", text).strip("._") or fallback
    return cut_to_bytes(safe[:60], 180)


def cut_to_bytes(text: str, max_bytes: int) -> str:
    """`text` shortened to at most `max_bytes` bytes in UTF-8, cut between characters: file
    systems limit a name to 255 bytes, and one Japanese character is 3 of them."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
