"""`invoke verify`: the testinfra checks of every role a host has, across the fleet, in parallel.

For each host, one pytest process runs the checks in ``roles/<role>/verify/`` of the host's roles
(a role's folder is picked up as soon as it exists; no list to maintain) with berth's plugin
(berth/checks/plugin.py), the host's merged variables and berth's SSH session. A process per host
keeps pytest, which is not thread-safe, out of the worker threads. The hosts' results are merged
into a host x check table, one line per problem, JUnit XML (one testsuite per host, one testcase per
check, as GitLab shows them in merge requests) and JSON.

Exit codes: 0 every check passed (accepted risks included), 2 a check failed (or could not run),
3 a host was unreachable and nothing failed (berth.engine.results.exit_code). The command itself (table,
problem lines, report files) is berth.cli.reports.verify.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from berth.checks import junit
from berth.engine.fleet import run_parallel
from berth.engine.results import HostResult, Status
from berth.engine.results import exit_code as results_exit_code
from berth.errors import BerthError, ExitCode
from berth.inventory.loader import Host
from berth.settings import RolePath

PASSED, FAILED, UNREACHABLE = Status.PASSED, Status.FAILED, Status.UNREACHABLE   # a host's and a check's
RISK, ERROR = "risk", "error"                                                     # a check's only
CELL = {PASSED: "[green]pass[/]", RISK: "[yellow]risk[/]", FAILED: "[bold red]FAIL[/]", ERROR: "[bold red]ERROR[/]",
        UNREACHABLE: "[red]unreachable[/]"}
HOST_TIMEOUT = 300.0     # seconds for one host's checks, connection included


@dataclass
class CheckResult:
    id: str                 # role/check[param], the same on every host
    role: str
    name: str
    status: str
    cis: list[str] = field(default_factory=list)
    message: str = ""       # one line: why it failed, or the accepted risk
    detail: str = ""        # the longer failure text (JUnit)
    title: str = ""
    file: str = ""
    seconds: float = 0.0


@dataclass
class HostChecks(HostResult):
    """One host's verification: its checks' results."""

    status: str = PASSED
    checks: list[CheckResult] = field(default_factory=list)
    started: float = 0.0    # epoch seconds: shows the hosts ran at the same time
    finished: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "status": str(self.status),
                "checks": [{k: v for k, v in asdict(c).items() if k != "detail"} for c in self.checks],
                "ssh_commands": self.commands, "seconds": round(self.seconds, 3), "started": self.started,
                "finished": self.finished, "error": self.error}


def verify_dirs(host: Host, roles_dir: RolePath | Path) -> list[Path]:
    """The verify/ folders of the host's roles, in role order. A role without one has no checks yet."""
    found = [RolePath.of(roles_dir).find(role) for role in host.roles]
    return [folder / "verify" for folder in found if folder is not None and (folder / "verify").is_dir()]


def host_status(checks: Sequence[CheckResult], error: str | None = None) -> str:
    statuses = {c.status for c in checks}
    if UNREACHABLE in statuses:
        return UNREACHABLE
    if error or statuses & {FAILED, ERROR}:
        return FAILED
    return PASSED


def exit_code(results: Sequence[HostChecks]) -> ExitCode:
    return results_exit_code(r.status for r in results)


# -- running ---------------------------------------------------------------------------------------
@dataclass
class Verifier:
    """Runs the checks of hosts; safe to share between worker threads (one process per host)."""

    root: Path
    roles_dir: RolePath | Path
    ssh: dict[str, Any]                     # host_key_checking, connect_timeout
    workdir: Path
    identity: Path | None = None            # the controller's client certificate folder (role docker_tls)
    timeout: float = HOST_TIMEOUT

    def context(self, host: Host) -> dict[str, Any]:
        from berth.transport.ssh import SSHSettings, network_address

        controller: dict[str, Any] = {"identity": str(self.identity) if self.identity else None}
        try:
            controller["address"] = network_address(host, SSHSettings(connect_timeout=self.ssh["connect_timeout"]))
        except BerthError as exc:
            controller["address_error"] = str(exc)
        return {"host": {"name": host.name, "groups": host.groups, "vars": host.vars, "roles": host.roles},
                "ssh": self.ssh, "roles_dir": [str(d) for d in RolePath.of(self.roles_dir).dirs],
                "controller": controller}

    def run(self, host: Host) -> HostChecks:
        result = HostChecks(host.name, started=time.time())
        began = time.monotonic()
        try:
            dirs = verify_dirs(host, self.roles_dir)
            if dirs:
                self._pytest(host, dirs, result)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A worker must not raise (fleet.run_parallel): the host is reported with the error.
            result.error = f"verify could not run: {exc.__class__.__name__}: {exc}"
        finally:
            result.seconds = time.monotonic() - began
            result.finished = time.time()
        result.status = host_status(result.checks, result.error)
        return result

    def _pytest(self, host: Host, dirs: list[Path], result: HostChecks) -> None:
        context = self.workdir / f"{host.name}.context.json"
        answer = self.workdir / f"{host.name}.results.json"
        context.write_text(json.dumps(self.context(host), default=str))
        argv = [sys.executable, "-m", "pytest", *map(str, dirs), "-p", "berth.checks.plugin",
                # testinfra's own plugin would bring its paramiko `host` fixture (no known_hosts).
                "-p", "no:pytest11.testinfra", "-p", "no:cacheprovider", "--import-mode=importlib",
                "--rootdir", str(self.root), "-o", "addopts=", "-q", "--no-header", "-rN",
                "--berth-context", str(context), "--berth-results", str(answer)]
        try:
            proc = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=self.timeout,
                                  env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        except subprocess.TimeoutExpired:
            result.error = f"the checks did not finish in {self.timeout:.0f}s"
            return
        if not answer.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            result.error = f"pytest exited {proc.returncode} without results: " + " | ".join(tail)
            return
        data = json.loads(answer.read_text())
        result.checks = [CheckResult(**c) for c in data["checks"]]
        result.commands = data["ssh_commands"]


