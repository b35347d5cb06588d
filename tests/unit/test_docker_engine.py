"""Role docker_engine: reload or restart (moby daemon/reload.go), which restarts drain, daemon.json keys and types."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from berth.docker import daemon_keys
from berth.engine.plan import Change, Plan
from berth.engine.protocol import ProbeAnswer
from berth.engine.roles import RoleContext
from berth.errors import ConfigError
from berth.inventory.loader import Host
from berth.remote import agent

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
    assert engine_role.RESTART == RESTART       # the handler name a drop-in or certificate change notifies


def test_docker_restart_drains_false_opts_a_host_out():
    handlers = handlers_of(host(["docker_engine", "gitlab_runner"], docker_restart_drains=False))
    assert not handlers[RESTART].disruptive


def test_a_restart_covers_a_reload():
    declared = list(handlers_of(host(["docker_engine"])).values())
    plan = Plan()
    plan.notify([RELOAD, RESTART], declared)
    assert [h.name for h in plan.handlers] == [RESTART]


# -- daemon.json keys and value types: moby daemon/config json tags (berth/docker/daemon_keys.py) ---------------------
def daemon_json_of(options: dict, roles: tuple[str, ...] = ("docker_engine",)) -> dict:
    h = host(list(roles), docker_daemon_options=options)
    return engine_role.daemon_json(h, CTX.contributions(h))


@pytest.mark.parametrize("options", [
    {"bridge": "br0"}, {"fixed-cidr-v6": "fd00:1::/64"}, {"ip": "127.0.0.1"}, {"default-gateway-v6": "fd00:1::1"},
    {"exec-root": "/run/docker"}, {"host-gateway-ip": "192.0.2.1"}, {"log-format": "json"},
    {"cdi-spec-dirs": ["/etc/cdi"]}, {"firewall-backend": "nftables"},
    {"default-network-opts": {"bridge": {"com.docker.network.driver.mtu": "1400"}}},
    {"proxies": {"http-proxy": "http://proxy:3128", "no-proxy": "localhost"}},
    {"default-ulimits": {"nofile": {"Name": "nofile", "Hard": 65536, "Soft": 65536}}},
    {"default-address-pools": [{"base": "10.10.0.0/16", "size": 24}]}, {"default-shm-size": "128M"},
    {"builder": {"gc": {"enabled": True, "defaultKeepStorage": "20GB"}, "Entitlements": {"network-host": False}}},
    {"runtimes": {"crun": {"path": "/usr/bin/crun", "runtimeArgs": ["--debug"]}}},
    {"a-key-berth-does-not-know": 1},    # dockerd judges it (or the plan warns): not an error here
])
def test_keys_dockerd_accepts_are_accepted(options):
    assert daemon_json_of(options).items() >= options.items()


@pytest.mark.parametrize("options, where", [
    ({"log-opts": {"max-size": "10m", "max-file": 3}}, "'log-opts.max-file' must be a string, got 3 (int) "
                                                       '(quote it: "3")'),
    ({"default-ulimits": {"nofile": {"Name": "nofile", "Hard": "65536"}}}, "'default-ulimits.nofile.Hard' must be "
                                                                           "an integer"),
    ({"features": {"buildkit": "true"}}, "'features.buildkit' must be a boolean"),
    ({"builder": {"GC": {"Enabled": "yes"}}}, "'builder.GC.Enabled' must be a boolean"),
    ({"default-address-pools": [{"base": "10.10.0.0/16", "size": "24"}]}, "'default-address-pools[0].size'"),
    ({"default-network-opts": {"bridge": {"mtu": 1400}}}, "'default-network-opts.bridge.mtu' must be a string"),
    ({"default-shm-size": 67108864}, "'default-shm-size' must be a string"),     # opts.MemBytes: JSON string only
    ({"runtimes": {"crun": {"path": ["/usr/bin/crun"]}}}, "'runtimes.crun.path' must be a string"),
    ({"live-restore": "true"}, "'live-restore' must be a boolean"),
    ({"mtu": True}, "'mtu' must be an integer"),
])
def test_wrong_value_types_are_refused_down_to_nested_options(options, where):
    with pytest.raises(ConfigError) as err:
        daemon_json_of(options)
    assert where in str(err.value) and "dockerd would refuse to start with it" in str(err.value)


def test_the_key_table_for_dockerd_20_10():
    assert daemon_keys.unknown_keys({"proxies": {}, "log-format": "json", "bridge": "br0"}) == [
        "'proxies' (dockerd 23.0+)", "'log-format' (dockerd 25.0+)"]
    assert daemon_keys.unknown_keys({"live-restor": True}) == ["'live-restor' (did you mean 'live-restore'?)"]
    # A json tag of 20.10 that no flag names: its findConfigurationConflicts refuses it.
    assert daemon_keys.unknown_keys({"resolv-conf": "/etc/r.conf"}) == ["'resolv-conf' (no dockerd flag)"]
    assert {"bridge", "exec-root", "fixed-cidr-v6", "ip", "default-gateway-v6", "host-gateway-ip"} <= \
        daemon_keys.KEYS_20_10
    assert daemon_keys.parse_version("Docker version 20.10.24+dfsg1, build 297e128") == (20, 10)
    assert daemon_keys.parse_version("Docker version 28.5.2, build 89c5e8f") == (28, 5)


# -- the plan's warning where dockerd cannot check daemon.json itself --------------------------------------
def plan_notes(options: dict, dockerd: str | None, *, changed: bool = True) -> list[str]:
    h = host(["docker_engine"], docker_daemon_options=options)
    state = engine_role.declare(h, CTX)
    notes = state.derived[0]
    plan = Plan()
    if changed:
        plan.changes.append(Change("file", "/etc/docker/daemon.json", "update content"))
    planned = notes.plan(h, ProbeAnswer(facts={"dockerd": dockerd}), CTX, plan)
    assert (planned.changes, planned.steps, planned.notify, planned.prepare) == ((), (), (), None)
    return list(planned.notes)


def test_an_unknown_key_is_a_warning_where_dockerd_cannot_validate():
    (note,) = plan_notes({"proxies": {"http-proxy": "http://p:3128"}}, "Docker version 20.10.24+dfsg1, build 297e128")
    assert note.startswith("WARNING: /etc/docker/daemon.json: key 'proxies' (dockerd 23.0+) unknown to dockerd 20.10")
    assert "its dockerd 20.10" in note
    assert plan_notes({"proxies": {}}, None)          # not installed yet: the same warning
    assert plan_notes({"bridge": "br0"}, "Docker version 20.10.24+dfsg1, build 297e128") == []


def test_no_warning_where_dockerd_validates_or_daemon_json_is_unchanged():
    assert plan_notes({"proxies": {}}, "Docker version 27.5.1, build 4c9b3b0") == []
    assert plan_notes({"proxies": {}}, "Docker version 20.10.24+dfsg1, build 297e128", changed=False) == []


def test_daemon_json_is_written_through_dockerd_validate():
    (file,) = [r for r in engine_role.declare(host(["docker_engine"]), CTX).resources
               if getattr(r, "path", None) == "/etc/docker/daemon.json"]
    assert file.validate == "dockerd"


# -- the agent: candidate beside daemon.json, dockerd --validate, then rename ------------------------------
# A stand-in for dockerd's CLI contract, moby cmd/dockerd/docker.go: `--version` prints "Docker version V,
# build B" (cobra version template, cmd/dockerd/cobra.go); with --validate, a file dockerd accepts prints
# "configuration OK" on stderr and exits 0, a refused one prints the error and exits 1 (main's onError). Its
# refusal message is the one config.go findConfigurationConflicts gives for a key it does not know.
FAKE_DOCKERD = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
case "$1" in
  --version) echo "Docker version {version}, build 0000000"; exit 0 ;;
  --validate)
    if grep -q bogus "$3"; then
      echo "unable to configure the Docker daemon with file $3: the following directives don't match any \\
configuration option: bogus" >&2
      exit 1
    fi
    echo "configuration OK" >&2; exit 0 ;;
esac
exit 2
"""


