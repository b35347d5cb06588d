"""dockerd `hosts` entries in every spelling (#11): any listener but unix:// and fd:// is TCP and needs role
docker_tls; port 2375 is refused however it is written. moby daemon/pkg/opts/hosts.go (ParseHost,
parseDaemonHost, ParseTCPAddr) is what dockerd does: trim spaces, no scheme = tcp, no port = 2375.
The CIS 2.7 verify check reads daemon.json with the same parser."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.checks.plugin import Facts
from berth.engine.roles import RoleContext
from berth.errors import ConfigError
from berth.inventory.layers import Origin
from berth.inventory.loader import Host

ROOT = Path(__file__).resolve().parents[2]
ENGINE_DEFAULTS = yaml.safe_load((ROOT / "roles/docker_engine/defaults.yml").read_text())
TLS_DEFAULTS = yaml.safe_load((ROOT / "roles/docker_tls/defaults.yml").read_text())

PORT_2375 = ["0.0.0.0:2375", " tcp://0.0.0.0:2375", "tcp://:2375", "tcp://[::]:2375", ":2375", "tcp://0.0.0.0",
             "tcp://0.0.0.0:2375 ", "2375"]
OTHER_TCP = ["0.0.0.0:8080", " tcp://10.0.0.1:9999", "[::]:4243", "localhost:1234"]


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_") + "_sec", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROLE = _load(ROOT / "roles/docker_engine/role.py")


def daemon_json(host: Host) -> dict:
    """daemon.json as the engine builds it: with the contributions of the host's other roles (docker_tls)."""
    return ROLE.daemon_json(host, RoleContext(ROOT / "roles").contributions(host))


def make_host(roles: list[str], hosts: list[str]) -> Host:
    variables = {**ENGINE_DEFAULTS, **TLS_DEFAULTS, "docker_daemon_options": {"hosts": hosts}}
    origins = {k: Origin("group_vars/runners.yml", 7) for k in variables}
    return Host("r1", ["all"], variables, origins, roles)


@pytest.mark.parametrize("entry", PORT_2375)
@pytest.mark.parametrize("roles", [["docker_engine"], ["docker_engine", "docker_tls"]], ids=["plain", "tls"])
def test_port_2375_is_refused_in_any_spelling(entry: str, roles: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"group_vars/runners.yml:7: r1: daemon.json hosts .*2375"):
        daemon_json(make_host(roles, [entry]))


@pytest.mark.parametrize("entry", OTHER_TCP)
def test_any_tcp_spelling_needs_role_docker_tls(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"without TLS.*Add role docker_tls"):
        daemon_json(make_host(["docker_engine"], [entry]))


@pytest.mark.parametrize("entry", ["fd://", "unix:///var/run/docker.sock", " unix:///run/other.sock"])
def test_local_listeners_need_nothing(entry: str) -> None:
    assert daemon_json(make_host(["docker_engine"], [entry]))["hosts"] == [entry]


def test_an_entry_dockerd_refuses_is_an_error_naming_the_file() -> None:
    with pytest.raises(ConfigError, match=r"runners.yml:7: r1: daemon.json hosts: 'ssh://x'.*unsupported proto"):
        daemon_json(make_host(["docker_engine"], ["ssh://x"]))
    with pytest.raises(ConfigError, match="has no path"):
        daemon_json(make_host(["docker_engine", "docker_tls"], ["tcp://127.0.0.1:2375/"]))


# -- CIS 2.7 in `invoke verify`: the same parser -------------------------------------------------------------
CHECK = _load(ROOT / "roles/docker_engine/verify/test_docker_engine.py").test_tcp_requires_tls_verify


def unit_facts(argv: str) -> Facts:
    """The facts command's answer for docker.service, as systemd shows ExecStart."""
    exec_start = f"{{ path=/usr/sbin/dockerd ; argv[]={argv} ; ignore_errors=no ; start_time=[n/a] }}"
    return Facts({"host": {}, "units": {"docker.service": {"ExecStart": exec_start, "ActiveState": "active"}}})


def deviations(daemon_json: dict[str, Any], argv: str = "/usr/sbin/dockerd --containerd=/run/c.sock") -> list[str]:
    found: list[str] = []
    CHECK(daemon_json, unit_facts(argv), lambda cis, message: found.append(f"{cis} {message}"))
    return found


@pytest.mark.parametrize("entry", ["0.0.0.0:2375", " tcp://0.0.0.0:2375", "[::]:4243", "tcp://:2375"])
def test_cis_2_7_sees_every_tcp_spelling(entry: str) -> None:
    (problem,) = deviations({"hosts": ["fd://", entry]})
    assert problem.startswith("2.7 dockerd listens on tcp://") and "without tlsverify" in problem


def test_cis_2_7_passes_tls_with_verification() -> None:
    assert deviations({"hosts": ["fd://", "tcp://0.0.0.0:2376"], "tls": True, "tlsverify": True}) == []


@pytest.mark.parametrize("argv", ["-H tcp://0.0.0.0:2375", "-H=0.0.0.0:2375", "--host :2375", "--host=0.0.0.0:4243",
                                  "-Htcp://0.0.0.0:2375"])
def test_cis_2_7_reads_the_units_host_flags_too(argv: str) -> None:
    (problem,) = deviations({}, f"/usr/sbin/dockerd -H fd:// {argv} --containerd=/run/c.sock")
    assert problem.startswith("2.7 dockerd listens on tcp://")
    assert deviations({}, f"/usr/sbin/dockerd {argv} --tlsverify") == []
