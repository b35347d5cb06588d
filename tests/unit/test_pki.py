"""Tests for berth.pki.ca: real keys, real certificates, a real TLS handshake; no mocks."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import queue
import re
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from berth.errors import PKIError
from berth.pki import ca as pki
from berth.pki.ca import (
    KEY_TYPES,
    CertificateAuthority,
    cert_info,
    generate_key_pem,
    load_certs,
    make_csr_pem,
    renewal_reason,
)

CA_CN_RE = re.compile(r"^berth CA \d{4}-\d{2}-\d{2} [0-9a-f]{4}$")


# --------------------------------------------------------------------------------------------------
# helpers




def host_csr(cn: str = "r1", key_type: str = "ec-p256") -> tuple[bytes, bytes]:
    """What a host does: make its own key and a CSR. Returns (key_pem, csr_pem)."""
    key_pem = generate_key_pem(key_type)
    return key_pem, make_csr_pem(key_pem, cn)


def server_cert(ca: CertificateAuthority, sans: list[str], cn: str = "r1", **kw: object) -> bytes:
    _, csr = host_csr(cn)
    return ca.sign_server_csr(csr, sans=sans, **kw)  # type: ignore[arg-type]


def parse(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def verify_signature(issuer: x509.Certificate, cert: x509.Certificate) -> None:
    """Check cert's signature with the issuer's public key by hand (raises InvalidSignature)."""
    pub = issuer.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    elif isinstance(pub, ed25519.Ed25519PublicKey):
        pub.verify(cert.signature, cert.tbs_certificate_bytes)
    else:  # pragma: no cover
        raise AssertionError(type(pub))


def spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def foreign_ca(tmp_path: Path, name: str = "other") -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / name, common_name="berth CA")


# --------------------------------------------------------------------------------------------------
# init / load


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_init_each_key_type(pki_dir: Path, key_type: str) -> None:
    ca = CertificateAuthority.init(pki_dir, key_type=key_type, days=100)
    cert = ca.cert

    assert ca.key_type() == key_type
    assert CA_CN_RE.match(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed, signature valid
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (bc.critical, bc.value.ca, bc.value.path_length) == (True, True, 1)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical is True
    assert (ku.value.key_cert_sign, ku.value.crl_sign, ku.value.digital_signature) == (True, True, False)
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=100, minutes=5)
    if key_type == "ed25519":
        assert cert.signature_hash_algorithm is None
    else:
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)

    # Files on disk: the key is an unencrypted PKCS8 key that belongs to the certificate.
    key_pem = (pki_dir / "ca/current/ca-key.pem").read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert spki(key.public_key()) == spki(cert.public_key())
    assert (pki_dir / "ca/current/ca.pem").read_bytes() == ca.bundle_pem()
    assert CertificateAuthority.exists(pki_dir) is True

    # The CA of every key type signs a server certificate that verifies with its public key.
    leaf = parse(server_cert(ca, ["r1"]))
    verify_signature(cert, leaf)
    assert ca.issued_by_us(server_cert(ca, ["r1"])) == "current"


def test_two_cas_have_distinct_names(tmp_path: Path) -> None:
    a = CertificateAuthority.init(tmp_path / "a")
    b = CertificateAuthority.init(tmp_path / "b")
    assert a.cert.subject != b.cert.subject
    assert cert_info(a.bundle_pem()).subject_cn.startswith("berth CA ")


def test_custom_common_name(pki_dir: Path) -> None:
    ca = CertificateAuthority.init(pki_dir, common_name="ACME runners CA")
    assert re.fullmatch(r"ACME runners CA \d{4}-\d{2}-\d{2} [0-9a-f]{4}", cert_info(ca.bundle_pem()).subject_cn)


def test_exists_false_for_empty_dir(pki_dir: Path) -> None:
    assert CertificateAuthority.exists(pki_dir) is False


def test_init_refuses_to_overwrite_and_changes_nothing(pki_dir: Path) -> None:
    CertificateAuthority.init(pki_dir, passphrase=b"s3cret")
    before = {p: p.read_bytes() for p in all_files(pki_dir)}
    names_before = listing(pki_dir)

    with pytest.raises(PKIError) as err:
        CertificateAuthority.init(pki_dir, key_type="rsa-3072")
    msg = str(err.value)
    assert str(pki_dir / "ca" / "current") in msg
    assert "nothing was changed" in msg

    assert listing(pki_dir) == names_before
    assert {p: p.read_bytes() for p in all_files(pki_dir)} == before


def test_init_rejects_unknown_key_type(pki_dir: Path) -> None:
    with pytest.raises(PKIError, match=r"unknown key type 'dsa'.*ec-p256, ec-p384, ed25519, rsa-3072, rsa-4096"):
        CertificateAuthority.init(pki_dir, key_type="dsa")
    assert not CertificateAuthority.exists(pki_dir)


def test_load_missing_ca(pki_dir: Path) -> None:
    with pytest.raises(PKIError, match=r"run `berth certs.init`") as err:
        CertificateAuthority.load(pki_dir)
    assert str(pki_dir) in str(err.value)


def test_load_roundtrip(pki_dir: Path, ca: CertificateAuthority) -> None:
    loaded = CertificateAuthority.load(pki_dir)
    assert loaded.fingerprint() == ca.fingerprint()
    assert loaded.previous is None
    assert loaded.bundle_pem() == ca.bundle_pem()
    # The loaded CA can sign, and what it signs verifies against the original certificate.
    verify_signature(ca.cert, parse(server_cert(loaded, ["r1"])))


def test_load_rejects_key_that_does_not_match_cert(tmp_path: Path) -> None:
    a = tmp_path / "a"
    CertificateAuthority.init(a)
    CertificateAuthority.init(tmp_path / "b")
    (a / "ca/current/ca-key.pem").write_bytes((tmp_path / "b/ca/current/ca-key.pem").read_bytes())
    with pytest.raises(PKIError, match="does not belong to"):
        CertificateAuthority.load(a)


def test_encrypted_ca_key(pki_dir: Path) -> None:
    ca = CertificateAuthority.init(pki_dir, passphrase=b"correct horse")
    key_pem = (pki_dir / "ca/current/ca-key.pem").read_bytes()

    # Really encrypted on disk (scrypt + AES-GCM: tests/security/test_pki_readonly.py).
    assert key_pem.startswith(b"-----BEGIN BERTH SCRYPT ENCRYPTED PRIVATE KEY-----\n")
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(key_pem, password=None)

    with pytest.raises(PKIError, match="is encrypted: set BERTH_CA_PASSPHRASE"):
        CertificateAuthority.load(pki_dir)
    with pytest.raises(PKIError, match="wrong passphrase; set BERTH_CA_PASSPHRASE"):
        CertificateAuthority.load(pki_dir, passphrase=b"wrong horse")

    loaded = CertificateAuthority.load(pki_dir, passphrase=b"correct horse")
    assert loaded.fingerprint() == ca.fingerprint()
    verify_signature(ca.cert, parse(server_cert(loaded, ["r1"])))

    # A rotation keeps the key encrypted with the same passphrase.
    loaded.rotate()
    new_key = (pki_dir / "ca/current/ca-key.pem").read_bytes()
    assert new_key.startswith(b"-----BEGIN BERTH SCRYPT ENCRYPTED PRIVATE KEY-----\n")
    with pytest.raises(PKIError, match="is encrypted"):
        CertificateAuthority.load(pki_dir)
    assert CertificateAuthority.load(pki_dir, passphrase=b"correct horse").fingerprint() == loaded.fingerprint()


def test_empty_passphrase_is_refused(pki_dir: Path) -> None:
    with pytest.raises(PKIError, match="passphrase is empty"):
        CertificateAuthority.init(pki_dir, passphrase=b"")
    assert not pki_dir.exists()


def test_file_modes_do_not_depend_on_umask(pki_dir: Path) -> None:
    old = os.umask(0)
    try:
        ca = CertificateAuthority.init(pki_dir)
        ca.issue_client("ops")
        ca.rotate()
    finally:
        os.umask(old)
    for d in (pki_dir, pki_dir / "ca", pki_dir / "ca/current", pki_dir / "ca/previous", pki_dir / "zones",
              pki_dir / "zones/fleet"):
        assert mode(d) == 0o700, d
    for gen in ("ca/current", "ca/previous", "zones/fleet"):
        assert mode(pki_dir / gen / "ca-key.pem") == 0o600
        assert mode(pki_dir / gen / "ca.pem") == 0o644
    assert mode(pki_dir / "clients.json") == 0o600


def test_no_temporary_files_left_behind(pki_dir: Path) -> None:
    ca = CertificateAuthority.init(pki_dir)
    ca.issue_client("ops")
    ca.issue_client("ci")
    ca.rotate()
    ca.drop_previous()
    assert listing(pki_dir) == [
        ".lock",
        "ca",
        "ca/current",
        "ca/current/ca-key.pem",
        "ca/current/ca.pem",
        "clients.json",
        "zones",
        "zones/fleet",
        "zones/fleet/ca-key.pem",
        "zones/fleet/ca.pem",
    ]


def test_failed_write_keeps_the_old_file(
    pki_dir: Path, ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure between writing the temp file and renaming it leaves the old index intact."""
    ca.issue_client("ops")
    before = (pki_dir / "clients.json").read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pki.os, "replace", boom)
    with pytest.raises(OSError, match="No space left"):
        ca.issue_client("ci")
    monkeypatch.undo()

    assert (pki_dir / "clients.json").read_bytes() == before
    assert [p.name for p in pki_dir.iterdir() if p.name.endswith(".tmp")] == []
    assert [r.name for r in ca.clients()] == ["ops"]


