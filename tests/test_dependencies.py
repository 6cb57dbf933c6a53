"""Every third-party module the engine or the GUI imports is a declared dependency, pinned for CI."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Installed with a declared dependency as one project: shiboken6 is PySide6's own binding runtime.
SAME_PROJECT = {"shiboken6": "pyside6-essentials"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(lines) -> set[str]:
    return {_canonical(re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0]) for line in lines
            if line.strip() and not line.strip().startswith("#")}


def _imported_top_modules() -> dict[str, str]:
    """Top-level third-party module -> one file importing it (absolute imports of engine/ and app/)."""
    found: dict[str, str] = {}
    for folder in ("engine", "app"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("engine", "app", "__future__"):
                        found.setdefault(top, str(path.relative_to(REPO_ROOT)))
    return found


def test_every_imported_third_party_module_is_declared_and_pinned():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    # the studio extra's Ray (issue 26): imported only by the Ray path, which says how to install it when missing
    declared = _requirement_names([*project["dependencies"], *project["optional-dependencies"]["studio"]])
    pinned = _requirement_names((REPO_ROOT / "constraints" / "cpu.txt").read_text().splitlines())
    distributions = packages_distributions()
    undeclared, unpinned = [], []
    for module, where in sorted(_imported_top_modules().items()):
        names = {_canonical(d) for d in distributions.get(module, [module])} | {SAME_PROJECT.get(module, "")}
        if not names & declared:
            undeclared.append(f"{module} ({where})")
        if not names & pinned:
            unpinned.append(f"{module} ({where})")
    assert undeclared == [] and unpinned == []
