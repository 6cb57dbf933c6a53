"""Fixtures of the main-window tests: tiny-model settings, a demo chapter, and a check that no worker thread leaks."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from app.settings import AppSettings  # noqa: E402
from app.worker import EngineWorker  # noqa: E402
from engine.pipelines.session import RunSettings  # noqa: E402


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves an engine worker thread running."""
    before = set(EngineWorker.instances)
    yield
    leaked = [w for w in EngineWorker.instances if w not in before and w.is_running()]
    for worker in leaked:
        worker.shutdown()
    assert not leaked, "a QThread was left running"


@pytest.fixture
def settings(tiny_models_dir, tmp_path) -> AppSettings:
    run = RunSettings(models=str(tiny_models_dir), device="cpu", steps=2, size="256x384",
                      cache_dir=str(tmp_path / "embeddings"))
    return AppSettings(run)


@pytest.fixture
def chapter(tmp_path):
    from engine.io.demo import make_demo_chapter

    return make_demo_chapter(tmp_path / "data", pages=4, refs=4)
