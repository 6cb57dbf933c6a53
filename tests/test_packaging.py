"""Desktop packaging: spec settings, icons, the Linux xcb check, and (slow) the frozen bundle itself."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGING = REPO_ROOT / "packaging"


def _load(name: str):
    # packaging/ is not a Python package (its name is taken by the PyPI `packaging` library)
    spec = importlib.util.spec_from_file_location(f"colorflow_{name}", PACKAGING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _load("spec_helpers")
build_script = _load("build")


# ---- version, pins, spec --------------------------------------------------------------------

def test_version_comes_from_pyproject_and_matches_the_engine():
    import engine

    version = helpers.read_version(REPO_ROOT / "pyproject.toml")
    assert version == engine.__version__
    assert version.count(".") >= 2


def test_read_version_reads_only_the_project_table(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.other]\nversion = "9.9"\n\n[project]\nname = "x"\nversion = "1.2.3"\n')
    assert helpers.read_version(pyproject) == "1.2.3"


def test_pyinstaller_is_pinned_and_in_the_test_extra():
    import tomllib

    pins = (REPO_ROOT / "constraints" / "cpu.txt").read_text().splitlines()
    assert [line for line in pins if line.lower().startswith("pyinstaller==")]
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert any(req.lower().startswith("pyinstaller") for req in extra)


def test_ci_runs_the_readmes_test_command_with_the_studio_extra_and_ray_is_pinned_never_bundled():
    """Issue 26: the suite's Ray tests need the studio extra, so the README's test command and .ci/run
    (the same command, verbatim) install `.[test,studio]`; Ray is pinned for CI and left out of the frozen app."""
    import re
    import tomllib

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = next(line for line in ci.splitlines() if "pip install" in line)
    assert command in readme.splitlines() and '-e ".[test,studio]"' in command
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [re.split(r"[<>=]", req)[0] for req in extras["studio"]] == ["ray"]
    assert "ray==2.60.0" in (REPO_ROOT / "constraints" / "cpu.txt").read_text().splitlines()
    assert "ray" in helpers.PYTHON_EXCLUDES


def test_spec_is_python_with_platform_branches_and_no_build_machine_paths():
    text = (PACKAGING / "colorflow.spec").read_text(encoding="utf-8")
    tree = ast.parse(text)
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert {"Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE"} <= called
    assert "copy_metadata" in called and "H.package_modules(package)" in text
    assert "console=" in text and "codesign_identity" in text and "icns" in text and "ico" in text
    for baked in ("/home/", "/work/", "site-packages", "C:\\", str(REPO_ROOT)):
        assert baked not in text


def test_package_modules_lists_what_collect_submodules_would_without_importing():
    import pkgutil

    import engine

    walked = {"engine"} | {info.name for info in pkgutil.walk_packages(engine.__path__, "engine.")}
    assert set(helpers.package_modules("engine")) == walked
    clip = helpers.package_modules("transformers.models.clip")
    assert "transformers.models.clip.modeling_clip" in clip and "transformers.models.clip" in clip
    assert not [name for name in helpers.package_modules("diffusers.models") if "flax" in name]


def test_excludes_never_name_a_qt_module_the_app_imports():
    used = set()
    for source in (REPO_ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("PySide6."):
                used.add(node.module)
            elif isinstance(node, ast.Import):
                used.update(alias.name for alias in node.names if alias.name.startswith("PySide6."))
    assert {"PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"} <= used
    assert not used & set(helpers.QT_EXCLUDES)
    assert "PySide6.QtWebEngineCore" in helpers.QT_EXCLUDES and "PySide6.QtQuick" in helpers.QT_EXCLUDES


def test_transformers_exclusions_keep_clip_and_drop_other_families():
    excluded = helpers.excluded_transformers_models()
    assert "transformers.models.clip" not in excluded and "transformers.models.auto" not in excluded
    assert "transformers.models.bert" in excluded and len(excluded) > 100


def test_dropped_files_are_torch_tests_and_headers_not_its_libraries():
    for dest in ("torch/test/Dict_test", "torch/bin/test_api", "torch/bin/TCPStoreTest", "torch/bin/protoc",
                 "torch/include/ATen/ATen.h", "torch/lib/libtorchbind_test.so", "torch\\test\\List_test",
                 "libcudart.so"):
        assert helpers.is_dropped(dest), dest
    for dest in ("torch/lib/libtorch_cpu.so", "torch/lib/libc10.so", "torch/bin/torch_shm_manager",
                 "torch/_C.cpython-311-x86_64-linux-gnu.so", "resources/models/sd15-unet.json",
                 "nvidia/cuda_runtime/lib/libcudart.so.12"):
        assert not helpers.is_dropped(dest), dest


def test_weights_and_cache_files_are_refused(tmp_path):
    cache = Path(os.environ["COLORFLOW_CACHE_DIR"])  # set per test by conftest
    tiny = cache / "tiny-models" / "sd15" / "unet" / "config.json"
    tiny.parent.mkdir(parents=True)
    tiny.write_text("{}")
    weights = tmp_path / "lora.safetensors"
    weights.write_bytes(b"0")
    config = REPO_ROOT / "resources" / "models" / "sd15-unet.json"
    assert helpers.check_not_collected([str(tiny), str(weights), str(config)]) == [str(tiny), str(weights)]
    # sentencepiece's normalisation tables are library data (the T5 tokenizer needs them); a .bin
    # anywhere else, or below that folder, is refused
    table = tmp_path / "site-packages" / "sentencepiece" / "package_data" / "nmt_nfkc.bin"
    hidden = table.parent / "sub" / "model.bin"
    hidden.parent.mkdir(parents=True)
    table.write_bytes(b"0")
    hidden.write_bytes(b"0")
    assert helpers.check_not_collected([str(table), str(hidden)]) == [str(hidden)]


def test_resources_hold_no_weights():
    files = [p for p in (REPO_ROOT / "resources").rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.suffix.lower() in helpers.WEIGHT_SUFFIXES]


def test_resources_are_bundled_as_the_package_the_engine_reads(tmp_path):
    from engine.core.resources import RESOURCES_PACKAGE, model_config

    (tmp_path / "resources" / "models").mkdir(parents=True)
    (tmp_path / "resources" / "__pycache__").mkdir()
    for name in ("__init__.py", "models/presets.json", "__pycache__/__init__.cpython-311.pyc"):
        (tmp_path / "resources" / name).write_text("{}")
    assert helpers.resource_datas(tmp_path) == [
        (str(tmp_path / "resources" / "__init__.py"), "colorflow_resources"),
        (str(tmp_path / "resources" / "models" / "presets.json"), "colorflow_resources/models"),
    ]
    assert helpers.RESOURCES_PACKAGE == RESOURCES_PACKAGE == "colorflow_resources"
    assert "H.resource_datas(ROOT)" in (PACKAGING / "colorflow.spec").read_text(encoding="utf-8")
    shipped = json.loads((REPO_ROOT / "resources" / "models" / "presets.json").read_text(encoding="utf-8"))
    assert model_config("presets") == shipped  # the engine reads the repository's resources/


def test_icons_are_drawn_for_every_platform(tmp_path):
    paths = helpers.make_icons(tmp_path / "icons")
    png = Image.open(paths["png"])
    assert png.size == (512, 512)
    lo, hi = png.convert("L").getextrema()
    assert hi - lo > 100
    assert Image.open(paths["ico"]).format == "ICO"
    assert Image.open(paths["icns"]).format == "ICNS"


def test_build_runs_pyinstaller_on_the_spec_with_the_given_folders(tmp_path, monkeypatch):
    calls = []

    class FinishedBuild:  # stands in for the PyInstaller process: records its command, exits 0
        def __init__(self, command, **popen):
            calls.append(command)
            self.args, self.returncode = command, 0

        def wait(self):
            return 0

    monkeypatch.setattr(build_script.subprocess, "Popen", FinishedBuild)
    bundle = build_script.build(tmp_path / "d", tmp_path / "w")
    assert bundle == tmp_path / "d" / "ColorFlow"
    (command,) = calls
    assert command[:3] == [sys.executable, "-m", "PyInstaller"] and command[3].endswith("colorflow.spec")
    assert command[command.index("--distpath") + 1] == str(tmp_path / "d")
    assert command[command.index("--workpath") + 1] == str(tmp_path / "w")


def test_tree_size_counts_files_once_and_skips_links(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 1000)
    (tmp_path / "g").write_bytes(b"y" * 24)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "f")
    assert build_script.tree_size(tmp_path) == 1024


# ---- Linux: Qt's xcb plugin libraries -------------------------------------------------------

def test_missing_xcb_libraries_are_named_with_their_apt_packages():
    from app.platform_check import xcb_problem

    absent = {"libxcb-cursor.so.0", "libxcb-icccm.so.4"}
    message = xcb_problem({"QT_QPA_PLATFORM": "xcb"}, "linux", lambda soname: soname not in absent)
    assert "libxcb-cursor.so.0" in message and "libxcb-icccm.so.4" in message
    assert "sudo apt-get install -y libxcb-cursor0 libxcb-icccm4" in message.splitlines()[1]
    assert "libxcb-keysyms1" not in message


def test_xcb_check_is_quiet_when_qt_will_not_load_xcb_or_everything_is_there():
    from app.platform_check import xcb_problem

    nothing = lambda soname: False  # noqa: E731 - every library missing
    assert xcb_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux", nothing) is None
    assert xcb_problem({"QT_QPA_PLATFORM": "wayland"}, "linux", nothing) is None
    assert xcb_problem({"XDG_SESSION_TYPE": "wayland"}, "linux", nothing) is None
    assert xcb_problem({}, "win32", nothing) is None and xcb_problem({}, "darwin", nothing) is None
    assert xcb_problem({}, "linux", lambda soname: True) is None
    assert xcb_problem({}, "linux", nothing) is not None
    assert xcb_problem({"QT_QPA_PLATFORM": "xcb:dpi=96"}, "linux", nothing) is not None


def test_library_lookup_uses_the_dynamic_loader():
    from app.platform_check import _loadable

    assert _loadable("libc.so.6") if sys.platform.startswith("linux") else True
    assert not _loadable("libcolorflow-does-not-exist.so.7")


def test_gui_start_exits_cleanly_with_the_message_instead_of_qt_aborting(monkeypatch, capsys):
    import app.platform_check as platform_check
    from app.launcher import run

    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform_check, "_loadable", lambda soname: soname != "libxcb-cursor.so.0")
    assert run([]) == 1
    err = capsys.readouterr().err
    assert "sudo apt-get install -y libxcb-cursor0" in err


# ---- Linux desktop entry and AppImage recipe ------------------------------------------------

def test_desktop_entry_launches_the_bundle():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(PACKAGING / "linux" / "colorflow.desktop")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application" and section["Name"] == "ColorFlow"
    assert section["Exec"].split()[0] == "ColorFlow" and section["Icon"] == "colorflow"
    assert section["Terminal"] == "false" and section["Categories"].endswith(";")


@pytest.mark.skipif(shutil.which("bash") is None, reason="the AppImage recipe is a bash script")
def test_appimage_recipe_skips_without_appimagetool(tmp_path):
    script = PACKAGING / "linux" / "build_appimage.sh"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(script), str(tmp_path / "dist")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "appimagetool not found" in result.stderr
    assert not list(tmp_path.rglob("*.AppImage"))


# ---- the frozen bundle (slow: one PyInstaller build for the module) -------------------------

def _frozen_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        COLORFLOW_CACHE_DIR=str(tmp / "cache"), COLORFLOW_CONFIG_DIR=str(tmp / "config"),
        HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen",
    )
    return env


@pytest.fixture(scope="module")
def frozen_bundle(request, tmp_path_factory):
    """The CPU bundle, built once into a temporary folder (never into the repository). conftest
    starts the build when the session begins, so it overlaps the rest of the suite."""
    pytest.importorskip("PyInstaller")
    started = getattr(request.config, "colorflow_bundle_build", None)
    if started is None:  # run on its own (e.g. `pytest tests/test_packaging.py -k frozen`)
        root = tmp_path_factory.mktemp("frozen")
        process = build_script.start_build(root / "dist", root / "work")
    else:
        root, process = started
    log = root / "build.log"
    try:
        yield build_script.finish_build(process, root / "dist")
    except subprocess.CalledProcessError:
        pytest.fail(f"PyInstaller failed:\n{log.read_text()[-4000:] if log.exists() else ''}")
    finally:
        shutil.rmtree(root, ignore_errors=True)  # ~1 GB; pytest keeps its last three temp folders


@pytest.mark.slow
def test_frozen_bundle_runs_the_cli_and_the_gui(frozen_bundle, tmp_path):
    from engine.io.demo import make_demo_chapter

    exe = frozen_bundle / "ColorFlow"
    env = _frozen_env(tmp_path)
    version = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True, timeout=120)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"colorflow {helpers.read_version()}"
    listing = subprocess.run([str(exe), "models", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr  # the presets are read from inside the bundle
    assert "official  0/" in listing.stdout and "CreativeML OpenRAIL-M" in listing.stdout

    # no weights, caches or build-machine paths inside the bundle
    files = [p for p in frozen_bundle.rglob("*") if p.is_file() and not p.is_symlink()]
    assert not [p for p in files if p.suffix.lower() in helpers.WEIGHT_SUFFIXES and "torch" not in p.parts
                and not helpers.is_library_table(p)]
    assert not [p for p in files if "tiny-models" in p.parts or "huggingface" in p.parts]
    baked = [str(REPO_ROOT).encode()]
    if sys.prefix != sys.base_prefix:  # a virtual environment: its folder must not appear either
        baked.append(str(Path(sys.prefix).resolve()).encode())
    assert not [p for p in files if any(b in p.read_bytes() for b in baked)]

    chapter, refs = make_demo_chapter(tmp_path / "demo", pages=2, refs=2)
    out = tmp_path / "out"
    colorize = subprocess.run(
        [str(exe), "colorize", str(chapter), "--refs", str(refs), "--out", str(out), "--models", "tiny",
         "--size", "256x384", "--steps", "2", "--format", "png"],
        env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert colorize.returncode == 0, colorize.stderr[-3000:]
    pages = sorted(out.glob("*.png"))
    assert len(pages) == 2
    for page in pages:
        pixels = np.asarray(Image.open(page).convert("RGB")).astype(int)
        assert pixels.shape[:2] == (512, 360)
        assert np.abs(pixels[..., 0] - pixels[..., 1]).mean() > 2  # colored, not gray
        assert pixels.std() > 10
    assert (tmp_path / "cache" / "tiny-models").is_dir()  # the same cache a source install uses
    # the source install, same tiny models (same cache) and arguments: the very same pixels
    source_out = tmp_path / "source-out"
    source = subprocess.run(
        [sys.executable, str(REPO_ROOT / "main.py"), "colorize", str(chapter), "--refs", str(refs), "--out",
         str(source_out), "--models", "tiny", "--size", "256x384", "--steps", "2", "--format", "png"],
        env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert source.returncode == 0, source.stderr[-3000:]
    for page in pages:
        assert np.array_equal(np.asarray(Image.open(page)), np.asarray(Image.open(source_out / page.name))), page.name

    shot = tmp_path / "window.png"
    gui = subprocess.run([str(exe), "--demo", "--screenshot", str(shot)], env=env, capture_output=True,
                         text=True, timeout=400, cwd=tmp_path)
    assert gui.returncode == 0, gui.stderr[-3000:]
    assert shot.stat().st_size > 0
    lo, hi = Image.open(shot).convert("L").getextrema()
    assert hi - lo > 50


def test_the_user_guides_screenshots_are_bundled_where_its_links_point():
    import posixpath
    import re

    # bundle path (relative to the bundle's root) -> source file, as the spec collects them
    bundled = {posixpath.join(dest.replace("\\", "/"), Path(src).name): src
               for src, dest in helpers.resource_datas(REPO_ROOT) + helpers.guide_screenshot_datas(REPO_ROOT)}
    guide = "colorflow_resources/docs/user-guide.md"
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", Path(bundled[guide]).read_text(encoding="utf-8"))
    present = [link for link in links if (REPO_ROOT / "resources" / "docs" / link).is_file()]
    assert len(present) >= 6  # the screenshots the repository has
    for link in present:
        assert posixpath.normpath(posixpath.join(posixpath.dirname(guide), link)) in bundled, link
    assert "H.guide_screenshot_datas(ROOT)" in (PACKAGING / "colorflow.spec").read_text(encoding="utf-8")
