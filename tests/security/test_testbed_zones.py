"""Trust zones against real dockerds: a remote-mode runner's certificate opens its remote_host and no other daemon."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.test_gitlab_runner import MARKER
from tests.integration.test_tls import address, handshake
from tests.standins.gitlab_api import GitLabStandIn

NAME = "zone-remote"
CERTS = f"/etc/gitlab-runner/certs/{NAME}"


def docker_from_r1(testbed, daemon: str):
    """What a job of the remote runner on r1 runs: the docker CLI with the runner's certificate folder."""
    return testbed.exec("r1", "env", f"DOCKER_HOST=tcp://{daemon}:2376", "DOCKER_TLS_VERIFY=1",
                        f"DOCKER_CERT_PATH={CERTS}", "docker", "version", "--format", "{{.Server.Version}}",
                        check=False)


@pytest.fixture
def remote_runner(converged, berth, tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """r1 with a remote-mode runner whose remote_host is r2; yields a function that converges hosts with it."""
    with GitLabStandIn() as gitlab:
        token = gitlab.add_runner(token=f"glrt-{MARKER}-{NAME}").token
        runner = {"name": NAME, "url": gitlab.url, "mode": "remote", "remote_host": "tcp://r2:2376",
                  "token_env": "ZONE_REMOTE_TOKEN"}
        vars_file = tmp_path / "runners.yml"
        vars_file.write_text(yaml.safe_dump({"gitlab_runners": [runner]}))

        def converge(limit: str = "r1") -> None:
            run = berth("setup-runner", "--limit", limit, "-e", f"@{vars_file}", env={"ZONE_REMOTE_TOKEN": token})
            assert run.code == 0, run.output

        converge()
        try:
            yield converge
        finally:
            removed = berth("runner.remove", "--host", "r1", "--name", NAME)
            assert removed.code == 0, removed.output


def copy_runner_certs(testbed, folder: Path) -> Path:
    folder.mkdir(mode=0o700)
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (folder / name).write_text(testbed.exec("r1", "cat", f"{CERTS}/{name}").stdout)
    return folder


def test_a_remote_runner_certificate_opens_its_remote_host_only(remote_runner, testbed, tmp_path: Path):
    # r1's jobs reach r2's dockerd; r3's dockerd refuses the same certificate in the handshake.
    assert docker_from_r1(testbed, "r2").returncode == 0, docker_from_r1(testbed, "r2").stderr
    refused = docker_from_r1(testbed, "r3")
    assert refused.returncode != 0
    assert "certificate" in (refused.stderr + refused.stdout).lower(), refused.stderr

    # The same from the controller with Python's ssl: the TLS handshake itself fails at r3.
    folder = copy_runner_certs(testbed, tmp_path / "runner-certs")
    ca_pem = (folder / "ca.pem").read_bytes()
    assert handshake(address(testbed, "r2"), cert_dir=folder, ca_pem=ca_pem) == "OK"
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        handshake(address(testbed, "r3"), cert_dir=folder, ca_pem=ca_pem)

    # r3's tlscacert holds the fleet zone and its own zone only: not r2's, not the root.
    printed = testbed.exec("r3", "sh", "-c", "openssl crl2pkcs7 -nocrl -certfile /etc/docker/tls/ca.pem | "
                           "openssl pkcs7 -print_certs -noout").stdout
    subjects = [line for line in printed.splitlines() if line.startswith("subject")]
    assert len(subjects) == 2, printed
    assert "zone fleet" in subjects[0] and "zone host-r3" in subjects[1], printed


def test_revoking_a_zone_refuses_its_old_certificates_after_a_converge(remote_runner, berth, testbed, tmp_path):
    old = copy_runner_certs(testbed, tmp_path / "old")
    ca_pem = (old / "ca.pem").read_bytes()
    revoked = berth("certs.revoke", "--zone", "host-r2", inventory=None)
    assert revoked.code == 0, revoked.output
    assert f"r1-{NAME}" in revoked.output
    remote_runner("r1,r2")        # r2 trusts the new zone CA; r1's runner gets a certificate from it
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        handshake(address(testbed, "r2"), cert_dir=old, ca_pem=ca_pem)
    assert docker_from_r1(testbed, "r2").returncode == 0, docker_from_r1(testbed, "r2").stderr
    listed = berth("certs.status", "--clients", inventory=None)
    rows = [r for r in listed.report if r["name"] == f"r1-{NAME}"]
    assert rows[0]["revoked"] != "-" and rows[-1]["revoked"] == "-", rows


def test_check_verify_and_status_need_no_ca_key(converged, berth, testbed, tmp_path: Path):
    """What the CI's plan and compliance jobs get: the PKI's certificates and a client certificate, no key."""
    client = tmp_path / "ci"
    issued = berth("certs.client", "--name", "ci-readonly", "--out", str(client), inventory=None)
    assert issued.code == 0, issued.output
    public = tmp_path / "pki-public"
    shutil.copytree(berth.pki_dir, public, ignore=shutil.ignore_patterns("*-key.pem", "controller"))
    assert not list(public.rglob("*key*"))
    env = {"BERTH_PKI_DIR": str(public), "DOCKER_CERT_PATH": str(client), "BERTH_CA_PASSPHRASE": ""}

    plan = berth("setup-runner", "--limit", "runners", "--check", "--diff", env=env)
    assert plan.code == 0, plan.output              # converged: nothing pending, and no key was needed
    # The testbed hosts report their name and address, which the inventory gives too: nothing to note.
    assert not [n for h in plan.report for n in h["notes"] if "SANs come from the inventory" in n], plan.report
    status = berth("certs.status", "--limit", "r1,r3", env=env)
    assert status.code == 0, status.output
    verify = berth("verify", "--limit", "r3", env=env)
    assert verify.code == 0, verify.output
    assert "ca-key.pem" not in plan.output + status.output + verify.output
