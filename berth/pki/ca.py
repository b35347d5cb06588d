"""The berth certificate authority for Docker daemons exposed over TCP with mutual TLS.

The CA lives on the controller in ``pki_dir``::

    pki_dir/ca/current/ca.pem, ca-key.pem
    pki_dir/ca/previous/ca.pem, ca-key.pem     # only while a CA rotation is in progress
    pki_dir/zones/<zone>/ca.pem, ca-key.pem    # client-issuing CAs, one per trust zone (below)
    pki_dir/zones/<zone>/zone.json             # a group zone's member hosts
    pki_dir/clients.json                       # registry of issued client certificates (no keys)

Trust zones. The root CA signs server certificates and the zone CAs, never a client certificate. A
client certificate is signed by the CA of one zone, and a daemon's tlscacert holds only the zone CAs
allowed on it: ``fleet`` (every daemon), ``host-<name>`` (that daemon only: remote-mode runners whose
remote_host it is) and the ``group-...`` zones whose members include it. dockerd trusts exactly the
certificates of tlscacert as anchors (moby daemon/command/daemon.go newAPIServerTLSConfig: ExclusiveRootPools,
RequireAndVerifyClientCert; vendor/github.com/docker/go-connections/tlsconfig/config.go Server and certPool:
ClientCAs is a new pool of that file's certificates only; Go's x509 accepts a non-self-signed anchor), so a zone's
certificates open no daemon outside the zone. Revoking = replacing a zone's CA (dockerd has no CRL).

Read-only commands load the certificates only (``need_key=False``): no key file, no passphrase.

A host's server key is generated on the host and never leaves it: the host sends a CSR and the
controller signs it (:meth:`CertificateAuthority.sign_server_csr`). Client keys (operators, CI, jobs)
are generated here and handed to the user; only the certificate is recorded.

Directories are 0700, private keys 0600, certificates 0644. Every file is written to a temporary
file in the same directory and moved into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from berth.errors import PKIError
from berth.files import fsync_dir, write_atomic

__all__ = [
    "DEFAULT_KEY_TYPE",
    "FLEET_ZONE",
    "KEY_TYPES",
    "CertInfo",
    "CertificateAuthority",
    "ClientRecord",
    "cert_info",
    "generate_key_pem",
    "host_zone",
    "load_certs",
    "make_csr_pem",
    "parse_san",
    "renewal_reason",
]

KEY_TYPES = ("ec-p256", "ec-p384", "ed25519", "rsa-3072", "rsa-4096")
DEFAULT_KEY_TYPE = "ec-p256"

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CA_CROSS = "cross.pem"  # during a rotation: the new CA's certificate signed by the previous CA
CLIENTS_INDEX = "clients.json"
ZONES_DIR = "zones"
ZONE_FILE = "zone.json"
FLEET_ZONE = "fleet"
_ZONE_NAME = re.compile(r"^(fleet|host-[A-Za-z0-9._-]{1,64}|group-[a-z0-9._-]{1,80})$")
# scrypt for the CA keys: N=2**17, r=8 (128 MiB, about half a second): OWASP's minimum, paid once per run.
SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P = 17, 8, 1
SCRYPT_PEM = "BERTH SCRYPT ENCRYPTED PRIVATE KEY"
_SCRYPT_MAGIC = b"berth-scrypt-aesgcm-1"
CLOCK_SKEW = timedelta(minutes=5)

DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
IssuedBy = Literal["current", "previous"]

_CA_SUFFIX = re.compile(r" \d{4}-\d{2}-\d{2} [0-9a-f]{4}$")
_CN_MAX = 64


# --------------------------------------------------------------------------------------------------
# Certificate inspection


@dataclass(frozen=True)
class CertInfo:
    """The fields of a certificate that berth reports and decides on."""

    subject_cn: str
    sans: list[str]
    not_before: datetime
    not_after: datetime
    serial: int
    issuer_cn: str
    fingerprint: str
    is_ca: bool

    def days_left(self, now: datetime | None = None) -> float:
        """Days until ``not_after`` (negative once expired)."""
        return (self.not_after - _now(now)).total_seconds() / 86400


@dataclass(frozen=True)
class ClientRecord:
    """One issued client certificate, as recorded in clients.json."""

    name: str
    serial: str  # hex
    not_after: datetime
    fingerprint: str  # sha256 hex of the certificate DER
    ca_fingerprint: str  # sha256 hex of the CA certificate that was current at issue time
    cert_pem: bytes
    days_left: float
    issued_by: Literal["current", "previous", "unknown"]
    zone: str = ""          # the trust zone whose CA signed it ("" for a certificate from before zones)
    revoked: str = ""       # when its zone's CA was replaced (ISO time); "" while it is valid


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """All certificates in a PEM bundle, in order. PKIError if there is none."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise PKIError(f"no readable PEM certificate found ({exc})") from None


def cert_info(pem: bytes) -> CertInfo:
    """Describe the first certificate in ``pem``."""
    return _info(load_certs(pem)[0])


