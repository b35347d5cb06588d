"""tests/security: hostile input, unit level (no Docker, no testbed)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The roles' verify modules are imported by some tests here; their CIS marks are berth's own.
    config.addinivalue_line("markers", "cis(*ids): CIS Docker Benchmark controls a verify check covers")


class LocalSession:
    """The host side of an SSH session, played by this machine: berth's real agent runs here in a
    subprocess, on files under a test's tmp_path. Only the transport (paramiko) is left out."""

    def __init__(self, host: object) -> None:
        self.host = host
        self.commands = 0

    def run(self, command: str, *, stdin: bytes | None = None, sudo: bool = True, timeout: float | None = 600):
        import subprocess

        from berth.ssh import CommandResult

        self.commands += 1
        done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=timeout)
        return CommandResult(done.returncode, done.stdout.decode(), done.stderr.decode())
