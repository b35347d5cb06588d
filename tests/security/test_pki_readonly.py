"""Read-only paths (--check, --diff, verify, certs.status) need ca.pem, never the CA key; the key is well kept."""

from __future__ import annotations

import os
import shutil

import pytest

from berth.engine.roles import RoleContext
from berth.errors import PKIError
from berth.pki.ca import CertificateAuthority, generate_key_pem, make_csr_pem
from berth.pki.tls import read_only_identity
from tests.security.conftest import ONE_DAEMON as INVENTORY
from tests.security.conftest import ROOT, load_hosts


def public_copy(ca: CertificateAuthority, tmp_path):
    """The PKI as a merge-request pipeline sees it: every certificate, no key file at all."""
    public = tmp_path / "public"
    shutil.copytree(ca.pki_dir, public)
    for key in public.rglob("*key*.pem"):
        key.unlink()
    return public


def test_the_ca_loads_from_ca_pem_alone(ca, tmp_path):
    ca.daemon_trust_pem("r1")
    public = public_copy(ca, tmp_path)
    read_only = CertificateAuthority.load(public, need_key=False)
    assert read_only.bundle_pem() == ca.bundle_pem()
    assert read_only.daemon_trust_pem("r1") == ca.daemon_trust_pem("r1")
    with pytest.raises(PKIError, match="read-only"):
        read_only.issue_client("x")


def test_an_encrypted_ca_is_read_without_its_passphrase(pki_dir, tmp_path):
    ca = CertificateAuthority.init(pki_dir, passphrase=b"correct horse")
    ca.daemon_trust_pem("r1")
    assert CertificateAuthority.load(pki_dir, need_key=False).fingerprint() == ca.fingerprint()


def test_check_declares_docker_tls_with_ca_pem_alone(ca, tmp_path):
    ca.daemon_trust_pem("r1")
    public = public_copy(ca, tmp_path)
    hosts = load_hosts(tmp_path, INVENTORY)
    ctx = RoleContext(ROOT / "roles", public, ca_loader=CertificateAuthority.load, read_only=True)
    state = ctx.module("docker_tls").declare(hosts["r1"], ctx)
    (bundle,) = [r for r in state.resources if getattr(r, "path", "").endswith("/ca.pem")]
    assert bundle.content == ca.daemon_trust_pem("r1")


def test_verify_uses_an_existing_client_certificate_without_the_ca_key(ca, tmp_path, monkeypatch):
    folder = tmp_path / "ci"
    folder.mkdir()
    cert, key = ca.issue_client("ci")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    (folder / "ca.pem").write_bytes(ca.bundle_pem())
    monkeypatch.setenv("DOCKER_CERT_PATH", str(folder))
    public = public_copy(ca, tmp_path)
    identity = read_only_identity(CertificateAuthority.load(public, need_key=False), public)
    assert identity is not None and identity.path == folder


def test_the_encrypted_ca_key_uses_a_strong_kdf(pki_dir):
    CertificateAuthority.init(pki_dir, passphrase=b"correct horse")
    text = (pki_dir / "ca" / "current" / "ca-key.pem").read_text()
    assert "BERTH SCRYPT ENCRYPTED PRIVATE KEY" in text
    ca = CertificateAuthority.load(pki_dir, passphrase=b"correct horse")
    assert ca.sign_server_csr(make_csr_pem(generate_key_pem(), "r1"), sans=["r1"])
    with pytest.raises(PKIError, match="wrong passphrase"):
        CertificateAuthority.load(pki_dir, passphrase=b"wrong")


def test_an_unencrypted_ca_key_draws_a_warning(pki_dir):
    ca = CertificateAuthority.init(pki_dir)
    assert any("not encrypted" in w for w in ca.warnings)
    loaded = CertificateAuthority.load(pki_dir)
    assert any("BERTH_CA_PASSPHRASE" in w for w in loaded.warnings)
    assert os.stat(pki_dir / "ca" / "current" / "ca-key.pem").st_mode & 0o077 == 0


def test_read_only_commands_never_ask_for_the_passphrase(pki_dir):
    CertificateAuthority.init(pki_dir, passphrase=b"correct horse")
    assert not CertificateAuthority.load_for_reading(pki_dir).can_sign        # no passphrase: certificates only
    assert CertificateAuthority.load_for_reading(pki_dir, passphrase=b"correct horse").can_sign
    (pki_dir / "ca" / "current" / "ca-key.pem").unlink()
    assert not CertificateAuthority.load_for_reading(pki_dir, passphrase=b"correct horse").can_sign
