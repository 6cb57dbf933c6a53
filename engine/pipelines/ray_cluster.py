"""Ray for a studio run: is it installed, connecting (a local Ray or a cluster's address) and how many actors of what.

How it works: Ray is an optional extra (`colorflow-desktop[studio]`), imported only here and in ray_pass, never
when a module loads. `connect` starts a Ray on this machine (address None or "local"), reusing the one this
process already runs (the tests start one per session), or joins a running cluster at its address after a
quick reachability check (Ray itself would retry for minutes). `actor_resources` sizes the workers: one
actor per GPU the cluster sees (each loads the models once), `--workers` capping it; on a Ray without GPUs,
CPU actors (tests and small jobs), one unless more are asked for, never more than its CPUs.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import sys

from engine.core.errors import ColorFlowError, InputError

STUDIO_HINT = 'Install it with: pip install "colorflow-desktop[studio]"'
LOCAL = "local"  # --ray alone: a Ray on this machine
GCS_PORT, CLIENT_PORT = 6379, 10001  # `ray start --head`'s default port; the Ray client's (ray://)
WAITING = "waiting for a worker"  # the stage of a page prepared by the driver, not yet on a worker (ray_pass)


def ray_installed() -> bool:
    """Whether Ray can be imported here, without importing it."""
    if "ray" in sys.modules:
        return sys.modules["ray"] is not None
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def import_ray():
    """The ray module, or InputError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise InputError(f"Ray is not installed. {STUDIO_HINT}") from exc
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """Where a cluster address listens (None: "auto", which Ray finds itself)."""
    rest = address.removeprefix("ray://")
    if rest == "auto" or not rest:
        return None
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not port:
        return host, CLIENT_PORT if address.startswith("ray://") else GCS_PORT
    if not port.isdigit():
        raise InputError(f"--ray {address}: not a Ray address; give HOST:PORT (HOST:6379 of `ray start --head`) "
                         "or ray://HOST:10001")
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    where = _host_port(address)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=5).close()
    except OSError as exc:
        raise ColorFlowError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): start it there with "
                             "`ray start --head`, check the address and port, or run without --ray") from exc


def _joined(ray, address: str) -> bool:
    """Whether this process is in the cluster at `address` already."""
    where = _host_port(address)
    try:
        current = ray.get_runtime_context().gcs_address
        return where is not None and current == f"{socket.gethostbyname(where[0])}:{where[1]}"
    except Exception:  # a Ray client connection has no GCS address here: join again
        return False


def connect(address: str | None) -> None:
    """Ray ready in this process: address None or "local" starts one on this machine with its resources
    (or reuses the one running here); another address joins that cluster (ColorFlowError when it cannot be
    reached); InputError with STUDIO_HINT when Ray is not installed."""
    ray = import_ray()
    if address in (None, LOCAL):
        if not ray.is_initialized():  # Ray's own start-up lines (its token note, "Started a local Ray") unsaid:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)  # ours say it
        return
    _check_reachable(address)
    if ray.is_initialized():
        if _joined(ray, address):
            return
        ray.shutdown()  # another cluster than the one this process joined before
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:
        raise ColorFlowError(f"cannot join the Ray cluster at {address}: {exc}") from exc


def actor_resources(workers: int | None, *, cpu_only: bool = False) -> tuple[int, dict]:
    """(how many actors, each one's resources): one per GPU Ray sees ({"num_gpus": 1}), `workers` capping
    it; without GPUs (or `cpu_only`: --device cpu) CPU actors ({"num_cpus": 1}), `workers` of them (1 when
    None), at most the CPUs."""
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: give 1 or more")
    resources = import_ray().cluster_resources()
    gpus = 0 if cpu_only else int(resources.get("GPU", 0))
    if gpus:
        return min(workers or gpus, gpus), {"num_gpus": 1}
    cpus = int(resources.get("CPU", 0))
    count = workers or 1
    if count > cpus:
        raise InputError(f"--workers {count}: this Ray has {cpus} CPU(s) and no GPU, one worker a CPU; "
                         f"give --workers {cpus} or less, or add machines to the cluster")
    return count, {"num_cpus": 1}
