"""The security suite's helpers: hostile input at unit level, a real CA on disk, hosts from a real inventory
file, real TLS handshakes (no Docker, no testbed)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from berth.inventory.loader import Host, Inventory
from berth.pki.ca import CertificateAuthority, generate_key_pem, make_csr_pem
from berth.transport import local

ROOT = Path(__file__).resolve().parents[2]


# One docker_tls daemon, its address from the inventory (the PKI tests' smallest fleet).
ONE_DAEMON = """\
all:
  vars:
    berth_roles: [docker_engine, docker_tls]
  hosts:
    r1:
      ansible_host: 192.0.2.11
"""


def load_hosts(tmp_path: Path, inventory_yaml: str, host_vars: dict[str, str] | None = None) -> dict[str, Host]:
    """An inventory written to files, loaded as berth loads it (origins name file and line)."""
    inv = tmp_path / "inv"
    (inv / "host_vars").mkdir(parents=True, exist_ok=True)
    (inv / "hosts.yml").write_text(inventory_yaml)
    for name, text in (host_vars or {}).items():
        (inv / "host_vars" / f"{name}.yml").write_text(text)
    loaded = Inventory.load(inv / "hosts.yml", extra_vars=[], config_defaults=ROOT / "config" / "defaults.yml",
                            roles_dir=ROOT / "roles", base_dir=tmp_path)
    return loaded.hosts


def server_pem(ca: CertificateAuthority, name: str, tmp: Path) -> tuple[Path, Path]:
    """A daemon's server certificate and key, made as a host makes them (key local, CSR signed)."""
    key = generate_key_pem()
    cert = ca.sign_server_csr(make_csr_pem(key, name), sans=[name, "127.0.0.1"])
    (tmp / f"{name}-cert.pem").write_bytes(cert)
    (tmp / f"{name}-key.pem").write_bytes(key)
    return tmp / f"{name}-cert.pem", tmp / f"{name}-key.pem"


def dockerd_like_context(cert: Path, key: Path, trust_pem: bytes) -> ssl.SSLContext:
    """What dockerd does with tlscacert (go-connections tlsconfig.Server, ClientAuth RequireAndVerifyClientCert):
    the file's certificates are the only anchors, and an anchor need not be self-signed (Go's x509 roots)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=trust_pem.decode())
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def handshake(server_ctx: ssl.SSLContext, cert: bytes, key: bytes, ca_pem: bytes, tmp: Path,
              server_name: str = "r2") -> str:
    """A real TLS 1.3 handshake over a socket pair; 'ok' or the side's error text."""
    (tmp / "c-cert.pem").write_bytes(cert)
    (tmp / "c-key.pem").write_bytes(key)
    client_ctx = ssl.create_default_context(cadata=ca_pem.decode())
    client_ctx.load_cert_chain(tmp / "c-cert.pem", tmp / "c-key.pem")
    a, b = socket.socketpair()
    outcome: dict[str, str] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                tls.sendall(b"OK")
                outcome["server"] = "ok"
        except (ssl.SSLError, OSError) as exc:
            outcome["server"] = f"refused: {exc}"
            a.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_name) as tls:
            data = tls.recv(2)    # TLS 1.3: a refused client certificate shows on the first read
            result = "ok" if data == b"OK" else f"refused: read {data!r}"
    except (ssl.SSLError, OSError) as exc:
        result = f"refused: {exc}"
    thread.join(10)
    return result if result != "ok" else ("ok" if outcome.get("server") == "ok" else outcome.get("server", "?"))




def pytest_configure(config: pytest.Config) -> None:
    # The roles' verify modules are imported by some tests here; their CIS marks are berth's own.
    config.addinivalue_line("markers", "cis(*ids): CIS Docker Benchmark controls a verify check covers")


class LocalSession(local.LocalSession):
    """The host side of an SSH session, played by this machine: berth's real agent runs here in a
    subprocess (berth.transport.local), on files under a test's tmp_path (absolute paths: the root is /)."""

    def __init__(self, host: Host) -> None:
        super().__init__(host, Path("/"))
