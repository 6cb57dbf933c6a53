#!/usr/bin/env bash
# Wrap the PyInstaller one-folder bundle (dist/ColorFlow) into ColorFlow-VERSION-ARCH.AppImage.
#
# Needs appimagetool (https://github.com/AppImage/appimagetool/releases) on PATH or in
# $APPIMAGETOOL; without it the script says so and exits 0 (CI machines rarely have it), so the
# onedir build stays the tested artifact. Usage, from the repository root:
#   python packaging/build.py && packaging/linux/build_appimage.sh [DIST_DIR] [OUT_DIR]
# The AppImage runs the same executable: `./ColorFlow-*.AppImage` opens the GUI,
# `./ColorFlow-*.AppImage colorize ...` runs the CLI. Weights are not inside: they go to the
# Hugging Face cache as with every other install.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dist="${1:-$root/dist}"
out="${2:-$dist}"
tool="${APPIMAGETOOL:-$(command -v appimagetool || true)}"
if [[ -z "$tool" ]]; then
    echo "appimagetool not found (set APPIMAGETOOL or put it on PATH); skipping the AppImage" >&2
    exit 0
fi
bundle="$dist/ColorFlow"
if [[ ! -x "$bundle/ColorFlow" ]]; then
    echo "no bundle at $bundle: run python packaging/build.py first" >&2
    exit 1
fi
version="$(python3 -c "import sys; sys.path.insert(0, '$root/packaging'); import spec_helpers; print(spec_helpers.read_version())")"
arch="$(uname -m)"

appdir="$(mktemp -d)/ColorFlow.AppDir"
mkdir -p "$appdir/usr/bin" "$appdir/usr/share/applications" "$appdir/usr/share/icons/hicolor/512x512/apps"
cp -a "$bundle" "$appdir/usr/lib-colorflow"
ln -s ../lib-colorflow/ColorFlow "$appdir/usr/bin/ColorFlow"
cp "$here/colorflow.desktop" "$appdir/colorflow.desktop"
cp "$here/colorflow.desktop" "$appdir/usr/share/applications/colorflow.desktop"
# the icon the spec drew at build time, collected into the bundle's resources
icon="$(find "$bundle" -name colorflow.png -path '*resources*' | head -n 1)"
cp "$icon" "$appdir/colorflow.png"
cp "$icon" "$appdir/usr/share/icons/hicolor/512x512/apps/colorflow.png"
cat > "$appdir/AppRun" <<'RUN'
#!/bin/sh
here="$(dirname "$(readlink -f "$0")")"
exec "$here/usr/lib-colorflow/ColorFlow" "$@"
RUN
chmod +x "$appdir/AppRun"

mkdir -p "$out"
ARCH="$arch" "$tool" --no-appstream "$appdir" "$out/ColorFlow-$version-$arch.AppImage"
echo "wrote $out/ColorFlow-$version-$arch.AppImage"
