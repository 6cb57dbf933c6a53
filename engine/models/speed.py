"""Measured seconds per page, stored per model source by `colorflow models probe` (never guessed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.io.fileio import atomic_write_json
from engine.core.paths import config_dir

PROBE_FILE = "speed-probe.json"
STAGES = ("ScreenStyle", "RAP", "ICP", "GSRP")  # the per-page stages a probe times


def probe_path() -> Path:
    return config_dir() / PROBE_FILE


def probe_key(models: str) -> str:
    """`official`, `tiny`, or the absolute path of a models folder."""
    return models if models in ("official", "tiny") else str(Path(models).expanduser().resolve())


def read_probes() -> dict[str, dict[str, Any]]:
    """Every stored probe by model source; a missing or unreadable file means none measured
    (a speed note is never worth an error)."""
    try:
        data = json.loads(probe_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def last_probe(models: str) -> dict[str, Any] | None:
    entry = read_probes().get(probe_key(models))
    return entry if isinstance(entry, dict) and "page_s" in entry else None


def store_probe(result: dict[str, Any]) -> None:
    """Keep `result` as the last probe of its model source (atomic write; others kept)."""
    probes = read_probes()
    probes[probe_key(result["models"])] = result
    atomic_write_json(probe_path(), probes)


def describe_probe(result: dict[str, Any]) -> str:
    """12.3 s/page on cuda:0 (2026-11-25, 10 steps, 512x800)"""
    date = str(result.get("measured", ""))[:10]
    steps = f"{result['steps']} step{'' if result['steps'] == 1 else 's'}"
    return f"{result['page_s']:.1f} s/page on {result['device']} ({date}, {steps}, {result['size']})"


def probe_line(models: str = "official") -> str:
    """"last probe: ..." or how to measure it."""
    result = last_probe(models)
    if result is not None:
        return f"last probe: {describe_probe(result)}"
    option = "" if models == "official" else f" --models {models}"
    return f"not measured — run `colorflow models probe{option}`"
