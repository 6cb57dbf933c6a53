"""The common model layout and the official source: DIR/sd15/ (diffusers SD1.5) and
DIR/colorflow/ (the ColorFlow hub repo files); a cheap fingerprint of the files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from engine.events import EventSink, ignore


IMAGE_ENCODER_SUBDIR = "image_encoder"
GRAYSD_SUBDIR = "GraySD"


@dataclass(frozen=True)
class ModelPaths:
    """Roots of one model source in the common layout."""

    sd15: Path
    colorflow: Path
    # A models DIR: its files' recorded sha256s (folder_record.FolderCheck.content_id); "" for
    # the presets (official files are pinned, tiny ones generated here).
    content_id: str = ""

    @property
    def image_encoder(self) -> Path:
        return self.colorflow / IMAGE_ENCODER_SUBDIR

    @property
    def graysd(self) -> Path:
        return self.colorflow / GRAYSD_SUBDIR


def fingerprint_models(paths: ModelPaths) -> str:
    """A cheap id of the model files: both roots, then each file's relative path, size and
    mtime (ns), and for a models DIR the content id of its record. Changes when a weight or config file is replaced, retrained in place or touched,
    or when a root points elsewhere; reads no file, so GBs of weights cost only a stat each.

    Every non-hidden file counts (weights, configs, tokenizer files): a spurious change only
    costs a recompute, a missed one a stale page. Hidden entries (e.g. the ".cache" download
    metadata of a local hub folder) are skipped. stat follows the hub cache's symlinks to its blobs.
    """
    digest = hashlib.sha256()
    for root in (paths.sd15, paths.colorflow):
        root = Path(root)
        digest.update(f"root\t{root}\n".encode())
        if not root.is_dir():
            continue
        files = []
        for path in root.rglob("*"):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            files.append((relative.as_posix(), path.stat()))
        for name, stat in sorted(files, key=lambda item: item[0]):
            digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    if paths.content_id:  # a byte changed with the mtime put back still changes the id
        digest.update(f"content\t{paths.content_id}\n".encode())
    return digest.hexdigest()[:20]


def official_models(emit: EventSink = ignore) -> ModelPaths:
    """The official preset: snapshot folders in the Hugging Face cache (HF_HOME respected).

    Never touches the network: a missing file is a ModelError naming each file, its size
    and the command that fetches it (`colorflow models download`).
    """
    from engine.models.hub import official_roots

    return ModelPaths(*official_roots(emit))
