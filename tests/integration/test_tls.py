"""Mutual TLS on the daemons' port 2376, through the real port, from the controller."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from berth.pki.ca import CertificateAuthority, cert_info
from tests.conftest import ROOT


def address(testbed, host: str) -> str:
    return next(h.address for h in testbed.status() if h.name == host)


def client(berth, name: str, **kw: str) -> Path:
    out = berth.tmp / f"client-{name}"
    run = berth("certs.client", "--name", name, "--out", str(out), *[f"--{k}={v}" for k, v in kw.items()],
                inventory=None)
    assert run.code == 0, run.output
    return out


def docker_version(cert_dir: Path, endpoint: str) -> subprocess.CompletedProcess[str]:
    """Docker's own client, as a user would run it with the lines `make demo` prints."""
    env = {**os.environ, "DOCKER_HOST": endpoint, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_dir)}
    return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                          capture_output=True, text=True, timeout=30)


def handshake(addr: str, *, cert_dir: Path | None, ca_pem: bytes, version: ssl.TLSVersion | None = None) -> str:
    """A TLS handshake plus GET /_ping; returns the body or raises."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_pem.decode())
    ctx.check_hostname = False
    if version is not None:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")     # let the client offer old protocols: the server must refuse
        ctx.minimum_version = ctx.maximum_version = version
    if cert_dir is not None:
        ctx.load_cert_chain(cert_dir / "cert.pem", cert_dir / "key.pem")
    with socket.create_connection((addr, 2376), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: r1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
    return data.decode().rsplit("\r\n\r\n", 1)[-1]


def test_docker_client_reaches_r1_by_address_and_by_name(converged, berth, testbed):
    certs = client(berth, "ci")
    by_address = docker_version(certs, f"tcp://{address(testbed, 'r1')}:2376")
    assert by_address.returncode == 0, by_address.stderr
    assert by_address.stdout.strip().startswith("20.10")
    # By name: from r2, where the testbed network resolves "r1" (the controller has no such DNS name).
    testbed.exec("r2", "mkdir", "-p", "/root/ci-certs")
    for name in ("ca.pem", "cert.pem", "key.pem"):
        subprocess.run(["docker", "cp", str(certs / name), f"{testbed.container_name('r2')}:/root/ci-certs/"],
                       check=True)
    by_name = testbed.exec("r2", "env", "DOCKER_HOST=tcp://r1:2376", "DOCKER_TLS_VERIFY=1",
                           "DOCKER_CERT_PATH=/root/ci-certs", "docker", "version", "--format",
                           "{{.Server.Version}}", check=False)
    assert by_name.returncode == 0, by_name.stdout + by_name.stderr
    served = cert_info(subprocess.run(
        ["openssl", "s_client", "-connect", f"{address(testbed, 'r1')}:2376", "-cert", str(certs / "cert.pem"),
         "-key", str(certs / "key.pem")], input="", capture_output=True, text=True, timeout=30).stdout.encode())
    assert "DNS:r1" in served.sans and f"IP:{address(testbed, 'r1')}" in served.sans and "IP:127.0.0.1" in served.sans


def test_clients_without_a_good_certificate_are_refused(converged, berth, testbed, tmp_path):
    addr = address(testbed, "r1")
    ca_pem = (berth.pki_dir / "ca" / "current" / "ca.pem").read_bytes()
    good = client(berth, "good")
    assert handshake(addr, cert_dir=good, ca_pem=ca_pem) == "OK"            # the baseline these refusals need
    assert handshake(addr, cert_dir=good, ca_pem=ca_pem, version=ssl.TLSVersion.TLSv1_2) == "OK"

    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        handshake(addr, cert_dir=None, ca_pem=ca_pem)

    other = CertificateAuthority.init(tmp_path / "other-ca")
    (tmp_path / "other").mkdir()
    cert, key = other.issue_client("intruder")
    (tmp_path / "other" / "cert.pem").write_bytes(cert)
    (tmp_path / "other" / "key.pem").write_bytes(key)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        handshake(addr, cert_dir=tmp_path / "other", ca_pem=ca_pem)

    ours = CertificateAuthority.load(berth.pki_dir)
    (tmp_path / "expired").mkdir()
    cert, key = ours.issue_client("expired", not_after=datetime.now(UTC) - timedelta(days=1))
    (tmp_path / "expired" / "cert.pem").write_bytes(cert)
    (tmp_path / "expired" / "key.pem").write_bytes(key)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        handshake(addr, cert_dir=tmp_path / "expired", ca_pem=ca_pem)

    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            handshake(addr, cert_dir=good, ca_pem=ca_pem, version=old)

    with pytest.raises(ConnectionRefusedError):  # nothing listens on 2375
        socket.create_connection((addr, 2375), timeout=5)
    listening = testbed.exec("r1", "ss", "-Hltn").stdout
    assert ":2376" in listening and ":2375" not in listening


def test_plain_tcp_is_refused_with_an_explanation(first_converge, berth):
    run = berth("setup-runner", "--host", "r1", "-e", "docker_tls_port=2375")
    assert run.code == 4
    assert "2375" in run.err and "never opens it" in run.err
    run = berth("setup-runner", "--host", "r1", "-e", "docker_tls_verify=false")
    assert run.code == 4 and "client certificates" in run.err


def test_key_modes_and_the_key_never_reaches_the_controller(converged, berth, testbed):
    stat = testbed.exec("r1", "stat", "-c", "%n %a %U:%G", "/etc/docker/tls/key.pem", "/etc/docker/tls/cert.pem",
                        "/etc/docker/tls/ca.pem").stdout.split("\n")
    assert stat[:3] == ["/etc/docker/tls/key.pem 400 root:root", "/etc/docker/tls/cert.pem 444 root:root",
                        "/etc/docker/tls/ca.pem 444 root:root"]
    key = testbed.exec("r1", "cat", "/etc/docker/tls/key.pem").stdout.strip().splitlines()
    body = "".join(line for line in key if not line.startswith("-----"))
    assert len(body) > 40
    for folder in (berth.tmp, ROOT / ".berth"):
        for path in folder.rglob("*"):
            if path.is_file():
                text = "".join(path.read_text(errors="ignore").split())
                assert body[-48:] not in text, f"the host key is in {path}"   # its tail: the unique part


def _reissue_expiring(testbed, berth, days: int) -> None:
    """Put a server certificate that expires in `days` on r1, signed by our CA from r1's own CSR."""
    csr = testbed.exec("r1", "openssl", "req", "-new", "-key", "/etc/docker/tls/key.pem", "-subj", "/CN=r1").stdout
    ca = CertificateAuthority.load(berth.pki_dir)
    pem = ca.sign_server_csr(csr.encode(), sans=["r1", address(testbed, "r1"), "127.0.0.1"],
                             not_after=datetime.now(UTC) + timedelta(days=days))
    subprocess.run(["docker", "exec", "-i", testbed.container_name("r1"), "sh", "-c",
                    "cat > /etc/docker/tls/cert.pem && systemctl reset-failed docker; systemctl restart docker"],
                   input=pem, check=True)


def test_expiring_certificate_is_reissued_and_clients_keep_working(converged, berth, testbed):
    certs = client(berth, "renewal")
    _reissue_expiring(testbed, berth, days=5)
    endpoint = f"tcp://{address(testbed, 'r1')}:2376"
    assert docker_version(certs, endpoint).returncode == 0
    run = berth("setup-runner", "--host", "r1")
    assert run.code == 0, run.output
    r1 = run.host("r1")
    assert [c["summary"] for c in r1["changes"] if c["kind"] == "certificate"] == [
        "issue: expires in 4.9 days (renewal window 30 days)"]
    # A new certificate needs a restart (drained first: role docker_engine).
    assert r1["handlers"] == ["restart docker"]
    served = berth("certs.status", "--limit", "r1")
    assert served.report[0]["days_left"] > 360, served.report
    assert docker_version(certs, endpoint).returncode == 0
    again = berth("setup-runner", "--host", "r1")
    assert again.host("r1")["changed"] == 0 and again.host("r1")["handlers"] == []


def test_local_socket_works_and_a_restart_brings_both_listeners_back(converged, berth, testbed):
    certs = client(berth, "restart")
    testbed.exec("r1", "sh", "-c", "systemctl reset-failed docker; systemctl restart docker")
    assert testbed.exec("r1", "docker", "-H", "unix:///var/run/docker.sock", "info", "--format", "{{.ID}}").stdout
    assert docker_version(certs, f"tcp://{address(testbed, 'r1')}:2376").returncode == 0


def test_ca_rotation_without_a_flag_day(converged, berth, testbed):
    endpoint = f"tcp://{address(testbed, 'r1')}:2376"
    old = client(berth, "before-rotation")
    assert berth("certs.rotate-ca", inventory=None).code == 0
    during = berth("setup-runner", "--limit", "runners")
    assert during.code == 0, during.output
    assert any(c["kind"] == "certificate" for c in during.host("r1")["changes"])
    new = client(berth, "after-rotation")
    # ca.pem of each client folder holds both CAs during the transition.
    assert docker_version(old, endpoint).returncode == 0
    assert docker_version(new, endpoint).returncode == 0
    status = berth("certs.status", "--limit", "r1")
    assert status.report[0]["issued_by_berth"] == "current CA"
    assert berth("certs.drop-old-ca", inventory=None).code == 0
    after = berth("setup-runner", "--limit", "runners")
    assert after.code == 0, after.output
    refused = docker_version(old, endpoint)
    assert refused.returncode != 0
    assert docker_version(new, endpoint).returncode == 0
