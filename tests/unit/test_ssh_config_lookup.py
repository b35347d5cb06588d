"""berth parses an ssh_config once per run and looks each host up in the stanzas that can apply to it
(berth/ssh.py, _SharedSSHConfig): the answers must be paramiko's own, for every kind of stanza."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from berth.transport.ssh import _parsed_ssh_config

CONFIG = """\
Host bastion
  HostName 10.0.0.1
  User jump
Host r1 r2
  HostName 10.1.0.1
  IdentityFile ~/.ssh/one
Host r2
  HostName 10.1.0.2
  Port 2222
  IdentityFile ~/.ssh/two
Host r* !r3
  ProxyJump bastion
  IdentityFile ~/.ssh/fleet
Host r3
  User three
Match host r4
  Port 2204
Host *
  User default
  IdentityFile ~/.ssh/last
"""


@pytest.mark.parametrize("name", ["r1", "r2", "r3", "r4", "r10", "bastion", "other", "R1"])
def test_lookups_are_paramikos(tmp_path: Path, name: str) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(CONFIG)
    plain = paramiko.SSHConfig.from_text(CONFIG)
    assert dict(_parsed_ssh_config(path).lookup(name)) == dict(plain.lookup(name))


def test_an_answer_changed_by_its_caller_stays_its_own(tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(CONFIG)
    first = _parsed_ssh_config(path).lookup("r1")
    first["identityfile"].append("~/.ssh/mine")
    first["user"] = "someone"
    again = _parsed_ssh_config(path).lookup("r1")
    assert again == paramiko.SSHConfig.from_text(CONFIG).lookup("r1")


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text("Host r1\n  HostName 10.0.0.1\n")
    assert _parsed_ssh_config(path).lookup("r1")["hostname"] == "10.0.0.1"
    path.write_text("Host r1\n  HostName 10.0.0.99\n")
    assert _parsed_ssh_config(path).lookup("r1")["hostname"] == "10.0.0.99"


def test_canonicalization_looks_at_every_stanza(tmp_path: Path) -> None:
    text = "CanonicalizeHostname yes\nCanonicalDomains example.org\nHost r1.example.org\n  Port 2201\n"
    path = tmp_path / "ssh_config"
    path.write_text(text)
    assert dict(_parsed_ssh_config(path).lookup("r1")) == dict(paramiko.SSHConfig.from_text(text).lookup("r1"))


def test_known_hosts_parsed_once_answer_as_paramikos_load(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from berth.transport.ssh import _use_known_hosts

    def make() -> str:
        raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return raw.decode()

    lines = [f"r{i},10.0.0.{i} {make()}" for i in range(1, 6)] + [f"r2 {make()}"]   # r2 twice: both kept
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    shared, plain = paramiko.SSHClient(), paramiko.SSHClient()
    _use_known_hosts(shared, path)
    plain.load_host_keys(str(path))
    for name in ("r1", "10.0.0.3", "r2", "r9"):
        assert shared.get_host_keys().lookup(name) == plain.get_host_keys().lookup(name)
    other = paramiko.SSHClient()
    _use_known_hosts(other, path)
    other.get_host_keys().add("r9", "ssh-ed25519", shared.get_host_keys().lookup("r1")["ssh-ed25519"])
    assert shared.get_host_keys().lookup("r9") is None
