"""`invoke verify`: the testinfra checks of every role a host has, across the fleet, in parallel.

For each host, one pytest process runs the checks in ``roles/<role>/verify/`` of the host's roles
(a role's folder is picked up as soon as it exists; no list to maintain) with berth's plugin
(berth/checks/plugin.py), the host's merged variables and berth's SSH session. A process per host
keeps pytest, which is not thread-safe, out of the worker threads. The hosts' results are merged
into a host x check table, one line per problem, JUnit XML (one testsuite per host, one testcase per
check, as GitLab shows them in merge requests) and JSON.

Exit codes: 0 every check passed (accepted risks included), 2 a check failed (or could not run),
3 a host was unreachable and nothing failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from berth.engine.fleet import run_parallel
from berth.errors import BerthError, ExitCode
from berth.inventory.loader import Host
from berth.settings import RolePath

PASSED, RISK, FAILED, ERROR, UNREACHABLE = "passed", "risk", "failed", "error", "unreachable"
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
class HostResult:
    host: str
    status: str = PASSED
    checks: list[CheckResult] = field(default_factory=list)
    ssh_commands: int = 0
    seconds: float = 0.0
    started: float = 0.0    # epoch seconds: shows the hosts ran at the same time
    finished: float = 0.0
    error: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["checks"] = [{k: v for k, v in asdict(c).items() if k != "detail"} for c in self.checks]
        return data


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


def exit_code(results: Sequence[HostResult]) -> ExitCode:
    statuses = {r.status for r in results}
    if FAILED in statuses:
        return ExitCode.HOST_FAILED
    if UNREACHABLE in statuses:
        return ExitCode.HOST_UNREACHABLE
    return ExitCode.OK


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

    def run(self, host: Host) -> HostResult:
        result = HostResult(host.name, started=time.time())
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

    def _pytest(self, host: Host, dirs: list[Path], result: HostResult) -> None:
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
        result.ssh_commands = data["ssh_commands"]


def verify(hosts: Sequence[Host], *, root: Path, roles_dir: RolePath | Path, ssh: dict[str, Any], forks: int,
           identity: Path | None) -> list[HostResult]:
    with tempfile.TemporaryDirectory(prefix="berth-verify-") as tmp:
        verifier = Verifier(root, roles_dir, ssh, Path(tmp), identity)
        return run_parallel(hosts, verifier.run, forks=forks, label="verifying")


# -- reports ---------------------------------------------------------------------------------------
def _cis(check: CheckResult) -> str:
    return " ".join(check.cis)


def check_rows(results: Sequence[HostResult]) -> list[CheckResult]:
    """One check per row, in the order the hosts ran them (the first host that has it describes it)."""
    rows: dict[str, CheckResult] = {}
    for r in results:
        for c in r.checks:
            rows.setdefault(c.id, c)
    return list(rows.values())


def table(results: Sequence[HostResult], *, title: str = "berth verify") -> Table:
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
    t.add_row("ssh commands", "", *[str(r.ssh_commands) for r in results])
    t.add_row("seconds", "", *[f"{r.seconds:.1f}" for r in results])
    return t


def problem_lines(results: Sequence[HostResult]) -> list[str]:
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


def summary(results: Sequence[HostResult], seconds: float) -> str:
    count = {s: sum(r.count(s) for r in results) for s in (PASSED, RISK, FAILED, ERROR)}
    unreachable = sum(1 for r in results if r.status == UNREACHABLE)
    return (f"{len(results)} host(s) in {seconds:.1f}s: {count[PASSED]} passed, {count[FAILED] + count[ERROR]} failed, "
            f"{count[RISK]} accepted risk(s), {unreachable} host(s) unreachable")


def case_name(check: CheckResult) -> str:
    return f"{check.role}: {check.name}" + (f" [CIS {_cis(check)}]" if check.cis else "")


def junit_xml(results: Sequence[HostResult]) -> bytes:
    """JUnit XML: <testsuites>, one <testsuite> per host, one <testcase> per check.

    Failed checks are <failure>, checks that could not run (or a lost host) <error>; an accepted risk
    passes and says so in <system-out>, which GitLab shows with the test case.
    """
    def counts(items: Sequence[CheckResult], extra_error: int = 0) -> dict[str, str]:
        return {"tests": str(len(items) + extra_error), "failures": str(sum(c.status == FAILED for c in items)),
                "errors": str(sum(c.status in (ERROR, UNREACHABLE) for c in items) + extra_error), "skipped": "0"}

    every = [c for r in results for c in r.checks]
    crashed = sum(1 for r in results if r.error)
    root = ET.Element("testsuites", name="berth verify", **counts(every, crashed),
                      time=f"{max((r.seconds for r in results), default=0):.3f}")
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.host, **counts(r.checks, 1 if r.error else 0),
                              time=f"{r.seconds:.3f}", hostname=r.host,
                              timestamp=datetime.fromtimestamp(r.started or 0, UTC).isoformat(timespec="seconds"))
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="ssh_commands", value=str(r.ssh_commands))
        ET.SubElement(props, "property", name="status", value=r.status)
        for c in r.checks:
            case = ET.SubElement(suite, "testcase", name=case_name(c), classname=f"{r.host}.{c.role}",
                                 time=f"{c.seconds:.3f}", file=c.file)
            if c.cis:
                cprops = ET.SubElement(case, "properties")
                for cis_id in c.cis:
                    ET.SubElement(cprops, "property", name="cis", value=cis_id)
            if c.status == FAILED:
                ET.SubElement(case, "failure", message=c.message, type="check failed").text = c.detail or c.message
            elif c.status in (ERROR, UNREACHABLE):
                ET.SubElement(case, "error", message=c.message, type=c.status).text = c.detail or c.message
            elif c.status == RISK:
                ET.SubElement(case, "system-out").text = f"ACCEPTED RISK: {c.message}"
        if r.error:
            case = ET.SubElement(suite, "testcase", name="verify", classname=r.host, time=f"{r.seconds:.3f}")
            ET.SubElement(case, "error", message=r.error, type="error").text = r.error
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def run(project: Any, hosts: Sequence[Host], *, forks: int = 0, junit: str = "", json_path: str = "") -> ExitCode:
    """The `invoke verify` task: check the hosts, print the table and the problems, write the reports."""
    from berth.cli import app as cli
    from berth.pki.ca import CertificateAuthority
    from berth.pki.tls import controller_identity

    identity = None
    if any("docker_tls" in h.roles for h in hosts):
        # The controller-side TLS checks present berth's own client certificate (renewed when due).
        # verify only reads: ca.pem suffices; berth's own certificate is renewed only when the CA key is at hand.
        ca = CertificateAuthority.load_for_reading(project.settings.pki_dir, passphrase=cli.ca_passphrase())
        identity = controller_identity(ca, project.settings.pki_dir).path
    ssh = {"host_key_checking": project.settings.host_key_checking,
           "connect_timeout": project.settings.connect_timeout}
    began = time.monotonic()
    results = verify(hosts, root=project.settings.root, roles_dir=project.settings.role_path, ssh=ssh,
                     forks=forks or project.settings.forks, identity=identity)
    seconds = time.monotonic() - began
    cli.console.print(table(results))
    for line in problem_lines(results):
        style = "yellow" if ": accepted risk: " in line else "bold red"
        cli.console.print(f"[{style}]{escape(cli.redact(line, cli.secrets()))}[/]", soft_wrap=True)
    cli.console.print(summary(results, seconds))
    cli.write_junit(junit, junit_xml(results))
    cli.write_json(json_path, [r.as_dict() for r in results])
    return exit_code(results)