@pytest.fixture
def fake_dockerd(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def install(version: str) -> Path:
        script = bin_dir / "dockerd"
        script.write_text(FAKE_DOCKERD.replace("{version}", version))
        script.chmod(0o755)
        return bin_dir / "calls"

    # Only the stand-in: the real sbin directories the agent also searches must not hold a dockerd here.
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(agent, "_which", lambda name: str(bin_dir / name) if (bin_dir / name).exists() else None)
    return install


def write_daemon_json(target: Path, content: bytes, *, other: Path | None = None) -> dict:
    steps = []
    if other is not None:       # a file written earlier in the same apply (a drop-in, a certificate)
        steps.append({"op": "write", "path": str(other), "content": base64.b64encode(b"new\n").decode(),
                      "mode": 0o644, "owner": "root", "group": "root"})
    steps.append({"op": "write", "path": str(target), "content": base64.b64encode(content).decode(),
                  "mode": 0o644, "owner": "root", "group": "root", "validate": "dockerd"})
    return agent.apply({"steps": steps, "handlers": [{"name": "restart docker", "cmd": "true"}]})


def test_dockerd_23_or_later_validates_the_candidate_beside_the_file_then_it_is_renamed(tmp_path, fake_dockerd):
    calls = fake_dockerd("27.5.1")
    target = tmp_path / "daemon.json"
    target.write_bytes(b"{}\n")
    answer = write_daemon_json(target, b'{"debug": true}\n')
    assert answer["error"] is None and answer["handlers"] == ["restart docker"]
    assert target.read_bytes() == b'{"debug": true}\n'
    candidate = f"{target}{agent.CANDIDATE_SUFFIX}"
    assert f"--validate --config-file {candidate}" in calls.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "daemon.json"]      # no candidate left


def test_a_file_dockerd_refuses_fails_the_host_with_its_message_and_changes_nothing(tmp_path, fake_dockerd):
    fake_dockerd("28.5.2")
    target, other = tmp_path / "daemon.json", tmp_path / "berth-hosts.conf"
    target.write_bytes(b"{}\n")
    other.write_bytes(b"old\n")
    answer = write_daemon_json(target, b'{"bogus": 1}\n', other=other)
    assert answer["handlers"] == []                         # no restart
    assert answer["error"].startswith(f"{target}: dockerd --validate refused it: unable to configure the Docker "
                                      f"daemon with file {target}{agent.CANDIDATE_SUFFIX}: the following directives "
                                      "don't match any configuration option: bogus")
    assert answer["error"].endswith(f"; restored {other}; {target} unchanged")
    assert target.read_bytes() == b"{}\n" and other.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["berth-hosts.conf", "bin", "daemon.json"]


def test_dockerd_before_23_has_no_validate_the_file_is_written_unchecked(tmp_path, fake_dockerd):
    calls = fake_dockerd("20.10.24+dfsg1")
    target = tmp_path / "daemon.json"
    answer = write_daemon_json(target, b'{"bogus": 1}\n')      # the restart's health check judges it
    assert answer["error"] is None
    assert target.read_bytes() == b'{"bogus": 1}\n'
    assert "--validate" not in calls.read_text()


def test_the_probe_reports_the_dockerd_version(fake_dockerd):
    assert agent.dockerd_version() is None                      # not installed
    fake_dockerd("20.10.24+dfsg1")
    assert agent.dockerd_version() == "Docker version 20.10.24+dfsg1, build 0000000"
