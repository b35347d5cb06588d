"""`invoke verify` against the testbed: a converged host passes every check; each kind of drift fails exactly
its checks (and the others still pass) until a converge repairs it.

Each drift test breaks the four hosts in four different ways at once and verifies them in one run, which
also shows the hosts are verified side by side.
"""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import xmlschema

from berth.checks.container_controls import CONTROLS
from berth.pki.ca import CertificateAuthority
from tests.conftest import HOSTS, ROOT, Run

SCHEMA = xmlschema.XMLSchema(ROOT / "tests" / "schemas" / "junit.xsd")
# The testbed inventory's accepted deviations (tests/integration/inventory/group_vars/runners.yml).
ACCEPTED = {"docker_engine/daemon_option[icc]", "docker_engine/daemon_option[no-new-privileges]",
            "docker_engine/daemon_option[userland-proxy]", "docker_engine/daemon_option[insecure-registries]",
            # CIS controls berth reports as accepted risks by default (roles/docker_engine/defaults.yml), and
            # 1.1.3-1.1.18 for hosts without role docker_audit.
            "docker_engine/data_root_partition", "docker_engine/default_ulimits", "docker_engine/userns_remap",
            "docker_engine/authorization_plugin", "docker_engine/remote_logging", "docker_engine/sshd_in_containers",
            "docker_engine/exec_privileged", *(f"docker_engine/audit_without_role[1.1.{n}]" for n in range(3, 19))}
# The checks that need the running dockerd, and fail with it.
RUNNING = [f"docker_engine/running_containers[{c[0]}]" for c in CONTROLS if c[0] not in ("5.5", "5.32")]
DAEMON_JSON = "/etc/docker/daemon.json"


def address(testbed, host: str) -> str:
    return next(h.address for h in testbed.status() if h.name == host)


def problems(run: Run, host: str) -> dict[str, str]:
    """The checks of a host that neither passed nor are an accepted risk: check id -> status."""
    return {c["id"]: c["status"] for c in run.host(host)["checks"] if c["status"] not in ("passed", "risk")}


def message(run: Run, host: str, check: str) -> str:
    return next(c["message"] for c in run.host(host)["checks"] if c["id"] == check)


def assert_all_pass(run: Run, hosts: list[str], risks: set[str] | None = ACCEPTED) -> None:
    """Every check passed or is an accepted risk; ``risks``: exactly these are (None: any)."""
    assert run.code == 0, run.output
    for host in hosts:
        report = run.host(host)
        assert report["status"] == "passed", report
        assert problems(run, host) == {}
        if risks is not None:
            assert {c["id"] for c in report["checks"] if c["status"] == "risk"} == risks
        assert report["ssh_commands"] == 1, report      # every fact of a host in one SSH command


def edit_daemon_json(testbed, host: str, code: str, *, restart: bool) -> None:
    """Change daemon.json on a host behind berth's back (``d`` is the parsed file)."""
    testbed.exec(host, "python3", "-c", f"import json; d = json.load(open('{DAEMON_JSON}')); {code}; "
                                        f"open('{DAEMON_JSON}', 'w').write(json.dumps(d))")
    if restart:
        testbed.exec(host, "sh", "-c", "systemctl reset-failed docker; systemctl restart docker")


def reissue(testbed, berth, host: str, *, sans: list[str], days: int) -> None:
    """A server certificate from our CA for the host's own key, with these SANs and days left."""
    csr = testbed.exec(host, "openssl", "req", "-new", "-key", "/etc/docker/tls/key.pem", "-subj", f"/CN={host}").stdout
    pem = CertificateAuthority.load(berth.pki_dir).sign_server_csr(
        csr.encode(), sans=sans, not_after=datetime.now(UTC) + timedelta(days=days))
    subprocess.run(["docker", "exec", "-i", testbed.container_name(host), "sh", "-c",
                    "cat > /etc/docker/tls/cert.pem && systemctl reset-failed docker; systemctl restart docker"],
                   input=pem, check=True)


def test_a_converged_host_passes_every_check_and_hosts_are_verified_in_parallel(converged, berth, tmp_path):
    started = time.monotonic()
    one = berth("verify", "--limit", "r1", "--junit", str(tmp_path / "r1.xml"))
    one_seconds = time.monotonic() - started
    assert_all_pass(one, ["r1"])
    checks = one.host("r1")["checks"]
    assert len(checks) >= 30
    cis = {i for c in checks for i in c["cis"]}
    assert {"2.7", "2.15", "3.1", "3.5", "3.9", "3.13", "3.15", "3.17", "3.23", "5.5", "5.32"} <= cis
    for line in ("docker_tls/tls_file[key.pem]", "3.13 3.14", "ssh commands"):
        assert line in one.err                                              # the host x check table
    junit = (tmp_path / "r1.xml").read_text()
    SCHEMA.validate(junit)
    assert len(ET.fromstring(junit).findall("testsuite/testcase")) == len(checks)

    started = time.monotonic()
    three = berth("verify", "--limit", "r1,r2,r3")
    three_seconds = time.monotonic() - started
    assert_all_pass(three, ["r1", "r2", "r3"])
    spans = [(three.host(h)["started"], three.host(h)["finished"]) for h in ("r1", "r2", "r3")]
    assert max(s for s, _ in spans) < min(f for _, f in spans), spans       # all three ran at the same time
    # Wall times are figures, not assertions (a loaded machine would make them flaky): bench/ measures speed.
    print(f"\nverify wall time (invoke included): 1 host {one_seconds:.2f}s, 3 hosts {three_seconds:.2f}s")


