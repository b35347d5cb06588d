"""gitlab_runner: the service, its graceful-stop drop-in, and config.toml as the inventory declares it."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import pytest

from berth.checks.container_controls import CONTROLS
from berth.checks.job_containers import FAIL, RISK, RunnerFacts, judge
from berth.gitlab.runner_config import (
    MODE_OWNED_KEYS,
    OWNED_GLOBAL_KEYS,
    RUNNER_PACKAGE,
    docker_settings,
    harden,
    package_pins,
    parse_runners,
)
from berth.role import Facts

DROP_IN = "/etc/systemd/system/gitlab-runner.service.d/berth-kill.conf"
STOP_SETTINGS = "gitlab_runner_stop_settings"    # the facts command the conftest requests


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
    """Stopping the service sends SIGQUIT (running jobs finish) and systemd waits gitlab_runner_stop_timeout.

    After SIGQUIT gitlab-runner waits for its jobs without limit (gitlab-runner commands/multi.go); a
    TimeoutStopSec shorter than a job makes systemd SIGKILL it mid-job. infinity is GitLab's advice.
    """
    found = facts.file(DROP_IN)
    assert found.exists and found.content, f"{DROP_IN} is missing"
    lines = found.content.decode().splitlines()
    assert "KillSignal=SIGQUIT" in lines, f"{DROP_IN} does not set KillSignal=SIGQUIT: a stop would cancel jobs"
    want = str(host_vars["gitlab_runner_stop_timeout"]).strip()
    assert f"TimeoutStopSec={want}" in lines, (
        f"{DROP_IN}: TimeoutStopSec is not {want} (gitlab_runner_stop_timeout): systemd may kill running jobs"
    )
    if facts.unit("gitlab-runner").get("LoadState") != "loaded":
        return          # no unit (install method none, not installed yet): systemd has nothing to apply it to
    applied = dict(line.split("=", 1) for line in facts.command(STOP_SETTINGS).stdout.splitlines() if "=" in line)
    stale = "systemd has not loaded it: run systemctl daemon-reload"
    assert applied.get("KillSignal") == str(signal.SIGQUIT.value), (
        f"gitlab-runner stops with signal {applied.get('KillSignal')}, not SIGQUIT, although {DROP_IN} says so: {stale}"
    )
    if want == "infinity":
        assert applied.get("TimeoutStopUSec") == "infinity", (
            f"gitlab-runner's stop timeout is {applied.get('TimeoutStopUSec')}, not infinity as {DROP_IN} says: {stale}"
        )


def test_packages_at_the_pinned_version(facts: Facts, host_vars: dict[str, Any]) -> None:
    """From GitLab's repository: gitlab-runner (and from 17.7 its helper images) at gitlab_runner_version."""
    if host_vars["gitlab_runner_install_method"] != "repo":
        return          # local-debs and none: the version is whatever the files or the operator installed
    pins, absent = package_pins(host_vars["gitlab_runner_version"], "gitlab_runner_version")
    wrong = [f"{name} is {facts.package(name) or 'not installed'}, want {version}"
             for name, version in pins.items() if facts.package(name) != version]
    wrong += [f"{name} {facts.package(name)} is installed, but gitlab-runner {pins[RUNNER_PACKAGE]} predates it"
              for name in absent if facts.package(name) is not None]
    assert not wrong, "; ".join(wrong)


def test_config_file_mode(facts: Facts, host_vars: dict[str, Any]) -> None:
    """config.toml (it holds the runners' tokens) is 0600 root, in a 0700 directory."""
    config = facts.file(host_vars["gitlab_runner_config"])
    assert config.exists, f"{config.path} is missing"
    assert (config.owner, config.mode) == ("root", 0o600), f"{config.describe()}, want root 0600"
    folder = facts.file(config.path.rsplit("/", 1)[0])
    assert (folder.owner, folder.mode) == ("root", 0o700), f"{folder.describe()}, want root 0700"


def test_global_keys(runner_config: dict[str, Any], host_vars: dict[str, Any]) -> None:
    """The global keys berth owns have the declared values."""
    for key in OWNED_GLOBAL_KEYS:
        wanted = host_vars.get(f"gitlab_runner_{key}")
        if wanted is not None:
            assert runner_config.get(key) == wanted, f"{key} is {runner_config.get(key)!r}, declared {wanted!r}"


def _declared(host_vars: dict[str, Any]) -> list[Any]:
    specs, _ = parse_runners(host_vars["gitlab_runners"], "inventory")
    return harden(specs, host_vars)


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


def _userns_remap(facts: Facts, host_vars: dict[str, Any]) -> bool:
    found = facts.file(host_vars.get("docker_daemon_json") or "/etc/docker/daemon.json")
    try:
        return bool(found.exists and json.loads(found.content or b"{}").get("userns-remap"))
    except ValueError:
        return False            # docker_engine's daemon_json check reports the broken file


@pytest.mark.parametrize("cis_id", [pytest.param(c[0], id=c[0], marks=pytest.mark.cis(c[0])) for c in CONTROLS])
def test_job_containers(cis_id: str, runner_config: dict[str, Any], host_vars: dict[str, Any], facts: Facts,
                        accept_risk: Callable[[str], None]) -> None:
    """Section 5 for the containers each runner will start (job and services), judged from config.toml.

    Per runner: pass, accepted risk (its docker mode, a key gitlab-runner lacks, docker_accepted_risks, or a
    hardening variable left unset) or failure (a control the inventory declares, or a dangerous setting).
    """
    specs = {s.name: s for s in _declared(host_vars)}
    accepted = {str(k): str(v) for k, v in (host_vars.get("docker_accepted_risks") or {}).items()}
    remap = _userns_remap(facts, host_vars)
    verdicts = []
    for block in runner_config.get("runners", []):
        if block.get("executor") != "docker":
            continue
        spec = specs.get(block.get("name"))
        runner = RunnerFacts(str(block.get("name")), block.get("docker") or {},
                             spec.mode if spec else host_vars.get("runner_docker_mode"),
                             spec.privileged_form if spec else "privileged")
        verdicts.append(judge(cis_id, runner, host_vars, accepted, userns_remap=remap))
    failed = [f"runner {v.runner}: {v.message}" + ("" if v.runner in specs else
              " (a runner berth does not manage: edit its [runners.docker] by hand)")
              for v in verdicts if v.status == FAIL]
    assert not failed, "; ".join(failed)
    risks = [f"runner {v.runner}: {v.message}" for v in verdicts if v.status == RISK]
    if risks:
        accept_risk("; ".join(risks))
