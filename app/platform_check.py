"""Before Qt starts on Linux: no display to open a window on, or the apt packages Qt's xcb plugin needs and are missing."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

# The libraries Qt's xcb platform plugin (libqxcb.so and libQt6XcbQpa.so) links against and a
# desktop install may lack, with the Debian/Ubuntu package that provides each. Qt itself only
# prints "Could not load the Qt platform plugin xcb" and aborts with a core dump when one is
# missing, without naming it. Libraries QtGui needs on every platform (libGL, libEGL,
# fontconfig) fail at import instead, with their names, so they are not repeated here.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}


def uses_xcb(environ: Mapping[str, str], platform: str | None = None) -> bool:
    """Whether Qt will load its xcb plugin: Linux, and QT_QPA_PLATFORM unset or naming xcb first."""
    if not (platform or sys.platform).startswith("linux"):
        return False
    requested = environ.get("QT_QPA_PLATFORM", "").strip()
    if requested:
        return requested.split(";")[0].split(":")[0] == "xcb"
    # unset: Qt 6 picks its wayland plugin in a Wayland session, and xcb otherwise
    return environ.get("XDG_SESSION_TYPE", "").lower() != "wayland"


def _loadable(soname: str) -> bool:
    """The dynamic loader finds soname: beside a frozen bundle's libraries, or on the system."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle and (Path(bundle) / soname).exists():
        return True
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_xcb_libraries(lookup: Callable[[str], bool] | None = None) -> list[tuple[str, str]]:
    """(soname, apt package) for each xcb plugin library the loader cannot find."""
    lookup = lookup or _loadable
    return [(soname, package) for soname, package in XCB_LIBRARIES.items() if not lookup(soname)]


def xcb_problem(environ: Mapping[str, str] | None = None, platform: str | None = None,
                lookup: Callable[[str], bool] | None = None) -> str | None:
    """A message naming the apt packages to install, or None when Qt's xcb plugin can load."""
    environ = os.environ if environ is None else environ
    if not uses_xcb(environ, platform):
        return None
    missing = missing_xcb_libraries(lookup)
    if not missing:
        return None
    packages = " ".join(package for _soname, package in missing)
    libraries = ", ".join(soname for soname, _package in missing)
    return (
        "ColorFlow cannot open its window: Qt's X11 (xcb) plugin needs system libraries that are "
        f"not installed ({libraries}).\n"
        f"Install them (Debian/Ubuntu): sudo apt-get install -y {packages}\n"
        "The batch commands (`colorflow colorize ...`) work without them."
    )


NO_DISPLAY = "no display: run `colorflow` for batch work, or set QT_QPA_PLATFORM=offscreen"


def display_problem(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str | None:
    """NO_DISPLAY on Linux when no X11 or Wayland display is set and no Qt platform is chosen:
    Qt would abort there (exit 134) with a hint about libxcb-cursor that does not apply."""
    environ = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux") or environ.get("QT_QPA_PLATFORM", "").strip():
        return None
    return None if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY") else NO_DISPLAY
