"""Role docker_engine: Docker Engine installed, daemon.json built from variables, dockerd healthy.

daemon.json changes are applied with a reload when dockerd's reload applies every change, and with a
restart otherwise. After a restart the socket (and every TCP listener other roles contributed) must
answer; if not, the previous daemon.json and drop-in are put back and dockerd restarted.

This role owns daemon.json. Other roles add to it through contributions (berth/engine/contributions.py),
never by calling this module: keys to ``docker.daemon_json`` (role docker_tls: tls*), listeners to
``docker.listeners`` (docker_tls: tcp://0.0.0.0:2376, with the address the health check dials) and, for
verify's accepted risks, job modes to ``docker.job_modes`` (gitlab_runner). They notify this role's
handlers by name: ``restart docker``, ``reload docker``.
"""

from __future__ import annotations

import json
from typing import Any

from berth.docker import daemon_keys
from berth.docker import hosts as docker_hosts
from berth.docker.group_members import DockerGroupMembers
from berth.role import (
    Absent,
    Attributes,
    ConfigError,
    Contributions,
    Directory,
    Drain,
    File,
    FileQuery,
    Handler,
    Health,
    Host,
    Packages,
    Planned,
    ProbeAnswer,
    RoleContext,
    RoleState,
    Service,
    apt_source,
    check_file_name,
    check_path,
    controller_files,
    drop_in,
)

# Keys a reload (SIGHUP) applies, in every dockerd berth supports: moby daemon/reload.go Reload and
# daemon/reload_unix.go reloadPlatform at v20.10.24 (Debian 12) and v23.0.0 ... v28.5.2, plus
# authorization-plugins (cmd/dockerd/daemon.go reloadConfig, SetPlugins). Left out on purpose:
# allow-nondistributable-artifacts (reloaded up to 27, gone from 28's reload.go) and builder (never read by
# Reload). Any other key needs a restart.
RELOADABLE = frozenset({
    "debug", "labels", "live-restore", "max-concurrent-downloads", "max-concurrent-uploads",
    "max-download-attempts", "shutdown-timeout", "features", "insecure-registries", "registry-mirrors",
    "network-diagnostic-port", "authorization-plugins",
    "runtimes", "default-runtime", "default-shm-size", "default-cgroupns-mode", "default-ipc-mode",
})
# Of those, the keys a reload also resets when they are absent from the new file (reload.go falls back to
# the default for max-*, assigns features unconditionally, stops the diagnostic server; reloadConfig sets the
# plugins unconditionally). For every other reloadable key reload.go checks IsValueSet(key) (or `!= ""` for
# default-runtime, default-cgroupns-mode, default-ipc-mode), so removing it leaves the old value in effect
# until a restart.
RELOAD_RESETS_WHEN_ABSENT = frozenset({
    "max-concurrent-downloads", "max-concurrent-uploads", "max-download-attempts", "features",
    "network-diagnostic-port", "authorization-plugins",
})
RELOAD_SETS_WHEN_NON_EMPTY = frozenset({"default-runtime", "default-cgroupns-mode", "default-ipc-mode"})

RELOAD = "reload docker"
RESTART = "restart docker"                          # drained first unless docker_restart_drains is false

DAEMON_JSON = "docker.daemon_json"
LISTENERS = "docker.listeners"
JOB_MODES = "docker.job_modes"
OWNS = {
    DAEMON_JSON: "keys of daemon.json, added to docker_daemon_defaults and docker_daemon_options",
    LISTENERS: "dockerd `hosts` entries (value: {'health': [address, port]} the health check dials)",
    JOB_MODES: "how jobs use this daemon (dind, socket, remote) -> why; verify accepts CIS 5.5/5.32 for them",
}


