"""Official models for a new user, without torch: file sizes, verification, destination, free space, licences; the optional line-art files."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.io.storage import human_bytes
from engine.models.hub import DOWNLOAD_MARGIN
from engine.models.hub_cache import hf_cache_dir, local_path
from engine.models.presets import (BASE, LINE_ART_COMPONENTS, VERIFY_LABELS, VERIFY_MEANING, PresetFile, preset_files,
                                   verification_notes)
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


def file_rows(files: list[PresetFile]) -> list[FileRow]:
    """Each file with its size on disk where it is in the hub cache, else its download size."""
    rows = []
    for file in files:
        path = local_path(file)
        rows.append(FileRow(file, path, path.stat().st_size if path else file.approx_bytes))
    return rows


def models_overview(preset: str = "official", components: tuple[str, ...] | None = (BASE,)) -> ModelsOverview:
    """Every file of those components of the preset (default: the base) with its size,
    the hub cache folder, its free space, the licences; the pin notes of the repos listed."""
    rows = file_rows(preset_files(preset, components))
    destination = hf_cache_dir()
    checked = nearest_existing(destination)
    repos = {row.file.repo for row in rows}
    notes = [note for note in verification_notes(preset) if note.split(": ", 1)[0] in repos]
    return ModelsOverview(rows, destination, checked, shutil.disk_usage(checked).free, preset_licences(preset), notes)


@dataclass(frozen=True)
class LineArtStatus:
    """The line-art files of the official preset in the hub cache: every file (present or its download
    size), whether the T5 weights are still needed, and what each style still lacks."""

    rows: list[FileRow]
    t5_cached: bool
    missing: dict[str, tuple[list[PresetFile], int]]  # style -> (files, bytes) as line_art_missing
    pin_notes: list[str]  # why the line-art repos are not pinned further (presets.json `pin_note`)

    @property
    def present(self) -> int:
        return sum(row.installed for row in self.rows)

    @property
    def total_bytes(self) -> int:
        return sum(row.size for row in self.rows)

    def to_download(self) -> tuple[list[PresetFile], int]:
        """What `colorflow models download --line-art` fetches (both styles)."""
        return line_art_missing_union(self.missing.values())

    def style_line(self, style: str) -> str:
        files, total = self.missing[style]
        return f"{style}: ready" if not files else f"{style}: {len(files)} file(s) missing, {human_bytes(total)} to download"

    def as_dict(self) -> dict:
        from engine.models.line_art import DOWNLOAD_COMMAND, LINE_ART_STYLE_NAMES

        files = [{"path": f"{row.file.repo}/{row.file.path}", "bytes": row.size, "installed": row.installed,
                  "component": row.file.component, "styles": list(row.file.styles) or list(LINE_ART_STYLE_NAMES),
                  "size_estimated": row.file.size_estimated, "verified_by": row.file.verify}
                 for row in self.rows]
        missing, total = self.to_download()
        return {"files": files, "total_bytes": self.total_bytes, "to_download_bytes": total,
                "t5_needed": not self.t5_cached, "command": DOWNLOAD_COMMAND,
                "styles": {style: {"missing": [f"{f.repo}/{f.path}" for f in files], "to_download_bytes": size}
                           for style, (files, size) in self.missing.items()}}


def line_art_missing_union(parts) -> tuple[list[PresetFile], int]:
    """The files of several line_art_missing answers, each once, and their size."""
    seen: dict[str, PresetFile] = {}
    for files, _total in parts:
        seen.update({f.key: f for f in files})
    return list(seen.values()), sum(f.approx_bytes for f in seen.values())


def line_art_status(preset: str = "official", cache_dir: Path | None = None) -> LineArtStatus:
    """The line-art files of the preset as `models list` and the Model manager show them (torch is
    imported only to ask whether the prompt embeddings are cached, when a T5 folder is there)."""
    from engine.models.line_art import (LINE_ART_STYLE_NAMES, embeddings_cached, line_art_missing,
                                        official_pixart_root)

    rows = file_rows(preset_files(preset, LINE_ART_COMPONENTS))
    repos = {row.file.repo for row in rows}
    return LineArtStatus(rows, embeddings_cached(official_pixart_root(preset), cache_dir),
                         {style: line_art_missing(preset, style, cache_dir) for style in LINE_ART_STYLE_NAMES},
                         [note for note in verification_notes(preset) if note.split(": ", 1)[0] in repos])
