"""What the docker_audit checks need, in the host's one facts command: the loaded rules and the rules file."""

from __future__ import annotations

from typing import Any

from berth.role import FactsRequest

# `auditctl -l` prints the rules the kernel has loaded, one a line, as auditctl would read them.
LOADED = "docker_audit_loaded_rules"


def pytest_berth_verify_facts(request: FactsRequest, host_vars: dict[str, Any]) -> None:
    request.package("auditd")
    request.unit("auditd")
    request.file(host_vars["docker_audit_rules_file"], content=True)
    request.file("/etc/sysconfig/docker")
    request.command(LOADED, "auditctl -l")