def verify(hosts: Sequence[Host], *, root: Path, roles_dir: RolePath | Path, ssh: dict[str, Any], forks: int,
           identity: Path | None) -> list[HostChecks]:
    with tempfile.TemporaryDirectory(prefix="berth-verify-") as tmp:
        verifier = Verifier(root, roles_dir, ssh, Path(tmp), identity)
        return run_parallel(hosts, verifier.run, forks=forks, label="verifying")


# -- reports ---------------------------------------------------------------------------------------
def _cis(check: CheckResult) -> str:
    return " ".join(check.cis)


def check_rows(results: Sequence[HostChecks]) -> list[CheckResult]:
    """One check per row, in the order the hosts ran them (the first host that has it describes it)."""
    rows: dict[str, CheckResult] = {}
    for r in results:
        for c in r.checks:
            rows.setdefault(c.id, c)
    return list(rows.values())


def table(results: Sequence[HostChecks], *, title: str = "berth verify") -> Table:
    """Rows are checks (with their CIS IDs), columns hosts; '-' where a host does not have the check's role."""
    t = Table(title=title, title_justify="left")
    t.add_column("check")
    t.add_column("CIS")
    for r in results:
        t.add_column(escape(r.host), justify="center")
    cells = {r.host: {c.id: c.status for c in r.checks} for r in results}
    for row in check_rows(results):
        t.add_row(escape(row.id), _cis(row), *[CELL.get(cells[r.host].get(row.id, ""), "-") for r in results])
    t.add_section()
    t.add_row("ssh commands", "", *[str(r.commands) for r in results])
    t.add_row("seconds", "", *[f"{r.seconds:.1f}" for r in results])
    return t


def problem_lines(results: Sequence[HostChecks]) -> list[str]:
    """One line per problem; hosts that share a check and message share a line. Unreachable hosts once each."""
    lines: list[str] = []
    for r in results:
        reasons = {c.message for c in r.checks if c.status == UNREACHABLE}
        if r.status == UNREACHABLE:
            lines.append(f"{r.host}: UNREACHABLE: {'; '.join(sorted(reasons))}")
        if r.error:
            lines.append(f"{r.host}: ERROR: {r.error}")
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for r in results:
        for c in r.checks:
            if c.status in (FAILED, ERROR, RISK):
                grouped.setdefault((c.id, c.status, c.message), []).append(r.host)
    order = {FAILED: 0, ERROR: 0, RISK: 1}
    for (check_id, status, message), hosts in sorted(grouped.items(), key=lambda kv: order[kv[0][1]]):
        cis = next((_cis(c) for c in check_rows(results) if c.id == check_id), "")
        label = {FAILED: "FAIL", ERROR: "ERROR", RISK: "accepted risk"}[status]
        lines.append(f"{', '.join(hosts)} {check_id}{f' [CIS {cis}]' if cis else ''}: {label}: {message}")
    return lines


def summary(results: Sequence[HostChecks], seconds: float) -> str:
    count = {s: sum(r.count(s) for r in results) for s in (PASSED, RISK, FAILED, ERROR)}
    unreachable = sum(1 for r in results if r.status == UNREACHABLE)
    return (f"{len(results)} host(s) in {seconds:.1f}s: {count[PASSED]} passed, {count[FAILED] + count[ERROR]} failed, "
            f"{count[RISK]} accepted risk(s), {unreachable} host(s) unreachable")


def case_name(check: CheckResult) -> str:
    return f"{check.role}: {check.name}" + (f" [CIS {_cis(check)}]" if check.cis else "")


def junit_xml(results: Sequence[HostChecks]) -> bytes:
    """JUnit XML: one <testsuite> per host, one <testcase> per check (berth/checks/junit.py writes it).

    Failed checks are <failure>, checks that could not run (or a lost host) <error>; an accepted risk
    passes and says so in <system-out>, which GitLab shows with the test case.
    """
    suites = []
    for r in results:
        cases = []
        for c in r.checks:
            case = junit.Case(case_name(c), f"{r.host}.{c.role}", c.seconds, file=c.file,
                              properties=[("cis", cis_id) for cis_id in c.cis])
            if c.status == FAILED:
                case.outcome, case.kind = junit.FAILURE, "check failed"
            elif c.status in (ERROR, UNREACHABLE):
                case.outcome, case.kind = junit.ERROR, c.status
            if case.outcome != junit.PASSED:
                case.message, case.text = c.message, c.detail or c.message
            elif c.status == RISK:
                case.system_out = f"ACCEPTED RISK: {c.message}"
            cases.append(case)
        if r.error:
            cases.append(junit.Case("verify", r.host, r.seconds, junit.ERROR, r.error, "error", r.error))
        suites.append(junit.Suite(
            r.host, cases, seconds=r.seconds, hostname=r.host,
            timestamp=datetime.fromtimestamp(r.started or 0, UTC).isoformat(timespec="seconds"),
            properties=[("ssh_commands", str(r.commands)), ("status", r.status)]))
    return junit.junit_xml("berth verify", suites, seconds=max((r.seconds for r in results), default=0))
