"""Official models for a new user, without torch: file sizes, verification, destination, free space, licences."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.io.storage import human_bytes
from engine.models.hub import DOWNLOAD_MARGIN
from engine.models.hub_cache import hf_cache_dir, local_path
from engine.models.presets import VERIFY_LABELS, VERIFY_MEANING, PresetFile, preset_files, verification_notes
from engine.core.resources import model_config
from engine.io.storage import nearest_existing


@dataclass(frozen=True)
class Licence:
    """The licence of a group of model files, as the preset data states it (with its URLs)."""

    component: str
    repo: str
    name: str
    summary: str
    url: str
    model_card: str

    def lines(self) -> list[str]:
        """Name and what it covers; the gist; the URLs of the terms and of the model card."""
        return [f"{self.name}: {self.component}, {self.repo}",
                f"{self.summary}; terms: {self.url}; model card: {self.model_card}"]


@dataclass(frozen=True)
class FileRow:
    """One preset file: installed (its size on disk) or not (the expected download size)."""

    file: PresetFile
    local: Path | None
    size: int

    @property
    def installed(self) -> bool:
        return self.local is not None

    def size_text(self) -> str:
        return human_bytes(self.size) if self.installed else f"~{human_bytes(self.size)}"


@dataclass(frozen=True)
class ModelsOverview:
    """Sizes, destination folder, free space and licences of a preset."""

    rows: list[FileRow]
    destination: Path  # the hub cache folder the files go to
    space_checked_at: Path  # the nearest existing folder, where free space was measured
    free_bytes: int
    licences: list[Licence]
    pin_notes: list[str]  # why a repo is not pinned further (presets.json `pin_note`)

    @property
    def installed_bytes(self) -> int:
        return sum(r.size for r in self.rows if r.installed)

    @property
    def to_download_bytes(self) -> int:
        return sum(r.size for r in self.rows if not r.installed)

    @property
    def total_bytes(self) -> int:
        return self.installed_bytes + self.to_download_bytes

    @property
    def missing(self) -> int:
        return sum(1 for r in self.rows if not r.installed)

    @property
    def low_space(self) -> bool:
        """Whether the free space is below what is still to download (with the margin the
        download itself insists on, so this warns exactly when a download would be refused)."""
        return self.to_download_bytes > 0 and self.to_download_bytes * DOWNLOAD_MARGIN > self.free_bytes

    def verification_lines(self) -> list[str]:
        """One line per way of verifying used by the files (how many, what it means), then the
        presets' notes on what could not be pinned."""
        counts = {mode: sum(r.file.verify == mode for r in self.rows) for mode in VERIFY_LABELS}
        return [f"{mode} ({count} files): {VERIFY_LABELS[mode]} — {VERIFY_MEANING[mode]}"
                for mode, count in counts.items() if count] + self.pin_notes

    def space_text(self) -> str:
        return f"{human_bytes(self.free_bytes)} free (measured at {self.space_checked_at})"

    def warning(self) -> str | None:
        """A one-line warning when the download does not fit, else None."""
        if not self.low_space:
            return None
        return (
            f"not enough free disk space: {human_bytes(self.to_download_bytes)} still to download "
            f"(+{round((DOWNLOAD_MARGIN - 1) * 100)}% margin) but only {human_bytes(self.free_bytes)} free "
            f"in {self.destination}; free some space or set HF_HOME to a folder on a larger disk"
        )


def preset_licences(preset: str = "official") -> list[Licence]:
    """The licences the preset data records, one per hub repo and per file group with its own."""
    licences = []
    for source in model_config("presets")[preset].get("sources", {}).values():
        entries = [source["licence"]] if "licence" in source else []
        entries += source.get("file_licences", [])
        for entry in entries:
            licences.append(Licence(entry["component"], source["repo"], entry["name"], entry["summary"],
                                    entry["url"], entry["model_card"]))
    return licences


def models_overview(preset: str = "official") -> ModelsOverview:
    """Every file of the preset with its size, the hub cache folder, its free space, the licences."""
    rows = []
    for file in preset_files(preset):
        path = local_path(file)
        rows.append(FileRow(file, path, path.stat().st_size if path else file.approx_bytes))
    destination = hf_cache_dir()
    checked = nearest_existing(destination)
    return ModelsOverview(rows, destination, checked, shutil.disk_usage(checked).free, preset_licences(preset),
                          verification_notes(preset))
