"""ICP training across processes: two-process DDP (gloo) vs one process with the doubled batch; a SIGKILLed run resumed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.core.geometry import WorkSize

SIZE = WorkSize(128, 192)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """One torch thread here and in the child processes: the same float sums everywhere."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    torch.set_num_threads(before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(dataset: Path, models: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "icp", str(dataset), "--models", str(models), "--out", str(out), "--steps", str(steps),
            "--device", "cpu", "--downsample", "0.5", "--lr", "1e-3", "--log-every", "1", *extra]


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    graysd = out / "colorflow" / "GraySD"
    return {**{f"guide.{k}": v for k, v in load_file(str(graysd / "diffusion_pytorch_model.safetensors")).items()},
            **{f"unet.{k}": v for k, v in load_file(str(graysd / "unet_lora.safetensors")).items()}}


def _config(**changes):
    from engine.training.icp import ICPTrainConfig

    base = dict(downsample=0.5, learning_rate=1e-3, log_every=1, device="cpu", tensorboard=False)
    return ICPTrainConfig(**{**base, **changes})


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_doubled_batch(dataset, tiny_models_dir, tmp_path, one_thread):
    """`accelerate launch` 2 CPU processes (gloo), batch 1 each, vs one process with batch 2 on the
    same samples: DDP averages the two gradients, which is the gradient of the batch-2 mean loss.
    Equal up to float rounding: batch-1 and batch-2 convolutions and the all-reduce sum in another
    order. The losses agree to 1e-5; the weights are compared by the norm of their difference
    relative to the norm of the update, because Adam's first steps move each weight by ~lr * sign(g)
    (it divides by sqrt(v) ~ |g|): a gradient element that is ~0 up to rounding can flip sign and
    move by up to 2 lr in one run and not the other, so single elements may differ by ~lr."""
    from engine.models.sources import resolve_models
    from engine.training.icp import ICPTrainer

    multi = tmp_path / "multi"
    # `--multi_gpu` picks accelerate's torchrun launcher; `--device cpu` makes each process an
    # Accelerator(cpu=True), so they join a gloo process group (`--cpu` alone starts 1 process
    # unless an MPI hostfile is given).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "engine.cli.main",
               *_train_args(dataset, tiny_models_dir, multi, 2, "--batch-size", "1")]
    done = subprocess.run(command, cwd=ROOT, env=one_thread, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained to step 2") == 1  # reported once, by the main process
    state = json.loads((multi / "state" / "trainer_state.json").read_text())
    assert state["samples_seen"] == 4 and state["step"] == 2  # 2 steps x batch 1 x 2 processes

    single = ICPTrainer(resolve_models(str(tiny_models_dir)), dataset, tmp_path / "single",
                        _config(steps=2, batch_size=2), printer=None)
    assert single.train() == 2
    logged = [json.loads(line)["loss"] for line in (multi / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx(single.losses, abs=1e-5)  # the same loss trajectory
    ours, theirs = _weights(multi), _weights(tmp_path / "single")
    base = _weights_of_base(tiny_models_dir)
    assert ours.keys() == theirs.keys() == base.keys()
    largest = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
    apart = sum(((ours[k] - theirs[k]).double() ** 2).sum() for k in ours) ** 0.5
    update = sum(((theirs[k] - base[k]).double() ** 2).sum() for k in ours) ** 0.5
    print(f"DDP 2x1 vs 1x2: max weight difference {largest:.3g}, |difference| / |update| {apart / update:.3g}")
    assert update > 1e-2 and apart < 0.01 * update


def _weights_of_base(models: Path) -> dict:
    from engine.io.checkpoints import find_weights, normalise_lora_key
    from engine.io.weight_files import read_state_dict
    from engine.models.sources import resolve_models

    graysd = resolve_models(str(models)).graysd
    guide = read_state_dict(find_weights(graysd, "diffusion_pytorch_model"))
    lora = read_state_dict(find_weights(graysd, "unet_lora"))
    return {**{f"guide.{k}": v for k, v in guide.items()},
            **{f"unet.{normalise_lora_key(k)}": v for k, v in lora.items()}}


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_to_the_weights_of_an_uninterrupted_run(dataset, tiny_models_dir, tmp_path,
                                                                             one_thread):
    """`colorflow train icp` in a child process is SIGKILLed once a checkpoint exists; `--resume` in
    a new trainer finishes the run; the weights, optimizer moments and losses equal those of an
    uninterrupted run exactly (every random draw is keyed by the sample position; the state holds
    exact fp32 copies; one thread in both processes)."""
    from engine.models.sources import resolve_models
    from engine.training.icp import ICPTrainer

    steps, out = 8, tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-m", "engine.cli.main", *_train_args(dataset, tiny_models_dir, out, steps,
                                                                                "--save-every", "2")],
                             cwd=ROOT, env=one_thread, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "state" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not state.is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, "the run ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    base = resolve_models(str(tiny_models_dir))
    resumed = ICPTrainer(base, dataset, out, _config(steps=steps, save_every=2), printer=None)
    at = resumed.resume()
    assert at in (2, 4, 6) and resumed.batches == at
    assert resumed.train() == steps
    straight = ICPTrainer(base, dataset, tmp_path / "straight", _config(steps=steps, save_every=100), printer=None)
    assert straight.train() == steps
    ours, theirs = _weights(out), _weights(tmp_path / "straight")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    moments = resumed.optimizer.state_dict()["state"], straight.optimizer.state_dict()["state"]
    assert all(torch.equal(moments[0][i]["exp_avg"], moments[1][i]["exp_avg"]) for i in moments[1])
    assert resumed.losses == straight.losses[at:]
