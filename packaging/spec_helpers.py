"""Build settings shared by colorflow.spec, build.py and the tests: version, excludes, icons."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "ColorFlow"  # the GUI executable, the bundle folder and the macOS .app
CLI_NAME = "colorflow-cli"  # console twin: Windows/macOS GUI executables have no console
BUNDLE_ID = "org.colorflow.desktop"

# Qt modules the GUI never imports (it uses QtCore, QtGui, QtWidgets only). PyInstaller's
# PySide6 hooks collect only imported modules already; naming them here keeps a stray import
# (e.g. by a third-party package) from pulling in QtWebEngine's ~200 MB or QML.
QT_EXCLUDES = [
    f"PySide6.{name}" for name in (
        "QtWebEngineCore", "QtWebEngineWidgets", "QtWebEngineQuick", "QtWebChannel", "QtWebSockets",
        "QtWebView", "Qt3DCore", "Qt3DRender", "Qt3DInput", "Qt3DLogic", "Qt3DExtras", "Qt3DAnimation",
        "QtQml", "QtQuick", "QtQuick3D", "QtQuickWidgets", "QtQuickControls2", "QtMultimedia",
        "QtMultimediaWidgets", "QtCharts", "QtDataVisualization", "QtGraphs", "QtGraphsWidgets",
        "QtPdf", "QtPdfWidgets", "QtDesigner", "QtHelp", "QtSql", "QtTest", "QtBluetooth", "QtNfc",
        "QtPositioning", "QtLocation", "QtSensors", "QtSerialPort", "QtSerialBus", "QtTextToSpeech",
        "QtRemoteObjects", "QtScxml", "QtStateMachine", "QtSpatialAudio", "QtHttpServer",
        "QtNetworkAuth", "QtUiTools", "QtOpenGL", "QtOpenGLWidgets", "QtSvgWidgets", "QtAxContainer",
        "QtConcurrent", "QtDBus", "QtPrintSupport", "QtXml",
    )
]

# Python packages never used at run time. tensorboard/torchvision/torchaudio are optional
# imports of torch and transformers; the test tools come in through torch.testing's optional
# imports; diffusers' pipelines (32 MB of source) are never imported: the engine builds its
# own loop from the UNet, VAE and scheduler classes.
PYTHON_EXCLUDES = [
    "tensorboard", "torch.utils.tensorboard", "torchvision", "torchaudio", "torchtext",
    "tkinter", "_tkinter", "matplotlib", "IPython", "jupyter", "notebook", "pandas",
    "pytest", "_pytest", "pytestqt", "hypothesis", "importlinter", "grimp",
    "onnx", "onnxruntime", "tensorflow", "jax", "flax", "triton", "numba", "cv2",
    "diffusers.pipelines",
    # optional imports of torch, huggingface_hub and scikit-image that no ColorFlow code path
    # reaches (checked by dumping sys.modules after a tiny colorize and a GUI demo run):
    # pretty-printing, build tools, torch.compile's graph library, imageio
    "pygments", "rich", "markdown_it", "setuptools", "pkg_resources", "distutils", "networkx", "imageio",
    # Ray (the studio extra: colorize --ray) is a studio's pip install, never bundled: the frozen app runs locally
    "ray",
]

# transformers.models subpackages kept: CLIP (retrieval encoder, text encoder, tokenizer), the
# Auto classes, and the few model modules peft/transformers import at start-up (recorded by
# importing the engine and running a tiny colorize with sys.modules dumped). Every other model
# family (100+ MB of source) is excluded.
TRANSFORMERS_MODELS_KEPT = {"auto", "clip", "bloom", "dinov2_with_registers", "encoder_decoder", "siglip", "vit_mae",
                            "t5"}  # t5: the PixArt text encoder and tokenizer (line-art styles)

# Files dropped from the collected binaries/data by destination path: torch's C++ test
# programs and test libraries, its code generator and headers (none are loaded by `import torch`).
DROP_PATTERNS = [
    "torch/test/*", "torch/bin/*Test", "torch/bin/test_*", "torch/bin/protoc*", "torch/bin/*.pt",
    "torch/bin/*.ptl", "torch/bin/upgrader_models*", "torch/include/*", "torch/share/*",
    "torch/lib/lib*test*.so*", "torch/lib/libbackend_with_compiler*", "torch/lib/libaoti_custom_ops*",
    "torch/lib/*test*.dll", "torch/lib/*.lib",
    # a system CUDA runtime PyInstaller finds through a ctypes.CDLL("libcudart.so") call: it
    # belongs to the build machine (CUDA builds of torch bring theirs inside torch/ or nvidia/)
    "libcudart.so",
]

# Distributions whose metadata the libraries read at run time (importlib.metadata version
# checks in diffusers, transformers, peft, accelerate and huggingface_hub). The application's
# own dist is left out on purpose: an editable install's direct_url.json names the source folder.
METADATA_DISTS = [
    "torch", "diffusers", "transformers", "peft", "accelerate", "huggingface_hub", "safetensors",
    "tokenizers", "numpy", "pillow", "tqdm", "regex", "filelock", "packaging", "pyyaml", "requests",
    "psutil", "scikit-image", "scipy", "psd-tools", "natsort", "platformdirs", "pydantic",
    "pydantic_core", "PySide6-Essentials", "shiboken6", "fsspec", "jinja2", "typing_extensions",
    "importlib_metadata", "httpx", "hf-xet", "sentencepiece", "protobuf",
]

# resources/ installs as this package (setup.py); engine/core/resources.py reads it by this name.
RESOURCES_PACKAGE = "colorflow_resources"
GUIDE_SCREENSHOTS = "docs/screenshots"  # in the repository and in the bundle, beside colorflow_resources

# Weight files: never bundled, whatever folder they come from.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".gguf", ".msgpack")


def read_version(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """[project] version from pyproject.toml (tomllib where present: Python 3.11+)."""
    text = Path(pyproject).read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the one key we need, read by pattern
        project = text.split("[project]", 1)[1].split("\n[", 1)[0]
        return re.search(r'^version\s*=\s*"([^"]+)"', project, re.M).group(1)
    return tomllib.loads(text)["project"]["version"]


def resource_datas(root: Path = REPO_ROOT) -> list[tuple[str, str]]:
    """(file, bundle folder) for each file of resources/, __init__.py included: the bundle holds
    them as the package RESOURCES_PACKAGE in its own folder, which is on the frozen app's
    sys.path, so importlib.resources finds them there as it does in a wheel."""
    folder = Path(root) / "resources"
    return [
        (str(path), str(Path(RESOURCES_PACKAGE, path.parent.relative_to(folder))))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    ]


def guide_screenshot_datas(root: Path = REPO_ROOT) -> list[tuple[str, str]]:
    """(file, bundle folder) for each screenshot of docs/screenshots/: the user guide, bundled as
    colorflow_resources/docs/user-guide.md, links them as ../../docs/screenshots/, so they go to
    docs/screenshots at the bundle's root (the wheel ships none: the guide then shows their words)."""
    return [(str(path), GUIDE_SCREENSHOTS) for path in sorted((Path(root) / GUIDE_SCREENSHOTS).glob("*.png"))]


