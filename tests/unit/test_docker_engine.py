"""Role docker_engine: reload or restart (moby daemon/reload.go), which restarts drain, daemon.json keys and types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.inventory import Host
from berth.plan import Plan
from berth.roles import RoleContext

ROOT = Path(__file__).resolve().parents[2]
CTX = RoleContext(ROOT / "roles")
engine_role = CTX.module("docker_engine")
RELOAD, RESTART = "reload docker", "restart docker"

BASE = {"live-restore": True, "log-level": "info", "userland-proxy": False}


def handlers_for(old: dict | None, new: dict) -> tuple[str, ...]:
    previous = json.dumps(old).encode() if old is not None else None
    return engine_role._daemon_json_handlers(previous, json.dumps(new).encode())


def without(options: dict, *keys: str) -> dict:
    return {k: v for k, v in options.items() if k not in keys}


# -- reload or restart: moby daemon/reload.go, reload_unix.go; cmd/dockerd/daemon.go reloadConfig ------------
@pytest.mark.parametrize("change", [
    {"debug": True}, {"labels": ["a=b"]}, {"insecure-registries": ["r.example:5000"]},
    {"registry-mirrors": ["https://m.example"]}, {"max-concurrent-downloads": 5}, {"max-concurrent-uploads": 2},
    {"max-download-attempts": 3}, {"shutdown-timeout": 30}, {"features": {"buildkit": True}},
    {"default-runtime": "runc"}, {"runtimes": {"crun": {"path": "/usr/bin/crun"}}}, {"default-shm-size": "128M"},
    {"authorization-plugins": ["authz"]}, {"live-restore": False},
    # reload_unix.go reloadPlatform, reload.go reloadNetworkDiagnosticPort: reloadable in 20.10.24 and 28.5.2
    {"default-cgroupns-mode": "private"}, {"default-ipc-mode": "shareable"}, {"network-diagnostic-port": 2000},
])
def test_keys_that_dockerd_reloads_reload(change):
    assert handlers_for(BASE, {**BASE, **change}) == (RELOAD,)


@pytest.mark.parametrize("change", [
    {"builder": {"gc": {"enabled": True}}},        # not in reload.go: Reload never reads conf.Builder
    {"log-level": "warn"}, {"dns": ["192.0.2.53"]}, {"icc": False}, {"data-root": "/srv/docker"},
    {"hosts": ["fd://", "tcp://0.0.0.0:2376"], "tls": True},
    {"allow-nondistributable-artifacts": ["r.example"]},   # reloadable in 20.10-27, gone from 28's reload.go
])
def test_keys_that_dockerd_does_not_reload_restart(change):
    assert handlers_for(BASE, {**BASE, **change}) == (RESTART,)


@pytest.mark.parametrize("key, value", [
    ("insecure-registries", ["r.example:5000"]), ("registry-mirrors", ["https://m.example"]), ("labels", ["a=b"]),
    ("debug", True), ("shutdown-timeout", 30), ("runtimes", {"crun": {"path": "/usr/bin/crun"}}),
    ("default-runtime", "crun"), ("default-shm-size", "128M"), ("default-cgroupns-mode", "private"),
    ("default-ipc-mode", "shareable"),
])
def test_removing_a_key_a_reload_only_sets_when_present_restarts(key, value):
    # reload.go: `if conf.IsValueSet(key)` (or `!= ""`): a key absent from the new file keeps its old value.
    assert handlers_for({**BASE, key: value}, BASE) == (RESTART,)


def test_removing_live_restore_restarts():
    assert handlers_for(BASE, without(BASE, "live-restore")) == (RESTART,)


def test_emptying_a_key_reload_sets_only_when_non_empty_restarts():
    assert handlers_for({**BASE, "default-ipc-mode": "shareable"}, {**BASE, "default-ipc-mode": ""}) == (RESTART,)


@pytest.mark.parametrize("key, value", [
    ("max-concurrent-downloads", 5), ("max-concurrent-uploads", 2), ("max-download-attempts", 3),
    ("features", {"buildkit": True}), ("network-diagnostic-port", 2000), ("authorization-plugins", ["authz"]),
])
def test_removing_a_key_reload_resets_when_absent_reloads(key, value):
    # reload.go resets these to their defaults (or assigns them unconditionally) when absent.
    assert handlers_for({**BASE, key: value}, BASE) == (RELOAD,)


def test_first_install_restarts_and_an_identical_file_needs_nothing():
    assert handlers_for(None, BASE) == (RESTART,)
    assert handlers_for(BASE, dict(reversed(BASE.items()))) == ()


# -- which restarts drain ----------------------------------------------------------------------------------
def host(roles: list[str], **variables: object) -> Host:
    defaults = engine_role_defaults()
    return Host("r1", ["all"], {**defaults, **variables}, {}, roles)


def engine_role_defaults() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "roles" / "docker_engine" / "defaults.yml").read_text())


def handlers_of(h: Host) -> dict:
    return {handler.name: handler for handler in engine_role.declare(h, CTX).handlers}


def test_every_restart_drains_by_default_even_with_live_restore():
    # gitlab-runner executors/docker/internal/exec/exec.go: the job's attach stream ends with dockerd, and the
    # executor then stops the container (internal/wait/wait.go StopKillWait): live-restore does not save the job.
    h = host(["docker_engine", "gitlab_runner"])
    assert h.vars["docker_daemon_defaults"]["live-restore"] is True
    handlers = handlers_of(h)
    assert set(handlers) == {RELOAD, RESTART}
    assert handlers[RESTART].disruptive and not handlers[RELOAD].disruptive
    assert engine_role.restart_handler(h) == RESTART       # what a drop-in or certificate change notifies


def test_docker_restart_drains_false_opts_a_host_out():
    handlers = handlers_of(host(["docker_engine", "gitlab_runner"], docker_restart_drains=False))
    assert not handlers[RESTART].disruptive


def test_a_restart_covers_a_reload():
    declared = list(handlers_of(host(["docker_engine"])).values())
    plan = Plan()
    plan.notify([RELOAD, RESTART], declared)
    assert [h.name for h in plan.handlers] == [RESTART]
