"""The berth certificate authority for Docker daemons exposed over TCP with mutual TLS.

The CA lives on the controller in ``pki_dir``::

    pki_dir/ca/current/ca.pem, ca-key.pem
    pki_dir/ca/previous/ca.pem, ca-key.pem     # only while a CA rotation is in progress
    pki_dir/clients.json                       # index of issued client certificates (no keys)

A host's server key is generated on the host and never leaves it: the host sends a CSR and the
controller signs it (:meth:`CertificateAuthority.sign_server_csr`). Client keys (operators, CI, jobs)
are generated here and handed to the user; only the certificate is recorded.

Directories are 0700, private keys 0600, certificates 0644. Every file is written to a temporary
file in the same directory and moved into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from berth.errors import PKIError

__all__ = [
    "DEFAULT_KEY_TYPE",
    "KEY_TYPES",
    "CertInfo",
    "CertificateAuthority",
    "ClientRecord",
    "cert_info",
    "generate_key_pem",
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
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _locked(pki_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of pki_dir between concurrent berth processes."""
    fd = os.open(pki_dir / ".lock", os.O_RDWR | os.O_CREAT, KEY_MODE)
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
        _atomic_write(staging / CA_KEY, _key_pem(key, passphrase), KEY_MODE)
        _atomic_write(staging / CA_CERT, _cert_pem(cert), CERT_MODE)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _check_passphrase(passphrase: bytes | None) -> None:
    if passphrase is not None and not isinstance(passphrase, bytes):
        raise PKIError("the CA passphrase must be bytes")
    if passphrase == b"":
        raise PKIError("the CA passphrase is empty: set BERTH_CA_PASSPHRASE to a non-empty value or unset it")


class CertificateAuthority:
    """The berth CA in ``pki_dir``: signs host CSRs, issues client certificates, rotates."""

    cert: x509.Certificate
    previous: x509.Certificate | None

    def __init__(
        self,
        pki_dir: Path,
        key: PrivateKey,
        cert: x509.Certificate,
        previous: x509.Certificate | None,
        passphrase: bytes | None,
    ) -> None:
        """Use :meth:`init` or :meth:`load`."""
        self.pki_dir = pki_dir
        self._key = key
        self.cert = cert
        self.previous = previous
        self._passphrase = passphrase

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
        _fsync_dir(pki_dir / "ca")
        return cls(pki_dir, key, cert, None, passphrase)

    @classmethod
    def load(cls, pki_dir: Path, *, passphrase: bytes | None = None) -> CertificateAuthority:
        """Load the CA from ``pki_dir`` (the key is decrypted now, so a bad passphrase fails here)."""
        pki_dir = Path(pki_dir)
        _check_passphrase(passphrase)
        current = pki_dir / "ca" / "current"
        previous_dir = pki_dir / "ca" / "previous"
        if not current.is_dir():
            if previous_dir.is_dir():
                raise PKIError(
                    f"{previous_dir} exists but {current} does not: a CA rotation was interrupted. "
                    f"Move {previous_dir} back to {current} and run `invoke certs.rotate` again"
                )
            raise PKIError(f"no CA in {pki_dir}: run `invoke certs.init`")
        cert = cls._read_cert(current / CA_CERT)
        key = cls._read_key(current / CA_KEY, passphrase)
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise PKIError(f"{current / CA_KEY} does not belong to {current / CA_CERT}")
        previous = cls._read_cert(previous_dir / CA_CERT) if previous_dir.is_dir() else None
        return cls(pki_dir, key, cert, previous, passphrase)

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
            raise PKIError(f"{path} is missing: the CA directory is incomplete") from None
        encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
        if encrypted and passphrase is None:
            raise PKIError(f"the CA key {path} is encrypted: set BERTH_CA_PASSPHRASE")
        try:
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
        self, subject_cn: str, public_key: PublicKey, days: int, not_after: datetime | None
    ) -> x509.CertificateBuilder:
        start, end = self._validity(days, not_after)
        try:
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            )
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return (
            x509.CertificateBuilder()
            .subject_name(_name(subject_cn))
            .issuer_name(self.cert.subject)
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

    def sign_client_csr(self, csr_pem: bytes, *, name: str, days: int = 90) -> bytes:
        """Sign a CSR as a client certificate (CN=name, clientAuth) for a key made where it is used,
        such as a runner host whose jobs reach another daemon; recorded in clients.json."""
        _, public_key = self._checked_csr(csr_pem)
        cert = (
            self._leaf_builder(name, public_key, days, None)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, _sig_hash(self._key))
        )
        self._record_client(name, cert)
        return _cert_pem(cert)

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
        days: int = 90,
        key_type: str | None = None,
        not_after: datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """Issue a client certificate with CN=name; returns (cert_pem, key_pem).

        The key (PKCS8, unencrypted) is generated here, returned and not stored; the certificate is
        appended to clients.json.
        """
        key = _generate_key(key_type or self.key_type() or DEFAULT_KEY_TYPE)
        cert = (
            self._leaf_builder(name, key.public_key(), days, not_after)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, _sig_hash(self._key))
        )
        self._record_client(name, cert)
        return _cert_pem(cert), _key_pem(key)

    def _record_client(self, name: str, cert: x509.Certificate) -> None:
        cert_pem = _cert_pem(cert)
        record = {
            "name": name,
            "serial": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "fingerprint": _fingerprint(cert),
            "ca_fingerprint": self.fingerprint(),
            "cert_pem": cert_pem.decode(),
        }
        with _locked(self.pki_dir):
            entries = self._read_index()
            entries.append(record)
            data = json.dumps({"version": 1, "clients": entries}, indent=2) + "\n"
            _atomic_write(self.pki_dir / CLIENTS_INDEX, data.encode(), CERT_MODE)

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
                by = self.issued_by_us(cert_pem) or "unknown"
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
                    )
                )
            except (KeyError, AttributeError, TypeError) as exc:
                raise PKIError(f"{path}: malformed entry {entry!r} ({exc})") from None
        return out

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
            _atomic_write(staging / CA_CROSS, _cert_pem(self._cross_sign(cert)), CERT_MODE)
            try:
                os.rename(current, previous)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise PKIError(f"cannot move {current} to {previous} ({exc}); nothing was changed") from None
            os.rename(staging, current)
            _fsync_dir(ca_dir)
        self.previous, self.cert, self._key = self.cert, cert, key

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
            _fsync_dir(ca_dir)
            shutil.rmtree(doomed)
        self.previous = None


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
    return None


def _parse_cert_sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []
