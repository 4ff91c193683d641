"""The layering contracts of pyproject.toml ([tool.importlinter]) hold, and they do catch a violation.

Each check runs ``lint-imports`` on a copy of the package, so a forbidden import can be planted in the copy
without touching the real tree; the copy is found first because lint-imports puts its working directory at
the front of ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # one contract per line, however long its name
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """pyproject.toml and the package's Python files, copied."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "rsitr_bench", tmp_path / "rsitr_bench",
                    ignore=lambda _dir, names: [n for n in names if not (n.endswith(".py") or "." not in n)
                                                or n == "__pycache__"])
    return tmp_path


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / "rsitr_bench" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_package_keeps_every_layering_contract(tree):
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("harness/registry.py", "import rsitr_bench.methods.global_clip", "The core never imports a built-in plugin"),
    ("keywords/rules.py", "import rsitr_bench.perspectives.grid", "Built-in plugin kinds never import each other"),
    ("metrics/kernel.py", "import rsitr_bench.data.model", "metrics is a leaf"),
    ("reports/table.py", "import rsitr_bench.harness.runner", "reports never import the runner"),
])
def test_a_forbidden_import_breaks_its_contract(tree, module, line, contract):
    _plant(tree, module, line)
    result = _lint(tree)
    assert result.returncode != 0
    broken = [text for text in result.stdout.splitlines() if " BROKEN" in text]
    assert len(broken) == 1 and broken[0].startswith(contract), result.stdout
