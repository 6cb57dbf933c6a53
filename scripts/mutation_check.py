"""Mutation check: plant known faults one at a time in a temporary copy of the repo and report which tests catch each."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What the tests need; .venv, .git, docs and caches stay behind (big, or irrelevant to the tests).
COPIED = ["engine", "app", "tests", "resources", "scripts", "main.py", "pyproject.toml"]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".import_linter_cache", "*.egg-info")

# A fault whose tests hang is reported, not waited for forever.
PYTEST_TIMEOUT_S = 1800

# Focused files first: pytest runs them in this order and -x stops at the first catch.
ICP_TESTS = ["tests/test_icp_loop.py", "tests/test_guide_injection.py", "tests/test_colorize.py", "tests/test_guide.py"]
CANVAS_TESTS = ["tests/test_canvas.py", "tests/test_retrieval.py"]
GSRP_TESTS = ["tests/test_gsrp_fusion.py", "tests/test_upscale.py"]
EXPORT_TESTS = ["tests/test_export.py"]
RESUME_TESTS = ["tests/test_resume_key.py", "tests/test_resume.py"]
OPTION_TESTS = ["tests/test_options.py", "tests/gui/test_settings_dialog.py"]


@dataclass(frozen=True)
class Fault:
    id: str
    name: str
    description: str
    path: str  # relative to the repo root
    original: str  # must occur exactly once in the file, else the fault is STALE
    replacement: str
    tests: list[str]  # test files; missing ones are skipped at run time (some are still being written)


FAULTS = [
    Fault(
        "1", "cfg-cond-only", "classifier-free guidance replaced by the conditional prediction alone",
        "engine/icp/colorize.py",
        "noise = uncond + settings.guidance_scale * (cond - uncond)",
        "noise = cond",
        ICP_TESTS,
    ),
    Fault(
        "2", "guide-latents-swapped", "guide conditioning: page latent and references latent exchanged",
        "engine/icp/conditioning.py",
        "torch.cat([references, mask_channel, page], dim=1)",
        "torch.cat([page, mask_channel, references], dim=1)",
        ICP_TESTS,
    ),
    Fault(
        # down[1:] feeds down_path states 0, 1, 2...; states 0 and 1 are the first block's two
        # resnets, so the swap keeps every shape (states 1 and 2 would not: 2 is downsampled).
        "3", "guide-down-residuals-swapped", "guide residuals for the first two down-block states exchanged",
        "engine/icp/guide.py",
        "features.down[1:] if features else None",
        "[features.down[2], features.down[1], *features.down[3:]] if features else None",
        ICP_TESTS,
    ),
    Fault(
        "4", "guide-mid-dropped", "guide mid-block residual dropped",
        "engine/icp/guide.py",
        "hidden = hidden + features.mid",
        "hidden = hidden",
        ICP_TESTS,
    ),
    Fault(
        "5", "placement-swap-in-row", "canvas placement: TL ranks 2 and 3 exchanged",
        "engine/rap/canvas.py",
        '"TL": ((1, 0), (0, 1), (0, 0)),',
        '"TL": ((1, 0), (0, 0), (0, 1)),',
        CANVAS_TESTS,
    ),
    Fault(
        # Across corners needs two lines changed (a one-line change would duplicate a cell).
        "6", "placement-swap-across-rows", "canvas placement: TL rank 1 (1, 0) exchanged with BL rank 1 (2, 0)",
        "engine/rap/canvas.py",
        '    "TL": ((1, 0), (0, 1), (0, 0)),\n'
        '    "TR": ((1, 3), (0, 2), (0, 3)),\n'
        '    "BL": ((2, 0), (3, 1), (3, 0)),',
        '    "TL": ((2, 0), (0, 1), (0, 0)),\n'
        '    "TR": ((1, 3), (0, 2), (0, 3)),\n'
        '    "BL": ((1, 0), (3, 1), (3, 0)),',
        CANVAS_TESTS,
    ),
    Fault(
        "7", "pins-reversed", "pinned references in reverse pin order",
        "engine/rap/retrieval.py",
        "chosen = sorted(pinned[query], key=lambda i: pin_order[(query, i)])",
        "chosen = sorted(pinned[query], key=lambda i: -pin_order[(query, i)])",
        CANVAS_TESTS,
    ),
    Fault(
        # Levels 3 and 4 are both the deepest width at 1/8 scale, so the swap keeps shapes.
        "8", "gsrp-deepest-levels-swapped", "GSRP decoder: the two deepest fused levels exchanged",
        "engine/gsrp/upscale.py",
        "    hidden = decoder.conv_in(latents) + fused[-1]\n",
        "    fused = [*fused[:-2], fused[-1], fused[-2]]\n"
        "    hidden = decoder.conv_in(latents) + fused[-1]\n",
        GSRP_TESTS,
    ),
    Fault(
        "9", "cbz-no-padding", "CBZ member names without zero padding",
        "engine/io/export.py",
        'f"{number:0{width}d}_{Path(name).stem}.png"',
        'f"{number}_{Path(name).stem}.png"',
        EXPORT_TESTS,
    ),
    Fault(
        "10", "resume-key-no-picks", "resume key ignores the retrieval picks",
        # The picks entry spans lines; emptying its source drops the picks from the hash.
        "engine/pipelines/settings.py",
        "for row in retrieval.picks",
        "for row in []",
        RESUME_TESTS,
    ),
    Fault(
        "11", "resume-key-no-keep-ink", "resume key ignores keep-ink",
        "engine/pipelines/settings.py",
        '            "keep_ink": self.keep_ink,\n',
        "",
        RESUME_TESTS,
    ),
    Fault(
        "12", "resume-key-no-upscale", "resume key ignores the upscale settings",
        "engine/pipelines/settings.py",
        '            "upscale": asdict(self.upscale),\n',
        "",
        RESUME_TESTS,
    ),
    Fault(
        "13", "option-dropped-from-train", "train icp/gsrp take --seed but no longer --device",
        "engine/cli/train.py",
        'add_options(parser, ("seed", "device"),',
        'add_options(parser, ("seed",),',
        OPTION_TESTS,
    ),
    Fault(
        "14", "option-wrong-default", "the declared default of the denoising steps is 20, not the official 10",
        "engine/core/options.py",
        "steps: int = _declare(10,",
        "steps: int = _declare(20,",
        OPTION_TESTS,
    ),
    Fault(
        "15", "option-dropped-from-dialog", "the settings dialog has no Low VRAM row",
        "app/settings.py",
        '"procedure", "keep_ink", "low_vram",',
        '"procedure", "keep_ink",',
        OPTION_TESTS,
    ),
    Fault(
        "16", "official-keeps-ink", "the official procedure no longer turns keep-ink off",
        "engine/core/options.py",
        '{"keep_ink": False, "output_size": OutputSize.GSRP,',
        '{"output_size": OutputSize.GSRP,',
        OPTION_TESTS,
    ),
]

CAUGHT, SURVIVED, STALE, NO_TESTS, ERROR = "CAUGHT", "SURVIVED", "STALE", "NO TESTS", "ERROR"


@dataclass
class Result:
    id: str
    name: str
    status: str
    caught_by: list[str] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0
    tests_run: list[str] = field(default_factory=list)


class Abort(RuntimeError):
    """The check cannot give trustworthy results (wrong package imported, baseline unusable)."""


def progress(message: str) -> None:
    # stderr, so `--json` output on stdout stays parseable.
    print(message, file=sys.stderr, flush=True)


def snippet_count(fault: Fault, root: Path) -> int:
    path = root / fault.path
    return path.read_text(encoding="utf-8").count(fault.original) if path.is_file() else 0


def stale_note(count: int) -> str:
    return "snippet not found" if count == 0 else f"snippet found {count} times"


def existing_tests(files: list[str]) -> tuple[list[str], list[str]]:
    present = [f for f in files if (REPO / f).is_file()]
    return present, [f for f in files if f not in present]


def make_copy(target: Path) -> Path:
    target.mkdir()
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=IGNORED)
        elif source.is_file():
            shutil.copy2(source, target / name)
    return target


def copy_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The copy goes first: the editable install points at the working tree, and its path
    # entry / finder must lose to PYTHONPATH.
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    return env


def check_imports_from(copy: Path, env: dict[str, str]) -> None:
    """Fail loudly unless `engine` and `app` resolve inside the copy (find_spec: nothing is executed)."""
    code = "import importlib.util as u; print(u.find_spec('engine').origin); print(u.find_spec('app').origin)"
    done = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True)
    origins = done.stdout.split()
    if done.returncode != 0 or len(origins) != 2:
        raise Abort(f"cannot locate engine/app in the copy:\n{done.stderr.strip()}")
    for origin in origins:
        if not Path(origin).resolve().is_relative_to(copy.resolve()):
            raise Abort(
                f"{origin} is imported instead of the copy under {copy}: the tests would run against "
                "the working tree, not the mutated copy (check PYTHONPATH / the editable install)"
            )


def _node_id(case: ET.Element) -> str:
    """pytest node id from a junit (xunit1) testcase: file::Class::name."""
    file, classname, name = case.get("file", ""), case.get("classname", ""), case.get("name", "")
    if not classname:  # collection error: pytest puts the module in `name`
        return f"{file or name.replace('.', '/') + '.py'} (collection error)"
    module = file[:-3].replace("/", ".") if file.endswith(".py") else ""
    classes = classname[len(module) + 1:] if module and classname.startswith(module + ".") else ""
    parts = [file or classname.replace(".", "/") + ".py", *filter(None, classes.split(".")), name]
    return "::".join(parts)


def failing_tests(junit: Path) -> list[str]:
    if not junit.is_file():
        return []
    failing = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failing.append(_node_id(case))
    return failing


def run_pytest(copy: Path, env: dict[str, str], files: list[str], junit: Path, stop_first: bool,
               deselect: list[str]) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-o", "junit_family=xunit1", f"--junitxml={junit}"]
    if stop_first:
        command.append("-x")
    else:
        # Otherwise one file that does not import stops the whole session, hiding other failures.
        command.append("--continue-on-collection-errors")
    for node in deselect:
        command += ["--deselect", node]
    try:
        done = subprocess.run([*command, *files], cwd=copy, env=env, capture_output=True, text=True,
                              timeout=PYTEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, f"pytest ran past {PYTEST_TIMEOUT_S}s"
    return done.returncode, done.stdout + done.stderr


def baseline(workdir: Path, files: list[str]) -> tuple[list[str], list[str]]:
    """Tests that already fail with no fault: they must not count as catches.

    Returns (node ids to deselect, files that do not even collect)."""
    copy = make_copy(workdir / "baseline")
    env = copy_env(copy)
    check_imports_from(copy, env)
    progress(f"baseline: {len(files)} test file(s) without any fault ...")
    start = time.perf_counter()
    code, output = run_pytest(copy, env, files, workdir / "baseline.xml", stop_first=False, deselect=[])
    failing = failing_tests(workdir / "baseline.xml")
    if code not in (0, 1, 2) or (code != 0 and not failing):
        raise Abort(f"baseline pytest exited {code}:\n{output[-3000:]}")
    broken_files = [f for f in files if f"{f} (collection error)" in failing]
    failing = [n for n in failing if not n.endswith("(collection error)")]
    progress(f"baseline: done in {time.perf_counter() - start:.0f}s")
    for node in failing:
        progress(f"  WARNING: fails without any fault, deselected: {node}")
    for file in broken_files:
        progress(f"  WARNING: does not collect without any fault, skipped: {file}")
    return failing, broken_files


def run_fault(fault: Fault, workdir: Path, deselect: list[str], broken_files: list[str]) -> Result:
    result = Result(fault.id, fault.name, SURVIVED)
    files, missing = existing_tests(fault.tests)
    files = [f for f in files if f not in broken_files]
    notes = [f"missing {f}" for f in missing] + [f"broken {f}" for f in fault.tests if f in broken_files]
    result.tests_run = files

    copy = make_copy(workdir / f"fault-{fault.id}")
    # Count in the copy, not the working tree: others may edit the file meanwhile.
    count = snippet_count(fault, copy)
    if count != 1:
        result.status, result.note = STALE, stale_note(count)
    elif not files:
        result.status, result.note = NO_TESTS, "; ".join(notes)
    if result.status != SURVIVED:
        shutil.rmtree(copy, ignore_errors=True)
        return result
    env = copy_env(copy)
    check_imports_from(copy, env)
    target = copy / fault.path
    target.write_text(target.read_text(encoding="utf-8").replace(fault.original, fault.replacement),
                      encoding="utf-8")

    junit = workdir / f"fault-{fault.id}.xml"
    start = time.perf_counter()
    code, output = run_pytest(copy, env, files, junit, stop_first=True, deselect=deselect)
    result.seconds = time.perf_counter() - start
    shutil.rmtree(copy, ignore_errors=True)  # keep the temp dir small across many faults

    caught_by = failing_tests(junit)
    if caught_by:
        result.status, result.caught_by = CAUGHT, caught_by
    elif code == 0:
        result.status = SURVIVED
    elif code == 5:
        result.status = NO_TESTS
        notes.append("pytest collected no tests")
    else:
        # pytest failed without a failing test (internal error, timeout): not a catch.
        result.status = ERROR
        notes.append(f"pytest exit {code}: {output.strip().splitlines()[-1] if output.strip() else ''}")
    result.note = "; ".join(notes)
    return result


def print_list(faults: list[Fault]) -> None:
    for fault in faults:
        count = snippet_count(fault, REPO)
        state = "ok" if count == 1 else f"STALE ({stale_note(count)})"
        present, missing = existing_tests(fault.tests)
        print(f"{fault.id:>3}  {fault.name}  [{state}]")
        print(f"     {fault.description}")
        replacement = repr(fault.replacement.strip()) if fault.replacement.strip() else "(deleted)"
        print(f"     {fault.path}: {fault.original.strip()!r} -> {replacement}")
        print(f"     tests: {' '.join(present) or '-'}" + (f"  (missing: {' '.join(missing)})" if missing else ""))


def print_table(results: list[Result]) -> None:
    rows = [("ID", "FAULT", "RESULT", "TIME", "CAUGHT BY / NOTE")]
    for r in results:
        detail = ", ".join(r.caught_by) if r.caught_by else ""
        detail = "; ".join(filter(None, [detail, r.note])) or "-"
        rows.append((r.id, r.name, r.status, f"{r.seconds:.0f}s" if r.seconds else "-", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these fault ids")
    parser.add_argument("--list", action="store_true", help="list the faults (and whether each still applies) without running")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmutated run that finds tests already failing (faster, but such tests would count as catches)")
    args = parser.parse_args(argv)

    faults = FAULTS
    if args.only:
        known = {f.id for f in FAULTS}
        unknown = [i for i in args.only if i not in known]
        if unknown:
            parser.error(f"unknown fault id(s): {' '.join(unknown)} (known: {' '.join(f.id for f in FAULTS)})")
        faults = [f for f in FAULTS if f.id in args.only]
    if args.list:
        print_list(faults)
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as tmp:
        workdir = Path(tmp)
        try:
            deselect, broken = [], []
            if not args.no_baseline:
                runnable = [f for f in faults if snippet_count(f, REPO) == 1]
                union = sorted({t for f in runnable for t in existing_tests(f.tests)[0]})
                if union:
                    deselect, broken = baseline(workdir, union)
            for number, fault in enumerate(faults, 1):
                progress(f"[{number}/{len(faults)}] fault {fault.id} ({fault.name}) ...")
                result = run_fault(fault, workdir, deselect, broken)
                progress(f"    {result.status}" + (f" by {', '.join(result.caught_by)}" if result.caught_by else "")
                         + (f" [{result.note}]" if result.note else "") + f" in {result.seconds:.0f}s")
                results.append(result)
        except Abort as error:
            progress(f"ABORT: {error}")
            return 2

    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print_table(results)
    return 0 if all(r.status == CAUGHT for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
