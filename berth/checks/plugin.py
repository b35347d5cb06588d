"""The pytest plugin behind `invoke verify`: fixtures for the checks in ``roles/<role>/verify/``.

berth.checks.verify runs one pytest process per host with ``-p berth.checks.plugin``; this module gives
the checks of that host:

- ``host_vars``: the host's merged variables (checks compare the host with the inventory);
- ``facts``: everything the checks read, gathered in ONE SSH command (berth/remote/facts.py). Each
  role's ``verify/conftest.py`` asks for what its checks need through the hook
  ``pytest_berth_verify_facts(request, host_vars)``, so a new role's checks need no change here;
- ``host``: a testinfra Host for anything else (``host.file(p).mode`` ...). It runs over the same
  berth SSH session (ssh_config, strict known_hosts, sudo), and every command it sends is counted;
  prefer ``facts``: each testinfra property is one more SSH round trip;
- ``contributions``: what the host's roles contribute to shared documents (berth/engine/contributions.py),
  computed from the host's variables as a converge computes them: an owner's checks compare with them;
- ``controller``: the controller's side of a TLS port (berth's client certificate, berth's CA);
- ``accept_risk(reason)`` and ``deviation(cis_id, message)`` for controls broken on purpose.

A check carries its CIS Docker Benchmark IDs with ``@pytest.mark.cis("3.13", "3.14")``.
Results (one per check: passed, failed, error, risk or unreachable, a one-line message) are
written as JSON for berth.checks.verify, which merges the hosts into the table, JUnit and JSON reports.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra.backend.base
import testinfra.host

from berth.checks.facts import Facts, FactsRequest
from berth.engine.contributions import Contributions
from berth.engine.roles import RoleContext
from berth.errors import HostFailed, HostUnreachable
from berth.inventory.loader import Host
from berth.pki.tls import ClientIdentity, Served, client_context, probe_port
from berth.settings import RolePath
from berth.transport.bootstrap import HostScript
from berth.transport.ssh import Session, SSHSettings

# Source and request travel on stdin, as for berth's agent (berth/transport/bootstrap.py).
FACTS = HostScript(Path(__file__).parents[1] / "remote" / "facts.py", "berth_verify_facts")


class BerthBackend(testinfra.backend.base.BaseBackend):
    """testinfra over berth's SSH session: its host key policy, its sudo, its command count.

    testinfra's own paramiko backend accepts unknown host keys (WarningPolicy, no known_hosts).
    """

    NAME = "berth"

    def __init__(self, session: Session) -> None:
        super().__init__(session.host.name)
        self.session = session
        self._encoding = "utf-8"         # spares testinfra the command that asks the host

    def run(self, command: str, *args: str, **kwargs: Any) -> testinfra.backend.base.CommandResult:
        cmd = self.get_command(command, *args)
        result = self.session.run(cmd)
        return self.result(result.exit_code, self.encode(cmd), result.stdout, result.stderr)


@dataclass
class Controller:
    """The controller's view of a host's TLS port: berth's client certificate and CA."""

    identity: ClientIdentity
    ca_pem: bytes
    address: str
    server_name: str

    def probe(self, port: int) -> Served:
        """Handshake with berth's client certificate, verify the server, GET /_ping."""
        return probe_port(self.address, port, identity=self.identity, ca_pem=self.ca_pem,
                          server_name=self.server_name)

    def without_certificate(self, port: int, timeout: float = 5.0) -> tuple[str, str]:
        """Try GET /_ping with no client certificate: ("refused" | "answered" | "unreachable", detail)."""
        try:
            raw = socket.create_connection((self.address, port), timeout=timeout)
        except OSError as exc:
            return "unreachable", f"cannot connect to {self.address}:{port} ({exc.__class__.__name__}: {exc})"
        ctx = client_context(None, self.ca_pem)
        try:
            with raw, ctx.wrap_socket(raw, server_hostname=self.server_name) as tls:
                tls.sendall(f"GET /_ping HTTP/1.1\r\nHost: {self.server_name}\r\nConnection: close\r\n\r\n".encode())
                reply = tls.recv(4096).decode(errors="replace")
        except ssl.SSLError as exc:
            return "refused", f"TLS alert: {exc.reason or exc}"
        except (ConnectionResetError, BrokenPipeError, TimeoutError) as exc:
            return "refused", f"{exc.__class__.__name__}"
        if not reply:
            return "refused", "the server closed the connection"
        return "answered", reply.split("\r\n", 1)[0]


