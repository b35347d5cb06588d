"""What the gitlab_runner checks need from a host, gathered in the host's one facts command."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from berth.role import Facts, FactsRequest

DROP_IN = "/etc/systemd/system/gitlab-runner.service.d/berth-kill.conf"
# What systemd applies (the drop-in only counts once loaded): KillSignal as a number, TimeoutStopUSec as
# a time span or "infinity".
STOP_SETTINGS = "gitlab_runner_stop_settings"
DAEMON_JSON = "/etc/docker/daemon.json"


def pytest_berth_verify_facts(request: FactsRequest, host_vars: dict[str, Any]) -> None:
    config = host_vars["gitlab_runner_config"]
    request.file(config, content=True)        # holds tokens: read for parsing, never printed
    request.file(str(Path(config).parent))
    request.file(DROP_IN, content=True)
    request.unit("gitlab-runner")
    request.command(STOP_SETTINGS, "systemctl show -p KillSignal,TimeoutStopUSec gitlab-runner")
    request.package("gitlab-runner", "gitlab-runner-helper-images")
    # userns-remap on the daemon changes what a dind runner needs (CIS 5.31 of its job containers).
    request.file(host_vars.get("docker_daemon_json") or DAEMON_JSON, content=True)


@pytest.fixture(scope="session")
def runner_config(facts: Facts, host_vars: dict[str, Any]) -> dict[str, Any]:
    """config.toml as gitlab-runner reads it."""
    found = facts.file(host_vars["gitlab_runner_config"])
    assert found.exists and found.content is not None, f"{found.path} is missing"
    try:
        return tomllib.loads(found.content.decode())
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{found.path} is not valid TOML: {exc}")
