"""Why a host cannot be reached, against real sockets: a closed port, a port that accepts and never greets, a
name that does not resolve, a real SSH server (paramiko's) that refuses the key; and which of them are retried."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from berth.errors import HostUnreachable
from berth.inventory.loader import Host
from berth.transport.ssh import Session, SSHSettings, explain_connect_error

FAST = SSHSettings(connect_timeout=1.0, connect_attempts=2, retry_wait=0.01)


def host(name: str, ssh_config: Path) -> Host:
    return Host(name, ["all"], {"berth_ssh_config": str(ssh_config)}, {}, [])


def write_config(tmp: Path, *, hostname: str, port: int, key: Path | None = None, known: Path | None = None) -> Path:
    lines = [f"Host target\n  HostName {hostname}\n  Port {port}\n  User deploy\n"]
    if key:
        lines.append(f"  IdentityFile {key}\n  IdentitiesOnly yes\n")
    lines.append(f"  UserKnownHostsFile {known or tmp / 'known_hosts'}\n")
    path = tmp / "ssh_config"
    path.write_text("".join(lines))
    return path


def connect(config: Path, settings: SSHSettings = FAST) -> str:
    with pytest.raises(HostUnreachable) as caught:
        Session(host("target", config), settings).open()
    return str(caught.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[tuple[int, list[socket.socket]]]:
    """A port that accepts connections and never says anything (a hung sshd); the accepted sockets are kept."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_refused_names_the_port_and_is_retried(tmp_path):
    message = connect(write_config(tmp_path, hostname="127.0.0.1", port=free_port()))
    assert "connection refused at 127.0.0.1:" in message
    assert "sshd is not running" in message
    assert "after 2 attempts" in message


def test_a_port_that_never_greets_times_out_after_the_connect_timeout(tmp_path, silent_port):
    port, accepted = silent_port
    message = connect(write_config(tmp_path, hostname="127.0.0.1", port=port))
    assert f"127.0.0.1:{port} accepted the connection but sent no SSH greeting within 1s" in message
    assert "after 2 attempts" in message
    assert len(accepted) == 2           # retried once, then given up


def test_a_name_that_does_not_resolve_is_a_dns_failure_and_not_retried(tmp_path):
    message = connect(write_config(tmp_path, hostname="no-such-host.invalid", port=22))
    assert "the name no-such-host.invalid does not resolve" in message
    assert "attempts" not in message


@pytest.mark.parametrize(("code", "words"), [(errno.EHOSTUNREACH, "no route to"), (errno.ENETUNREACH, "no route to")])
def test_no_route_is_named(code, words):
    message, transient = explain_connect_error(OSError(code, "x"), "192.0.2.1:22", 10)
    assert message.startswith(f"{words} 192.0.2.1:22") and transient


def test_connect_timeout_names_how_long():
    message, transient = explain_connect_error(TimeoutError("timed out"), "192.0.2.1:22", 7)
    assert "no answer from 192.0.2.1:22 within 7s (connect_timeout)" in message and transient


# -- a real SSH server that refuses the key ----------------------------------------------------------------
class _RefuseKeys(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_FAILED


@pytest.fixture
def ssh_server(tmp_path) -> Iterator[tuple[int, paramiko.PKey, list[int]]]:
    host_key = paramiko.RSAKey.generate(2048)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.1)
    connections: list[int] = []
    stop = threading.Event()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(1)
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            transport.start_server(server=_RefuseKeys())
            transports.append(transport)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], host_key, connections
    stop.set()
    thread.join()
    for transport in transports:
        transport.close()
    server.close()


def test_wrong_key_is_an_authentication_failure_naming_the_key_and_not_retried(tmp_path, ssh_server, monkeypatch):
    port, host_key, connections = ssh_server
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))          # no ~/.ssh/id_* of the machine running the tests
    key = tmp_path / "id_ed25519"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    known = tmp_path / "known"
    known.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    message = connect(write_config(tmp_path, hostname="127.0.0.1", port=port, key=key, known=known))
    assert f"authentication failed for user deploy at 127.0.0.1:{port}" in message
    assert f"keys tried: {key}" in message
    assert "authorized_keys" in message
    assert len(connections) == 1


def test_unknown_host_key_is_refused_without_retry(tmp_path, ssh_server):
    port, _, connections = ssh_server
    message = connect(write_config(tmp_path, hostname="127.0.0.1", port=port))
    assert "is unknown" in message and "--accept-new-host-keys" in message
    assert len(connections) == 1
