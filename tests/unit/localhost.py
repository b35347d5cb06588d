"""A host for the engine's unit tests: berth's real agent, run by berth.transport.local on a temporary root,
with the stand-in commands of tests/standins/host_commands.py, and a role written for the tests ("demo").

The demo role has what the engine must handle: a package, a directory, files with modes and owners that
notify a reload or a restart (with a health check and rollback), a systemd drop-in (daemon-reload first),
and a service. Its health check asks a unix socket that answers /_ping like dockerd while the stand-in
systemctl says the unit is active.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth import shipped
from berth.engine.converge import Converger, HostReport
from berth.engine.options import RunOptions
from berth.engine.roles import RoleContext
from berth.inventory.loader import Host, Origin
from berth.transport.local import LocalSession
from berth.transport.ssh import SSHSettings
from tests.standins import host_commands

DEMO_ROLE = '''
from berth.role import Directory, File, Handler, Health, Packages, RoleState, Service, drop_in


def declare(host, ctx):
    v = host.vars
    health = Health(unix="/run/demo.sock", timeout=float(v["demo_health_timeout"]))
    state = RoleState("demo")
    state.resources += [
        Packages(("demo-daemon",)),
        Directory("/etc/demo", mode=0o750, group="adm"),
        File("/etc/demo/demo.conf", v["demo_conf"].encode(), mode=0o640, group="adm", notify=("restart demo",)),
        File("/etc/demo/limits.conf", v["demo_limits"].encode(), notify=("reload demo",)),
        File("/etc/demo/token", b"s3cret-token\\n", mode=0o600, secret=True),
        Directory("/etc/systemd/system/demo.service.d"),
        drop_in("demo.service", "berth.conf", v["demo_dropin"].encode(), notify=("restart demo",)),
        Service("demo"),
    ]
    state.handlers += [
        Handler("reload demo", "systemctl reload demo", unit="demo", health=health, rollback=True),
        Handler("restart demo", "systemctl reset-failed demo; systemctl restart demo", unit="demo", health=health,
                rollback=True, supersedes=("reload demo",)),
    ]
    return state
'''

# berth's variables for every host (config/defaults.yml: the apply's lock timeouts), then the demo role's.
DEFAULTS = {**yaml.safe_load(shipped.config_defaults().read_text()),
            "demo_conf": "listen = 1\n", "demo_limits": "files = 1024\n", "demo_dropin": "[Service]\nNice=5\n",
            "demo_health_timeout": 5.0}   # bounds the restart command too (agent _run_bounded): not too tight


class PingServer:
    """Answers GET /_ping on a unix socket with 200 while the stand-in unit is active, else 500."""

    def __init__(self, path: Path, state: Path, unit: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.state, self.unit = state, unit
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                up = host_commands.unit(self.state, self.unit).get("active") == "active"
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nOK" if up else b"HTTP/1.0 500 Internal Server Error\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@dataclass
class LocalHost:
    root: Path
    bin_dir: Path
    state: Path
    roles_dir: Path
    variables: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))

    def host(self, **variables: Any) -> Host:
        self.variables.update(variables)
        merged = dict(self.variables)
        return Host("local1", ["all"], merged, {k: Origin("test.yml") for k in merged}, ["demo"])

    def converger(self, **options: Any) -> Converger:
        return Converger(SSHSettings(), RoleContext(self.roles_dir), RunOptions(**options), connect=self.session)

    def session(self, host: Host) -> LocalSession:
        return LocalSession(host, self.root, self.bin_dir)

    def converge(self, *, check: bool = False, on_plan: Any = None, **variables: Any) -> HostReport:
        host = self.host(**variables)
        return self.converger(check=check).converge(host, on_plan=on_plan)

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def calls(self) -> list[list[str]]:
        return host_commands.calls(self.state)

    def forget_calls(self) -> None:
        (self.state / "calls.jsonl").unlink(missing_ok=True)

    def changing_calls(self) -> list[list[str]]:
        """The stand-in calls that change something (not show, dpkg-query, --version...)."""
        readonly = (("systemctl", "show"), ("dpkg-query",), ("dpkg",), ("ip",), ("dockerd", "--version"))
        return [c for c in self.calls() if not any(c[:len(r)] == list(r) for r in readonly)]


@pytest.fixture
def local() -> Iterator[LocalHost]:
    # A short path: a unix socket's path is limited to 107 bytes (unix(7)), and pytest's tmp_path is long.
    base = Path(tempfile.mkdtemp(prefix="berth-"))
    try:
        root, bin_dir, roles = base / "root", base / "bin", base / "roles"
        root.mkdir()
        state = host_commands.install(bin_dir, root)
        (roles / "demo").mkdir(parents=True)
        (roles / "demo" / "role.py").write_text(DEMO_ROLE)
        server = PingServer(root / "run" / "demo.sock", state, "demo")
        try:
            yield LocalHost(root, bin_dir, state, roles)
        finally:
            server.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