# -- the plugin ----------------------------------------------------------------------------------
class _Hooks:
    @staticmethod
    def pytest_berth_verify_facts(request: FactsRequest, host_vars: dict[str, Any]) -> None:
        """Add what this role's checks need to the host's one facts command."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(_Hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("berth", "berth verify")
    group.addoption("--berth-context", help="JSON file: the host, its variables, SSH settings, controller identity")
    group.addoption("--berth-results", help="JSON file to write the per-check results to")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cis(*ids): the CIS Docker Benchmark controls a check proves")
    recorder = _Recorder(config)
    config.stash[_RECORDER] = recorder
    config.pluginmanager.register(recorder, "berth-verify-recorder")


@pytest.fixture(scope="session")
def berth_context(pytestconfig: pytest.Config) -> dict[str, Any]:
    path = pytestconfig.getoption("berth_context")
    if not path:
        raise pytest.UsageError("run the checks with `berth verify` (--berth-context is missing)")
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def host_vars(berth_context: dict[str, Any]) -> dict[str, Any]:
    """The host's merged variables, as `invoke inventory.show` lists them."""
    return berth_context["host"]["vars"]


@pytest.fixture(scope="session")
def inventory_host(berth_context: dict[str, Any]) -> Host:
    h = berth_context["host"]
    return Host(h["name"], h["groups"], h["vars"], {}, h["roles"])


@pytest.fixture(scope="session")
def roles_dir(berth_context: dict[str, Any]) -> RolePath:
    """Where the host's roles are found (the project's roles/, then berth's): RoleContext(roles_dir) takes it."""
    return RolePath.of(berth_context["roles_dir"])


@pytest.fixture(scope="session")
def contributions(inventory_host: Host, roles_dir: Path) -> Contributions:
    """What the host's roles contribute to shared documents (docker.daemon_json, docker.job_modes...)."""
    return RoleContext(roles_dir).contributions(inventory_host)


@pytest.fixture(scope="session")
def ssh_session(berth_context: dict[str, Any], inventory_host: Host, pytestconfig: pytest.Config) -> Iterator[Session]:
    ssh = berth_context["ssh"]
    session = Session(inventory_host, SSHSettings(host_key_checking=ssh["host_key_checking"],
                                                  connect_timeout=float(ssh["connect_timeout"])))
    pytestconfig.stash[_RECORDER].sessions.append(session)
    yield session
    session.close()


@pytest.fixture(scope="session")
def facts(ssh_session: Session, host_vars: dict[str, Any], pytestconfig: pytest.Config) -> Facts:
    """Every fact the checks asked for, from one SSH command (a failure here is the host's, for every check)."""
    request = FactsRequest()
    pytestconfig.hook.pytest_berth_verify_facts(request=request, host_vars=host_vars)
    result = FACTS.run(ssh_session, json.dumps(request.as_json()))
    if not result.ok:
        raise HostFailed(f"the facts command failed (exit {result.exit_code}): {result.stderr.strip()[-300:]}")
    return Facts(json.loads(result.stdout))


@pytest.fixture(scope="session")
def host(ssh_session: Session) -> testinfra.host.Host:
    """A testinfra Host over berth's SSH session (one SSH command per property: prefer ``facts``)."""
    return testinfra.host.Host(BerthBackend(ssh_session))