# --------------------------------------------------------------------------------------------------
# server certificates


def test_sign_server_csr(ca: CertificateAuthority) -> None:
    key_pem, csr = host_csr("r1.example.com")
    pem = ca.sign_server_csr(
        csr, sans=["r1.example.com", "10.0.0.5", "2001:db8::1", "R1.example.com", "10.0.0.5", "r1"]
    )
    assert pem.count(b"BEGIN CERTIFICATE") == 1  # the leaf only
    cert = parse(pem)

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [
        x509.DNSName("r1.example.com"),
        x509.IPAddress(ipaddress.IPv4Address("10.0.0.5")),
        x509.IPAddress(ipaddress.IPv6Address("2001:db8::1")),
        x509.DNSName("r1"),
    ]
    assert cert.subject.rfc4514_string() == "CN=r1.example.com"
    assert cert.issuer == ca.cert.subject
    verify_signature(ca.cert, cert)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)

    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (bc.critical, bc.value.ca) == (True, False)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert (ku.critical, ku.value.digital_signature, ku.value.key_encipherment) == (True, True, False)
    assert ku.value.key_cert_sign is False

    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest

    # The host's key is in the certificate; nothing about it was generated by the CA.
    host_key = serialization.load_pem_private_key(key_pem, password=None)
    assert spki(cert.public_key()) == spki(host_key.public_key())

    now = datetime.now(UTC)
    assert abs(cert.not_valid_before_utc - (now - timedelta(minutes=5))) < timedelta(seconds=30)
    assert abs(cert.not_valid_after_utc - (now + timedelta(days=365))) < timedelta(seconds=30)


