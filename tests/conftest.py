"""Shared fixtures: tiny random models in the official layout, built offline once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch/OpenMP thread (read when torch loads, inherited by subprocesses): the tiny models are
# too small to gain from more, and two threads on a busy 2-core machine ran a step 40x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path, monkeypatch):
    """No test writes to the real per-user cache or config folders."""
    monkeypatch.setenv("COLORFLOW_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.setenv("COLORFLOW_CONFIG_DIR", str(tmp_path / "user-config"))


@pytest.fixture
def one_page_chapter(tmp_path) -> tuple[Path, Path]:
    """(a chapter folder with one gray page, a folder with one colored reference): enough to
    reach any CLI check that comes before the models run."""
    from PIL import Image

    pages, refs = tmp_path / "pages", tmp_path / "refs"
    pages.mkdir()
    refs.mkdir()
    Image.new("L", (64, 96), 200).save(pages / "1.png")
    Image.new("RGB", (64, 96), (200, 20, 20)).save(refs / "r.png")
    return pages, refs


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A models directory written by the real `make_tiny` (official file layout)."""
    from engine.models.sources import make_tiny

    root = tmp_path_factory.mktemp("tiny-models")
    make_tiny(root)
    return root


@pytest.fixture(scope="session")
def tiny_embedder(tiny_models_dir):
    """The CLIP embedder loaded from the tiny models through the real from_pretrained path."""
    from engine.rap.embedding import ClipEmbedder
    from engine.models.sources import resolve_models

    return ClipEmbedder(resolve_models(str(tiny_models_dir)).image_encoder)


@pytest.fixture
def demo_data(tmp_path) -> tuple[Path, Path]:
    """A generated chapter (4 gray pages) and 3 colored references."""
    from engine.io.demo import make_demo_chapter

    return make_demo_chapter(tmp_path / "demo", pages=4, refs=3)


@pytest.fixture(scope="session")
def tiny_components(tiny_models_dir):
    """SD1.5 + GraySD tiny components loaded through the real strict loader, on the CPU."""
    from engine.models.loading import load_diffusion
    from engine.models.sources import resolve_models

    return load_diffusion(resolve_models(str(tiny_models_dir)), "cpu")


@pytest.fixture(scope="session")
def tiny_screenstyle(tiny_models_dir):
    """The tiny ScreenStyle networks loaded through the real strict loader, on the CPU."""
    from engine.preprocess.screenstyle import load_screenstyle

    return load_screenstyle(Path(tiny_models_dir) / "colorflow")


@pytest.fixture(scope="session")
def make_tiny_pipeline(tiny_embedder, tiny_components, request):
    """Builds a ColorFlowPipeline on the session's tiny models, its embedding and G caches under
    `cache`; `screen=False` gives it no ScreenStyle networks (gray input only)."""
    from engine.gsrp.upscale import Upscaler
    from engine.icp.colorize import Colorizer
    from engine.pipelines.page import ColorFlowPipeline
    from engine.preprocess.page import PagePreparer
    from engine.rap.embedding import EmbeddingCache
    from engine.rap.retrieval import Retriever

    def make(cache: Path, screen: bool = True):
        c = tiny_components
        networks = request.getfixturevalue("tiny_screenstyle") if screen else None
        return ColorFlowPipeline(Retriever(tiny_embedder, EmbeddingCache(cache / "embeddings")), Colorizer(c),
                                 Upscaler(c.vae_runner, c.fusion, c.device, c.dtype), models_id="tiny",
                                 preparer=PagePreparer(networks, cache / "screenstyle"))

    return make


@pytest.fixture
def pipeline(make_tiny_pipeline, tmp_path):
    """A fresh tiny pipeline (gray input only), its caches in this test's folder."""
    return make_tiny_pipeline(tmp_path / "pipeline-cache", screen=False)


@pytest.fixture(scope="session")
def colored_chapter(tmp_path_factory) -> Path:
    """A colored chapter of 3 pages (the demo's colored references, 200x300)."""
    from engine.io.demo import make_demo_chapter

    _, refs = make_demo_chapter(tmp_path_factory.mktemp("colored"), pages=1, refs=3, size=(200, 300))
    return refs


