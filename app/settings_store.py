"""settings.json on disk: versioned and migrated; a damaged file is kept aside and reported, never silently reset."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from engine.core.errors import printable
from engine.io.fileio import atomic_write_json
from engine.core.paths import config_dir

from .settings import MAX_RECENT, AppSettings

SETTINGS_FILE = "settings.json"
# 1: the "version" field; keep_ink may be null (on, off with the official procedure). 2: guidance may be
# null (each page's family's official default: 7.5 SD, 4.5 PixArt); 7.5, the old default the dialog saved, becomes null
SETTINGS_VERSION = 2
OLD_DEFAULT_GUIDANCE = 7.5
# "window" (the layout, optional) is not a new version: a reader without it ignores it, and it is only a convenience


@dataclass
class LoadedSettings:
    settings: AppSettings
    problem: str | None = None  # one line for the user when the file was damaged (it is then kept aside)


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def save_settings(settings: AppSettings, path: Path | None = None) -> None:
    payload = {"version": SETTINGS_VERSION, "run": asdict(settings.run), "recent": settings.recent,
               "projects_dir": settings.projects_dir, "window": settings.window}
    atomic_write_json(path or settings_path(), payload)


def load_settings(path: Path | None = None) -> LoadedSettings:
    """The saved settings. Whatever is wrong in the file costs only the settings it concerns: the
    file is renamed `settings.json.damaged-<time>`, the valid rest is written back, and `problem`
    says so once."""
    path = path or settings_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return LoadedSettings(AppSettings())
    except OSError as exc:
        settings, problems = AppSettings(), [f"unreadable: {exc.strerror}"]
    else:
        settings, problems = parse_settings(raw)
    if not problems:
        return LoadedSettings(settings)
    return LoadedSettings(settings, _keep_aside_and_repair(path, settings, problems))


def parse_settings(raw: bytes) -> tuple[AppSettings, list[str]]:
    """Settings from the file's bytes, each value checked on its own, and what was wrong."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # bad UTF-8 or bad JSON
        return AppSettings(), [f"not valid JSON: {exc}"]
    if not isinstance(data, dict):
        return AppSettings(), ["not a JSON object"]
    data, problems = migrate(data)
    defaults = AppSettings()
    run = _checked(type(defaults.run), data.get("run", {}), "run", problems)
    recent = data.get("recent", [])
    if not isinstance(recent, list):
        problems.append("recent is not a list of paths")
        recent = []
    elif not all(isinstance(entry, str) for entry in recent):
        problems.append("recent: entries that are not paths were dropped")
        recent = [entry for entry in recent if isinstance(entry, str)]
    projects_dir = data.get("projects_dir")
    if projects_dir is not None and not isinstance(projects_dir, str):
        problems.append("projects_dir is not a folder path")
        projects_dir = None
    window = _checked_window(data.get("window", {}), problems)
    return AppSettings(run, recent[:MAX_RECENT], projects_dir, window), problems


def _checked_window(window, problems: list[str]) -> dict:
    """The saved window layout (app/window_layout.py: geometry x, y, width, height; maximized; the
    docks' state in base64), or none when any part of it is not what was saved."""
    if window == {}:
        return {}
    geometry = window.get("geometry") if isinstance(window, dict) else None
    valid = (isinstance(geometry, list) and len(geometry) == 4 and all(type(v) is int for v in geometry)
             and geometry[2] > 0 and geometry[3] > 0 and type(window.get("maximized", False)) is bool
             and isinstance(window.get("docks", ""), str) and window.get("docks", "").isascii())
    if not valid:
        problems.append("window: not a saved window layout (the window opens at its first-start size)")
        return {}
    return window


def migrate(data: dict) -> tuple[dict, list[str]]:
    """`data` in the current layout, and what makes its version unreadable (its known settings are
    still read: the caller keeps what it can)."""
    if "version" not in data:  # before versions: the same keys; keep_ink true was the default "on"
        run = data.get("run", {})
        if isinstance(run, dict) and run.get("keep_ink") is True:
            run = {**run, "keep_ink": None}  # on, and off with the official procedure, as it behaved
        data = {**data, "run": run, "version": 1}
    version = data["version"]
    if type(version) is not int or version < 1:
        return data, [f"version {version!r} is not a version number"]
    if version > SETTINGS_VERSION:
        return data, [f"version {version} is newer than this ColorFlow reads ({SETTINGS_VERSION})"]
    if version == 1:  # the dialog saved the box's 7.5 untouched: the family default, as it behaved for every page
        run = data.get("run", {})
        if isinstance(run, dict) and run.get("guidance") == OLD_DEFAULT_GUIDANCE:
            run = {**run, "guidance": None}
        data = {**data, "run": run, "version": SETTINGS_VERSION}
    return data, []


def _checked(cls, values, where: str, problems: list[str]):
    """`cls` from saved `values`, each checked alone by `cls` itself; a bad one keeps its default.
    Names `cls` no longer has (options since removed) are dropped quietly."""
    if not isinstance(values, dict):
        problems.append(f"{where} is not a group of settings")
        return cls()
    known = {f.name for f in fields(cls)}
    good = {}
    for name, value in values.items():
        if name not in known:
            continue
        try:
            cls(**{name: value})
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}.{name}: {exc}")
        else:
            good[name] = value
    try:
        return cls(**good)
    except (TypeError, ValueError) as exc:  # each fine alone, not together
        problems.append(f"{where}: {exc}")
        return cls()


def _keep_aside_and_repair(path: Path, settings: AppSettings, problems: list[str]) -> str:
    """Rename the damaged file beside itself, write the valid settings back; the user's one line."""
    what = f"Settings file {path} was damaged ({'; '.join(problems)})"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for count in range(2, 100):
        if not aside.exists():
            break
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{count}")
    try:
        path.rename(aside)
    except OSError as exc:
        return printable(f"{what}; it could not be kept aside ({exc.strerror}): defaults are used for what "
                         "it lost — move or fix it, then check Edit ▸ Settings")
    try:
        save_settings(settings, path)
    except OSError as exc:
        return printable(f"{what}: kept as {aside.name}; the repaired file could not be written "
                         f"({exc.strerror}) — check the folder's permissions")
    return printable(f"{what}: kept as {aside.name} beside it; the valid settings were kept — "
                     "check Edit ▸ Settings")