def test_sign_server_csr_common_name_override_and_days(ca: CertificateAuthority) -> None:
    _, csr = host_csr("from-the-csr")
    cert = parse(ca.sign_server_csr(csr, sans=["::1"], common_name="docker-r1", days=30))
    assert cert.subject.rfc4514_string() == "CN=docker-r1"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30, minutes=5)
    assert cert_info(_pem(cert)).sans == ["IP:::1"]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_random_serials(ca: CertificateAuthority) -> None:
    serials = {cert_info(server_cert(ca, ["r1"])).serial for _ in range(5)}
    assert len(serials) == 5


def test_rsa_server_key_gets_key_encipherment(ca: CertificateAuthority) -> None:
    _, csr = host_csr(key_type="rsa-3072")
    ku = parse(ca.sign_server_csr(csr, sans=["r1"])).extensions.get_extension_for_class(x509.KeyUsage)
    assert (ku.critical, ku.value.digital_signature, ku.value.key_encipherment) == (True, True, True)


def test_csr_with_bad_signature_is_refused(ca: CertificateAuthority) -> None:
    _, csr = host_csr()
    der = bytearray(x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the signature
    tampered = x509.load_der_x509_csr(bytes(der))
    assert tampered.is_signature_valid is False
    with pytest.raises(PKIError, match="signature does not verify"):
        ca.sign_server_csr(tampered.public_bytes(serialization.Encoding.PEM), sans=["r1"])


def test_csr_garbage_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(PKIError, match="not a PEM certificate signing request"):
        ca.sign_server_csr(b"hello", sans=["r1"])


@pytest.mark.parametrize(
    ("sans", "message"),
    [
        ([], "at least one SAN"),
        (["has space"], "neither an IP address nor a valid DNS name"),
        ([""], "empty SAN"),
        (["IP:r1"], "is not an IP address"),
        ("r1", "must be a list of strings"),
    ],
)
def test_bad_sans_are_refused(ca: CertificateAuthority, sans: list[str], message: str) -> None:
    _, csr = host_csr()
    with pytest.raises(PKIError, match=message):
        ca.sign_server_csr(csr, sans=sans)


def test_prefixed_sans_are_accepted(ca: CertificateAuthority) -> None:
    pem = server_cert(ca, ["DNS:r1", "IP:10.0.0.5", "DNS:10.0.0.6"])
    assert cert_info(pem).sans == ["DNS:r1", "IP:10.0.0.5", "DNS:10.0.0.6"]


def test_not_after_override(ca: CertificateAuthority) -> None:
    when = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
    cert = parse(server_cert(ca, ["r1"], not_after=when, days=1))
    assert cert.not_valid_after_utc == when

    expired = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    cert = parse(server_cert(ca, ["r1"], not_after=expired))
    assert cert.not_valid_after_utc == expired
    assert cert.not_valid_before_utc == expired - timedelta(days=1)

    with pytest.raises(PKIError, match="no timezone"):
        server_cert(ca, ["r1"], not_after=datetime(2027, 3, 1))


def test_leaf_never_outlives_the_ca(pki_dir: Path) -> None:
    ca = CertificateAuthority.init(pki_dir, days=10)
    assert parse(server_cert(ca, ["r1"], days=365)).not_valid_after_utc == ca.cert.not_valid_after_utc
    cert_pem, _ = ca.issue_client("ops", days=90)
    assert parse(cert_pem).not_valid_after_utc == ca.cert.not_valid_after_utc


# --------------------------------------------------------------------------------------------------
# client certificates


def test_issue_client(pki_dir: Path, ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.issue_client("ci-pipeline")
    cert = parse(cert_pem)

    assert cert.subject.rfc4514_string() == "CN=ci-pipeline"
    fleet = load_certs((pki_dir / "zones/fleet/ca.pem").read_bytes())[0]
    assert cert.issuer == fleet.subject         # a zone CA signs clients, never the root
    verify_signature(fleet, cert)
    verify_signature(ca.cert, fleet)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert (ku.critical, ku.value.digital_signature, ku.value.key_encipherment) == (True, True, False)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)

    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"  # same as the CA
    assert spki(key.public_key()) == spki(cert.public_key())
    assert abs(cert.not_valid_after_utc - (datetime.now(UTC) + timedelta(days=7))) < timedelta(seconds=30)

    doc = json.loads((pki_dir / "clients.json").read_text())
    assert doc == {
        "version": 2,
        "clients": [
            {
                "name": "ci-pipeline",
                "zone": "fleet",
                "serial": format(cert.serial_number, "x"),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "fingerprint": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
                "ca_fingerprint": fleet.fingerprint(hashes.SHA256()).hex(),
                "cert_pem": cert_pem.decode(),
            }
        ],
    }

    # The key is handed out, never stored: no file under pki_dir contains it (or its body).
    key_body = b"".join(key_pem.splitlines()[1:-1])
    for path in all_files(pki_dir):
        data = path.read_bytes()
        assert key_pem not in data, path
        assert key_body not in data.replace(b"\n", b"").replace(b"\\n", b""), path
    holders = [p.relative_to(pki_dir).as_posix() for p in all_files(pki_dir) if b"PRIVATE KEY" in p.read_bytes()]
    assert holders == ["ca/current/ca-key.pem", "zones/fleet/ca-key.pem"]


def test_client_key_type(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ed", key_type="ed25519")
    _, key_pem = ca.issue_client("ops")
    assert isinstance(serialization.load_pem_private_key(key_pem, None), ed25519.Ed25519PrivateKey)
    _, key_pem = ca.issue_client("ops2", key_type="ec-p384")
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"


def test_clients_listing(ca: CertificateAuthority) -> None:
    now = datetime.now(UTC)
    ca.issue_client("ops", days=10)
    ca.issue_client("ci", not_after=now.replace(microsecond=0) + timedelta(days=2))
    ca.issue_client("ops", days=30)  # re-issue: both are valid, both are listed

    records = ca.clients(now=now)
    assert [(r.name, r.issued_by) for r in records] == [
        ("ops", "current"),
        ("ci", "current"),
        ("ops", "current"),
    ]
    assert [round(r.days_left) for r in records] == [10, 2, 30]
    assert all(r.ca_fingerprint == records[0].ca_fingerprint and r.zone == "fleet" for r in records)
    assert records[0].serial == format(cert_info(records[0].cert_pem).serial, "x")
    assert records[1].not_after == now.replace(microsecond=0) + timedelta(days=2)


def test_corrupt_clients_index(pki_dir: Path, ca: CertificateAuthority) -> None:
    (pki_dir / "clients.json").write_text("{not json")
    with pytest.raises(PKIError, match=r"clients\.json is not valid JSON"):
        ca.clients()
    with pytest.raises(PKIError, match=r"clients\.json is not valid JSON"):
        ca.issue_client("ops")
    assert (pki_dir / "clients.json").read_text() == "{not json"


def test_client_name_validation(ca: CertificateAuthority) -> None:
    with pytest.raises(PKIError, match="invalid common name"):
        ca.issue_client("")
    with pytest.raises(PKIError, match="invalid common name"):
        ca.issue_client("x" * 65)


# --------------------------------------------------------------------------------------------------
# rotation


def test_rotate(pki_dir: Path, ca: CertificateAuthority) -> None:
    old_ca = ca.cert
    old_server = server_cert(ca, ["r1"])
    old_client, _ = ca.issue_client("ops")

    ca.rotate(key_type="ec-p384")

    assert ca.previous is not None
    assert ca.previous.fingerprint(hashes.SHA256()) == old_ca.fingerprint(hashes.SHA256())
    assert ca.cert.subject != old_ca.subject
    assert ca.key_type() == "ec-p384"
    assert CA_CN_RE.match(cert_info(ca.bundle_pem()).subject_cn)

    bundle = load_certs(ca.bundle_pem())
    assert [c.subject for c in bundle] == [ca.cert.subject, old_ca.subject]
    assert (pki_dir / "ca/previous/ca.pem").read_bytes() == _pem(old_ca)
    assert (pki_dir / "ca/current/ca.pem").read_bytes() == _pem(ca.cert)

    new_server = parse(server_cert(ca, ["r1"]))
    assert new_server.issuer == ca.cert.subject
    verify_signature(ca.cert, new_server)
    with pytest.raises(InvalidSignature):
        verify_signature(old_ca, new_server)

    assert ca.issued_by_us(_pem(new_server)) == "current"
    assert ca.issued_by_us(old_server) == "previous"
    # Client certificates come from zone CAs, which the rotation re-certifies under the new root: they stay valid.
    assert ca.issued_by_us(old_client) is None
    assert [(r.issued_by, r.revoked) for r in ca.clients()] == [("current", "")]

    # The same state is seen by a fresh load.
    loaded = CertificateAuthority.load(pki_dir)
    assert loaded.bundle_pem() == ca.bundle_pem()
    assert loaded.issued_by_us(old_server) == "previous"

    on_disk = {p: p.read_bytes() for p in all_files(pki_dir)}
    with pytest.raises(PKIError, match=r"finish the rotation with certs\.drop-previous-ca first"):
        ca.rotate()
    with pytest.raises(PKIError, match=r"finish the rotation with certs\.drop-previous-ca first"):
        loaded.rotate()
    assert loaded.bundle_pem() == ca.bundle_pem()
    assert {p: p.read_bytes() for p in all_files(pki_dir)} == on_disk  # refused rotations changed nothing


def test_rotate_keeps_key_type_by_default(pki_dir: Path) -> None:
    ca = CertificateAuthority.init(pki_dir, key_type="ec-p384", common_name="ACME CA")
    ca.rotate()
    assert ca.key_type() == "ec-p384"
    assert re.fullmatch(r"ACME CA \d{4}-\d{2}-\d{2} [0-9a-f]{4}", cert_info(ca.bundle_pem()).subject_cn)


def test_drop_previous(pki_dir: Path, ca: CertificateAuthority) -> None:
    old_server = server_cert(ca, ["r1"])
    ca.issue_client("ops")
    ca.rotate()
    ca.drop_previous()

    assert ca.previous is None
    assert not (pki_dir / "ca/previous").exists()
    assert len(load_certs(ca.bundle_pem())) == 1
    assert ca.issued_by_us(old_server) is None
    assert [r.issued_by for r in ca.clients()] == ["current"]     # its zone CA lives on under the new root
    assert CertificateAuthority.load(pki_dir).previous is None

    with pytest.raises(PKIError, match="no previous CA to drop"):
        ca.drop_previous()
    ca.rotate()  # a new rotation may start now
    assert len(load_certs(ca.bundle_pem())) == 2


def test_interrupted_rotation_is_explained(pki_dir: Path, ca: CertificateAuthority) -> None:
    # State after a crash between the two renames of rotate(): previous exists, current does not.
    (pki_dir / "ca/current").rename(pki_dir / "ca/previous")
    with pytest.raises(PKIError, match="rotation was interrupted"):
        CertificateAuthority.load(pki_dir)
    with pytest.raises(PKIError, match="nothing was changed"):
        CertificateAuthority.init(pki_dir)


# --------------------------------------------------------------------------------------------------
# issued_by_us checks the name AND the signature


def _ca_key(pki_dir: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((pki_dir / "ca/current/ca-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _raw_leaf(issuer: x509.Name, signer: ec.EllipticCurvePrivateKey) -> bytes:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r1")]))
        .issuer_name(issuer)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )
    return _pem(cert)