def declare(host: Host, ctx: RoleContext) -> RoleState:
    v = host.vars
    # Written as root: confined to where they belong (berth/inventory/paths.py), before anything uses them.
    check_file_name(host, "docker_dropin_name", suffix=".conf")
    check_path(host, "docker_daemon_json", below=["/etc/docker"], suffix=".json")
    shared = ctx.contributions(host)
    options = daemon_json(host, shared)
    health = Health(
        unix=v["docker_socket"],
        tcp=tuple((str(a), int(p)) for a, p in (c.get("health") for c in shared.values(LISTENERS).values()) if p),
        timeout=float(v["docker_health_timeout"]),
    )
    restart = RESTART
    state = RoleState("docker_engine")
    state.resources += _install(host)
    state.resources += [
        Directory("/etc/docker", mode=0o755),
        File(v["docker_daemon_json"], (json.dumps(options, indent=2, sort_keys=True) + "\n").encode(),
             mode=0o644, notify_rule=_daemon_json_handlers, validate="dockerd"),
    ]
    state.derived.append(DaemonKeyNotes(v["docker_daemon_json"], options))
    dropin_path = f"/etc/systemd/system/docker.service.d/{v['docker_dropin_name']}"
    if "hosts" in options:
        dockerd = "/usr/bin/dockerd" if v["docker_install_method"] == "docker-repo" else "/usr/sbin/dockerd"
        state.resources += [
            Directory("/etc/systemd/system/docker.service.d", mode=0o755),
            drop_in("docker.service", v["docker_dropin_name"],
                    ctx.render("docker_engine", "docker-hosts.conf.j2", {"dockerd": dockerd}),
                    notify=(restart,)),
        ]
    else:
        state.resources.append(Absent(dropin_path, notify=("systemd daemon-reload", restart)))
    state.resources.append(Service("docker", enabled=True, running=True))
    state.resources += vendor_file_attributes(host)
    state.derived.append(DockerGroupMembers(list(v["docker_group_members"]), host.origins.get("docker_group_members")))
    # The unit's start limit (docker.service: 3 starts in 60 s) must not turn a deliberate restart into a
    # refusal: a restart that fails is made once more after a reset-failed. Not a reset-failed every time: it
    # is a systemctl more on every host (3 ms of its CPU) for a rare case. Not only when Result says
    # start-limit-hit: a unit that had already failed keeps its old Result when the limit refuses it (systemd
    # 252). A new configuration that dockerd refuses fails twice, then the health check rolls it back.
    restart_cmd = "systemctl restart docker || { systemctl reset-failed docker; systemctl restart docker; }"
    drain = Drain(socket=v["docker_socket"], timeout=float(v["docker_drain_timeout"]))
    state.handlers += [
        Handler(RELOAD, "systemctl reload docker", unit="docker", health=health, rollback=True),
        Handler(RESTART, restart_cmd, unit="docker", health=health, rollback=True, starts=True,
                disruptive=bool(v["docker_restart_drains"]), drain=drain, supersedes=(RELOAD,)),
    ]
    return state


# CIS section 3 for the files the packages and systemd make: berth sets their owner and takes permission bits
# away, never writes them (an edited vendor unit would be replaced by the next package upgrade anyway).
# Debian's docker.io and Docker's docker-ce both install their units in /lib/systemd/system.
VENDOR_FILES = (
    ("/lib/systemd/system/docker.service", 0o644, "root"),     # 3.1, 3.2
    ("/lib/systemd/system/docker.socket", 0o644, "root"),      # 3.3, 3.4
    ("/etc/default/docker", 0o644, "root"),                    # 3.19, 3.20
    ("/etc/sysconfig/docker", 0o644, "root"),                  # 3.21, 3.22
    ("/run/containerd/containerd.sock", 0o660, "root"),        # 3.23, 3.24
)


def vendor_file_attributes(host: Host) -> list[Attributes]:
    found = [Attributes(path, mode, "root", group) for path, mode, group in VENDOR_FILES]
    # 3.15, 3.16: the socket's group is what lets docker_group_members (and nobody else) reach the daemon.
    found.append(Attributes(host.vars["docker_socket"], 0o660, "root", "docker"))
    return found


def daemon_json(host: Host, shared: Contributions) -> dict[str, Any]:
    """The daemon.json of a host: defaults, options, then the keys and listeners other roles contributed.

    A key both the variables and a role set is an error naming both (one source per key).
    """
    v = host.vars
    options = {**v["docker_daemon_defaults"], **v["docker_daemon_options"]}
    origin = host.origins.get("docker_daemon_options") or host.origins.get("docker_daemon_defaults")
    _check_types(options, f"{origin}: {host.name}")
    _check_listeners(host, options, origin, tls=bool(shared.values(DAEMON_JSON).get("tlsverify")))

    def where(key: str) -> str:
        variable = "docker_daemon_options" if key in v["docker_daemon_options"] else "docker_daemon_defaults"
        return f"{host.origins.get(variable, variable)} ({variable})"

    options = shared.merge(DAEMON_JSON, options, where=where)
    listeners = list(shared.values(LISTENERS))
    if listeners:
        options["hosts"] = list(dict.fromkeys(["fd://", *(options.get("hosts") or []), *listeners]))
    _check_types(options, f"{origin}: {host.name} (with the contributions of roles "
                          f"{', '.join(sorted({c.role for c in shared.to(DAEMON_JSON).values()})) or '-'})")
    return options


