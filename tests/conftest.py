"""The testbed, started once per test session (when a test first asks for it) and shared by every test that
needs it: tests/integration and the testbed half of tests/security.

A testbed that cannot start fails the session: these tests never skip for lack of Docker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from berth.pki.ca import CertificateAuthority
from berth.testbed import Testbed
from tests.standins.gitlab_runner.build import build_deb

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = Path(__file__).parent / "integration" / "inventory" / "hosts.yml"
HOSTS = ["r1", "r2", "r3", "r4"]


@dataclass
class Run:
    code: int
    out: str
    err: str
    report: Any = None

    @property
    def output(self) -> str:
        return self.out + self.err

    def host(self, name: str) -> dict[str, Any]:
        return next(r for r in self.report if r["host"] == name)


class Berth:
    """Runs the real command line (`invoke ...` in the project directory), as a user would."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pki_dir = tmp / "pki"        # the session's own CA, not the project's
        self.calls = 0
        self.outputs: list[str] = []

    def __call__(self, *args: str, inventory: Path | None = INVENTORY, env: dict[str, str] | None = None,
                 timeout: float = 600) -> Run:
        self.calls += 1
        report = self.tmp / f"report-{self.calls}.json"
        argv = [str(Path(sys.executable).parent / "invoke"), *args]
        if inventory is not None:
            argv += ["--inventory", str(inventory)]
        if args[0] in ("setup-runner", "rollout", "verify", "certs.status", "smoke"):
            argv += ["--json", str(report)]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "COLUMNS": "200", "BERTH_PKI_DIR": str(self.pki_dir), **(env or {})})
        self.outputs.append(proc.stdout + proc.stderr)
        data = json.loads(report.read_text()) if report.exists() else None
        return Run(proc.returncode, proc.stdout, proc.stderr, data)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    bed = Testbed(ROOT)
    bed.up(len(HOSTS), fresh=True)
    yield bed
    bed.down()      # the tests' runners and CA must not outlive the session (`make demo` starts clean)


@pytest.fixture(scope="session")
def berth(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Berth:
    return Berth(tmp_path_factory.mktemp("berth"))


@pytest.fixture(scope="session")
def first_converge(berth: Berth) -> Run:
    """The first converge of every testbed host, in parallel (installs Docker everywhere)."""
    build_deb(ROOT / ".testbed" / "standins")   # the gitlab-runner stand-in the gitlab group installs
    init = berth("certs.init", inventory=None)
    assert init.code == 0, init.output
    run = berth("setup-runner", "--limit", "runners")
    assert run.code == 0, run.output
    return run


@pytest.fixture
def converged(first_converge: Run, berth: Berth) -> Run:
    """Hosts as the inventory declares them, before and after a test (tests break hosts on purpose)."""
    run = berth("setup-runner", "--limit", "runners")
    assert run.code == 0, run.output
    yield run
    repair = berth("setup-runner", "--limit", "runners")
    assert repair.code == 0, repair.output


# A CA of berth's in a test's own directory (tests/unit/test_pki.py, tests/security).
@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    return tmp_path / "pki"


@pytest.fixture
def ca(pki_dir: Path) -> CertificateAuthority:
    return CertificateAuthority.init(pki_dir)