def test_issued_by_us_requires_our_signature(pki_dir: Path, ca: CertificateAuthority) -> None:
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    assert ca.issued_by_us(_raw_leaf(ca.cert.subject, impostor_key)) is None  # our name, not our key


def test_issued_by_us_requires_our_name(pki_dir: Path, ca: CertificateAuthority) -> None:
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])
    assert ca.issued_by_us(_raw_leaf(other_name, _ca_key(pki_dir))) is None  # our key, not our name
    assert ca.issued_by_us(_raw_leaf(ca.cert.subject, _ca_key(pki_dir))) == "current"


def test_issued_by_us_other_ca(tmp_path: Path, ca: CertificateAuthority) -> None:
    other = foreign_ca(tmp_path)
    assert ca.issued_by_us(server_cert(other, ["r1"])) is None
    assert ca.issued_by_us(other.bundle_pem()) is None


# --------------------------------------------------------------------------------------------------
# renewal_reason


NOW = datetime(2027, 1, 10, 12, 0, 0, tzinfo=UTC)


def test_renewal_reason_good_cert(ca: CertificateAuthority) -> None:
    pem = server_cert(ca, ["r1", "10.0.0.5", "::1"], not_after=NOW + timedelta(days=300))
    assert renewal_reason(pem, wanted_sans=["10.0.0.5", "R1", "0:0::1"], ca=ca, renew_days=30, now=NOW) is None
    # SANs come from the inventory only: a name it no longer gives is a reason to re-issue.
    assert renewal_reason(pem, wanted_sans=["r1"], ca=ca, renew_days=30, now=NOW) == (
        "SANs beyond the inventory: IP:10.0.0.5, IP:::1")


