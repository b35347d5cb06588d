"""registry_mirror: the running dockerd pulls through the declared mirrors, and trusts their CA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from berth.role import Facts, load_role

ROLE = load_role(Path(__file__).resolve().parents[2], "registry_mirror")


def test_dockerd_uses_the_declared_mirrors(running_mirrors: list[str], declared: list[dict[str, Any]]) -> None:
    """`docker info` lists the declared mirrors, in order (dockerd prints each with a trailing slash)."""
    wanted = [f"{m['url']}/" for m in declared]
    assert running_mirrors == wanted, (f"dockerd pulls through {running_mirrors or 'no mirror'}, declared {wanted} "
                                       "(daemon.json changed by hand, or not reloaded)")


@pytest.mark.cis("3.7", "3.8")
def test_mirror_ca_certificates(facts: Facts, declared: list[dict[str, Any]]) -> None:
    """Each mirror's CA is in /etc/docker/certs.d/<host>/ca.crt as declared, root:root 0444."""
    problems = []
    for mirror in (m for m in declared if m["ca_file"]):
        found = facts.file(ROLE.ca_path(mirror))
        if not found.exists:
            problems.append(f"{found.path} is missing")
            continue
        if (found.owner, found.group, found.mode) != ("root", "root", 0o444):
            problems.append(f"{found.describe()}, want root:root 0444")
        if found.content != Path(mirror["ca_file"]).expanduser().read_bytes():
            problems.append(f"{found.path} is not the CA in {mirror['ca_file']}")
    assert not problems, "; ".join(problems)