def test_drift_on_the_hosts_fails_exactly_its_checks_until_a_converge(converged, berth, testbed, tmp_path):
    testbed.exec("r1", "chmod", "0644", "/etc/docker/tls/key.pem")                          # a key readable by all
    edit_daemon_json(testbed, "r2", "del d['live-restore']", restart=False)                 # daemon.json edited
    testbed.exec("r3", "systemctl", "stop", "docker")                                       # dockerd stopped
    testbed.exec("r4", "chmod", "0777", "/etc/docker")                                      # /etc/docker writable
    junit = tmp_path / "drift.xml"
    run = berth("verify", "--limit", "runners", "--junit", str(junit))
    assert run.code == 2, run.output

    assert problems(run, "r1") == {"docker_tls/tls_file[key.pem]": "failed"}
    assert message(run, "r1", "docker_tls/tls_file[key.pem]") == (
        "/etc/docker/tls/key.pem root:root 0644, want root:root 0400")
    assert problems(run, "r2") == {"docker_engine/daemon_json_as_declared": "failed",
                                   "docker_engine/live_restore": "failed"}
    assert message(run, "r2", "docker_engine/daemon_json_as_declared") == "daemon.json: live-restore missing"
    # Everything that needs the daemon fails with it, and says why.
    assert problems(run, "r3") == dict.fromkeys([
        "docker_engine/service_running", "docker_engine/live_restore", "docker_engine/storage_driver_not_aufs",
        "docker_engine/no_privileged_containers", "docker_engine/docker_sock_not_mounted",
        "docker_engine/remote_logging", "docker_engine/seccomp_profile", "docker_engine/swarm_mode", *RUNNING,
        "docker_tls/listening_on_declared_port", "docker_tls/mutual_tls_ping",
        "docker_tls/refuses_clients_without_certificate"], "failed")
    assert "dockerd is not running" in message(run, "r3", "docker_engine/live_restore")
    # verify only looks: it did not start dockerd through its socket.
    assert testbed.exec("r3", "systemctl", "is-active", "docker", check=False).stdout.strip() == "inactive"
    assert problems(run, "r4") == {"docker_engine/file[etc-docker]": "failed"}
    assert message(run, "r4", "docker_engine/file[etc-docker]") == "/etc/docker root:root 0777, want root:root 0755"
    assert "r1 docker_tls/tls_file[key.pem] [CIS 3.13 3.14]: FAIL: /etc/docker/tls/key.pem" in run.err

    xml = junit.read_text()
    SCHEMA.validate(xml)
    suites = ET.fromstring(xml).findall("testsuite")
    assert [s.get("name") for s in suites] == HOSTS
    for suite in suites:
        assert len(suite.findall("testcase")) == len(run.host(suite.get("name"))["checks"])
    assert [int(s.get("failures")) for s in suites] == [1, 2, 11 + len(RUNNING), 1]

    repair = berth("setup-runner", "--limit", "runners")
    assert repair.code == 0, repair.output
    assert_all_pass(berth("verify", "--limit", "runners"), HOSTS)


def test_tls_drift_fails_exactly_its_checks_until_a_converge(converged, berth, testbed):
    reissue(testbed, berth, "r1", sans=["r1", address(testbed, "r1"), "127.0.0.1"], days=5)   # about to expire
    edit_daemon_json(testbed, "r2", "d['tlsverify'] = False", restart=True)                     # no client certs
    edit_daemon_json(testbed, "r3", "d['hosts'].append('tcp://0.0.0.0:2375')", restart=True)   # 2375 opened
    reissue(testbed, berth, "r4", sans=["r4"], days=300)                                        # SANs: name only
    run = berth("verify", "--limit", "runners")
    assert run.code == 2, run.output

    assert problems(run, "r1") == {"docker_tls/certificate_not_expiring": "failed"}
    assert "expires in 5.0 days, within the renewal window (30 days)" in message(
        run, "r1", "docker_tls/certificate_not_expiring")
    assert problems(run, "r2") == dict.fromkeys([
        "docker_engine/daemon_json_as_declared", "docker_engine/tcp_requires_tls_verify",
        "docker_tls/refuses_clients_without_certificate"], "failed")
    assert "answered without a client certificate" in message(
        run, "r2", "docker_tls/refuses_clients_without_certificate")
    assert problems(run, "r3") == dict.fromkeys([
        "docker_engine/daemon_json_as_declared", "docker_tls/port_2375_closed"], "failed")
    assert "port 2375 is open" in message(run, "r3", "docker_tls/port_2375_closed")
    assert problems(run, "r4") == {"docker_tls/certificate_names_the_inventory_only": "failed"}
    assert address(testbed, "r4") in message(run, "r4", "docker_tls/certificate_names_the_inventory_only")

    repair = berth("setup-runner", "--limit", "runners")
    assert repair.code == 0, repair.output
    assert_all_pass(berth("verify", "--limit", "runners"), HOSTS)


def test_mode_risks_are_reported_by_name_and_an_unreachable_host_is_its_own_failure(converged, berth, testbed,
                                                                                    tmp_path):
    # A container that mounts docker.sock, from an image made on r1 itself (no registry on the testbed).
    testbed.exec("r1", "sh", "-c", "tar -C / -chf - usr/bin/sleep usr/lib/x86_64-linux-gnu/libc.so.6 "
                                   "lib64/ld-linux-x86-64.so.2 | docker import - berth-sleep >/dev/null && "
                                   "docker run -d --name sock-user -v /var/run/docker.sock:/var/run/docker.sock "
                                   # every other section 5 control met (the health command only has to exist)
                                   "--memory 64m --cpus 0.5 --read-only --pids-limit 64 --health-cmd /bin/true "
                                   "--security-opt no-new-privileges berth-sleep /usr/bin/sleep 600")
    # CIS 5.2: a kernel without AppArmor (this machine's) cannot give the container a profile: a finding too.
    apparmor = "apparmor" in testbed.exec("r1", "docker", "info", "--format", "{{json .SecurityOptions}}").stdout
    no_profile = {} if apparmor else {"docker_engine/running_containers[5.2]": "failed"}
    try:
        run = berth("verify", "--limit", "r1")
        assert run.code == 2, run.output
        assert problems(run, "r1") == {"docker_engine/docker_sock_not_mounted": "failed", **no_profile}
        assert "sock-user" in message(run, "r1", "docker_engine/docker_sock_not_mounted")

        # r3's SSH port is wrong in this ssh_config: r3 is unreachable, r1 is verified all the same.
        ssh_config = (ROOT / ".testbed" / "ssh_config").read_text().replace("Host r3\n", "Host r3\n  Port 2\n")
        (tmp_path / "ssh_config").write_text(ssh_config)
        run = berth("verify", "--limit", "r1,r3", "-e", "runner_docker_mode=socket",
                    "-e", f"berth_ssh_config={tmp_path / 'ssh_config'}")
        assert run.code == (3 if apparmor else 2), run.output      # a failed check outranks an unreachable host
        r1 = {c["id"]: c for c in run.host("r1")["checks"]}
        assert r1["docker_engine/docker_sock_not_mounted"]["status"] == "risk"
        assert "mode socket (runner_docker_mode)" in r1["docker_engine/docker_sock_not_mounted"]["message"]
        assert problems(run, "r1") == no_profile
        r3 = run.host("r3")
        assert r3["status"] == "unreachable" and r3["ssh_commands"] == 0
        # Every check that needs SSH says so; the controller's own TLS checks still ran and passed, and
        # the risks that need nothing from the host (the mode's, the controls berth does not check) stand.
        engine = {c["id"]: c["status"] for c in r3["checks"] if c["role"] == "docker_engine"}
        assert engine.pop("docker_engine/docker_sock_not_mounted") == "risk"
        for check in ("sshd_in_containers", "exec_privileged", *(f"audit_without_role[1.1.{n}]" for n in range(3, 19))):
            assert engine.pop(f"docker_engine/{check}") == "risk", check
        assert set(engine.values()) == {"unreachable"}
        assert problems(run, "r3")["docker_tls/tls_file[key.pem]"] == "unreachable"
        assert "docker_tls/mutual_tls_ping" not in problems(run, "r3")
        assert "r3: UNREACHABLE: r3: connection refused at" in run.err

        dind = berth("verify", "--limit", "r1", "-e", "runner_docker_mode=dind")
        assert dind.code == 2                                  # dind accepts privileged containers, not the socket
        assert "mode dind (runner_docker_mode)" in message(dind, "r1", "docker_engine/no_privileged_containers")
        assert problems(dind, "r1") == {"docker_engine/docker_sock_not_mounted": "failed", **no_profile}
    finally:
        testbed.exec("r1", "sh", "-c", "docker rm -f sock-user; docker rmi berth-sleep", check=False)
    assert_all_pass(berth("verify", "--limit", "r1"), ["r1"])