@pytest.mark.parametrize("pem", [None, b"", b"  \n"])
def test_renewal_reason_missing(ca: CertificateAuthority, pem: bytes | None) -> None:
    assert renewal_reason(pem, wanted_sans=["r1"], ca=ca, renew_days=30, now=NOW) == "missing"


@pytest.mark.parametrize(
    "pem",
    [
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    ],
)
def test_renewal_reason_unparseable(ca: CertificateAuthority, pem: bytes) -> None:
    assert renewal_reason(pem, wanted_sans=["r1"], ca=ca, renew_days=30, now=NOW) == "unparseable certificate"


def test_renewal_reason_expiring(ca: CertificateAuthority) -> None:
    end = NOW + timedelta(days=4, hours=23)  # 4.958 days left
    pem = server_cert(ca, ["r1"], not_after=end)
    assert (
        renewal_reason(pem, wanted_sans=["r1"], ca=ca, renew_days=30, now=NOW)
        == "expires in 4.9 days (renewal window 30 days)"
    )
    # Outside a 4-day window, the same certificate is fine.
    assert renewal_reason(pem, wanted_sans=["r1"], ca=ca, renew_days=4, now=NOW) is None


def test_renewal_reason_expired(ca: CertificateAuthority) -> None:
    pem = server_cert(ca, ["r1"], not_after=NOW - timedelta(days=2, hours=12))
    assert renewal_reason(pem, wanted_sans=["r1"], ca=ca, renew_days=30, now=NOW) == "expired 2.5 days ago"