def _check_listeners(host: Host, options: dict[str, Any], origin: object, *, tls: bool) -> None:
    """Every `hosts` entry read as dockerd reads it (berth/docker/hosts.py): whatever the spelling, a TCP
    listener needs mutual TLS (a role contributing tlsverify: docker_tls), and port 2375 (also a tcp address
    without a port) is never opened."""
    try:
        tcp = docker_hosts.tcp_listeners(options.get("hosts"), tls=bool(options.get("tls")))
    except docker_hosts.BadHost as exc:
        raise ConfigError(f"{origin}: {host.name}: daemon.json hosts: {exc}; dockerd would not start") from None
    plain = [t.address for t in tcp if t.port == docker_hosts.PLAIN_PORT]
    if plain:
        raise ConfigError(
            f"{origin}: {host.name}: daemon.json hosts {plain} would open port 2375, Docker's plain-TCP port (also "
            "the port of a tcp address written without one); berth never opens it. Role docker_tls puts the API "
            "on 2376 with mutual TLS (docker_tls_port)."
        )
    if tcp and not tls:
        raise ConfigError(
            f"{origin}: {host.name}: daemon.json hosts {[t.address for t in tcp]} open the Docker API on TCP "
            "without TLS, which gives root on the host to anyone who can reach the port. Add role docker_tls "
            "(mutual TLS on 2376) instead."
        )


def _check_types(options: dict[str, Any], origin: object) -> None:
    """Value types as dockerd decodes them (berth/docker/daemon_keys.py); unknown keys are the plan's notes."""
    errors = daemon_keys.type_errors(options)
    if errors:
        raise ConfigError(f"{origin}: daemon.json: {'; '.join(errors)}: dockerd would refuse to start with it "
                          "(fix the value in docker_daemon_options)")


def _daemon_json_handlers(previous: bytes | None, new: bytes) -> tuple[str, ...]:
    try:
        old = json.loads(previous) if previous else None
    except ValueError:
        old = None
    if not isinstance(old, dict):
        return (RESTART,)
    wanted = json.loads(new)
    changed = {k for k in old.keys() | wanted.keys() if old.get(k) != wanted.get(k)}
    if not changed:
        return ()
    return (RELOAD,) if _reload_applies(changed, wanted) else (RESTART,)


def _reload_applies(changed: set[str], wanted: dict[str, Any]) -> bool:
    """Whether a reload gives the running dockerd exactly the new file's settings (moby daemon/reload.go)."""
    if not changed <= RELOADABLE:
        return False
    # A reload skips what the new file leaves out; only the keys it resets then lose their old value.
    unset = {k for k in changed if k not in wanted
             or (k in RELOAD_SETS_WHEN_NON_EMPTY and wanted[k] in ("", None))}
    return unset <= RELOAD_RESETS_WHEN_ABSENT


class DaemonKeyNotes:
    """Warns, at plan time, of daemon.json keys that a dockerd unable to check the file itself may not know.

    The agent has dockerd 23+ check the new file (`dockerd --validate`). An older dockerd (Debian 12's 20.10)
    cannot; there berth's key table stands in (berth/docker/daemon_keys.py), and since that table may lag behind
    dockerd, an unknown key is a warning naming it, not an error.
    """

    # (A plain class: dataclasses need the module in sys.modules, and roles are loaded from their files.)
    def __init__(self, path: str, options: dict[str, Any]) -> None:
        self.path = path
        self.options = options

    def probe_files(self) -> list[FileQuery]:
        return []

    def plan(self, host: Host, found: ProbeAnswer, ctx: Any, plan: Any) -> Planned:
        if not any(c.kind == "file" and c.target == self.path for c in plan.changes):
            return Planned()
        version = daemon_keys.parse_version(found.facts.get("dockerd"))
        if version is not None and version >= daemon_keys.VALIDATE_SINCE:
            return Planned()            # dockerd checks the file itself during the apply
        unknown = daemon_keys.unknown_keys(self.options)
        if not unknown:
            return Planned()
        running = f"its dockerd {version[0]}.{version[1]}" if version else "dockerd (not installed yet: if it is)"
        return Planned(notes=(
            f"WARNING: {self.path}: key {', '.join(unknown)} unknown to dockerd 20.10 (moby v20.10.24 "
            f"daemon/config); {running} older than 23 cannot check daemon.json itself (dockerd --validate), "
            "and refuses to start with a key it does not know: the restart's health check would then fail and "
            "the previous daemon.json be restored",))


def _install(host: Host) -> list[Any]:
    v = host.vars
    method = v["docker_install_method"]
    if method == "distro":
        return [Packages(tuple(v["docker_distro_packages"]))]
    if method == "docker-repo":
        (keyring,) = controller_files(host, "docker_repo_keyring_file",
                                      "the dearmored key of https://download.docker.com/linux/debian/gpg")
        line = f"{v['docker_repo_url']} {v['docker_repo_suite']} stable"
        return [*apt_source("docker", line, keyring.read_bytes()), Packages(tuple(v["docker_repo_packages"]))]
    if method == "local-debs":
        debs = controller_files(host, "docker_local_debs", ".deb files for hosts without internet")
        return [Packages(tuple(v["docker_local_packages"]), debs=debs)]
    raise ConfigError(
        f"{host.origins.get('docker_install_method')}: docker_install_method must be distro, docker-repo or "
        f"local-debs, got {method!r}"
    )
