"""The controller's side of the daemons' TLS port: its own client identity, and what a port serves."""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from berth.errors import PKIError
from berth.files import write_atomic
from berth.pki.ca import FLEET_ZONE, CertificateAuthority, CertInfo, cert_info

CONTROLLER_CLIENT = "berth-controller"


@dataclass(frozen=True)
class ClientIdentity:
    """A folder laid out for DOCKER_CERT_PATH: ca.pem, cert.pem, key.pem."""

    path: Path

    @property
    def ca(self) -> Path:
        return self.path / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.path / "cert.pem"

    @property
    def key(self) -> Path:
        return self.path / "key.pem"


def write_client(ca: CertificateAuthority, name: str, out: Path, *, days: int = 7,
                 zone: str = FLEET_ZONE) -> ClientIdentity:
    """Issue a client certificate of ``zone`` into ``out`` (0700), key 0600, ready for DOCKER_CERT_PATH."""
    cert_pem, key_pem = ca.issue_client(name, days=days, zone=zone)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    out.chmod(0o700)
    identity = ClientIdentity(out)
    for path, data, mode in ((identity.key, key_pem, 0o600), (identity.cert, cert_pem, 0o644),
                             (identity.ca, ca.bundle_pem(), 0o644)):
        write_atomic(path, data, mode=mode)
    return identity


def controller_identity(ca: CertificateAuthority, pki_dir: Path) -> ClientIdentity:
    """berth's own client certificate (for certs.status and verify), in the fleet zone.

    With the CA key it is renewed when close to expiry; without it (read-only commands) an existing one is
    used: ``$DOCKER_CERT_PATH`` (e.g. a CI job's `certs.client` folder), else ``pki_dir/controller``.
    """
    identity = ClientIdentity(pki_dir / "controller")
    if ca.can_sign:
        if _usable(ca, identity, min_days=7, zone=FLEET_ZONE):
            write_atomic(identity.ca, ca.bundle_pem(), mode=0o644)
            return identity
        return write_client(ca, CONTROLLER_CLIENT, identity.path, days=30)
    found = read_only_identity(ca, pki_dir)
    if found is not None and found.path == identity.path:
        write_atomic(identity.ca, ca.bundle_pem(), mode=0o644)    # public: the roots servers chain to now
    if found is None:
        raise PKIError(
            "no client certificate for the daemons' TLS port, and the CA key is not loaded (read-only): set "
            "DOCKER_CERT_PATH to a folder made by `berth certs.client` (ca.pem, cert.pem, key.pem), or give "
            "BERTH_CA_PASSPHRASE and the CA key so that berth issues its own")
    return found


def read_only_identity(ca: CertificateAuthority, pki_dir: Path) -> ClientIdentity | None:
    """A client certificate that already exists and is still valid: $DOCKER_CERT_PATH, then pki_dir/controller."""
    candidates = [Path(os.environ["DOCKER_CERT_PATH"])] if os.environ.get("DOCKER_CERT_PATH") else []
    candidates.append(pki_dir / "controller")
    for folder in candidates:
        identity = ClientIdentity(folder)
        if _usable(ca, identity, min_days=0):
            return identity
    return None


def _usable(ca: CertificateAuthority, identity: ClientIdentity, *, min_days: float, zone: str | None = None) -> bool:
    """Present, valid for more than ``min_days``, and from a current zone CA (``zone`` when given)."""
    if not (identity.cert.exists() and identity.key.exists()):
        return False
    pem = identity.cert.read_bytes()
    found = ca.zone_of(pem)
    return cert_info(pem).days_left() > min_days and found is not None and zone in (None, found)


def client_context(identity: ClientIdentity | None, ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        ctx.load_cert_chain(identity.cert, identity.key)
    return ctx


@dataclass
class Served:
    """What a daemon's TLS port answered: its certificate, and the Docker API's /_ping."""

    address: str
    port: int
    cert: CertInfo | None = None
    ping: str | None = None
    error: str | None = None


def probe_port(address: str, port: int, *, identity: ClientIdentity, ca_pem: bytes, server_name: str,
               timeout: float = 5.0, verify: bool = True) -> Served:
    """Handshake with the controller's client certificate, verify the server against our CA, GET /_ping.

    When the server's certificate does not verify, it is fetched again unverified so that the
    operator sees what the port serves (and that it is not ours).
    """
    served = Served(address, port)
    ctx = client_context(identity, ca_pem)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
            served.cert = cert_info(ssl.DER_cert_to_PEM_cert(der).encode()) if der else None
            tls.sendall(f"GET /_ping HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
            reply = tls.recv(4096).decode(errors="replace")
            served.ping = reply.rsplit("\r\n\r\n", 1)[-1].strip() if " 200 " in reply.split("\r\n")[0] else reply[:80]
    except ssl.SSLCertVerificationError as exc:
        served = probe_port(address, port, identity=identity, ca_pem=ca_pem, server_name=server_name,
                            timeout=timeout, verify=False)
        served.error = f"the server's certificate does not verify against berth's CA: {exc.verify_message}"
    except (OSError, ssl.SSLError) as exc:
        served.error = f"{exc.__class__.__name__}: {exc}"
    return served