@pytest.fixture(scope="session")
def dataset(colored_chapter, tiny_embedder, tiny_screenstyle, tmp_path_factory) -> Path:
    """An ICP training dataset: `colored_chapter` prepared at 128x192 with seed 3 (real ScreenStyle
    pass and retrieval), as `colorflow train prepare` writes it."""
    from engine.core.geometry import WorkSize
    from engine.rap.embedding import EmbeddingCache
    from engine.rap.retrieval import Retriever
    from engine.training.data import prepare_dataset

    out = tmp_path_factory.mktemp("dataset")
    retriever = Retriever(tiny_embedder, EmbeddingCache(out / ".embeddings"))
    events = []
    prepare_dataset([colored_chapter], out, retriever, tiny_screenstyle, WorkSize(128, 192), seed=3, emit=events.append)
    assert [e.step for e in events] == [0, 1, 2, 3]  # one progress event a page, then the end
    return out


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One local Ray for the whole test session (2 CPUs, no GPU even where there is one, no dashboard, a 200 MB
    object store), shut down at its end; its workers get their own per-user cache and config folders.
    Skipped without the studio extra."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    user = tmp_path_factory.mktemp("ray-user")
    folders = {"COLORFLOW_CACHE_DIR": str(user / "cache"), "COLORFLOW_CONFIG_DIR": str(user / "config")}
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20,
             runtime_env={"env_vars": folders})
    yield ray
    ray.shutdown()


RAY_TINY_RUN = {"steps": 1, "size": "256x256", "input_style": "gray", "ray": "local", "workers": 2}


@pytest.fixture(scope="session")
def ray_workers(ray_local, tiny_models_dir):
    """() -> the session's 2 Ray CPU workers holding the tiny models, started as `colorize --ray --workers 2 --models
    TINY --steps 1 --size 256x256 --input-style gray` starts them (ray_options.ray_executor). Starting workers (each
    imports torch and loads the models) is most of a Ray test's cost: one start serves every test that needs no
    other workers; after a test killed some, the next call starts new ones. Stopped at the session's end."""
    from engine.core.options import RunSettings
    from engine.pipelines.ray_options import ray_executor
    from engine.pipelines.settings import pipeline_settings

    options = RunSettings(models=str(tiny_models_dir), **RAY_TINY_RUN)
    held = []

    def live():
        if held and held[0].workers < RAY_TINY_RUN["workers"]:
            held.pop().__exit__(None, None, None)
        if not held:
            held.append(ray_executor(options, pipeline_settings(options)).__enter__())
        return held[0]

    yield live
    if held:
        held[0].__exit__(None, None, None)


@pytest.fixture
def models_copy(tiny_models_dir, tmp_path) -> Path:
    """A private copy of the tiny models directory that a test may damage."""
    import shutil

    target = tmp_path / "models"
    shutil.copytree(tiny_models_dir, target)
    return target


@pytest.fixture
def hub_snapshot(tiny_models_dir, tmp_path, monkeypatch) -> Path:
    """HF_HOME holding the tiny models as hub snapshots of the two official repos, offline."""
    hf_home = tmp_path / "hf"
    for root, repo in (("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"), ("colorflow", "TencentARC/ColorFlow")):
        base = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True)
        (base / "refs" / "main").write_text("0123abcd")
        shutil.copytree(Path(tiny_models_dir) / root, base / "snapshots" / "0123abcd")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hf_home


BUNDLE_TEST = "test_packaging.py::test_frozen_bundle_runs_the_cli_and_the_gui"


def pytest_collection_modifyitems(session, config, items):
    """When the frozen-bundle test is selected, start its PyInstaller build now, in the
    background, and run that test last: the build (minutes, one core) overlaps the rest of the
    suite instead of adding to it."""
    bundle = [item for item in items if item.nodeid.endswith(BUNDLE_TEST)]
    if not bundle or config.option.collectonly:
        return
    import importlib.util
    import tempfile

    if importlib.util.find_spec("PyInstaller") is None:
        return
    items[:] = [item for item in items if item not in bundle] + bundle
    spec = importlib.util.spec_from_file_location("colorflow_build", Path(__file__).parents[1] / "packaging" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    root = Path(tempfile.mkdtemp(prefix="colorflow-frozen-"))
    log = open(root / "build.log", "wb")  # noqa: SIM115 - the child writes it until the test reads it
    process = build.start_build(root / "dist", root / "work", stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own descriptor
    config.colorflow_bundle_build = (root, process)


def pytest_unconfigure(config):
    """A session stopped early (Ctrl+C, -x) must not leave the build running or its ~1 GB behind."""
    started = getattr(config, "colorflow_bundle_build", None)
    if started is not None:
        root, process = started
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
