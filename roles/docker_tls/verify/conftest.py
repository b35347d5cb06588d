"""What the docker_tls checks need from a host, gathered in the host's one facts command."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from berth.pki.ca import CertInfo, cert_info
from berth.role import Facts, FactsRequest


def pytest_berth_verify_facts(request: FactsRequest, host_vars: dict[str, Any]) -> None:
    d = host_vars["docker_tls_dir"]
    request.file(f"{d}/ca.pem", content=True)
    request.file(f"{d}/cert.pem", content=True)
    request.file(f"{d}/key.pem")                       # stat only: the key is never read
    request.command("listening", "ss -Hltnp")


@dataclass(frozen=True)
class Listener:
    address: str        # as ss prints it: 0.0.0.0, [::], *, 127.0.0.1 ...
    port: int
    process: str        # users:(("dockerd",pid=..)) -> dockerd


@pytest.fixture(scope="session")
def listeners(facts: Facts) -> list[Listener]:
    """The host's listening TCP sockets (ss -Hltnp)."""
    result = facts.command("listening")
    assert result.rc == 0, f"ss failed: {result.stderr.strip()}"
    found = []
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        process = fields[5].split('"')[1] if len(fields) > 5 and '"' in fields[5] else "?"
        found.append(Listener(address, int(port), process))
    return found


@pytest.fixture(scope="session")
def server_cert(facts: Facts, host_vars: dict[str, Any]) -> CertInfo:
    """The server certificate on the host (its first PEM block; the rest is its chain)."""
    found = facts.file(f"{host_vars['docker_tls_dir']}/cert.pem")
    assert found.exists and found.content, f"{found.path} is missing"
    return cert_info(found.content)
