"""The prepared GPU check of issue 23: speed and memory at the official size, fp16 vs fp32, device errors.

    python scripts/gpu_check.py [--out gpu_check.json] [--models DIR] [--work DIR] [--only NAMES] [--budget-s S]
    python scripts/gpu_check.py --dry-run --out x.json     # the same flow on the CPU, tiny models (CI runs it)

One JSON (--out; rewritten after every check, so a run cut short keeps what it measured, and
"running" names the check it was in) and a short summary on stdout. Each check is one entry:
status ok, error (message; kind device_mixing, out_of_memory or other) or skipped (why); a failing
check never stops the others. Exit 0 when none failed, 1 when one did, 2 for bad usage.
  install      the runtime packages below, where missing, from scripts/gpu_wheels/ into WORK/site
               (pip --no-index --no-deps); the project itself from this checkout (sys.path)
  environment  Python, torch, CUDA, cuDNN, the GPU's name and total memory, library versions
  agreement    the tiny pipeline (make-tiny models, seed 0, one generated 360x512 page at 256x384,
               10 steps) in fp16 and in fp32 on the GPU: max and mean absolute difference of the
               colored page in levels (0-255); fp32 twice, for the GPU's own nondeterminism
  models       official-size random weights (`colorflow models make-random`, ~35 s, 5 GB) in WORK,
               unless --models DIR
  ours, low_vram, official   engine.benchmarks.stages.bench_pages, one mode each: 2 pages, 3
               references, 512x800, 10 steps, fp16 (the GPU default), one uncounted warm-up page:
               s/page and peak VRAM (torch.cuda.max_memory_allocated), per stage
  ratios       ours/official and low_vram/official of those figures (the bench's own ratios)
  speedups     engine.benchmarks.speedups.bench_speedups at 512x800 fp16 (one guided step and one
               canvas decode per variant, as ratios to its baseline)
  variant:NAME the speed-up variants (VARIANTS below): ours with RunSettings overrides
  speedups:compile, variant:compile   torch.compile, last (slowest): the budget cuts them first
Departures from a user's run: random weights (the pixels mean nothing; time and memory count),
generated pages, every mode in one process (each loads its models afresh, freed in between).
--dry-run: tiny models, 256x256, 1 step (agreement: 2), one page, plain gray input (no ScreenStyle
pass: slow on a CPU), no warm-up page, no installs, the compile checks skipped.

Wheels: what the engine's inference path imports beyond torch, transformers, accelerate and peft
(and their dependencies), at constraints/cpu.txt's versions; the GUI is left out:
    diffusers==0.42.1 natsort==8.4.0 platformdirs==4.14.8 (pure Python, 6.5 MB; not on the lent
    GPU machines) and pillow==13.0.0 scikit-image==0.26.0 scipy==1.17.1 lazy-loader==0.6
    requests==2.34.2 urllib3==2.8.0 charset-normalizer==3.5.3 certifi==2026.10.19.post1 (57 MB for
    Python 3.12; the lent machines' image has them)
Fetch them here, with the package index, into the git-ignored folder (for the lent machines'
Python 3.12 on x86-64: another Python, change --python-version; a Python without the second
group: add its eight pins to the command, 63 MB in all, just inside the tool's 64 MiB carry):
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d scripts/gpu_wheels diffusers==0.42.1 natsort==8.4.0 platformdirs==4.14.8

Through the device tool (15 minutes of device time: a start takes 1-2, this run at most 7.5):
    run  command: PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --out $OUT/gpu_check.json
         carry: ["scripts/gpu_wheels"]   timeout_s: 450
then at once (the machine stays warm 30 s), only what failed or was cut, e.g.:
    run  command: PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --only ours,official,ratios --out $OUT/gpu_check_rerun.json
         carry: ["scripts/gpu_wheels"]   timeout_s: 240
No check starts after --budget-s (360 s by default); install and environment always run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "scripts" / "gpu_wheels"
# (distribution as pinned in constraints/cpu.txt, the module it installs)
RUNTIME_PACKAGES = (("diffusers", "diffusers"), ("natsort", "natsort"), ("platformdirs", "platformdirs"),
                    ("pillow", "PIL"), ("scikit-image", "skimage"), ("scipy", "scipy"), ("lazy-loader", "lazy_loader"),
                    ("requests", "requests"), ("urllib3", "urllib3"), ("charset-normalizer", "charset_normalizer"),
                    ("certifi", "certifi"))  # diffusers checks for requests at import

# ---- Speed-up variants: add one line here ------------------------------------------------------
# (name, RunSettings overrides): each runs bench_pages' "ours" mode with the overrides. A variant
# runs only when every option it sets is declared in engine.core.options.OPTIONS at run time;
# otherwise its entry says "skipped: option not declared: NAME". Options in SLOW_ON_CPU are
# skipped in --dry-run (compiling takes minutes on a CPU).
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("batch_pages_2", {"batch_pages": 2}),
    ("channels_last", {"channels_last": True}),
    ("compile", {"compile": True}),
]
SLOW_ON_CPU = {"compile"}
# ------------------------------------------------------------------------------------------------

PLANTED = ("Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
           "(planted by --inject-failure, a test-only switch)")


def pins() -> dict[str, str]:
    """constraints/cpu.txt's pins: distribution (lower case) -> version."""
    found = {}
    for line in (REPO / "constraints" / "cpu.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].split("==")
            found[name.strip().lower()] = version.strip()
    return found


def install_plan(present: Callable[[str], bool], wheels: Path, target: Path | None = None) -> list[str]:
    """The pip command that installs the missing runtime packages from `wheels` alone (none: [])."""
    versions = pins()
    missing = [f"{dist}=={versions[dist]}" for dist, module in RUNTIME_PACKAGES if not present(module)]
    where = ["--target", str(target)] if target else []
    return [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
            *where, "--find-links", str(wheels), *missing] if missing else []


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def use_checkout() -> str:
    """The project from this checkout: its root on sys.path, resources/ as colorflow_resources."""
    sys.path.insert(0, str(REPO))
    if _importable("colorflow_resources"):
        return "this checkout on sys.path; colorflow_resources installed"
    spec = importlib.util.spec_from_file_location("colorflow_resources", REPO / "resources" / "__init__.py",
                                                  submodule_search_locations=[str(REPO / "resources")])
    sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return "this checkout on sys.path; resources/ registered as colorflow_resources"


class Context:
    """The run's settings and what checks share: the models, each mode's bench figures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.dry_run, self.work = args, args.dry_run, Path(args.work)
        self.device = "cpu" if args.dry_run else "cuda"
        self.size, self.steps = ("256x256", 1) if args.dry_run else ("512x800", 10)
        self.pages, self.refs, self.warmup = (1, 1, False) if args.dry_run else (2, 3, True)
        self.input_style = "gray" if args.dry_run else "screen"  # the dry run skips the (CPU-slow) ScreenStyle pass
        self.agreement = ("256x256", 2) if args.dry_run else ("256x384", 10)
        self.seed, self.results = 0, {}
        self._models, self._tiny = args.models, None

    def tiny(self):  # built once, for the agreement (and the modes in --dry-run)
        if self._tiny is None:
            from engine.models.sources import make_tiny

            self._tiny = make_tiny(self.work / "tiny")
        return self._tiny

    def models(self) -> str:
        """The models the modes run: --models, else built here (official size; tiny in --dry-run)."""
        if self._models is None:
            if self.dry_run:
                self._models = str(self.tiny().sd15.parent)
            else:
                from engine.models.sources import make_random

                self._models = str(make_random(self.work / "official-random", "official").sd15.parent)
        return self._models


def check_install(ctx: Context) -> dict[str, Any]:
    missing = [dist for dist, module in RUNTIME_PACKAGES if not _importable(module)]
    if ctx.dry_run:
        return {"skipped": "--dry-run installs nothing", "missing": missing}
    target = ctx.work / "site"
    plan = install_plan(_importable, WHEELS, target)
    if plan:
        done = subprocess.run(plan, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip could not install {', '.join(missing)} from {WHEELS} (fetch them: this "
                               f"script's header): {done.stderr.strip()[-600:]}")
        sys.path.insert(1, str(target))
        importlib.invalidate_caches()
    return {"installed": plan[plan.index(str(WHEELS)) + 1:] if plan else [], "target": str(target) if plan else None}


def measures():
    """engine.benchmarks.gpu_checks, imported once this checkout is on sys.path."""
    from engine.benchmarks import gpu_checks

    return gpu_checks


def check_agreement(ctx: Context) -> dict[str, Any]:
    size, steps = ctx.agreement
    return {"models": "tiny (make-tiny, random weights)", **measures().precision_agreement(
        ctx.tiny(), ctx.device, work=ctx.work, size=size, steps=steps, seed=ctx.seed, input_style=ctx.input_style)}


def check_models(ctx: Context) -> dict[str, Any]:
    from engine.models.sources import random_weights_kind

    built = ctx._models is None
    return {"models": ctx.models(), "built": built, "random_weights": random_weights_kind(ctx.models())}


def bench(ctx: Context, mode: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    pages = max(ctx.pages, (options or {}).get("batch_pages", 1))  # a batch of N needs N pages
    return measures().bench_mode(ctx.models(), ctx.device, mode, pages=pages, refs=ctx.refs, steps=ctx.steps,
                                 size=ctx.size, input_style=ctx.input_style, seed=ctx.seed, warmup=ctx.warmup,
                                 options=options)


def mode_check(mode: str) -> Callable[[Context], dict[str, Any]]:
    def check(ctx: Context) -> dict[str, Any]:
        ctx.results[mode] = bench(ctx, mode)
        return ctx.results[mode]

    return check


def speedups_check(slow: bool) -> Callable[[Context], dict[str, Any]]:
    """engine.benchmarks.speedups.bench_speedups (one guided step and one canvas decode per
    variant, as ratios to its baseline): its variants in SLOW_ON_CPU (slow=True) or the others."""
    def check(ctx: Context) -> dict[str, Any]:
        if not _importable("engine.benchmarks.speedups"):
            return {"skipped": "engine.benchmarks.speedups is not in this checkout"}
        from engine.benchmarks.speedups import VARIANTS as KINDS, bench_speedups

        variants = [kind for kind in KINDS if (kind in SLOW_ON_CPU) == slow]
        if slow and ctx.dry_run:
            return {"skipped": "not in --dry-run: it takes minutes on a CPU", "variants": variants}
        return bench_speedups(models=ctx.models(), device=ctx.device, size=ctx.size,
                              dtype="float32" if ctx.dry_run else "float16", repeats=1 if ctx.dry_run else 3,
                              variants=variants, seed=ctx.seed)

    return check


def variant_check(name: str, overrides: dict[str, Any]) -> Callable[[Context], dict[str, Any]]:
    def check(ctx: Context) -> dict[str, Any]:
        from engine.core.options import OPTIONS

        undeclared = [option for option in overrides if option not in OPTIONS]
        if undeclared:
            return {"skipped": "option not declared: " + ", ".join(undeclared), "overrides": overrides}
        if ctx.dry_run and SLOW_ON_CPU & set(overrides):
            return {"skipped": "not in --dry-run: it takes minutes on a CPU", "overrides": overrides}
        result = bench(ctx, "ours", overrides)
        if "ours" in ctx.results:  # against the same run's plain ours
            result["vs_ours"] = measures().versus(result, ctx.results["ours"])
        return result

    return check


CHECKS: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
    ("install", check_install),
    ("environment", lambda ctx: measures().environment(ctx.device)),
    ("agreement", check_agreement),
    ("models", check_models),
    *((mode, mode_check(mode)) for mode in ("ours", "low_vram", "official")),  # bench_pages' MODES
    ("ratios", lambda ctx: measures().mode_ratios(ctx.results)),
    ("speedups", speedups_check(slow=False)),
    *((f"variant:{name}", variant_check(name, overrides)) for name, overrides in VARIANTS
      if not SLOW_ON_CPU & set(overrides)),
    ("speedups:compile", speedups_check(slow=True)),  # the slow ones last: the budget cuts them first
    *((f"variant:{name}", variant_check(name, overrides)) for name, overrides in VARIANTS
      if SLOW_ON_CPU & set(overrides)),
]


def planted(name: str, ctx: Context):
    """--inject-failure NAME (for the tests): during check NAME the Colorization Guide's forward
    raises a device-mixing error, deep inside the denoising loop, as a misplaced tensor would."""
    if ctx.args.inject_failure != name:
        return contextlib.nullcontext()
    from unittest import mock

    from engine.icp.guide import ColorGuiderSDModel

    return mock.patch.object(ColorGuiderSDModel, "forward", side_effect=RuntimeError(PLANTED), autospec=True)


def run_check(name: str, check: Callable[[Context], dict[str, Any]], ctx: Context, start: float) -> dict[str, Any]:
    """One check as one entry: its figures (ok), why not (skipped) or its error (error)."""
    entry: dict[str, Any] = {"name": name}
    began = time.monotonic()
    if ctx.args.only and name not in ctx.args.only | {"install", "environment"}:
        entry.update(status="skipped", ok=True, skipped="not in --only")
    elif began - start > ctx.args.budget_s:
        entry.update(status="skipped", ok=True, skipped=f"time budget spent (--budget-s {ctx.args.budget_s:g})")
    else:
        try:
            with planted(name, ctx):
                result = check(ctx)
            entry.update(status="skipped" if "skipped" in result else "ok", ok=True, **result)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded; the next check runs
            entry.update(status="error", ok=False, error=f"{type(exc).__name__}: {exc}",
                         error_kind=measures().error_kind(exc),
                         traceback=traceback.format_exc().strip().splitlines()[-12:])
        with contextlib.suppress(Exception):
            from engine.core.offload import free_memory

            free_memory()
    entry["s"] = round(time.monotonic() - began, 3)
    return entry


def write_report(path: Path, report: dict[str, Any]) -> None:
    """The JSON, atomically (engine.io.fileio) once the engine's dependencies are there."""
    try:
        from engine.io.fileio import atomic_write_json
    except ImportError:  # the engine's own dependencies missing: a plain write, still one JSON
        path.write_text(json.dumps(report, indent=2, default=str))
        return
    atomic_write_json(path, json.loads(json.dumps(report, default=str)))


def summary_line(entry: dict[str, Any]) -> str:
    name, status = entry["name"], entry["status"]
    if status == "error":
        return f"{name:<22} ERROR  [{entry['error_kind']}] {entry['error'][:160]}"
    if status == "skipped":
        return f"{name:<22} skip   {entry['skipped']}"
    if "chapter_s_per_page" in entry:
        chapter = f"chapter {entry['chapter_s_per_page']:.3f} s/page"
        if entry["s_per_page"] is None:
            return f"{name:<22} ok     {chapter}; INCOMPLETE stage timing, no s/page or peak"
        return f"{name:<22} ok     {entry['s_per_page']:.3f} s/page, peak {entry['peak_mib']:.0f} MiB ({chapter})"
    if name == "agreement":
        return (f"{name:<22} ok     {entry['compared_dtype']} vs float32: max {entry['max_abs_levels']}, mean "
                f"{entry['mean_abs_levels']} levels (fp32 repeat: max {entry['fp32_repeat_max_abs_levels']})")
    if name == "ratios":
        return f"{name:<22} ok     " + "; ".join(f"{pair}: time {r['time']['page']}, peak {r['peak_memory']['peak']}"
                                                  for pair, r in entry.items() if "/" in pair)
    if name == "environment":
        return f"{name:<22} ok     torch {entry['torch']}, CUDA {entry['cuda']}, {entry['gpu'] or 'no GPU'}"
    if name.startswith("speedups"):  # bench_speedups: each variant's step and decode time / baseline
        return f"{name:<22} ok     " + ", ".join(f"{v} step {r['step']} decode {r['decode']}"
                                                  for v, r in entry["ratios"].items() if v != "baseline")
    return f"{name:<22} ok     ({entry['s']:.1f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON (default gpu_check.json)")
    parser.add_argument("--models", help="a models DIR to measure (default: official-size random weights built here)")
    parser.add_argument("--work", help="work folder, kept (default: a temporary folder, removed at the end)")
    parser.add_argument("--dry-run", action="store_true",
                        help="the same flow on the CPU: tiny models, 256x256, 1 step, gray input, no installs")
    parser.add_argument("--only", type=lambda text: set(text.split(",")), help="only these checks (comma-separated)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="no check starts after this (default 360)")
    parser.add_argument("--inject-failure", help=argparse.SUPPRESS)  # tests: a device error planted in one check
    args = parser.parse_args(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA GPU is visible to this torch; use --dry-run for the CPU path", file=sys.stderr)
            return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine has no network: never ask the hub
    temporary = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="colorflow-gpu-check-")
    ctx = Context(args)
    ctx.work.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    report: dict[str, Any] = {
        "check": "ColorFlow GPU check (issue 23)", "project": use_checkout(), "dry_run": args.dry_run,
        "complete": False, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": ctx.device, "torch": None, "cuda": None, "cuda_available": None, "gpu": None, "gpu_total_mib": None,
        "settings": {"size": ctx.size, "steps": ctx.steps, "pages": ctx.pages, "references": ctx.refs,
                     "warmup": ctx.warmup, "seed": ctx.seed, "budget_s": args.budget_s},
        "checks": [], "failed": [], "device_mixing_errors": [], "wall_s": 0.0,
    }
    try:
        for name, check in CHECKS:
            report["running"] = name  # a run killed in a check says which
            write_report(args.out, report)
            entry = run_check(name, check, ctx, start)
            del report["running"]
            report["checks"].append(entry)
            if name == "environment" and entry["status"] == "ok":
                report.update({key: entry[key] for key in ("torch", "cuda", "cuda_available", "gpu", "gpu_total_mib")})
            if entry["status"] == "error":
                report["failed"].append(name)
                if entry["error_kind"] == "device_mixing":
                    report["device_mixing_errors"].append(name)
            report["settings"]["models"] = ctx._models
            report["wall_s"] = round(time.monotonic() - start, 2)
            write_report(args.out, report)
            print(summary_line(entry), flush=True)
        report["complete"] = True
        report["wall_s"] = round(time.monotonic() - start, 2)
        write_report(args.out, report)
    finally:
        if temporary:
            shutil.rmtree(args.work, ignore_errors=True)
    print(f"wall {report['wall_s']:.1f} s; {len(report['failed'])} failed; JSON: {args.out}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
