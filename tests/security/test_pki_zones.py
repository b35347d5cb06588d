"""Trust zones: a client certificate opens only the daemons of its zone (real handshakes with ssl)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from berth.pki.ca import FLEET_ZONE, CertificateAuthority, generate_key_pem, host_zone, make_csr_pem
from tests.security.conftest import dockerd_like_context, handshake, server_pem


def daemon(ca: CertificateAuthority, name: str, tmp: Path):
    cert, key = server_pem(ca, name, tmp)
    return dockerd_like_context(cert, key, ca.daemon_trust_pem(name))


def remote_runner_cert(ca: CertificateAuthority, target: str) -> tuple[bytes, bytes]:
    """What a remote-mode runner host gets: its own key, a CSR signed in the target daemon's zone."""
    key = generate_key_pem()
    return ca.sign_client_csr(make_csr_pem(key, "r1-remote"), name="r1-remote", zone=host_zone(target)), key


def test_a_remote_runner_certificate_opens_its_remote_host_only(ca, tmp_path):
    cert, key = remote_runner_cert(ca, "r2")
    assert handshake(daemon(ca, "r2", tmp_path), cert, key, ca.bundle_pem(), tmp_path) == "ok"
    refused = handshake(daemon(ca, "r3", tmp_path), cert, key, ca.bundle_pem(), tmp_path, server_name="r3")
    assert refused.startswith("refused"), refused


def test_a_daemon_trusts_neither_the_root_nor_other_zones(ca):
    trusted = {c.subject for c in __import__("cryptography").x509.load_pem_x509_certificates(ca.daemon_trust_pem("r3"))}
    assert ca.cert.subject not in trusted, "the root CA in tlscacert would accept every zone's certificates"
    assert len(trusted) == 2   # the fleet zone and r3's own zone


def test_fleet_certificates_open_every_daemon(ca, tmp_path):
    cert, key = ca.issue_client("ops")
    for name in ("r2", "r3"):
        assert handshake(daemon(ca, name, tmp_path), cert, key, ca.bundle_pem(), tmp_path, server_name=name) == "ok"


def test_a_group_certificate_opens_the_group_only(ca, tmp_path):
    zone = ca.group_zone("runners:&eu", ["r2"])
    cert, key = ca.issue_client("ci", zone=zone)
    assert handshake(daemon(ca, "r2", tmp_path), cert, key, ca.bundle_pem(), tmp_path) == "ok"
    assert handshake(daemon(ca, "r3", tmp_path), cert, key, ca.bundle_pem(), tmp_path,
                     server_name="r3").startswith("refused")


def test_a_server_certificate_is_no_client_certificate(ca, tmp_path):
    cert, key = server_pem(ca, "r3", tmp_path)
    outcome = handshake(daemon(ca, "r2", tmp_path), cert.read_bytes(), key.read_bytes(), ca.bundle_pem(), tmp_path)
    assert outcome.startswith("refused"), outcome


def test_revoking_a_zone_refuses_its_certificates_and_keeps_the_others(ca, tmp_path):
    cert, key = remote_runner_cert(ca, "r2")
    ops_cert, ops_key = ca.issue_client("ops")
    ca.revoke_zone(host_zone("r2"))
    r2 = daemon(ca, "r2", tmp_path)
    assert handshake(r2, cert, key, ca.bundle_pem(), tmp_path).startswith("refused")
    assert handshake(r2, ops_cert, ops_key, ca.bundle_pem(), tmp_path) == "ok"
    (record,) = [r for r in ca.clients() if r.name == "r1-remote"]
    assert record.zone == host_zone("r2") and record.revoked


def test_issued_certificates_are_listed_short_lived_and_private(ca, pki_dir):
    ca.issue_client("ops")
    (record,) = ca.clients()
    assert record.zone == FLEET_ZONE and record.days_left <= 7.01
    doc = json.loads((pki_dir / "clients.json").read_text())
    assert doc["clients"][0]["zone"] == FLEET_ZONE
    zone_key = next((pki_dir / "zones" / FLEET_ZONE).glob("*-key.pem"))
    assert stat.S_IMODE(zone_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((pki_dir / "zones").stat().st_mode) == 0o700


def test_root_rotation_keeps_zone_certificates_working(ca, tmp_path):
    cert, key = remote_runner_cert(ca, "r2")
    ca.rotate()
    assert handshake(daemon(ca, "r2", tmp_path), cert, key, ca.bundle_pem(), tmp_path) == "ok"
    ca.drop_previous()
    assert handshake(daemon(ca, "r2", tmp_path), cert, key, ca.bundle_pem(), tmp_path) == "ok"
