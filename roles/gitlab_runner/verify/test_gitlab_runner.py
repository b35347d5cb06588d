"""gitlab_runner: the service, its graceful-stop drop-in, and config.toml as the inventory declares it."""

from __future__ import annotations

from typing import Any

import pytest

from berth.runner_config import MODE_OWNED_KEYS, docker_settings, parse_runners
from berth.verify_plugin import Facts

DROP_IN = "/etc/systemd/system/gitlab-runner.service.d/berth-kill.conf"


def installs(host_vars: dict[str, Any]) -> bool:
    return host_vars["gitlab_runner_install_method"] != "none"


def test_package_and_service(facts: Facts, host_vars: dict[str, Any]) -> None:
    """gitlab-runner is installed, enabled and running (unless berth was told it is managed elsewhere)."""
    if not installs(host_vars):
        assert facts.file(host_vars["gitlab_runner_config"]).exists, "config.toml is missing"
        return
    assert facts.package("gitlab-runner"), "the gitlab-runner package is not installed"
    unit = facts.unit("gitlab-runner")
    assert unit.get("ActiveState") == "active", f"gitlab-runner is {unit.get('ActiveState', 'unknown')}"
    assert unit.get("UnitFileState") in ("enabled", "enabled-runtime", "static"), "gitlab-runner is not enabled"


def test_graceful_stop_drop_in(facts: Facts, host_vars: dict[str, Any]) -> None:
    """Stopping the service sends SIGQUIT (running jobs finish) and waits shutdown_timeout for them."""
    found = facts.file(DROP_IN)
    assert found.exists and found.content, f"{DROP_IN} is missing"
    text = found.content.decode()
    assert "KillSignal=SIGQUIT" in text, f"{DROP_IN} does not set KillSignal=SIGQUIT: a stop would cancel jobs"
    want = int(host_vars["gitlab_runner_shutdown_timeout"]) + 30
    assert f"TimeoutStopSec={want}" in text, f"{DROP_IN}: TimeoutStopSec is not {want}"


def test_config_file_mode(facts: Facts, host_vars: dict[str, Any]) -> None:
    """config.toml (it holds the runners' tokens) is 0600 root, in a 0700 directory."""
    config = facts.file(host_vars["gitlab_runner_config"])
    assert config.exists, f"{config.path} is missing"
    assert (config.owner, config.mode) == ("root", 0o600), f"{config.describe()}, want root 0600"
    folder = facts.file(config.path.rsplit("/", 1)[0])
    assert (folder.owner, folder.mode) == ("root", 0o700), f"{folder.describe()}, want root 0700"


def test_global_keys(runner_config: dict[str, Any], host_vars: dict[str, Any]) -> None:
    """The global keys berth owns have the declared values."""
    for key in ("concurrent", "check_interval", "shutdown_timeout", "log_level", "log_format", "listen_address"):
        wanted = host_vars.get(f"gitlab_runner_{key}")
        if wanted is not None:
            assert runner_config.get(key) == wanted, f"{key} is {runner_config.get(key)!r}, declared {wanted!r}"


def _declared(host_vars: dict[str, Any]) -> list[Any]:
    specs, _ = parse_runners(host_vars["gitlab_runners"], "inventory")
    return specs


@pytest.fixture(scope="session")
def declared_runners(host_vars: dict[str, Any], runner_config: dict[str, Any]) -> list[tuple[Any, dict | None]]:
    by_name = {r.get("name"): r for r in runner_config.get("runners", [])}
    return [(spec, by_name.get(spec.name)) for spec in _declared(host_vars)]


def test_declared_runners_have_their_modes_exact_settings(declared_runners: list, host_vars: dict[str, Any]) -> None:
    """Each registered runner has exactly its mode's [runners.docker] settings and nothing of another mode.

    A declared runner that is not in config.toml yet has not been registered (no token); that is reported
    by setup-runner, not here.
    """
    problems = []
    for spec, found in declared_runners:
        if found is None:
            continue
        docker = found.get("docker", {})
        wanted = docker_settings(spec)
        wrong = {k: docker.get(k) for k, v in wanted.items() if docker.get(k) != v}
        foreign = sorted(k for k in docker if k in MODE_OWNED_KEYS and k not in wanted)
        if wrong:
            problems.append(f"{spec.name} ({spec.mode}): {', '.join(f'{k}={v!r}' for k, v in wrong.items())} "
                            f"differ from the declared mode")
        if foreign:
            problems.append(f"{spec.name} ({spec.mode}): keys of another mode: {', '.join(foreign)}")
    assert not problems, "; ".join(problems)