def package_modules(package: str, skip: tuple[str, ...] = ("flax", "onnx")) -> list[str]:
    """Dotted names of package and every module under it, read from its files.

    Like PyInstaller's collect_submodules, but without importing anything: collect_submodules
    starts a Python that imports the package (torch, for diffusers) once per call, which cost
    about 90 s of a 2-core build for the five packages the spec names.
    """
    import importlib.util

    top, _, rest = package.partition(".")
    spec = importlib.util.find_spec(top)  # a top-level package is located, not executed
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest.split(".") if rest else ())
    names = []
    for source in sorted(folder.rglob("*.py")):
        parts = source.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        elif not (source.parent / "__init__.py").exists():
            continue  # a script folder or namespace fragment, not part of the package
        if any(not (folder.joinpath(*parts[:i]) / "__init__.py").exists() for i in range(len(parts))):
            continue
        name = ".".join((package,) + parts)
        if not any(word in name for word in skip):
            names.append(name)
    return names


def excluded_transformers_models() -> list[str]:
    """transformers.models.<family> for every installed family not in TRANSFORMERS_MODELS_KEPT."""
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return []
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    return sorted(
        f"transformers.models.{entry.name}" for entry in models.iterdir()
        if entry.is_dir() and (entry / "__init__.py").exists() and entry.name not in TRANSFORMERS_MODELS_KEPT
    )


def is_dropped(dest: str) -> bool:
    """Whether a bundle destination path matches DROP_PATTERNS (either separator)."""
    dest = dest.replace("\\", "/")
    return any(fnmatch.fnmatch(dest, pattern) for pattern in DROP_PATTERNS)


def forbidden_sources() -> list[Path]:
    """Folders nothing may be collected from: the Hugging Face cache and ColorFlow's cache
    (tiny models, embeddings, demo chapters). Weights reach the frozen app at run time only."""
    roots = []
    try:
        from huggingface_hub import constants

        roots += [Path(constants.HF_HOME), Path(constants.HF_HUB_CACHE)]
    except Exception:  # huggingface_hub missing: nothing of it can be collected either
        pass
    import os

    import platformdirs

    roots.append(Path(os.environ.get("COLORFLOW_CACHE_DIR") or platformdirs.user_cache_dir("colorflow")))
    return [root.resolve() for root in roots]


# Library data with a weight-like suffix that is no model: sentencepiece's normalisation tables (*.bin).
LIBRARY_TABLES = ("sentencepiece/package_data",)


def is_library_table(path: Path) -> bool:
    """Whether `path` lies directly in one of LIBRARY_TABLES' folders (not below it)."""
    parent = Path(path).parent.as_posix()
    return any(parent == folder or parent.endswith(f"/{folder}") for folder in LIBRARY_TABLES)


def check_not_collected(sources: list[str]) -> list[str]:
    """Collected source files that are weights or lie under a forbidden folder (must be empty)."""
    forbidden = forbidden_sources()
    bad = []
    for source in sources:
        path = Path(source).resolve()
        if path.suffix.lower() in WEIGHT_SUFFIXES and "torch" not in path.parts and not is_library_table(path):
            bad.append(source)
        elif any(path.is_relative_to(root) for root in forbidden):
            bad.append(source)
    return bad


def make_icons(folder: Path) -> dict[str, Path]:
    """Draw the app icon (a brush stroke of colors over a gray page) as .png, .ico and .icns.

    Generated at build time with Pillow so no binary file lives in the repository; Windows
    wants .ico, macOS .icns, Linux desktops the .png.
    """
    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = 512
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((32, 32, size - 32, size - 32), radius=80, fill=(245, 243, 236, 255),
                           outline=(30, 30, 30, 255), width=18)
    for i, color in enumerate([(220, 70, 60), (240, 200, 80), (90, 170, 100), (60, 120, 210)]):
        y = 120 + i * 75
        draw.rounded_rectangle((96, y, size - 96, y + 58), radius=29, fill=color + (255,))
    paths = {"png": folder / "colorflow.png", "ico": folder / "colorflow.ico", "icns": folder / "colorflow.icns"}
    image.save(paths["png"])
    image.save(paths["ico"], sizes=[(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    image.save(paths["icns"])
    return paths
