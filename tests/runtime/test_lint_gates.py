"""`make lint` fails on a wrong-way import and on a type error in the checked packages.

Each case copies the tree, breaks one thing, runs the same gates `make lint` runs
(`make lint-code`) on the copy, and expects them to fail naming the problem; the unbroken copy
passes, so the test can fail either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    copy.mkdir()
    for name in ("Makefile", "pyproject.toml", ".importlinter"):
        shutil.copy2(REPO / name, copy / name)
    ignore = shutil.ignore_patterns("__pycache__", "output", ".hypothesis", "*.egg-info")
    for name in ("infrakit_runtime", "tests", "bench", "plugins", "scripts", "requirements"):
        shutil.copytree(REPO / name, copy / name, ignore=ignore)
    return copy


def lint(copy: Path) -> subprocess.CompletedProcess[str]:
    # The copy's package first on the path: the gates must judge the copy, not the installed tree.
    env = {**os.environ, "PYTHONPATH": str(copy), "MYPY_CACHE_DIR": str(copy / ".mypy_cache")}
    return subprocess.run(["make", "--no-print-directory", "-C", str(copy), "lint-code", f"BIN={BIN}"],
                          capture_output=True, text=True, env=env, timeout=600)


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_the_unbroken_tree_passes_every_gate(tmp_path):
    result = lint(tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("where", "line", "contract"), [
    ("group/controller.py", "from infrakit_runtime.rpc import client as _wrong_way  # noqa: E402, F401\n",
     "group (the controller) knows plugins only through spi"),
    ("spi/common.py", "from infrakit_runtime import durations as _wrong_way  # noqa: E402, F401\n",
     "spi (contracts) imports nothing of ours"),
    ("group/plan/plan.py", "from infrakit_runtime.group import events as _wrong_way  # noqa: E402, F401\n",
     "the planner (group.plan) imports spi and durations only"),
    ("manager/manager.py", "from infrakit_runtime.backends import file as _wrong_way  # noqa: E402, F401\n",
     "the manager knows the Backend interface, never its implementations"),
    ("plugins/instance/file.py", "from infrakit_runtime.manager import backend as _wrong_way  # noqa: E402, F401\n",
     "plugins never import the manager"),
    ("cli/common.py", "from infrakit_runtime.cli import group as _cycle  # noqa: E402, F401\n",
     "the CLI package has no import cycle"),
])
def test_a_wrong_way_import_fails_lint_naming_the_contract(tmp_path, where, line, contract):
    copy = tree(tmp_path)
    append(copy / "infrakit_runtime" / where, line)
    result = lint(copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and contract in " ".join(result.stdout.split()), result.stdout[-3000:]


@pytest.mark.parametrize("where", ["spi/instance.py", "group/plan/memory.py", "rpc/lookup.py"])
def test_a_type_error_in_a_checked_package_fails_lint(tmp_path, where):
    copy = tree(tmp_path)
    append(copy / "infrakit_runtime" / where, '\n\ndef _broken() -> int:\n    return "not an int"\n')
    result = lint(copy)
    assert result.returncode != 0
    assert f"infrakit_runtime/{where}" in result.stdout and "Incompatible return value type" in result.stdout, \
        result.stdout[-3000:]


def test_an_untyped_function_in_the_strict_packages_fails_lint(tmp_path):
    copy = tree(tmp_path)
    append(copy / "infrakit_runtime" / "group" / "plan" / "summary.py", "\n\ndef _untyped(x):\n    return x\n")
    result = lint(copy)
    assert result.returncode != 0 and "Function is missing a type annotation" in result.stdout, result.stdout[-3000:]
