"""Role registry_mirror, as declared data: URLs checked as dockerd checks them, the daemon.json key contributed
to role docker_engine, the CA where dockerd looks for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.engine.plan import Plan
from berth.engine.roles import RoleContext, declare_roles
from berth.errors import ConfigError
from berth.inventory.loader import Host

ROOT = Path(__file__).resolve().parents[2]
CTX = RoleContext(ROOT / "roles")
ROLES = ["docker_engine", "docker_tls", "registry_mirror"]
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def host(mirrors: Any, roles: list[str] = ROLES, **variables: Any) -> Host:
    merged: dict[str, Any] = {}
    for role in ("docker_engine", "docker_tls", "registry_mirror"):
        merged.update(yaml.safe_load((ROOT / "roles" / role / "defaults.yml").read_text()))
    return Host("r1", ["all"], {**merged, "ansible_host": "10.0.0.1", "registry_mirrors": mirrors, **variables},
                {"registry_mirrors": "group_vars/runners.yml:7"}, roles)


def daemon_json(h: Host) -> dict[str, Any]:
    return CTX.module("docker_engine").daemon_json(h, CTX.contributions(h))


def test_the_mirrors_reach_daemon_json_through_docker_engine() -> None:
    options = daemon_json(host(["https://mirror.example.com", "https://m2.example.com:5000/",
                                "https://mirror.example.com/"]))
    # moby loadMirrors drops duplicates after normalising the trailing slash
    assert options["registry-mirrors"] == ["https://mirror.example.com", "https://m2.example.com:5000"]
    assert options["tlsverify"] is True                       # docker_tls's contributions are still there
    assert "registry-mirrors" not in daemon_json(host([]))


def test_adding_a_mirror_reloads_dockerd_and_removing_it_restarts() -> None:
    # moby daemon/reload.go: registry-mirrors is reloaded when set; a reload leaves it in effect when absent.
    engine = CTX.module("docker_engine")
    before, after = daemon_json(host([])), daemon_json(host(["https://mirror.example.com"]))
    as_bytes = [json.dumps(d).encode() for d in (before, after)]
    assert engine._daemon_json_handlers(as_bytes[0], as_bytes[1]) == (engine.RELOAD,)
    assert engine._daemon_json_handlers(as_bytes[1], as_bytes[0]) == (engine.RESTART,)


@pytest.mark.parametrize("url, problem", [
    ("mirror.example.com", "has no scheme: write https://mirror.example.com"),       # ValidateMirror fast path
    ("http://mirror.example.com", "is plain http"),
    ("ftp://mirror.example.com", "has scheme 'ftp'"),
    ("https://user:secret@mirror.example.com", "holds a user or password"),
    ("https://mirror.example.com/?x=1", "has a query or fragment"),
    ("https://mirror.example.com/#top", "has a query or fragment"),
    ("https://mirror.example.com/v2", "has a path"),                                   # v20.10.24 registry/config.go
    ("https://", "names no host"),
])
def test_urls_dockerd_would_refuse_are_inventory_errors_naming_the_file(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"group_vars/runners\.yml:7: r1: registry_mirrors") as caught:
        daemon_json(host([url]))
    assert problem in str(caught.value)
    assert "secret" not in str(caught.value)


def test_a_mirror_set_in_docker_daemon_options_too_is_a_conflict_naming_both() -> None:
    h = host(["https://mirror.example.com"], docker_daemon_options={"registry-mirrors": ["https://other.example"]})
    with pytest.raises(ConfigError, match=r"'registry-mirrors' is set by .*docker_daemon_options.* and by role "
                                          r"registry_mirror"):
        daemon_json(h)


def test_without_docker_engine_the_contribution_is_an_error_naming_the_role_and_the_document() -> None:
    with pytest.raises(ConfigError, match=r"registry_mirror contributes 'registry-mirrors' to 'docker\.daemon_json'"):
        declare_roles(host(["https://mirror.example.com"], roles=["registry_mirror"]), CTX)


def test_the_ca_goes_to_certs_d_under_the_mirrors_host_and_port_read_only(tmp_path: Path) -> None:
    ca = tmp_path / "mirror-ca.pem"
    ca.write_bytes(CA_PEM)
    state = CTX.module("registry_mirror").declare(
        host([{"url": "https://mirror.example.com:5000", "ca_file": str(ca)}, "https://plain.example.com"]), CTX)
    found = {r.path: r for r in state.resources}
    assert list(found) == ["/etc/docker/certs.d", "/etc/docker/certs.d/mirror.example.com:5000",
                           "/etc/docker/certs.d/mirror.example.com:5000/ca.crt"]
    cert = found["/etc/docker/certs.d/mirror.example.com:5000/ca.crt"]
    assert (cert.content, cert.mode, cert.owner, cert.group, cert.notify) == (CA_PEM, 0o444, "root", "root", ())
    assert CTX.module("registry_mirror").declare(host(["https://plain.example.com"]), CTX).resources == []


@pytest.mark.parametrize("content, problem", [
    (b"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n", "not a PEM certificate"),
    (None, "cannot read it on the controller"),
])
def test_a_ca_file_that_is_not_a_certificate_is_refused(tmp_path: Path, content: bytes | None, problem: str) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_bytes(content)
    with pytest.raises(ConfigError, match=problem):
        CTX.module("registry_mirror").declare(host([{"url": "https://m.example.com", "ca_file": str(ca)}]), CTX)


def test_a_converge_plans_the_key_and_the_ca_in_one_apply(tmp_path: Path) -> None:
    from berth.engine.plan import make_plan

    ca = tmp_path / "ca.pem"
    ca.write_bytes(CA_PEM)
    h = host([{"url": "https://m.example.com", "ca_file": str(ca)}], roles=["docker_engine", "registry_mirror"])
    states = declare_roles(h, CTX)
    resources = [r for s in states for r in s.resources]
    plan: Plan = make_plan(resources, [x for s in states for x in s.handlers],
                           {"files": {}, "packages": {}, "services": {}, "facts": {}})
    targets = [c.target for c in plan.changes]
    assert "/etc/docker/daemon.json" in targets and "/etc/docker/certs.d/m.example.com/ca.crt" in targets
    assert b'"registry-mirrors": [\n    "https://m.example.com"\n  ]' in next(
        r.content for r in resources if getattr(r, "path", "") == "/etc/docker/daemon.json")
