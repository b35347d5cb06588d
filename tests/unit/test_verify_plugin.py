"""berth's pytest plugin records one result per check: passed, failed, error, risk; a skip is never silent.

Runs real pytest processes on checks written here (no host needed: these checks use no facts).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHECKS = '''
import pytest

@pytest.fixture(scope="session")
def accepted_risks():
    return {"2.2": "the runner needs it"}

def test_passes(host_vars):
    assert host_vars["docker_tls_port"] == 2376

@pytest.mark.cis("3.13", "3.14")
def test_fails():
    mode = 0o644
    assert mode == 0o400, f"key.pem is {mode:04o}, want 0400"

@pytest.mark.cis("2.2")
def test_accepted(deviation):
    deviation("2.2", "icc is on")

@pytest.mark.cis("2.14")
def test_not_accepted(deviation):
    deviation("2.14", "no-new-privileges is off")

def test_mode_risk(accept_risk):
    accept_risk("runner_docker_mode socket: jobs mount docker.sock")

def test_skipped():     # a check that skips itself: the plugin must report it as an error, never as a pass
    pytest.skip("not today")

def test_broken():
    return {}["missing"]

@pytest.mark.parametrize("name", ["a", "b"])
def test_param(name):
    assert name == "a", f"{name} is not a"
'''


def run_checks(tmp_path: Path) -> dict:
    verify = tmp_path / "roles" / "demo" / "verify"
    verify.mkdir(parents=True)
    (verify / "test_demo.py").write_text(CHECKS)
    context = tmp_path / "context.json"
    context.write_text(json.dumps({"host": {"name": "r1", "groups": ["all"], "vars": {"docker_tls_port": 2376},
                                            "roles": ["demo"]}, "ssh": {}, "roles_dir": str(tmp_path / "roles")}))
    results = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(verify), "-p", "berth.checks.plugin",
                           "-p", "no:pytest11.testinfra", "-p", "no:cacheprovider", "--import-mode=importlib",
                           "--rootdir", str(tmp_path), "-q", "--berth-context", str(context),
                           "--berth-results", str(results)], capture_output=True, text=True, cwd=tmp_path)
    assert results.exists(), proc.stdout + proc.stderr
    return json.loads(results.read_text())


def test_results_per_check(tmp_path):
    data = run_checks(tmp_path)
    by_id = {c["id"]: c for c in data["checks"]}
    assert list(by_id) == ["demo/passes", "demo/fails", "demo/accepted", "demo/not_accepted", "demo/mode_risk",
                           "demo/skipped", "demo/broken", "demo/param[a]", "demo/param[b]"]
    assert by_id["demo/passes"]["status"] == "passed"
    fails = by_id["demo/fails"]
    assert (fails["status"], fails["message"]) == ("failed", "key.pem is 0644, want 0400")
    assert fails["cis"] == ["3.13", "3.14"]
    assert "assert 420 == 256" in fails["detail"]
    assert by_id["demo/accepted"]["status"] == "risk"
    assert by_id["demo/accepted"]["message"] == "icc is on; accepted: the runner needs it"
    assert (by_id["demo/not_accepted"]["status"], by_id["demo/not_accepted"]["message"]) == (
        "failed", "no-new-privileges is off")
    assert by_id["demo/mode_risk"]["status"] == "risk"
    assert by_id["demo/skipped"]["status"] == "error"
    assert "not today" in by_id["demo/skipped"]["message"]
    assert (by_id["demo/broken"]["status"], by_id["demo/broken"]["message"]) == ("error", "KeyError: 'missing'")
    assert [by_id[f"demo/param[{p}]"]["status"] for p in "ab"] == ["passed", "failed"]
    assert by_id["demo/param[b]"]["file"] == "roles/demo/verify/test_demo.py"
    assert data["ssh_commands"] == 0        # no check asked for facts: no SSH session was opened
