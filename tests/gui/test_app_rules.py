"""The app's rules with the engine: no torch at import time, a Qt-free job model, typed cancels, the engine's device words."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("PySide6")

from window_helpers import REPO_ROOT, WAIT_MS, close, make_window  # noqa: E402

HEAVY_ROOTS = ("torch", "diffusers", "transformers", "accelerate", "peft")

# One interpreter: the job model first (it must load no Qt), then every app module; after each
# import, whatever heavy package has appeared was pulled in by that module's import chain.
_IMPORT_EVERY_APP_MODULE = """
import importlib, json, sys
modules, heavy_roots = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
problems = []
def loaded(roots):
    return sorted({n.split('.')[0] for n in sys.modules if n.split('.')[0] in roots})
importlib.import_module('app.job_model')
if loaded(('PySide6', 'shiboken6')):
    problems.append(f'app.job_model imports {loaded(("PySide6", "shiboken6"))}')
for name in modules:
    importlib.import_module(name)
    if loaded(heavy_roots):
        problems.append(f'{name} imports {loaded(heavy_roots)} at import time (import it inside the worker job)')
        break
print(json.dumps(problems))
"""


def _app_modules() -> list[str]:
    return sorted(f"app.{path.stem}" for path in (REPO_ROOT / "app").glob("*.py") if path.stem != "__init__")


def test_no_app_module_loads_torch_at_import_time_and_the_job_model_loads_no_qt():
    modules = _app_modules()
    assert "app.main_window" in modules and "app.job_model" in modules
    result = subprocess.run([sys.executable, "-c", _IMPORT_EVERY_APP_MODULE, json.dumps(modules), json.dumps(HEAVY_ROOTS)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr[-3000:]
    problems = json.loads(result.stdout.strip().splitlines()[-1])
    assert not problems, "\n".join(problems)


def test_the_device_label_shows_the_engines_description(qtbot, monkeypatch):
    import engine.core.devices
    from app.settings import AppSettings
    from engine.pipelines.session import RunSettings

    # the engine's own words for a device (it adds the GPU's memory): the window must show them
    monkeypatch.setattr(engine.core.devices, "pick_device", lambda choice: "cpu")  # no torch needed to check this
    monkeypatch.setattr(engine.core.devices, "describe_device", lambda device: f"{device} as the engine words it")
    window = make_window(qtbot, AppSettings(RunSettings(models="tiny", device="cpu")))
    window._resolve_device()
    qtbot.waitUntil(lambda: "checking" not in window.device_label.text(), timeout=WAIT_MS)
    assert "device: cpu as the engine words it |" in window.device_label.text()
    close(qtbot, window)


def test_a_job_cancelled_before_it_starts_ends_with_the_cancel_signal_not_a_failure(qtbot):
    import threading

    from app.worker import EngineWorker

    release = threading.Event()
    worker = EngineWorker()
    ended = []
    worker.job_finished.connect(lambda job, result: ended.append(("finished", job, result)))
    worker.job_failed.connect(lambda job, reason: ended.append(("failed", job, reason)))
    worker.job_cancelled.connect(lambda job: ended.append(("cancelled", job)))
    try:
        first = worker.submit(lambda emit, cancel: release.wait(5) and "first")
        second = worker.submit(lambda emit, cancel: "never runs")  # waits behind the first
        worker.cancel(second)
        release.set()
        qtbot.waitUntil(lambda: len(ended) == 2, timeout=5000)
    finally:
        worker.shutdown()
    assert ended == [("finished", first, "first"), ("cancelled", second)]
