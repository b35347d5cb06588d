"""docker_audit: auditd runs, and the kernel has loaded a rule for dockerd and each of its files (CIS 1.1.3-1.1.18).

A rule only in the file (/etc/audit/rules.d/) audits nothing until it is loaded; a loaded rule missing from the
file is gone after the next boot. Each control needs both.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from berth.role import Facts, Host, load_role

LOADED = "docker_audit_loaded_rules"          # the facts command the conftest requests
AUDIT_IDS = [f"1.1.{n}" for n in range(3, 19)]
NOT_PERMITTED = ("the kernel answers audit requests only from its initial PID namespace, so this host is a "
                 "container whose rules only the machine running it can load (Linux kernel/audit.c audit_netlink_ok)")


def watched(rule: str) -> str | None:
    """The path a rule line audits: ``-w PATH`` or ``-F path=PATH`` / ``-F dir=PATH``."""
    tokens = rule.split()
    for flag, value in pairwise(tokens):
        if flag == "-w":
            return value
        if flag == "-F" and value.startswith(("path=", "dir=")):
            return value.split("=", 1)[1]
    return None


def loaded_paths(facts: Facts) -> set[str]:
    """The paths of the rules the kernel has loaded; fails, saying why, when auditctl cannot list them."""
    result = facts.command(LOADED)
    if result.rc != 0:
        why = NOT_PERMITTED if "Operation not permitted" in result.stderr else "is auditd installed?"
        pytest.fail(f"auditctl -l failed ({result.stderr.strip()[-200:]}): cannot read the loaded rules: {why}",
                    pytrace=False)
    return {p for line in result.stdout.splitlines() if (p := watched(line))}


def test_auditd_running(facts: Facts) -> None:
    """auditd is installed, enabled and running (it writes the audit log the rules feed)."""
    assert facts.package("auditd"), "auditd is not installed"
    unit = facts.unit("auditd")
    assert unit.get("UnitFileState") == "enabled", f"auditd is {unit.get('UnitFileState')}, not enabled"
    assert unit.get("ActiveState") == "active", f"auditd is {unit.get('ActiveState')} ({unit.get('SubState')})"


@pytest.mark.parametrize("cis_id", [pytest.param(i, id=i, marks=pytest.mark.cis(i)) for i in AUDIT_IDS])
def test_audit_rule(cis_id: str, facts: Facts, host_vars: dict[str, Any], inventory_host: Host,
                    roles_dir: Path) -> None:
    """The control's rule is in berth's rules file and loaded in the kernel."""
    wanted = {i: (path, line) for i, path, line in load_role(roles_dir, "docker_audit").audit_rules(
        inventory_host)}
    if cis_id not in wanted:            # 1.1.13 without docker_audit_sysconfig
        sysconfig = facts.file("/etc/sysconfig/docker")
        assert not sysconfig.exists, ("/etc/sysconfig/docker exists but is not audited: set docker_audit_sysconfig: "
                                      "true")
        return
    path, line = wanted[cis_id]
    found = facts.file(host_vars["docker_audit_rules_file"])
    lines = (found.content or b"").decode().splitlines() if found.exists else []
    assert any(watched(rule) == path for rule in lines if not rule.lstrip().startswith("#")), (
        f"no rule for {path} in {found.path} (want `{line}`): converge writes it")
    assert path in loaded_paths(facts), f"the rule for {path} is in {found.path} but not loaded: run augenrules --load"