def _info(cert: x509.Certificate) -> CertInfo:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        subject_cn=_cn(cert.subject),
        sans=_cert_sans(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
        issuer_cn=_cn(cert.issuer),
        fingerprint=_fingerprint(cert),
        is_ca=is_ca,
    )


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return ""
    value = attrs[0].value
    return value.decode() if isinstance(value, bytes) else value


def _cert_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for gn in san:
        if isinstance(gn, x509.DNSName):
            out.append(f"DNS:{gn.value}")
        elif isinstance(gn, x509.IPAddress):
            out.append(f"IP:{gn.value}")
        elif isinstance(gn, x509.UniformResourceIdentifier):
            out.append(f"URI:{gn.value}")
        elif isinstance(gn, x509.RFC822Name):
            out.append(f"email:{gn.value}")
        else:
            out.append(f"{type(gn).__name__}:{gn.value}")
    return out


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _has_eku(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        return oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


# --------------------------------------------------------------------------------------------------
# SANs


def parse_san(item: str) -> x509.DNSName | x509.IPAddress:
    """A SAN given as a plain string: an IPv4/IPv6 address becomes IPAddress, anything else DNSName.

    A ``DNS:`` or ``IP:`` prefix (as printed by :func:`cert_info`) is accepted too.
    """
    if not isinstance(item, str):
        raise PKIError(f"SAN {item!r} is not a string")
    text = item.strip()
    forced: str | None = None
    for prefix in ("DNS:", "IP:"):
        if text.startswith(prefix):
            forced, text = prefix[:-1], text[len(prefix) :].strip()
    if not text:
        raise PKIError(f"empty SAN in {item!r}")
    if forced != "DNS":
        try:
            return x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            if forced == "IP":
                raise PKIError(f"SAN {item!r} is not an IP address") from None
    if "*" in text:
        raise PKIError(f"wildcard SAN {item!r} refused: a certificate valid for a whole domain would let one host "
                       "impersonate every daemon under it; list the exact names")
    if any(c.isspace() or ord(c) < 0x21 or c in ",/\\@" for c in text) or not text.isascii():
        raise PKIError(
            f"SAN {item!r} is neither an IP address nor a valid DNS name (use the A-label for IDN)"
        )
    return x509.DNSName(text)


def _san_key(gn: x509.GeneralName) -> str:
    """Comparison key: DNS names are case-insensitive, IPs compare as addresses."""
    if isinstance(gn, x509.DNSName):
        return f"DNS:{gn.value.lower()}"
    if isinstance(gn, x509.IPAddress):
        return f"IP:{gn.value}"
    return f"{type(gn).__name__}:{gn.value}"


def _parse_sans(items: Sequence[str]) -> list[x509.DNSName | x509.IPAddress]:
    if isinstance(items, str):
        raise PKIError(f"SANs must be a list of strings, got the string {items!r}")
    out: list[x509.DNSName | x509.IPAddress] = []
    seen: set[str] = set()
    for item in items:
        gn = parse_san(item)
        key = _san_key(gn)
        if key not in seen:
            seen.add(key)
            out.append(gn)
    return out


def _san_label(gn: x509.DNSName | x509.IPAddress) -> str:
    return f"DNS:{gn.value}" if isinstance(gn, x509.DNSName) else f"IP:{gn.value}"


# --------------------------------------------------------------------------------------------------
# Keys and CSRs


def _generate_key(key_type: str) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "rsa-4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise PKIError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def _key_type_of(key: PrivateKey | PublicKey) -> str | None:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.curve.name)
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return {3072: "rsa-3072", 4096: "rsa-4096"}.get(key.key_size)
    return None


def _sig_hash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS8 PEM; with a passphrase, wrapped by :func:`_scrypt_seal` (PKCS8's own PBKDF2 is weak: see there)."""
    if passphrase:
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return _scrypt_seal(der, passphrase)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _scrypt(salt: bytes, log_n: int, r: int, p: int, passphrase: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log_n, r=r, p=p).derive(passphrase)


def _scrypt_seal(der: bytes, passphrase: bytes) -> bytes:
    """Encrypt a key with AES-256-GCM under an scrypt-derived key.

    cryptography's BestAvailableEncryption for PKCS8 PEM uses PBKDF2 with OpenSSL's default iteration count
    (2048), which a GPU guesses through quickly; its PKCS8 encryption builder offers no KDF settings (only
    OpenSSH and PKCS12 formats take kdf_rounds). scrypt is memory-hard.
    """
    salt, nonce = os.urandom(16), os.urandom(12)
    params = struct.pack(">BBB", SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
    header = _SCRYPT_MAGIC + params + salt + nonce
    sealed = AESGCM(_scrypt(salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, passphrase)).encrypt(nonce, der, header)
    body = base64.encodebytes(header + sealed).decode()
    return f"-----BEGIN {SCRYPT_PEM}-----\n{body}-----END {SCRYPT_PEM}-----\n".encode()


def _scrypt_open(pem: bytes, passphrase: bytes, path: Path) -> bytes:
    """The PKCS8 DER inside :func:`_scrypt_seal`'s PEM; PKIError naming ``path`` on a wrong passphrase."""
    body = pem.decode().split("-----")[2]
    blob = base64.b64decode(body)
    magic = len(_SCRYPT_MAGIC)
    if not blob.startswith(_SCRYPT_MAGIC) or len(blob) < magic + 3 + 28 + 16:
        raise PKIError(f"{path} is not a berth encrypted key (damaged?)")
    log_n, r, p = struct.unpack(">BBB", blob[magic:magic + 3])
    salt, nonce = blob[magic + 3:magic + 19], blob[magic + 19:magic + 31]
    header = blob[:magic + 31]
    try:
        return AESGCM(_scrypt(salt, log_n, r, p, passphrase)).decrypt(nonce, blob[magic + 31:], header)
    except InvalidTag:
        raise PKIError(f"cannot decrypt the CA key {path}: wrong passphrase; set BERTH_CA_PASSPHRASE to the "
                       "passphrase given to certs.init") from None


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def generate_key_pem(key_type: str = DEFAULT_KEY_TYPE) -> bytes:
    """A new private key of ``key_type`` as unencrypted PKCS8 PEM (what a host does before sending a CSR)."""
    return _key_pem(_generate_key(key_type))


def _load_private_key(key_pem: bytes, what: str = "key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PKIError(f"cannot read the {what} ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise PKIError(f"unsupported {what} type {type(key).__name__}")
    return key


def make_csr_pem(key_pem: bytes, common_name: str) -> bytes:
    """A CSR (PEM) for ``key_pem`` with subject CN=common_name, signed by that key."""
    key = _load_private_key(key_pem)
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name)).sign(key, _sig_hash(key))
    return csr.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    if not common_name or len(common_name) > _CN_MAX or any(ord(c) < 0x20 for c in common_name):
        raise PKIError(f"invalid common name {common_name!r}: 1 to {_CN_MAX} printable characters")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(
    *, digital_signature: bool = False, key_encipherment: bool = False, ca: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


# --------------------------------------------------------------------------------------------------
# Files


def _now(now: datetime | None = None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise PKIError(f"datetime {now!r} has no timezone; pass an aware UTC datetime")
    return now.astimezone(UTC)


def _ensure_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


@contextlib.contextmanager
def _locked(pki_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of pki_dir between concurrent berth processes."""
    fd = os.open(pki_dir / ".lock", os.O_RDWR | os.O_CREAT, mode=KEY_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# The CA


def _build_ca(
    key_type: str, common_name: str, days: int, now: datetime
) -> tuple[PrivateKey, x509.Certificate]:
    if days < 1:
        raise PKIError(f"CA validity must be at least 1 day, got {days}")
    if len(common_name) > _CN_MAX - 16:
        raise PKIError(f"CA common name {common_name!r} is too long (at most {_CN_MAX - 16} characters)")
    key = _generate_key(key_type)
    # Two CAs coexist during a rotation, so their names must differ.
    name = _name(f"{common_name} {now:%Y-%m-%d} {secrets.token_hex(2)}")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        # path_length=1: room for the cross-signed certificate of the next CA during a rotation.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, _sig_hash(key))
    )
    return key, cert


def _write_ca_dir(parent: Path, key: PrivateKey, cert: x509.Certificate, passphrase: bytes | None) -> Path:
    """Write the CA into a fresh hidden staging dir under ``parent`` and return it (caller renames it)."""
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=".staging-"))
    try:
        os.chmod(staging, DIR_MODE)
        write_atomic(staging / CA_KEY, _key_pem(key, passphrase), mode=KEY_MODE)
        write_atomic(staging / CA_CERT, _cert_pem(cert), mode=CERT_MODE)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _spki(key: PublicKey | CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_passphrase(passphrase: bytes | None) -> None:
    if passphrase is not None and not isinstance(passphrase, bytes):
        raise PKIError("the CA passphrase must be bytes")
    if passphrase == b"":
        raise PKIError("the CA passphrase is empty: set BERTH_CA_PASSPHRASE to a non-empty value or unset it")


class CertificateAuthority:
    """The berth CA in ``pki_dir``: signs host CSRs and zone CAs, issues client certificates, rotates.

    Loaded without its key (``need_key=False``) it answers every question about trust (bundles, who
    issued what) and refuses to sign.
    """

    cert: x509.Certificate
    previous: x509.Certificate | None

    def __init__(
        self,
        pki_dir: Path,
        key: PrivateKey | None,
        cert: x509.Certificate,
        previous: x509.Certificate | None,
        passphrase: bytes | None,
    ) -> None:
        """Use :meth:`init` or :meth:`load`."""
        self.pki_dir = pki_dir
        self._key_or_none = key
        self.cert = cert
        self.previous = previous
        self._passphrase = passphrase
        self._zone_keys: dict[str, PrivateKey] = {}
        self.warnings: list[str] = []
        if key is not None and passphrase is None:
            self.warnings.append(
                f"the CA key {pki_dir / 'ca' / 'current' / CA_KEY} is not encrypted: whoever reads it can open "
                "every daemon. Set BERTH_CA_PASSPHRASE before certs.init (scrypt-protected key)")

    @property
    def _key(self) -> PrivateKey:
        if self._key_or_none is None:
            raise PKIError(
                "read-only: this command loaded the CA certificates only, and signing needs the CA key "
                f"({self.pki_dir / 'ca' / 'current' / CA_KEY}, with BERTH_CA_PASSPHRASE when it is encrypted)")
        return self._key_or_none

    @_key.setter
    def _key(self, key: PrivateKey) -> None:
        self._key_or_none = key

    @property
    def can_sign(self) -> bool:
        return self._key_or_none is not None

    # -- creation / loading ------------------------------------------------------------------------

    @staticmethod
    def exists(pki_dir: Path) -> bool:
        """True if ``pki_dir`` holds a current CA."""
        return (Path(pki_dir) / "ca" / "current").exists()

    @classmethod
    def init(
        cls,
        pki_dir: Path,
        *,
        key_type: str = DEFAULT_KEY_TYPE,
        passphrase: bytes | None = None,
        days: int = 3650,
        common_name: str = "berth CA",
    ) -> CertificateAuthority:
        """Create a new CA in ``pki_dir``; refuses if one exists (nothing is changed then)."""
        pki_dir = Path(pki_dir)
        _check_passphrase(passphrase)
        current = pki_dir / "ca" / "current"
        if current.exists():
            raise PKIError(f"a CA already exists in {current}; nothing was changed")
        if (pki_dir / "ca" / "previous").exists():
            raise PKIError(
                f"{pki_dir / 'ca' / 'previous'} exists without a current CA (an interrupted rotation?); "
                "nothing was changed"
            )
        key, cert = _build_ca(key_type, common_name, days, _now())
        _ensure_dir(pki_dir)
        _ensure_dir(pki_dir / "ca")
        staging = _write_ca_dir(pki_dir / "ca", key, cert, passphrase)
        try:
            # rename() fails if another process created a non-empty current meanwhile.
            os.rename(staging, current)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise PKIError(f"a CA appeared in {current} while creating one; nothing was changed") from None
        fsync_dir(pki_dir / "ca")
        return cls(pki_dir, key, cert, None, passphrase)

    @classmethod
    def load(
        cls, pki_dir: Path, *, passphrase: bytes | None = None, need_key: bool = True
    ) -> CertificateAuthority:
        """Load the CA from ``pki_dir``; the key is decrypted now (a bad passphrase fails here).

        ``need_key=False`` (read-only commands) reads the certificates only: no key file, no passphrase.
        """
        pki_dir = Path(pki_dir)
        _check_passphrase(passphrase)
        current = pki_dir / "ca" / "current"
        previous_dir = pki_dir / "ca" / "previous"
        if not current.is_dir():
            if previous_dir.is_dir():
                raise PKIError(
                    f"{previous_dir} exists but {current} does not: a CA rotation was interrupted. "
                    f"Move {previous_dir} back to {current} and run `berth certs.rotate-ca` again"
                )
            raise PKIError(f"no CA in {pki_dir}: run `berth certs.init`")
        cert = cls._read_cert(current / CA_CERT)
        previous = cls._read_cert(previous_dir / CA_CERT) if previous_dir.is_dir() else None
        if not need_key:
            return cls(pki_dir, None, cert, previous, None)
        key = cls._read_key(current / CA_KEY, passphrase)
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise PKIError(f"{current / CA_KEY} does not belong to {current / CA_CERT}")
        ca = cls(pki_dir, key, cert, previous, passphrase)
        if passphrase is not None and b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in (current / CA_KEY).read_bytes():
            ca.warnings.append(f"the CA key {current / CA_KEY} is encrypted with PKCS8's weak PBKDF2 setting; "
                               "the next certs.rotate-ca writes keys protected by scrypt")
        return ca

    @classmethod
    def load_for_reading(cls, pki_dir: Path, *, passphrase: bytes | None = None) -> CertificateAuthority:
        """For commands that only read but may renew berth's own client certificate: with the key when it is
        at hand (the file is there, and the passphrase when it is encrypted), else certificates only."""
        key = Path(pki_dir) / "ca" / "current" / CA_KEY
        try:
            head = key.read_bytes()[:80]
        except OSError:
            return cls.load(pki_dir, need_key=False)
        encrypted = b"ENCRYPTED" in head
        return cls.load(pki_dir, passphrase=passphrase, need_key=passphrase is not None or not encrypted)

    @staticmethod
    def _read_cert(path: Path) -> x509.Certificate:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PKIError(f"{path} is missing: the CA directory is incomplete") from None
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise PKIError(f"{path} is not a PEM certificate ({exc})") from None

    @staticmethod
    def _read_key(path: Path, passphrase: bytes | None) -> PrivateKey:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PKIError(f"{path} is missing: the CA directory is incomplete (read-only commands such as "
                           "--check, verify and certs.status need only ca.pem)") from None
        scrypt = f"-----BEGIN {SCRYPT_PEM}-----".encode() in data
        encrypted = scrypt or b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
        if encrypted and passphrase is None:
            raise PKIError(f"the CA key {path} is encrypted: set BERTH_CA_PASSPHRASE")
        try:
            if scrypt:
                key = serialization.load_der_private_key(_scrypt_open(data, passphrase or b"", path), None)
            else:
                key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
        except (ValueError, TypeError):
            if encrypted:
                raise PKIError(
                    f"cannot decrypt the CA key {path}: wrong passphrase; set BERTH_CA_PASSPHRASE "
                    "to the passphrase given to certs.init"
                ) from None
            raise PKIError(f"{path} is not a readable private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
            raise PKIError(f"{path}: unsupported CA key type {type(key).__name__}")
        return key

    # -- trust -------------------------------------------------------------------------------------

    def bundle_pem(self) -> bytes:
        """What hosts and clients trust: the current CA, then the previous one during a rotation."""
        pem = _cert_pem(self.cert)
        if self.previous is not None:
            pem += _cert_pem(self.previous)
        return pem

    def fingerprint(self) -> str:
        """sha256 hex of the current CA certificate."""
        return _fingerprint(self.cert)

    def key_type(self) -> str | None:
        """The current CA key's type as in KEY_TYPES (None for a key berth would not create)."""
        return _key_type_of(self._key)

    def issued_by_us(self, cert_pem: bytes) -> IssuedBy | None:
        """Return "current" / "previous" if that CA signed the first certificate in ``cert_pem``, else None.

        Both the issuer name and the signature are checked.
        """
        cert = load_certs(cert_pem)[0]
        candidates: list[tuple[IssuedBy, x509.Certificate | None]] = [
            ("current", self.cert),
            ("previous", self.previous),
        ]
        for label, ca in candidates:
            if ca is None:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return label
        return None

    # -- issuing -----------------------------------------------------------------------------------

    def _validity(self, days: int, not_after: datetime | None) -> tuple[datetime, datetime]:
        now = _now()
        if not_after is None:
            if days < 1:
                raise PKIError(f"certificate validity must be at least 1 day, got {days}")
            end = now + timedelta(days=days)
        else:
            end = _now(not_after)
        # A leaf must not outlive its CA.
        end = min(end, self.cert.not_valid_after_utc)
        start = min(now - CLOCK_SKEW, end - timedelta(days=1))
        return start, end

    def _leaf_builder(
        self, subject_cn: str, public_key: PublicKey, days: int, not_after: datetime | None,
        issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    ) -> x509.CertificateBuilder:
        issuer_cert, issuer_key = issuer or (self.cert, self._key)
        start, end = self._validity(days, not_after)
        end = min(end, issuer_cert.not_valid_after_utc)
        try:
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            )
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        return (
            x509.CertificateBuilder()
            .subject_name(_name(subject_cn))
            .issuer_name(issuer_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(aki, critical=False)
        )

    def sign_server_csr(
        self,
        csr_pem: bytes,
        *,
        sans: Sequence[str],
        days: int = 365,
        common_name: str | None = None,
        not_after: datetime | None = None,
    ) -> bytes:
        """Sign a host's CSR as a Docker daemon server certificate; returns the leaf PEM.

        Only the CSR's public key (and CN, unless ``common_name`` is given) is used; extensions the CSR
        requests are ignored. ``sans`` are plain strings: IPs become IPAddress, the rest DNSName.
        """
        csr, public_key = self._checked_csr(csr_pem)
        cn = common_name or _cn(csr.subject)
        if not cn:
            raise PKIError("the CSR has no common name and none was given")
        names = _parse_sans(sans)
        if not names:
            raise PKIError("a server certificate needs at least one SAN (the names and IPs clients dial)")
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        cert = (
            self._leaf_builder(cn, public_key, days, not_after)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=is_rsa), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self._key, _sig_hash(self._key))
        )
        return _cert_pem(cert)

    def sign_client_csr(self, csr_pem: bytes, *, name: str, zone: str = FLEET_ZONE, days: int = 30) -> bytes:
        """Sign a CSR as a client certificate (CN=name, clientAuth) of ``zone``, for a key made where it is
        used, such as a runner host whose jobs reach another daemon; recorded in clients.json."""
        _, public_key = self._checked_csr(csr_pem)
        cert = self._client_cert(name, public_key, zone, days, None)
        return _cert_pem(cert)

    def _client_cert(
        self, name: str, public_key: PublicKey, zone: str, days: int, not_after: datetime | None
    ) -> x509.Certificate:
        zone_cert, zone_key = self._zone_cert(zone), self._zone_key(zone)
        cert = (
            self._leaf_builder(name, public_key, days, not_after, issuer=(zone_cert, zone_key))
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(zone_key, _sig_hash(zone_key))
        )
        self._record_client(name, cert, zone, zone_cert)
        return cert

    def _checked_csr(self, csr_pem: bytes) -> tuple[x509.CertificateSigningRequest, PublicKey]:
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PKIError(f"not a PEM certificate signing request ({exc})") from None
        try:
            valid = csr.is_signature_valid
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise PKIError(f"cannot check the CSR signature ({exc})") from None
        if not valid:
            raise PKIError("the CSR's signature does not verify: refusing to sign it")
        try:
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise PKIError(f"unsupported key in the CSR ({exc})") from None
        if not isinstance(
            public_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
        ):
            raise PKIError(f"unsupported key type in the CSR: {type(public_key).__name__}")
        if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < 2048:
            raise PKIError(f"the CSR's RSA key has {public_key.key_size} bits; at least 2048 are required")
        return csr, public_key

    def issue_client(
        self,
        name: str,
        *,
        zone: str = FLEET_ZONE,
        days: int = 7,
        key_type: str | None = None,
        not_after: datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """Issue a client certificate with CN=name in ``zone``; returns (cert_pem, key_pem).

        Short-lived by default (7 days): dockerd cannot check revocation, so expiry is the reliable end.
        The key (PKCS8, unencrypted) is generated here, returned and not stored; the certificate is
        recorded in clients.json.
        """
        key = _generate_key(key_type or self.key_type() or DEFAULT_KEY_TYPE)
        cert = self._client_cert(name, key.public_key(), zone, days, not_after)
        return _cert_pem(cert), _key_pem(key)

    def _record_client(self, name: str, cert: x509.Certificate, zone: str, zone_cert: x509.Certificate) -> None:
        cert_pem = _cert_pem(cert)
        record = {
            "name": name,
            "zone": zone,
            "serial": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "fingerprint": _fingerprint(cert),
            "ca_fingerprint": _fingerprint(zone_cert),
            "cert_pem": cert_pem.decode(),
        }
        with _locked(self.pki_dir):
            entries = self._read_index()
            entries.append(record)
            self._write_index(entries)

    def _write_index(self, entries: list[dict[str, str]]) -> None:
        # Certificates only, no key: readable by the operator's group is harmless, but keep it private.
        data = json.dumps({"version": 2, "clients": entries}, indent=2) + "\n"
        write_atomic(self.pki_dir / CLIENTS_INDEX, data.encode(), mode=KEY_MODE)

    def _read_index(self) -> list[dict[str, str]]:
        path = self.pki_dir / CLIENTS_INDEX
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return []
        except (ValueError, UnicodeDecodeError) as exc:
            raise PKIError(f"{path} is not valid JSON ({exc}); fix or move it aside") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list):
            raise PKIError(f"{path} has no 'clients' list; fix or move it aside")
        return doc["clients"]

    def clients(self, now: datetime | None = None) -> list[ClientRecord]:
        """The issued client certificates, in issue order."""
        path = self.pki_dir / CLIENTS_INDEX
        moment = _now(now)
        out: list[ClientRecord] = []
        for entry in self._read_index():
            try:
                cert_pem = entry["cert_pem"].encode()
                info = cert_info(cert_pem)
                zone = entry.get("zone", "")
                by: Literal["current", "previous", "unknown"] = (
                    "current" if zone and self.zone_of(cert_pem) == zone else "unknown")
                out.append(
                    ClientRecord(
                        name=entry["name"],
                        serial=entry["serial"],
                        not_after=info.not_after,
                        fingerprint=entry["fingerprint"],
                        ca_fingerprint=entry["ca_fingerprint"],
                        cert_pem=cert_pem,
                        days_left=info.days_left(moment),
                        issued_by=by,
                        zone=zone,
                        revoked=entry.get("revoked", "") or ("zone CA replaced" if zone and by != "current" else ""),
                    )
                )
            except (KeyError, AttributeError, TypeError) as exc:
                raise PKIError(f"{path}: malformed entry {entry!r} ({exc})") from None
        return out

    # -- trust zones -------------------------------------------------------------------------------

    def zones(self) -> list[str]:
        """The zones that exist in pki_dir, sorted."""
        root = self.pki_dir / ZONES_DIR
        return sorted(p.name for p in root.iterdir() if _ZONE_NAME.match(p.name)) if root.is_dir() else []

    def zone_members(self, zone: str) -> list[str] | None:
        """A group zone's hosts; None for fleet and host zones (their reach follows from the name)."""
        path = self.pki_dir / ZONES_DIR / _checked_zone(zone) / ZONE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            raise PKIError(f"{path} is not valid JSON ({exc}); fix or move it aside") from None
        hosts = doc.get("hosts") if isinstance(doc, dict) else None
        if not isinstance(hosts, list):
            raise PKIError(f"{path} has no 'hosts' list; fix or move it aside")
        return [str(h) for h in hosts]

    def daemon_zones(self, host_name: str) -> list[str]:
        """The zones whose client certificates ``host_name``'s daemon accepts."""
        groups = [z for z in self.zones() if z.startswith("group-") and host_name in (self.zone_members(z) or [])]
        return [FLEET_ZONE, host_zone(host_name), *groups]

    def daemon_trust_pem(self, host_name: str) -> bytes:
        """A daemon's tlscacert: the CAs of its zones, never the root (the root would accept every zone).

        Zones that do not exist yet are created (with the key). Read-only, a missing zone is left out and
        said in ``warnings``.
        """
        pem = b""
        for zone in self.daemon_zones(host_name):
            if not self.can_sign and not (self.pki_dir / ZONES_DIR / zone / CA_CERT).exists():
                self.warnings.append(f"zone {zone} does not exist yet in {self.pki_dir / ZONES_DIR}; a converge "
                                     "with the CA key creates it")
                continue
            pem += _cert_pem(self._zone_cert(zone))
        return pem

    def group_zone(self, limit: str, hosts: Sequence[str]) -> str:
        """The zone for certificates of the hosts ``limit`` selects (created, or its members updated)."""
        if not hosts:
            raise PKIError(f"--limit {limit!r} selects no host with role docker_tls")
        readable = limit.lower().replace("!", " not ").replace("&", " and ")
        slug = re.sub(r"[^a-z0-9]+", "-", readable).strip("-")[:40] or "hosts"
        zone = f"group-{slug}-{hashlib.sha256(limit.encode()).hexdigest()[:8]}"
        self._zone_cert(zone)
        doc = {"kind": "group", "limit": limit, "hosts": sorted(hosts)}
        with _locked(self.pki_dir):
            write_atomic(self.pki_dir / ZONES_DIR / zone / ZONE_FILE,
                          (json.dumps(doc, indent=2) + "\n").encode(), mode=CERT_MODE)
        return zone

    def zone_of(self, cert_pem: bytes) -> str | None:
        """The zone whose current CA signed the first certificate of ``cert_pem`` (None: no zone's)."""
        cert = load_certs(cert_pem)[0]
        for zone in self.zones():
            path = self.pki_dir / ZONES_DIR / zone / CA_CERT
            if not path.exists():
                continue
            try:
                cert.verify_directly_issued_by(self._read_cert(path))
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return zone
        return None

    def revoke_zone(self, zone: str) -> list[str]:
        """Replace ``zone``'s CA: every certificate it issued is refused once the daemons are converged.

        Returns the names of the client certificates that stop working (the registry marks them revoked).
        """
        zone = _checked_zone(zone)
        zone_dir = self.pki_dir / ZONES_DIR / zone
        if not (zone_dir / CA_CERT).exists():
            raise PKIError(f"there is no zone {zone} in {self.pki_dir / ZONES_DIR} (zones: "
                           f"{', '.join(self.zones()) or 'none'})")
        old = _fingerprint(self._zone_cert(zone))
        with _locked(self.pki_dir):
            key, cert = self._build_zone(zone)
            write_atomic(zone_dir / CA_KEY, _key_pem(key, self._passphrase), mode=KEY_MODE)
            write_atomic(zone_dir / CA_CERT, _cert_pem(cert), mode=CERT_MODE)
            self._zone_keys[zone] = key
            when = _now().isoformat(timespec="seconds")
            entries = self._read_index()
            revoked = []
            for entry in entries:
                if entry.get("zone") == zone and entry.get("ca_fingerprint") == old and not entry.get("revoked"):
                    entry["revoked"] = when
                    revoked.append(entry["name"])
            self._write_index(entries)
        return revoked

    def _zone_cert(self, zone: str) -> x509.Certificate:
        """The zone's CA certificate; the zone is created when it does not exist (needs the key)."""
        zone_dir = self.pki_dir / ZONES_DIR / _checked_zone(zone)
        if not (zone_dir / CA_CERT).exists():
            with _locked(self.pki_dir):
                if not (zone_dir / CA_CERT).exists():      # another process may have made it meanwhile
                    key, cert = self._build_zone(zone)
                    _ensure_dir(self.pki_dir / ZONES_DIR)
                    staging = _write_ca_dir(self.pki_dir / ZONES_DIR, key, cert, self._passphrase)
                    os.rename(staging, zone_dir)
                    self._zone_keys[zone] = key
        return self._read_cert(zone_dir / CA_CERT)

    def _zone_key(self, zone: str) -> PrivateKey:
        if zone not in self._zone_keys:
            self._key  # noqa: B018 -- read-only: fail with the read-only message, not a missing file
            self._zone_keys[zone] = self._read_key(self.pki_dir / ZONES_DIR / zone / CA_KEY, self._passphrase)
        return self._zone_keys[zone]

    def _build_zone(self, zone: str, key: PrivateKey | None = None) -> tuple[PrivateKey, x509.Certificate]:
        """A client-issuing CA under the root: pathlen 0, clientAuth only (it can never vouch for a server)."""
        key = key or _generate_key(self.key_type() or DEFAULT_KEY_TYPE)
        now = _now()
        name = _name(f"berth zone {zone[:32]} {now:%Y-%m-%d} {secrets.token_hex(2)}")
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        root_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(self.cert.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
            .sign(self._key, _sig_hash(self._key))
        )
        return key, cert

    def _recertify_zones(self) -> None:
        """After a root rotation: each zone CA again under the (new) root, same key and name, so the client
        certificates it issued stay valid; daemons get the new zone certificates on their next converge."""
        for zone in self.zones():
            zone_dir = self.pki_dir / ZONES_DIR / zone
            key = self._zone_key(zone)
            old = self._read_cert(zone_dir / CA_CERT)
            builder = (
                x509.CertificateBuilder()
                .subject_name(old.subject)
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(_now() - CLOCK_SKEW)
                .not_valid_after(self.cert.not_valid_after_utc)
            )
            root_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            for ext in old.extensions:
                if ext.oid != x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
                    builder = builder.add_extension(ext.value, ext.critical)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), False)
            write_atomic(zone_dir / CA_CERT, _cert_pem(builder.sign(self._key, _sig_hash(self._key))), mode=CERT_MODE)

    # -- rotation ----------------------------------------------------------------------------------

    def rotate(
        self, *, key_type: str | None = None, days: int = 3650, common_name: str | None = None
    ) -> None:
        """Make a new CA current; the old current becomes previous (both are in the bundle)."""
        ca_dir = self.pki_dir / "ca"
        current, previous = ca_dir / "current", ca_dir / "previous"
        with _locked(self.pki_dir):
            if previous.exists():
                raise PKIError(
                    f"a CA rotation is already in progress ({previous} exists): "
                    "finish the rotation with certs.drop-previous-ca first"
                )
            base = common_name or _CA_SUFFIX.sub("", _cn(self.cert.subject)) or "berth CA"
            key, cert = _build_ca(key_type or self.key_type() or DEFAULT_KEY_TYPE, base, days, _now())
            staging = _write_ca_dir(ca_dir, key, cert, self._passphrase)
            write_atomic(staging / CA_CROSS, _cert_pem(self._cross_sign(cert)), mode=CERT_MODE)
            try:
                os.rename(current, previous)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise PKIError(f"cannot move {current} to {previous} ({exc}); nothing was changed") from None
            os.rename(staging, current)
            fsync_dir(ca_dir)
        self.previous, self.cert, self._key = self.cert, cert, key
        self._recertify_zones()

    def _cross_sign(self, new: x509.Certificate) -> x509.Certificate:
        """The new CA's certificate issued by this (old) CA: clients that trust only the old CA can
        verify servers whose certificates the new CA signed, so a rotation needs no flag day."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(new.subject)
            .issuer_name(self.cert.subject)
            .public_key(new.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(new.not_valid_before_utc)
            .not_valid_after(min(new.not_valid_after_utc, self.cert.not_valid_after_utc))
        )
        for ext in new.extensions:
            if ext.oid != x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
                builder = builder.add_extension(ext.value, ext.critical)
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        return builder.sign(self._key, _sig_hash(self._key))

    def chain_pem(self) -> bytes:
        """What servers send after their own certificate: the cross-signed CA during a rotation, else nothing."""
        cross = self.pki_dir / "ca" / "current" / CA_CROSS
        return cross.read_bytes() if self.previous is not None and cross.exists() else b""

    def drop_previous(self) -> None:
        """End a rotation: delete the previous CA (its certificates stop being trusted)."""
        ca_dir = self.pki_dir / "ca"
        previous = ca_dir / "previous"
        with _locked(self.pki_dir):
            if not previous.exists():
                raise PKIError(f"there is no previous CA to drop ({previous} does not exist)")
            # Rename first so a crash mid-delete cannot leave a half-deleted "previous".
            doomed = Path(tempfile.mkdtemp(dir=ca_dir, prefix=".dropping-"))
            os.rename(previous, doomed / "previous")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ca_dir / "current" / CA_CROSS)   # nothing is signed by the old CA any more
            fsync_dir(ca_dir)
            shutil.rmtree(doomed)
        self.previous = None


def host_zone(name: str) -> str:
    """The zone of one daemon: the clients (remote-mode runners) that may reach ``name`` and no other daemon."""
    if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        return f"host-{name}"
    return f"host-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def _checked_zone(zone: str) -> str:
    if not isinstance(zone, str) or not _ZONE_NAME.match(zone):
        raise PKIError(f"{zone!r} is not a zone name: fleet, host-<inventory name> or group-... "
                       "(see certs.status --clients)")
    return zone


# --------------------------------------------------------------------------------------------------
# Renewal


def _floor1(value: float) -> float:
    return math.floor(value * 10 + 1e-9) / 10


def renewal_reason(
    cert_pem: bytes | None,
    *,
    wanted_sans: Sequence[str],
    ca: CertificateAuthority,
    renew_days: int,
    now: datetime | None = None,
) -> str | None:
    """Why a host's server certificate must be replaced, or None when it is fine."""
    wanted = _parse_sans(wanted_sans)
    if not cert_pem or not cert_pem.strip():
        return "missing"
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        return "unparseable certificate"
    by = ca.issued_by_us(cert_pem)
    if by is None:
        return "issued by another CA"
    if by == "previous":
        return "issued by the previous CA (rotation in progress)"
    if not _has_eku(cert, ExtendedKeyUsageOID.SERVER_AUTH):
        return "not a server certificate (no serverAuth)"
    left = _info(cert).days_left(now)
    if left < 0:
        return f"expired {_floor1(-left):.1f} days ago"
    if left < renew_days:
        return f"expires in {_floor1(left):.1f} days (renewal window {renew_days} days)"
    have = {_san_key(gn) for gn in _parse_cert_sans(cert)}
    missing = [_san_label(gn) for gn in wanted if _san_key(gn) not in have]
    if missing:
        return f"SANs do not cover {', '.join(missing)}"
    # A name the inventory does not give (from before SANs were inventory-only, or forged) goes.
    keys = {_san_key(gn) for gn in wanted}
    extra = [_show_san(gn) for gn in _parse_cert_sans(cert) if _san_key(gn) not in keys]
    if extra:
        return f"SANs beyond the inventory: {', '.join(extra)}"
    return None


def _show_san(gn: x509.GeneralName) -> str:
    if isinstance(gn, x509.DNSName | x509.IPAddress):
        return _san_label(gn)
    return f"{type(gn).__name__}:{gn.value}"


def _parse_cert_sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []
