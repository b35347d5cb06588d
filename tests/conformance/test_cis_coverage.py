"""Every control docker-bench-security runs automatically in sections 1, 2, 3 and 5 is in berth's verify report.

The reference list is docker-bench-security's own (upstream/docker_bench.json, extracted by extract.py from
its tests/*.sh at the commit recorded there). A control is covered when a check of the host's roles carries
its CIS ID (``@pytest.mark.cis``): such a check passes, fails or reports an accepted risk with its reason, never
skips (berth/checks/plugin.py), so a covered control cannot be silently absent. The checks are collected exactly
as `invoke verify` runs them (the plugin, the host's roles and variables), for a converged host of each runner
mode, with and without role docker_audit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from berth.inventory.loader import Inventory
from tests.conformance.upstream import load

ROOT = Path(__file__).resolve().parents[2]
BENCH = load("docker_bench.json")
AUTOMATED = [c["id"] for c in BENCH["controls"] if c["automated"]]
URL = "https://gitlab.example.com"
MODES = {
    "dind": {"name": "c-dind", "url": URL, "mode": "dind"},
    "socket": {"name": "c-socket", "url": URL, "mode": "socket"},
    "remote": {"name": "c-remote", "url": URL, "mode": "remote", "remote_host": "tcp://r2:2376"},
}


def collected_cis(tmp_path: Path, mode: str, roles: list[str]) -> dict[str, list[str]]:
    """CIS ID -> the checks that carry it, as `invoke verify` would collect them for this host."""
    extra = [json.dumps({"gitlab_runners": [MODES[mode]], "berth_roles": roles})]
    inv = Inventory.load(ROOT / "inventory", extra_vars=extra, config_defaults=ROOT / "config" / "defaults.yml",
                         roles_dir=ROOT / "roles", base_dir=ROOT)
    host = inv.hosts["r1"]
    context = tmp_path / f"{mode}.json"
    results = tmp_path / f"{mode}.results.json"
    context.write_text(json.dumps({"host": {"name": host.name, "groups": host.groups, "vars": host.vars,
                                            "roles": host.roles}, "ssh": {}, "roles_dir": str(ROOT / "roles"),
                                   "controller": {}}, default=str))
    dirs = [str(ROOT / "roles" / r / "verify") for r in host.roles if (ROOT / "roles" / r / "verify").is_dir()]
    proc = subprocess.run([sys.executable, "-m", "pytest", *dirs, "--collect-only", "-p", "berth.checks.plugin",
                           "-p", "no:pytest11.testinfra", "-p", "no:cacheprovider", "--import-mode=importlib",
                           "--rootdir", str(ROOT), "-o", "addopts=", "-q", "--berth-context", str(context),
                           "--berth-results", str(results)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert results.exists(), proc.stdout + proc.stderr
    found: dict[str, list[str]] = {}
    for check in json.loads(results.read_text())["checks"]:
        for cis_id in check["cis"]:
            found.setdefault(cis_id, []).append(check["id"])
    return found


def test_the_reference_list_is_docker_bench_sections_1_2_3_5():
    assert BENCH["source"]["repository"] == "docker/docker-bench-security"
    assert re.fullmatch(r"[0-9a-f]{40}", BENCH["source"]["commit"])
    assert {c["id"].split(".")[0] for c in BENCH["controls"]} == {"1", "2", "3", "5"}
    # docker-bench v1.6's numbering: 2.9 is user namespaces, 2.12 authorization, 2.13 remote logging.
    titles = {c["id"]: c["title"] for c in BENCH["controls"]}
    assert "user namespace" in titles["2.9"] and "authorization" in titles["2.12"] and "logging" in titles["2.13"]
    assert len(AUTOMATED) == 83


@pytest.mark.parametrize("audit", [False, True], ids=["without-docker_audit", "with-docker_audit"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_automated_control_is_a_check_of_a_converged_host(tmp_path, mode, audit):
    roles = ["docker_engine", "docker_tls", "gitlab_runner"] + (["docker_audit"] if audit else [])
    found = collected_cis(tmp_path, mode, roles)
    missing = [cis_id for cis_id in AUTOMATED if cis_id not in found]
    assert not missing, f"docker-bench controls absent from verify (mode {mode}): {missing}"
    # The audit controls come from role docker_audit when the host has it, else from the stand-in accepted risks.
    owner = "docker_audit/" if audit else "docker_engine/audit_without_role"
    assert all(any(c.startswith(owner) for c in found[f"1.1.{n}"]) for n in range(3, 19)), found["1.1.3"]
    # Section 5 twice: the containers running now, and those each runner will start (from config.toml).
    assert any(c.startswith("gitlab_runner/job_containers") for c in found["5.11"])


def test_docs_list_every_control():
    table = (ROOT / "docs" / "CIS.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| ([0-9.]+) \|", table, re.M)}
    assert [c["id"] for c in BENCH["controls"] if c["id"] not in rows] == []
