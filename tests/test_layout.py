"""The package layout is the architecture: each package imports only from those before it.

model → encoding → io → worker → dashboard → lab, with ``settings`` underneath all of them and ``cli`` on top.
The model package is plain Python: it must import (and run its doctests) with faust, aiokafka and torch
unavailable.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "streamrec"
ORDER = ("model", "encoding", "io", "worker", "dashboard", "lab")
FRAMEWORKS = {
    "model": ("faust", "mode", "aiokafka", "torch", "transformers"),
    "encoding": ("faust", "mode", "aiokafka"),
    "io": ("faust", "mode", "torch", "transformers"),
    "worker": (),
    "dashboard": ("faust", "mode", "torch", "transformers"),
    "lab": (),
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (relative imports resolved)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base]) if base else ".".join(parts)
            found.add(base)
    return found


def test_every_module_lives_in_a_package_or_is_a_known_top_level_one() -> None:
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py", "settings.py"]
    assert sorted(p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(ORDER)


@pytest.mark.parametrize("package", ORDER)
def test_packages_import_only_from_the_ones_before_them(package: str) -> None:
    allowed = {f"streamrec.{p}" for p in ORDER[: ORDER.index(package) + 1]} | {"streamrec.settings"}
    offenders = []
    for path in sorted((SRC / package).rglob("*.py")):
        for module in imported_modules(path):
            root = module.split(".")[0]
            if root == "streamrec" and not any(module == a or module.startswith(a + ".") for a in allowed):
                offenders.append(f"{path.relative_to(SRC)} imports {module}")
            if root in FRAMEWORKS[package]:
                offenders.append(f"{path.relative_to(SRC)} imports {module}")
    assert offenders == []


def test_settings_imports_nothing_from_streamrec() -> None:
    assert not {m for m in imported_modules(SRC / "settings.py") if m.startswith("streamrec")}


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"faust", "mode", "aiokafka", "torch", "transformers"}:
            raise ImportError(f"{name} is blocked: streamrec.model must not need it")
sys.meta_path.insert(0, Block())
import doctest, importlib, pkgutil, streamrec.model as pkg
failed = 0
for info in pkgutil.iter_modules(pkg.__path__, "streamrec.model."):
    module = importlib.import_module(info.name)
    failed += doctest.testmod(module).failed
print("ok" if failed == 0 else f"{failed} doctest(s) failed")
"""


def test_model_runs_without_faust_aiokafka_or_torch() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "ok"