def test_renewal_reason_sans(ca: CertificateAuthority) -> None:
    pem = server_cert(ca, ["r1", "10.0.0.4"], not_after=NOW + timedelta(days=300))
    assert (
        renewal_reason(pem, wanted_sans=["10.0.0.5", "r1", "r2", "10.0.0.4"], ca=ca, renew_days=30, now=NOW)
        == "SANs do not cover IP:10.0.0.5, DNS:r2"
    )


def test_renewal_reason_other_ca(tmp_path: Path, ca: CertificateAuthority) -> None:
    pem = server_cert(foreign_ca(tmp_path), ["r1"], not_after=NOW + timedelta(days=300))
    assert renewal_reason(pem, wanted_sans=["r1"], ca=ca, renew_days=30, now=NOW) == "issued by another CA"


def test_renewal_reason_previous_ca(ca: CertificateAuthority) -> None:
    pem = server_cert(ca, ["r1"], not_after=NOW + timedelta(days=300))
    assert renewal_reason(pem, wanted_sans=["r1"], ca=ca, renew_days=30, now=NOW) is None
    ca.rotate()
    assert (
        renewal_reason(pem, wanted_sans=["r1"], ca=ca, renew_days=30, now=NOW)
        == "issued by the previous CA (rotation in progress)"
    )


