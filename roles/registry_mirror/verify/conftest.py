"""What the registry_mirror checks need from a host, in its one facts command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from berth.role import Facts, FactsRequest, Host, load_role

ROLE = load_role(Path(__file__).resolve().parents[2], "registry_mirror")
# The running dockerd's mirrors (what a reload or restart applied, not only what the file says).
MIRRORS = "systemctl is-active -q docker.service && docker info --format '{{json .RegistryConfig.Mirrors}}'"


def declared_mirrors(host_vars: dict[str, Any]) -> list[dict[str, Any]]:
    """The mirrors as the role declares them (the same code as a converge)."""
    return ROLE.mirrors(Host("-", [], host_vars, {}, []))


def pytest_berth_verify_facts(request: FactsRequest, host_vars: dict[str, Any]) -> None:
    request.command("registry_mirrors", MIRRORS)
    for mirror in declared_mirrors(host_vars):
        if mirror["ca_file"]:
            request.file(ROLE.ca_path(mirror), content=True)      # a public certificate: read it whole


@pytest.fixture(scope="session")
def declared(host_vars: dict[str, Any]) -> list[dict[str, Any]]:
    return declared_mirrors(host_vars)


@pytest.fixture(scope="session")
def running_mirrors(facts: Facts) -> list[str]:
    """`docker info`'s RegistryConfig.Mirrors of the running dockerd."""
    result = facts.command("registry_mirrors")
    assert result.rc == 0, f"dockerd is not running or docker info failed: {result.stderr.strip()[-200:]}"
    return list(json.loads(result.stdout) or [])
