"""setup-runner against the testbed: install, idempotence, check mode, rollback, unreachable hosts."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.conftest import HOSTS, ROOT


def sha256_on(testbed, host: str, path: str) -> str:
    return hashlib.sha256(testbed.exec(host, "cat", path).stdout.encode()).hexdigest()


def test_first_converge_installs_docker_everywhere(first_converge, testbed):
    for host in HOSTS:
        report = first_converge.host(host)
        assert report["status"] == "changed", report
        assert any(c["kind"] == "packages" and "docker.io" in c["target"] for c in report["changes"])
        # dockerd answers on its socket (the Docker CLI on the host talks to it).
        version = testbed.exec(host, "docker", "version", "--format", "{{.Server.Version}}")
        assert version.stdout.strip().startswith("20.10"), version.stdout
    daemon = json.loads(testbed.exec("r1", "cat", "/etc/docker/daemon.json").stdout)
    assert daemon["live-restore"] is True


def test_second_converge_changes_nothing_in_at_most_two_commands(first_converge, berth):
    run = berth("setup-runner", "--host", "r1")
    assert run.code == 0, run.output
    r1 = run.host("r1")
    assert r1["status"] == "ok"
    assert r1["changed"] == 0
    assert r1["handlers"] == []
    assert r1["ssh_commands"] <= 2
    assert "ssh cmds" in run.err  # the per-host report table


def test_check_mode_shows_drift_as_diff_and_changes_nothing(converged, berth, testbed):
    testbed.exec("r1", "sed", "-i", 's/"log-level": "info"/"log-level": "debug"/', "/etc/docker/daemon.json")
    before = sha256_on(testbed, "r1", "/etc/docker/daemon.json")
    run = berth("setup-runner", "--host", "r1", "--check", "--diff")
    assert run.code == 6, run.output
    assert '-  "log-level": "debug",' in run.err
    assert '+  "log-level": "info",' in run.err
    assert run.host("r1")["status"] == "pending"
    assert sha256_on(testbed, "r1", "/etc/docker/daemon.json") == before


def test_reloadable_change_reloads_instead_of_restarting(converged, berth, testbed):
    pid = testbed.exec("r1", "systemctl", "show", "-p", "MainPID", "--value", "docker").stdout
    # The inventory's insecure-registries stay: removing them needs a restart (moby daemon/reload.go: IsValueSet).
    run = berth("setup-runner", "--host", "r1", "-e", '{"docker_daemon_options": {"userland-proxy": true, '
                '"insecure-registries": ["172.16.0.0/12", "192.168.0.0/16"], "debug": true}}')
    assert run.code == 0, run.output
    assert run.host("r1")["handlers"] == ["reload docker"]
    assert testbed.exec("r1", "systemctl", "show", "-p", "MainPID", "--value", "docker").stdout == pid


def test_option_that_stops_dockerd_is_rolled_back(converged, berth, testbed):
    before = sha256_on(testbed, "r1", "/etc/docker/daemon.json")
    run = berth("setup-runner", "--host", "r1", "-e", "docker_health_timeout=8", "-e",
                '{"docker_daemon_options": {"userland-proxy": true, "log-driver": "no-such-driver"}}')
    assert run.code == 2, run.output
    assert "r1" in run.err
    assert "no-such-driver" in run.err       # dockerd's own error, from its journal
    assert "restored" in run.err
    assert run.host("r1")["status"] == "failed"
    assert sha256_on(testbed, "r1", "/etc/docker/daemon.json") == before
    assert testbed.exec("r1", "systemctl", "is-active", "docker").stdout.strip() == "active"


@pytest.mark.parametrize("key, value", [
    ("no-such-option", "1"),                # "the following directives don't match any configuration option"
    ("max-concurrent-downloads", "'three'"),    # a reloadable key: its repair alone would be a reload
])
def test_a_dockerd_that_its_daemon_json_keeps_down_is_repaired(converged, berth, testbed, key, value):
    # An edit behind berth's back that dockerd refuses: dockerd is down. The converge must start it with the
    # declared daemon.json, not the refused one, and a reload of a stopped dockerd must become its start.
    testbed.exec("r1", "python3", "-c", "import json; p = '/etc/docker/daemon.json'; d = json.load(open(p)); "
                 f"d['{key}'] = {value}; open(p, 'w').write(json.dumps(d))")
    testbed.exec("r1", "sh", "-c", "systemctl reset-failed docker; systemctl restart docker", check=False)
    assert testbed.exec("r1", "systemctl", "is-active", "docker", check=False).stdout.strip() != "active"
    run = berth("setup-runner", "--host", "r1")
    assert run.code == 0, run.output
    assert run.host("r1")["handlers"] == ["restart docker"]
    assert key not in testbed.exec("r1", "cat", "/etc/docker/daemon.json").stdout
    # Its socket answers (the Docker CLI on the host), and the TLS port (the handler's health check did).
    assert testbed.exec("r1", "docker", "version", "--format", "{{.Server.Version}}").stdout.startswith("20.10")


def test_a_restart_that_the_units_start_limit_refuses_is_made_all_the_same(converged, berth, testbed):
    # A change that needs a restart (log-level is not reloadable) and no daemon-reload (which would reset the
    # count), right after somebody's restarts: docker.service allows 3 starts a minute (StartLimitBurst=3).
    testbed.exec("r1", "sed", "-i", 's/"log-level": "info"/"log-level": "warn"/', "/etc/docker/daemon.json")
    testbed.exec("r1", "sh", "-c", "systemctl reset-failed docker; for i in 1 2 3; do systemctl restart docker; done")
    pid = testbed.exec("r1", "systemctl", "show", "-p", "MainPID", "--value", "docker").stdout
    run = berth("setup-runner", "--host", "r1")
    assert run.code == 0, run.output
    assert run.host("r1")["handlers"] == ["restart docker"]
    assert testbed.exec("r1", "systemctl", "show", "-p", "Result", "--value", "docker").stdout.strip() == "success"
    assert testbed.exec("r1", "systemctl", "show", "-p", "MainPID", "--value", "docker").stdout not in ("0\n", pid)
    assert '"log-level": "info"' in testbed.exec("r1", "cat", "/etc/docker/daemon.json").stdout
    assert testbed.exec("r1", "docker", "version", "--format", "{{.Server.Version}}").stdout.startswith("20.10")


def test_unreachable_and_changed_host_key_fail_alone(converged, berth, testbed, tmp_path):
    ssh_config = (ROOT / ".testbed" / "ssh_config").read_text()
    known_hosts = (ROOT / ".testbed" / "known_hosts").read_text()
    # r2 presents a key other than the one on record; r3 is at a port where nothing listens.
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    lines = [f"{ln.split()[0]} {other}" if ln.startswith("r2,") else ln for ln in known_hosts.splitlines()]
    (tmp_path / "known_hosts").write_text("\n".join(lines) + "\n")
    ssh_config = ssh_config.replace(str(ROOT / ".testbed" / "known_hosts"), str(tmp_path / "known_hosts"))
    ssh_config = ssh_config.replace("Host r3\n", "Host r3\n  Port 2\n")
    (tmp_path / "ssh_config").write_text(ssh_config)
    run = berth("setup-runner", "--limit", "r1,r2,r3", "-e", f"berth_ssh_config={tmp_path / 'ssh_config'}",
                "-e", '{"docker_daemon_options": {"userland-proxy": true, "debug": true}}')
    assert run.code == 3, run.output
    assert run.host("r1")["status"] == "changed"
    assert run.host("r2")["status"] == "unreachable"
    assert "host key" in run.host("r2")["error"] and "CHANGED" in run.host("r2")["error"]
    assert run.host("r3")["status"] == "unreachable"
    assert "connection refused at" in run.host("r3")["error"] and ":2" in run.host("r3")["error"]
    # The real known_hosts was not touched by the strict policy.
    assert (ROOT / ".testbed" / "known_hosts").read_text() == known_hosts