@pytest.fixture(scope="session")
def controller(berth_context: dict[str, Any]) -> Controller:
    ctl = berth_context.get("controller") or {}
    if not ctl.get("identity"):
        raise HostFailed("no controller identity: berth's CA is needed for the controller's TLS checks")
    if ctl.get("address_error"):
        raise HostUnreachable(ctl["address_error"])
    identity = ClientIdentity(Path(ctl["identity"]))
    return Controller(identity, identity.ca.read_bytes(), ctl["address"], berth_context["host"]["name"])


@pytest.fixture(scope="session")
def accepted_risks() -> dict[str, str]:
    """CIS ID -> why the inventory accepts the deviation. A role's verify/conftest.py overrides this."""
    return {}


@pytest.fixture
def accept_risk(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record an accepted risk: the check passes, and is reported as a risk with this reason."""

    def accept(reason: str) -> None:
        request.node.user_properties.append(("accepted_risk", reason))

    return accept


@pytest.fixture
def deviation(accepted_risks: dict[str, str], accept_risk: Callable[[str], None]) -> Callable[[str, str], None]:
    """A control the host does not meet: an accepted risk when the inventory accepts that CIS ID, else a failure."""

    def deviate(cis_id: str, message: str) -> None:
        reason = accepted_risks.get(cis_id)
        if not reason:
            pytest.fail(message, pytrace=False)
        accept_risk(f"{message}; accepted: {reason}")

    return deviate


# -- recording results ---------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, (AssertionError, pytest.fail.Exception, HostUnreachable, HostFailed)):
        return first or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {first}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if call.excinfo is not None:
        exc = call.excinfo.value
        report.berth_message = _one_line(exc)  # type: ignore[attr-defined]
        # A failed assertion (in the check or in a fixture it needs) is the host's failure; any
        # other exception is an error of the check itself; a lost SSH connection is its own kind.
        report.berth_kind = (  # type: ignore[attr-defined]
            "unreachable" if isinstance(exc, HostUnreachable)
            else "failed" if isinstance(exc, (AssertionError, pytest.fail.Exception)) else "error")
    return report


class _Recorder:
    """Collects one result per check (collection order) and writes them for berth.checks.verify."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: dict[str, dict[str, Any]] = {}
        self.sessions: list[Session] = []

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            path = Path(str(item.path))
            role = path.parent.parent.name if path.parent.name == "verify" else path.parent.name
            name = item.name.removeprefix("test_")
            function = getattr(item, "function", None)
            doc = (function.__doc__ or "").strip().splitlines() if function else []
            self.results[item.nodeid] = {
                "id": f"{role}/{name}", "role": role, "name": name,
                "cis": [str(i) for m in item.iter_markers("cis") for i in m.args],
                "title": doc[0] if doc else "", "file": f"roles/{role}/verify/{path.name}",
                "status": None, "message": "", "detail": "", "seconds": 0.0,
            }

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.results.get(report.nodeid)
        if entry is None:
            return
        entry["seconds"] = round(entry["seconds"] + report.duration, 4)
        message = getattr(report, "berth_message", "")
        if report.skipped:
            # Checks pass, fail or accept a risk by name: a skipped check would hide a control.
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            entry.update(status="error", message=f"skipped ({reason}); a check must pass, fail or accept a risk")
        elif report.failed and entry["status"] in (None, "passed", "risk"):
            entry.update(status=getattr(report, "berth_kind", "error"), message=message or report.head_line or "failed",
                         detail=report.longreprtext[-4000:])
        elif report.when == "call" and report.passed:
            risks = [str(v) for k, v in report.user_properties if k == "accepted_risk"]
            entry.update(status="risk" if risks else "passed", message="; ".join(risks))

    def pytest_sessionfinish(self) -> None:
        path = self.config.getoption("berth_results")
        if not path:
            return
        checks = list(self.results.values())
        for entry in checks:
            if entry["status"] is None:
                entry.update(status="error", message="the check did not run")
        commands = sum(s.commands for s in self.sessions)
        Path(path).write_text(json.dumps({"checks": checks, "ssh_commands": commands}, indent=1))


_RECORDER = pytest.StashKey[_Recorder]()
