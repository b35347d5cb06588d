"""Every SSH hop is held to known_hosts: a ProxyJump host with a changed or unknown key is refused like the last hop."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.conftest import ROOT


def _through_r1(tmp_path: Path, known_hosts: str) -> str:
    """An ssh_config in which r2 is reached through r1 (ProxyJump), with its own known_hosts file."""
    tmp_path.mkdir()
    (tmp_path / "known_hosts").write_text(known_hosts)
    ssh_config = (ROOT / ".testbed" / "ssh_config").read_text()
    ssh_config = ssh_config.replace(str(ROOT / ".testbed" / "known_hosts"), str(tmp_path / "known_hosts"))
    ssh_config = ssh_config.replace("Host r2\n", "Host r2\n  ProxyJump r1\n")
    (tmp_path / "ssh_config").write_text(ssh_config)
    return f"berth_ssh_config={tmp_path / 'ssh_config'}"


def _other_key() -> str:
    return ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_a_proxyjump_hop_is_checked_against_known_hosts(converged, berth, tmp_path):
    known = (ROOT / ".testbed" / "known_hosts").read_text()
    # Through a hop whose key is on record, r2 is reached (and has nothing to change).
    run = berth("setup-runner", "--check", "--limit", "r2", "-e", _through_r1(tmp_path / "ok", known))
    assert run.code == 0, run.output

    # The hop presents a key other than the one on record: refused, naming the hop; r2's own key is fine.
    changed = "".join(f"{ln.split()[0]} {_other_key()}\n" if ln.startswith("r1,") else ln + "\n"
                      for ln in known.splitlines())
    run = berth("setup-runner", "--check", "--limit", "r2", "-e", _through_r1(tmp_path / "changed", changed))
    assert run.code == 3, run.output
    error = run.host("r2")["error"]
    assert "CHANGED" in error and "ProxyJump hop" in error, error

    # The hop is not in known_hosts at all: refused as unknown, not added.
    unknown = "".join(ln + "\n" for ln in known.splitlines() if not ln.startswith("r1,"))
    run = berth("setup-runner", "--check", "--limit", "r2", "-e", _through_r1(tmp_path / "unknown", unknown))
    assert run.code == 3, run.output
    assert "is unknown" in run.host("r2")["error"] and "ProxyJump hop" in run.host("r2")["error"]
    assert (tmp_path / "unknown" / "known_hosts").read_text() == unknown
