"""Ray workers compared with this computer (engine.pipelines.ray_identity): same software and model bytes, or refused.

The shared tiny workers (conftest `ray_workers`) report this process's identity; a doctored expectation is refused
with the node and both values named, the workers left running; two models folders differing in one byte differ only
by their models, two made with the same seed not at all; the official preset by the sha256s each machine recorded."""

from __future__ import annotations

import json
import socket

import pytest

from engine.core.errors import ColorFlowError
from engine.pipelines.ray_identity import identity_differences, software_and_models


def test_the_shared_workers_report_this_computers_software_and_models(ray_workers, tiny_models_dir):
    """A real remote call on each worker: the same versions and models as computed here, with its host and device;
    the versions are the modules' own (not only the installed metadata), and the normal run is not refused."""
    import diffusers
    import numpy
    import PIL
    import ray
    import torch

    import engine

    executor = ray_workers()
    here = software_and_models(str(tiny_models_dir))
    assert (here["torch"], here["diffusers"], here["numpy"], here["Pillow"], here["colorflow-desktop"]) == (
        torch.__version__, diffusers.__version__, numpy.__version__, PIL.__version__, engine.__version__)
    assert here["models"]  # a models DIR: its recorded content
    reported = ray.get([executor.actors[n].identity.remote() for n in executor.live()])
    assert reported == [{**here, "hostname": socket.gethostname(), "device": "cpu"}] * 2
    executor.check_workers(here)  # as __enter__ did when the workers started: nothing to refuse


def test_a_worker_with_other_versions_is_refused_naming_the_node_and_both_values(ray_workers, tiny_models_dir):
    """This computer doctored to torch 0.0.1: one line, said once (both workers are on this one node), naming
    torch, the worker's real version there and 0.0.1 here, and the node; check_workers only raises, the workers
    still run."""
    import ray
    import torch

    executor = ray_workers()
    doctored = {**software_and_models(str(tiny_models_dir)), "torch": "0.0.1"}
    with pytest.raises(ColorFlowError) as refused:
        executor.check_workers(doctored)
    lines = str(refused.value).splitlines()
    assert len(lines) == 1 and lines[0].count("Ray worker on node") == 1, lines
    assert lines[0].startswith(f"Ray worker on node {socket.gethostname()} differs from this computer: "
                               f"torch {torch.__version__} there, 0.0.1 here;")
    assert "on every node (docs/studio.md)" in lines[0]
    assert executor.workers == 2
    assert ray.get([executor.actors[n].ready.remote() for n in executor.live()], timeout=30) == ["cpu", "cpu"]


def test_models_folders_one_byte_apart_differ_by_their_models_only(tiny_models_dir, tmp_path):
    """make_tiny twice with seed 0 (conftest's folder and one here): the same bytes, no difference. One byte of a
    weight file changed and accepted into its record (`models verify --accept`): "models" differs, nothing else."""
    from engine.models.folder_record import check_folder
    from engine.models.sources import make_tiny

    again = tmp_path / "again"
    make_tiny(again, seed=0)
    first, second = software_and_models(str(tiny_models_dir)), software_and_models(str(again))
    assert identity_differences(first, {**second, "hostname": "gpu-2"}) == []
    weights = again / "sd15" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor: still a loadable file
    weights.write_bytes(bytes(data))
    check_folder(again.resolve(), accept=True)  # what `colorflow models verify --models DIR --accept` does
    changed = software_and_models(str(again))
    lines = identity_differences(first, {**changed, "hostname": "gpu-2"})
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Ray worker on node gpu-2 differs from this computer: models {changed['models']} "
                               f"there, {first['models']} here;")
    assert changed["models"] != first["models"]


def test_the_official_models_differ_by_the_sha256s_each_machine_recorded(tmp_path):
    """The official files are trust-on-first-use: each machine's lock records their sha256s. Two machines whose
    lock differs for one base file differ by "models"; the same lock gives the same identity. No file is read."""
    from engine.models.pins import lock_path
    from engine.models.presets import preset_files

    key = next(f.key for f in preset_files("official") if f.path == "unet/diffusion_pytorch_model.safetensors")
    lock_path().parent.mkdir(parents=True, exist_ok=True)
    lock_path().write_text(json.dumps({key: {"sha256": "a" * 64, "size": 1}}))
    here = software_and_models("official")
    assert software_and_models("official") == here
    lock_path().write_text(json.dumps({key: {"sha256": "b" * 64, "size": 1}}))
    there = software_and_models("official")
    lines = identity_differences(here, {**there, "hostname": "gpu-2"})
    assert len(lines) == 1 and lines[0].startswith("Ray worker on node gpu-2 differs from this computer: models ")
    assert software_and_models("tiny")["models"] != here["models"]
