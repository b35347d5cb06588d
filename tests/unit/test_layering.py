"""The package's layering and the host-side code's limits, checked as `make lint` checks them.

- import-linter's contracts (pyproject.toml [tool.importlinter]) catch an import against the layering: shown
  here on a copy of the package with one added.
- berth/remote/*.py runs on the hosts' python3 (Debian 11: 3.9) and is sent there alone: its syntax must be
  3.9's and it may import the standard library only. ast's feature_version catches new syntax (match,
  except*, parenthesised context managers, ...), NOT new standard-library APIs (e.g. str.removeprefix is
  3.9, itertools.pairwise 3.10): those only show when the agent runs on a 3.9, as in the testbed's hosts.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REMOTE = sorted((ROOT / "berth" / "remote").glob("*.py"))
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(project: Path, contract: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(project / "pyproject.toml"), "--contract", contract,
                           "--no-cache"], cwd=project, capture_output=True, text=True, timeout=120)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package and its contracts, in a directory of their own (the copy is what lint-imports imports)."""
    shutil.copytree(ROOT / "berth", tmp_path / "berth", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize(("contract", "module", "line", "forbidden"), [
    ("engine", "berth/engine/plan.py", "from berth.pki import ca as _ca\n", "berth.engine.plan -> berth.pki.ca"),
    ("remote", "berth/remote/agent.py", "import berth.errors\n", "berth.remote.agent -> berth.errors"),
    ("transport", "berth/transport/local.py", "from berth.engine import plan as _plan\n",
     "berth.transport.local -> berth.engine.plan"),
    ("inventory", "berth/inventory/paths.py", "import berth.transport.ssh\n", "berth.inventory.paths -> "),
])
def test_a_layering_violation_fails_lint_imports(copy: Path, contract: str, module: str, line: str,
                                                 forbidden: str) -> None:
    kept = lint_imports(copy, contract)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    path = copy / module
    text = path.read_text()
    at = text.index("\nimport ") + 1         # among the module's own imports
    path.write_text(text[:at] + line + text[at:])
    broken = lint_imports(copy, contract)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout
    assert forbidden in broken.stdout


@pytest.mark.parametrize("path", REMOTE, ids=lambda p: p.name)
def test_host_side_code_is_python_3_9_syntax(path: Path) -> None:
    ast.parse(path.read_text(), str(path), feature_version=(3, 9))


def test_the_3_9_check_refuses_newer_syntax() -> None:
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 9))


# The standard library of Pythons newer than this one: CPython 3.12 renamed _sha256 to _sha2 (the agent tries both).
NEWER_STDLIB = frozenset({"_sha2"})


@pytest.mark.parametrize("path", REMOTE, ids=lambda p: p.name)
def test_host_side_code_imports_the_standard_library_only(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import (the file is sent to the host alone)"
            imported.add((node.module or "").split(".")[0])
    outside = sorted(name for name in imported if name not in sys.stdlib_module_names | NEWER_STDLIB)
    assert outside == [], f"{path.name} imports {outside}: the hosts have the standard library only"
