"""The files of a model preset (resources/models/presets.json) and how each one is verified."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from engine.core.errors import ModelError
from engine.core.resources import model_config

PRESETS_FILE = "resources/models/presets.json"
TOFU, REVISION, SHA256 = "tofu", "revision", "sha256"  # how a file is verified, weakest first
VERIFY_LABELS = {TOFU: "trust on first use", REVISION: "pinned hub revision", SHA256: "published sha256"}
VERIFY_MEANING = {
    TOFU: "no published sha256 or pinned hub revision is known for them, so downloads follow each "
          "repository's main branch; a file's sha256 is recorded at its first download (compared "
          "with the hub's own where the hub gives one) and checked before every use",
    REVISION: "downloaded at the hub commit the presets name, whose files cannot change; the hub's "
              "sha256 of each large file at that commit is checked, then recorded and checked before every use",
    SHA256: "a download or a file in the cache with other bytes is refused",
}
# The components of a preset: what every run needs, and the line-art files fetched only when a
# user first picks a line-art style (the T5 text encoder's weights only until the prompt
# embeddings are cached: engine/models/line_art.py).
BASE, LINE_ART, LINE_ART_TEXT_ENCODER = "base", "line-art", "line-art-text-encoder"
COMPONENTS = (BASE, LINE_ART, LINE_ART_TEXT_ENCODER)
LINE_ART_COMPONENTS = (LINE_ART, LINE_ART_TEXT_ENCODER)
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PresetFile:
    """One file of a preset: its root ("sd15", "colorflow" or "pixart"), hub repo and path in it, and how
    its content is verified (`verify`: TOFU, REVISION or SHA256, with where the pin comes from); its
    component (BASE or a line-art one), the input styles it serves (empty: every style of its component),
    and whether its size is an estimate (not read from the hub: the presets' size_note says how)."""

    root: str
    repo: str
    path: str
    approx_bytes: int
    verify: str = TOFU
    revision: str | None = None  # the full hub commit downloads are pinned to (the whole repo's)
    sha256: str | None = None  # the published sha256 of the file
    provenance: str = ""  # the source of the revision or sha256
    component: str = BASE
    styles: tuple[str, ...] = ()
    size_estimated: bool = False

    @property
    def key(self) -> str:
        return f"{self.repo}:{self.path}"


def _refuse(where: str, problem: str) -> ModelError:
    return ModelError(f"{PRESETS_FILE}: {where}: {problem}; fix the presets (see resources/README.md)")


def _source_revision(root: str, source: dict[str, Any]) -> tuple[str | None, str]:
    """(commit, its source) of a repo pinned to a hub revision, else (None, "")."""
    pinned = source.get("revision")
    if pinned is None:
        return None, ""
    commit, origin = pinned.get("commit", ""), pinned.get("source", "")
    if not _COMMIT.fullmatch(commit):
        raise _refuse(f"{root} revision {commit!r}", "the hub pins only a full 40-character commit hash")
    if not origin:
        raise _refuse(f"{root} revision {commit}", "say where it comes from in its source")
    return commit, origin


def _preset_file(root: str, source: dict[str, Any], item: dict[str, Any], revision: str | None,
                 revision_source: str) -> PresetFile:
    """One file entry, refused when its `verify` does not match the pins it carries."""
    where, verify, sha256 = f"{source['repo']}/{item['path']}", item.get("verify"), item.get("sha256")
    if verify not in VERIFY_LABELS:
        raise _refuse(where, f"verify is {verify!r}, not tofu, revision or sha256")
    if sha256 is not None:
        if not _SHA256.fullmatch(sha256):
            raise _refuse(where, "a sha256 is 64 hex digits in lower case")
        if not item.get("sha256_source"):
            raise _refuse(where, "a published sha256 needs its sha256_source")
    strongest = SHA256 if sha256 else REVISION if revision else TOFU
    if verify != strongest:
        have = "no revision" if verify == REVISION and not revision else f"says {verify}"
        raise _refuse(where, f"{have}, but its pins make it {strongest}")
    provenance = item.get("sha256_source", "") if sha256 else revision_source
    component = item.get("component", source.get("component", BASE))
    if component not in COMPONENTS:
        raise _refuse(where, f"component is {component!r}, not one of {', '.join(COMPONENTS)}")
    return PresetFile(root, source["repo"], item["path"], int(item["approx_bytes"]), verify, revision, sha256,
                      provenance, component, tuple(item.get("styles", ())), bool(item.get("size_estimated", False)))


def parse_preset_files(presets: dict[str, Any], preset: str) -> list[PresetFile]:
    """The files of `preset` in the presets data (every component), each with how it is verified."""
    if preset not in presets:
        raise ModelError(f"unknown model preset {preset!r}; known: {', '.join(presets)}")
    files = []
    for root, source in presets[preset]["sources"].items():
        revision, revision_source = _source_revision(root, source)
        files += [_preset_file(root, source, item, revision, revision_source) for item in source["files"]]
    return files


def preset_files(preset: str = "official", components: Iterable[str] | None = (BASE,)) -> list[PresetFile]:
    """The files of `preset` in those `components` (default: the base, what every run needs; None: all)."""
    files = parse_preset_files(model_config("presets"), preset)
    return files if components is None else [f for f in files if f.component in tuple(components)]


def verification_notes(preset: str = "official") -> list[str]:
    """Why a repo of the preset is not pinned further, as the presets record it (`pin_note`)."""
    return [f"{source['repo']}: {source['pin_note']}"
            for source in model_config("presets")[preset]["sources"].values() if source.get("pin_note")]