def test_renewal_reason_client_cert_is_not_a_server_cert(ca: CertificateAuthority) -> None:
    pem = ca._leaf_builder("r1", ec.generate_private_key(ec.SECP256R1()).public_key(), 1,
                           NOW + timedelta(days=300)).sign(ca._key, hashes.SHA256()).public_bytes(
                               serialization.Encoding.PEM)     # root-signed, without serverAuth
    assert (
        renewal_reason(pem, wanted_sans=[], ca=ca, renew_days=30, now=NOW) == "not a server certificate (no serverAuth)"
    )


def test_renewal_reason_rejects_bad_wanted_sans(ca: CertificateAuthority) -> None:
    with pytest.raises(PKIError, match="neither an IP address nor a valid DNS name"):
        renewal_reason(None, wanted_sans=["bad name"], ca=ca, renew_days=30)


# --------------------------------------------------------------------------------------------------
# cert_info / load_certs / keys


def test_cert_info_fields(ca: CertificateAuthority) -> None:
    end = datetime(2027, 6, 1, 0, 0, 0, tzinfo=UTC)
    pem = server_cert(ca, ["r1.example.com", "192.0.2.7", "2001:db8::7"], cn="r1.example.com", not_after=end)
    cert = parse(pem)
    info = cert_info(pem + ca.bundle_pem())  # the first certificate of a bundle

    assert info.subject_cn == "r1.example.com"
    assert info.sans == ["DNS:r1.example.com", "IP:192.0.2.7", "IP:2001:db8::7"]
    assert info.not_after == end
    assert info.not_before == cert.not_valid_before_utc
    assert info.not_before.tzinfo is not None and info.not_before.utcoffset() == timedelta(0)
    assert info.serial == cert.serial_number
    assert info.issuer_cn == ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert info.fingerprint == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert info.is_ca is False
    assert info.days_left(datetime(2027, 5, 30, 12, 0, 0, tzinfo=UTC)) == 1.5
    assert info.days_left(datetime(2027, 6, 3, 0, 0, 0, tzinfo=UTC)) == -2.0

    ca_info = cert_info(ca.bundle_pem())
    assert ca_info.is_ca is True
    assert ca_info.sans == []
    assert ca_info.subject_cn == ca_info.issuer_cn
    assert ca_info.fingerprint == ca.fingerprint()


def test_load_certs(tmp_path: Path, ca: CertificateAuthority) -> None:
    a, b = server_cert(ca, ["r1"]), server_cert(ca, ["r2"])
    certs = load_certs(a + b"\n" + b + ca.bundle_pem())
    assert [cert_info(_pem(c)).sans for c in certs] == [["DNS:r1"], ["DNS:r2"], []]
    with pytest.raises(PKIError, match="no readable PEM certificate"):
        load_certs(b"nothing here")
    with pytest.raises(PKIError, match="no readable PEM certificate"):
        cert_info(b"")


@pytest.mark.parametrize(
    ("key_type", "cls"),
    [
        ("ec-p256", ec.EllipticCurvePrivateKey),
        ("ec-p384", ec.EllipticCurvePrivateKey),
        ("ed25519", ed25519.Ed25519PrivateKey),
        ("rsa-3072", rsa.RSAPrivateKey),
    ],
)
def test_generate_key_and_csr(key_type: str, cls: type) -> None:
    key_pem = generate_key_pem(key_type)
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, cls)
    csr = x509.load_pem_x509_csr(make_csr_pem(key_pem, "r1"))
    assert csr.is_signature_valid is True
    assert csr.subject.rfc4514_string() == "CN=r1"
    assert spki(csr.public_key()) == spki(key.public_key())


def test_generate_key_unknown_type() -> None:
    with pytest.raises(PKIError, match="unknown key type 'rsa-1024'"):
        generate_key_pem("rsa-1024")


# --------------------------------------------------------------------------------------------------
# a real mutual-TLS handshake


