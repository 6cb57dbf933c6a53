"""What decides a Ray worker's pixels (software versions, model bytes) and how it differs from this computer's."""

from __future__ import annotations

import hashlib
from importlib import metadata

PACKAGE = "colorflow-desktop"
# The libraries whose versions can change a page's bytes: the tensor math, the models' code, their files, the images.
PIXEL_PACKAGES = ("torch", "diffusers", "transformers", "peft", "safetensors", "numpy", "Pillow")
MODELS = "models"
ADVICE = {MODELS: "Give every node the same models: the same folder, or the same official downloads (docs/studio.md)"}
VERSIONS_ADVICE = "Install the same versions (and the same models) on every node (docs/studio.md)"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        if package == PACKAGE:  # run from a source tree that was never installed
            import engine

            return engine.__version__
        return "not installed"


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def models_identity(models: str) -> str:
    """The models' content, comparable across machines, hashing no file: a models DIR its content id (the sha256s
    its folder record holds, checked by resolve_models); `official` its pins (code) and the sha256s this machine's
    lock recorded for the base files (trust on first use: a machine's own); `tiny` its name (generated from a
    seed by this version's code)."""
    if models == "tiny":
        from engine.models.sources import TINY_VERSION

        return f"tiny v{TINY_VERSION}"
    if models == "official":
        from engine.models.pins import read_lock
        from engine.models.presets import BASE, preset_files

        files, lock = preset_files("official", None), read_lock()
        pins = _digest(sorted(f"{f.key}\t{f.revision}\t{f.sha256}" for f in files))
        recorded = _digest(sorted(f"{f.key}\t{(lock.get(f.key) or {}).get('sha256')}" for f in files
                                  if f.component == BASE))
        return f"official, pins {pins}, recorded sha256s {recorded}"
    from engine.models.sources import resolve_models

    return f"folder content {resolve_models(models).content_id}"


def software_and_models(models: str) -> dict[str, str]:
    """This process's identity for `models` (a preset name or a models DIR): what makes its pages' bytes."""
    return {PACKAGE: _version(PACKAGE), **{package: _version(package) for package in PIXEL_PACKAGES},
            MODELS: models_identity(models)}


def identity_differences(driver: dict[str, str], worker: dict[str, str]) -> list[str]:
    """One line per item of `driver` (software_and_models here) that `worker` (PageWorker.identity: the same
    items, its `hostname` and `device`) has otherwise, naming the node and both values; [] when none."""
    node = worker.get("hostname", "?")
    return [f"Ray worker on node {node} differs from this computer: {item} {worker.get(item, 'unknown')} there, "
            f"{value} here; its pages would not match a local run's bytes. {ADVICE.get(item, VERSIONS_ADVICE)}"
            for item, value in driver.items() if worker.get(item) != value]
