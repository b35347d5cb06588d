"""Role docker_engine: Docker Engine installed, daemon.json built from variables, dockerd healthy.

daemon.json changes are applied with a reload when every changed key is reloadable, and with a
restart otherwise. After a restart the socket (and the TLS port when role docker_tls is on) must
answer; if not, the previous daemon.json and drop-in are put back and dockerd restarted.

A restart is one of two handlers. With live-restore on in the running daemon and in the new
configuration, and no networking, storage or runtime key changed, containers survive it
("restart docker (live-restore)"). Otherwise it stops every container ("restart docker", which is
disruptive): the engine drains the runner first, so that no CI job is killed.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from berth.errors import ConfigError
from berth.inventory import Host
from berth.resources import (
    Absent,
    Directory,
    Drain,
    File,
    Handler,
    Health,
    Packages,
    RoleState,
    Service,
    apt_source,
    drop_in,
)
from berth.roles import RoleContext, controller_files

# Keys dockerd re-reads on SIGHUP (dockerd.md "Configuration reload behavior"; moby daemon/reload.go).
RELOADABLE = frozenset({
    "debug", "labels", "live-restore", "max-concurrent-downloads", "max-concurrent-uploads",
    "max-download-attempts", "default-runtime", "runtimes", "authorization-plugins", "insecure-registries",
    "registry-mirrors", "shutdown-timeout", "features", "default-shm-size", "builder",
})

# Keys whose change live-restore does not carry running containers across (FACTS.md section 4: "not with
# changed bridge/graph options"): the bridge and the host's packet filtering, the storage under the
# containers, and the runtime that owns their processes. Changing any of these stops containers.
NETWORK_KEYS = frozenset({
    "bip", "fixed-cidr", "default-address-pools", "default-gateway", "mtu", "icc", "iptables", "ip6tables",
    "ip-forward", "ip-masq", "ipv6", "userland-proxy", "dns", "dns-opts", "dns-search",
})
STORAGE_KEYS = frozenset({"data-root", "storage-driver", "storage-opts"})
RUNTIME_KEYS = frozenset({"containerd", "userns-remap", "exec-opts", "cgroup-parent"})
STOPS_CONTAINERS = NETWORK_KEYS | STORAGE_KEYS | RUNTIME_KEYS

RELOAD = "reload docker"
RESTART = "restart docker"                          # stops every container: the host is drained first
RESTART_LIVE = "restart docker (live-restore)"      # containers keep running

# daemon.json keys and their JSON types (moby daemon/config json tags); unknown keys stop dockerd.
DAEMON_KEYS: dict[str, type | tuple[type, ...]] = {
    "hosts": list, "tls": bool, "tlsverify": bool, "tlscacert": str, "tlscert": str, "tlskey": str,
    "live-restore": bool, "icc": bool, "userland-proxy": bool, "iptables": bool, "ip6tables": bool,
    "ip-forward": bool, "ip-masq": bool, "ipv6": bool, "log-driver": str, "log-opts": dict, "log-level": str,
    "insecure-registries": list, "registry-mirrors": list, "no-new-privileges": bool, "userns-remap": str,
    "default-ulimits": dict, "containerd": str, "data-root": str, "group": str, "default-address-pools": list,
    "authorization-plugins": list, "features": dict, "experimental": bool, "debug": bool, "labels": list,
    "storage-driver": str, "storage-opts": list, "dns": list, "dns-search": list, "dns-opts": list,
    "mtu": int, "bip": str, "fixed-cidr": str, "default-gateway": str, "max-concurrent-downloads": int,
    "max-concurrent-uploads": int, "max-download-attempts": int, "shutdown-timeout": int,
    "default-runtime": str, "runtimes": dict, "exec-opts": list, "seccomp-profile": str, "selinux-enabled": bool,
    "default-shm-size": str, "builder": dict, "metrics-addr": str, "init": bool, "cgroup-parent": str,
    "default-cgroupns-mode": str, "proxies": dict, "allow-nondistributable-artifacts": list,
}

JSON_TYPE_NAMES = {bool: "a boolean", int: "an integer", str: "a string", list: "a list", dict: "a mapping"}


def declare(host: Host, ctx: RoleContext) -> RoleState:
    v = host.vars
    options = daemon_json(host)
    tls_port = v.get("docker_tls_port") if "docker_tls" in host.roles else None
    health = Health(
        unix=v["docker_socket"],
        tcp=((("127.0.0.1", int(tls_port)),) if tls_port else ()),
        timeout=float(v["docker_health_timeout"]),
    )
    restart = restart_handler(host)
    state = RoleState("docker_engine")
    state.resources += _install(host)
    state.resources += [
        Directory("/etc/docker", mode=0o755),
        File(v["docker_daemon_json"], (json.dumps(options, indent=2, sort_keys=True) + "\n").encode(),
             mode=0o644, notify_rule=_daemon_json_handlers),
    ]
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
    # reset-failed first: the unit's start limit (3 in 60 s) must not turn a deliberate restart
    # into a refusal; the health check is what judges the restart.
    restart_cmd = "systemctl reset-failed docker; systemctl restart docker"
    drain = Drain(socket=v["docker_socket"], timeout=float(v["docker_drain_timeout"]))
    state.handlers += [
        # The reload comes first: when it turns live-restore on, the restart after it keeps containers.
        Handler(RELOAD, "systemctl reload docker", unit="docker", health=health, rollback=True),
        Handler(RESTART_LIVE, restart_cmd, unit="docker", health=health, rollback=True),
        Handler(RESTART, restart_cmd, unit="docker", health=health, rollback=True, disruptive=True, drain=drain,
                supersedes=(RESTART_LIVE,)),
    ]
    return state


def restart_handler(host: Host) -> str:
    """The restart that a change outside daemon.json needs (the drop-in, TLS certificates).

    daemon.json is then unchanged, so the running daemon already has the wanted live-restore setting.
    When daemon.json changes too, its own rule (below) may notify the restart that stops containers,
    which supersedes this one.
    """
    return RESTART_LIVE if daemon_json(host).get("live-restore") is True else RESTART


def daemon_json(host: Host) -> dict[str, Any]:
    """The daemon.json of a host: defaults, options, then the TLS listener of role docker_tls."""
    v = host.vars
    options = {**v["docker_daemon_defaults"], **v["docker_daemon_options"]}
    origin = host.origins.get("docker_daemon_options") or host.origins.get("docker_daemon_defaults")
    _check_types(options, origin)
    tcp = [h for h in options.get("hosts", []) if str(h).startswith("tcp://")]
    plain = [h for h in tcp if str(h).rstrip("/").endswith(":2375")]
    if plain:
        raise ConfigError(
            f"{origin}: {host.name}: daemon.json hosts {plain} would open port 2375, Docker's plain-TCP port; berth "
            "never opens it. Role docker_tls puts the API on 2376 with mutual TLS (docker_tls_port)."
        )
    if tcp and "docker_tls" not in host.roles:
        raise ConfigError(
            f"{origin}: {host.name}: daemon.json hosts {tcp} open the Docker API on TCP without TLS, which gives "
            "root on the host to anyone who can reach the port. Add role docker_tls (mutual TLS on 2376) instead."
        )
    if "docker_tls" in host.roles:
        d = v["docker_tls_dir"]
        listener = f"tcp://{v['docker_tls_bind']}:{v['docker_tls_port']}"
        options["hosts"] = list(dict.fromkeys(["fd://", *options.get("hosts", []), listener]))
        options.update(tls=True, tlsverify=True, tlscacert=f"{d}/ca.pem", tlscert=f"{d}/cert.pem",
                       tlskey=f"{d}/key.pem")
    return options


def _check_types(options: dict[str, Any], origin: object) -> None:
    for key, value in options.items():
        expected = DAEMON_KEYS.get(key)
        if expected is None:
            near = difflib.get_close_matches(key, DAEMON_KEYS, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"{origin}: unknown daemon.json key '{key}'{hint}: dockerd refuses to start with it")
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            name = JSON_TYPE_NAMES.get(expected, str(expected))  # type: ignore[arg-type]
            raise ConfigError(
                f"{origin}: daemon.json key '{key}' must be {name}, got {value!r} ({type(value).__name__})"
            )


def _daemon_json_handlers(previous: bytes | None, new: bytes) -> tuple[str, ...]:
    try:
        old = json.loads(previous) if previous else None
    except ValueError:
        old = None
    if old is None:
        return (RESTART,)
    wanted = json.loads(new)
    changed = {k for k in old.keys() | wanted.keys() if old.get(k) != wanted.get(k)}
    if changed <= RELOADABLE:
        return (RELOAD,)
    # The running daemon must have live-restore to leave containers behind, the new one to adopt them.
    live = old.get("live-restore") is True and wanted.get("live-restore") is True
    return (RESTART_LIVE,) if live and not changed & STOPS_CONTAINERS else (RESTART,)


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
