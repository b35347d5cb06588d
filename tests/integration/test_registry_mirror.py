"""Role registry_mirror on a real host (r3, enabled with -e): converged, verified, drifted, verify fails,
converge repairs. The mirror need not exist: dockerd checks the URL when it loads daemon.json and contacts the
mirror only when it pulls."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import Run

HOST = "r3"
MIRROR = "https://mirror.example.test:5000"
CA = "/etc/docker/certs.d/mirror.example.test:5000/ca.crt"
DAEMON_JSON = "/etc/docker/daemon.json"
MIRROR_CHECKS = {"registry_mirror/dockerd_uses_the_declared_mirrors", "registry_mirror/mirror_ca_certificates"}


def failed(run: Run) -> set[str]:
    return {c["id"] for c in run.host(HOST)["checks"] if c["status"] not in ("passed", "risk")}


@pytest.fixture
def mirror_vars(converged, berth) -> str:
    """-e @file enabling the role on r3, with a CA for the mirror (a public certificate: berth's root)."""
    extra = berth.tmp / "registry-mirror.yml"
    extra.write_text(yaml.safe_dump({
        "berth_roles": ["docker_engine", "docker_tls", "registry_mirror"],
        "registry_mirrors": [{"url": MIRROR, "ca_file": str(berth.pki_dir / "ca" / "current" / "ca.pem")}],
    }))
    yield f"@{extra}"
    # Leave r3 as the inventory declares it for the other tests (the fixture `converged` converges it back).


def test_drifted_mirror_fails_verify_until_a_converge_repairs_it(mirror_vars, berth, testbed):
    run = berth("setup-runner", "--limit", HOST, "-e", mirror_vars)
    assert run.code == 0, run.output
    changed = {c["target"] for c in run.host(HOST)["changes"]}
    assert {DAEMON_JSON, CA} <= changed, changed
    assert run.host(HOST)["handlers"] == ["reload docker"]          # registry-mirrors is reloadable: no drain
    assert testbed.exec(HOST, "stat", "-c", "%U:%G %a", CA).stdout.strip() == "root:root 444"

    verified = berth("verify", "--limit", HOST, "-e", mirror_vars)
    assert verified.code == 0, verified.output
    ids = {c["id"] for c in verified.host(HOST)["checks"]}
    assert ids >= MIRROR_CHECKS and failed(verified) == set()

    # Drift: the mirror taken out of daemon.json and dockerd reloaded; the CA made world-writable.
    testbed.exec(HOST, "python3", "-c", f"import json; d = json.load(open('{DAEMON_JSON}')); "
                                        f"d.pop('registry-mirrors'); open('{DAEMON_JSON}', 'w').write(json.dumps(d))")
    testbed.exec(HOST, "systemctl", "reload", "docker")
    testbed.exec(HOST, "chmod", "0666", CA)
    drifted = berth("verify", "--limit", HOST, "-e", mirror_vars)
    assert drifted.code == 2, drifted.output
    assert failed(drifted) == MIRROR_CHECKS | {"docker_engine/daemon_json_as_declared", "docker_engine/file[certs.d]"}
    assert "no mirror" in next(c["message"] for c in drifted.host(HOST)["checks"]
                               if c["id"] == "registry_mirror/dockerd_uses_the_declared_mirrors")

    plan = berth("setup-runner", "--limit", HOST, "-e", mirror_vars, "--check")
    assert plan.code == 6, plan.output
    repair = berth("setup-runner", "--limit", HOST, "-e", mirror_vars)
    assert repair.code == 0, repair.output
    assert {c["target"] for c in repair.host(HOST)["changes"]} == {DAEMON_JSON, CA}
    again = berth("verify", "--limit", HOST, "-e", mirror_vars)
    assert again.code == 0 and failed(again) == set(), again.output
