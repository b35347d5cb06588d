"""roles/gitlab_runner/verify checks, run on hand-made facts: the stop drop-in and the pinned packages."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.checks.plugin import Facts

VERIFY = Path(__file__).resolve().parents[2] / "roles" / "gitlab_runner" / "verify"
DEFAULTS = yaml.safe_load((VERIFY.parent / "defaults.yml").read_text())
DROP_IN = "/etc/systemd/system/gitlab-runner.service.d/berth-kill.conf"


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"gitlab_runner_verify_{name}", VERIFY / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checks = load("test_gitlab_runner")
conftest = load("conftest")


def facts(drop_in: str, *, kill_signal: str = "3", timeout: str = "infinity", loaded: str = "loaded",
          packages: dict[str, str | None] | None = None) -> Facts:
    return Facts({
        "host": {},
        "files": {DROP_IN: {"exists": True, "mode": 0o644, "owner": "root", "group": "root", "type": "file",
                            "content": base64.b64encode(drop_in.encode()).decode()}},
        "units": {"gitlab-runner": {"LoadState": loaded, "ActiveState": "active"}},
        "packages": packages or {},
        "commands": {conftest.STOP_SETTINGS: {"rc": 0, "stdout": f"KillSignal={kill_signal}\n"
                                                                f"TimeoutStopUSec={timeout}\n", "stderr": ""}},
    })


GOOD = "# berth\n[Service]\nKillSignal=SIGQUIT\nTimeoutStopSec=infinity\n"
OLD = "# berth\n[Service]\nKillSignal=SIGQUIT\nTimeoutStopSec=3630\n"   # shutdown_timeout + 30: kills long jobs


def test_the_drop_in_lets_jobs_finish():
    checks.test_graceful_stop_drop_in(facts(GOOD), DEFAULTS)


def test_a_drop_in_with_a_finite_stop_timeout_fails():
    with pytest.raises(AssertionError, match="TimeoutStopSec"):
        checks.test_graceful_stop_drop_in(facts(OLD, timeout="1h 30s"), DEFAULTS)


def test_a_drop_in_systemd_has_not_loaded_fails():
    with pytest.raises(AssertionError, match="daemon-reload"):
        checks.test_graceful_stop_drop_in(facts(GOOD, kill_signal="15", timeout="1min 30s"), DEFAULTS)


def test_a_finite_stop_timeout_the_inventory_asks_for_passes():
    wanted = {**DEFAULTS, "gitlab_runner_stop_timeout": "7200"}
    checks.test_graceful_stop_drop_in(facts(GOOD.replace("infinity", "7200"), timeout="2h"), wanted)


def test_without_the_unit_only_the_file_is_checked():
    checks.test_graceful_stop_drop_in(facts(GOOD, kill_signal="15", timeout="1min 30s", loaded="not-found"),
                                      DEFAULTS)


REPO = {**DEFAULTS, "gitlab_runner_install_method": "repo", "gitlab_runner_version": "19.3.0-1"}


def test_the_pinned_packages_are_installed():
    found = {"gitlab-runner": "19.3.0-1", "gitlab-runner-helper-images": "19.3.0-1"}
    checks.test_packages_at_the_pinned_version(facts(GOOD, packages=found), REPO)


@pytest.mark.parametrize("found", [
    {"gitlab-runner": "18.6.1-1", "gitlab-runner-helper-images": "18.6.1-1"},
    {"gitlab-runner": "19.3.0-1", "gitlab-runner-helper-images": None},
])
def test_other_versions_fail(found):
    with pytest.raises(AssertionError, match=r"19\.3\.0-1"):
        checks.test_packages_at_the_pinned_version(facts(GOOD, packages=found), REPO)


def test_before_17_7_a_left_over_helper_package_fails():
    old = {**REPO, "gitlab_runner_version": "17.5.0-1"}
    found = {"gitlab-runner": "17.5.0-1", "gitlab-runner-helper-images": "19.3.0-1"}
    with pytest.raises(AssertionError, match="gitlab-runner-helper-images"):
        checks.test_packages_at_the_pinned_version(facts(GOOD, packages=found), old)
    checks.test_packages_at_the_pinned_version(
        facts(GOOD, packages={**found, "gitlab-runner-helper-images": None}), old)