class MTLSServer:
    """A TLS server on 127.0.0.1 that requires client certificates, like dockerd with tlsverify."""

    def __init__(self, certfile: Path, keyfile: Path, cafile: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(certfile, keyfile)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(cafile=cafile)
        # dockerd (Go) takes every certificate of tlscacert as an anchor, zone CAs included: OpenSSL needs this flag.
        self.ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.results: queue.Queue[tuple[str, str]] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(64)
                    peer = tls.getpeercert()
                    cn = dict(x[0] for x in peer["subject"])["commonName"]
                    tls.sendall(f"hello {cn}".encode())
                    self.results.put(("ok", cn))
            except ssl.SSLError as exc:
                self.results.put(("refused", exc.reason or str(exc)))
                conn.close()
            except OSError as exc:  # pragma: no cover - diagnostic only
                self.results.put(("error", repr(exc)))
                conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()


def talk(port: int, cafile: Path, cert: Path | None = None, key: Path | None = None) -> bytes | Exception:
    """Connect like a docker client (verify the server against the CA, IP SAN 127.0.0.1)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    assert ctx.check_hostname is True and ctx.verify_mode == ssl.CERT_REQUIRED
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"ping")
            return tls.recv(64)
    except (ssl.SSLError, OSError) as exc:
        return exc


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def daemon(tmp_path: Path, ca: CertificateAuthority) -> Iterator[tuple[MTLSServer, Path]]:
    """A 'host' whose key never leaves it: it sends a CSR and gets back a certificate."""
    host = tmp_path / "host"
    host.mkdir()
    key_pem = generate_key_pem("ec-p256")
    cert_pem = ca.sign_server_csr(make_csr_pem(key_pem, "r1"), sans=["r1", "127.0.0.1"])
    server = MTLSServer(
        write(host / "server-cert.pem", cert_pem),
        write(host / "server-key.pem", key_pem),
        write(host / "ca.pem", ca.daemon_trust_pem("r1")),
    )
    yield server, write(tmp_path / "ca.pem", ca.bundle_pem())
    server.close()


def client_files(tmp_path: Path, ca: CertificateAuthority, name: str) -> tuple[Path, Path]:
    d = tmp_path / f"client-{name}"
    d.mkdir()
    cert_pem, key_pem = ca.issue_client(name)
    return write(d / "cert.pem", cert_pem), write(d / "key.pem", key_pem)


def test_tls_client_with_berth_cert_connects(
    tmp_path: Path, ca: CertificateAuthority, daemon: tuple[MTLSServer, Path]
) -> None:
    server, cafile = daemon
    cert, key = client_files(tmp_path, ca, "ci-runner")
    assert talk(server.port, cafile, cert, key) == b"hello ci-runner"
    assert server.results.get(timeout=10) == ("ok", "ci-runner")


def test_tls_client_without_cert_is_refused(daemon: tuple[MTLSServer, Path]) -> None:
    server, cafile = daemon
    result = talk(server.port, cafile)
    assert isinstance(result, Exception), result
    assert server.results.get(timeout=10) == ("refused", "PEER_DID_NOT_RETURN_A_CERTIFICATE")


def test_tls_client_with_foreign_cert_is_refused(tmp_path: Path, daemon: tuple[MTLSServer, Path]) -> None:
    server, cafile = daemon
    cert, key = client_files(tmp_path, foreign_ca(tmp_path), "intruder")
    result = talk(server.port, cafile, cert, key)
    assert isinstance(result, Exception), result
    assert server.results.get(timeout=10) == ("refused", "CERTIFICATE_VERIFY_FAILED")


def test_tls_server_cert_from_foreign_ca_is_rejected_by_client(
    tmp_path: Path, ca: CertificateAuthority, daemon: tuple[MTLSServer, Path]
) -> None:
    """The client side verifies too: a bundle from another CA does not trust our daemon."""
    server, _ = daemon
    cert, key = client_files(tmp_path, ca, "ops")
    result = talk(server.port, write(tmp_path / "other.pem", foreign_ca(tmp_path).bundle_pem()), cert, key)
    assert isinstance(result, ssl.SSLCertVerificationError)
    # OpenSSL servers append the CA from their trust store to the chain they send (dockerd does not):
    # either way the client finds no trust anchor.
    assert result.verify_code in (
        19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    )


def test_tls_during_rotation_both_generations_interoperate(tmp_path: Path, ca: CertificateAuthority) -> None:
    """Mid-rotation: a daemon with an old-CA cert accepts a new-CA client, via the two-cert bundle."""
    host = tmp_path / "host"
    host.mkdir()
    key_pem = generate_key_pem("ec-p256")
    old_cert = ca.sign_server_csr(make_csr_pem(key_pem, "r1"), sans=["127.0.0.1"])
    ca.rotate()
    bundle = write(tmp_path / "bundle.pem", ca.bundle_pem())
    trust = write(tmp_path / "trust.pem", ca.daemon_trust_pem("r1"))
    server = MTLSServer(write(host / "cert.pem", old_cert), write(host / "key.pem", key_pem), trust)
    try:
        cert, key = client_files(tmp_path, ca, "new-client")
        assert ca.zone_of(cert.read_bytes()) == "fleet"
        assert talk(server.port, bundle, cert, key) == b"hello new-client"
        assert server.results.get(timeout=10) == ("ok", "new-client")

        ca.drop_previous()  # after the drop the old daemon cert is no longer trusted by clients
        result = talk(server.port, write(tmp_path / "new.pem", ca.bundle_pem()), cert, key)
        assert isinstance(result, ssl.SSLCertVerificationError)
    finally:
        server.close()
