"""daemon.json keys and value types, as dockerd decodes them (moby daemon/config).

dockerd checks a daemon.json itself from Docker 23 (`dockerd --validate --config-file F`, moby
cmd/dockerd/docker.go); the agent runs that before it installs a new file. This table is the fallback:

- value types, checked on the controller for every host (a wrong type is an error before any host is
  touched; dockerd refuses the file too, e.g. "cannot unmarshal number into ... of type string");
- the keys dockerd 20.10 (Debian 12's docker.io, which has no --validate) knows: on such a host an unknown
  key is a warning naming it, not an error (dockerd itself is the judge, at the restart's health check).

Source: the json tags of Config and the structs it embeds in moby daemon/config/config.go,
config_unix.go/config_common_unix.go (20.10) or config_linux.go (23+), builder.go, and
registry/config.go ServiceOptions, read at tags v20.10.24, v23.0.0 ... v28.5.2 and master (b985e23, 2026-08).
encoding/json matches a struct's field names case-insensitively and ignores unknown fields inside it;
a JSON null is accepted for any key (it leaves the Go value alone).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ListOf:
    item: Spec


@dataclass(frozen=True)
class MapOf:
    """A JSON object with free keys (a Go map[string]T)."""

    value: Spec


@dataclass(frozen=True)
class Struct:
    """A JSON object decoded into a Go struct: known fields typed, matched case-insensitively."""

    fields: dict[str, Spec]


ANY = object
Spec = type | ListOf | MapOf | Struct | tuple["Spec", ...]

STRINGS = ListOf(str)
# runtimes: api/types Runtime (20.10), api/types/system Runtime (25+: runtimeType, options).
RUNTIME = Struct({"path": str, "runtimeArgs": STRINGS, "runtimeType": str, "options": MapOf(ANY)})
# default-ulimits: go-units Ulimit / api/types/container Ulimit, no json tags.
ULIMIT = Struct({"Name": str, "Hard": int, "Soft": int})
# default-address-pools: opts/address_pools.go PoolsOpt -> ipamutils NetworkToSplit.
POOL = Struct({"base": str, "size": int})
# builder: daemon/config/builder.go BuilderConfig (BuilderGCFilter takes a list of "k=v" or an object).
GC_RULE = Struct({"All": bool, "Filter": (STRINGS, MapOf(ANY)), "KeepStorage": str, "ReservedSpace": str,
                  "MaxUsedSpace": str, "MinFreeSpace": str})
BUILDER = Struct({
    "GC": Struct({"Enabled": bool, "Policy": ListOf(GC_RULE), "DefaultKeepStorage": str,
                  "DefaultReservedSpace": str, "DefaultMaxUsedSpace": str, "DefaultMinFreeSpace": str}),
    "Entitlements": MapOf(bool),
    "History": Struct({"MaxEntries": int}),
})

# Every top-level key of the versions above, with the JSON type its Go field takes.
DAEMON_KEYS: dict[str, Spec] = {
    # strings (net.IP, opts.MemBytes, log.OutputFormat decode from JSON strings only)
    **dict.fromkeys([
        "api-cors-header", "bip", "bip6", "bridge", "bridge-accept-fwmark", "cgroup-parent", "cluster-advertise",
        "cluster-store", "containerd", "containerd-namespace", "containerd-plugin-namespace", "data-root",
        "default-cgroupns-mode", "default-gateway", "default-gateway-v6", "default-init", "default-ipc-mode",
        "default-runtime", "default-shm-size", "deprecated-key-path", "exec-root", "firewall-backend", "fixed-cidr",
        "fixed-cidr-v6", "graph", "group", "host-gateway-ip", "init-path", "ip", "log-driver", "log-format",
        "log-level", "metrics-addr", "min-api-version", "pidfile", "resolv-conf", "seccomp-profile",
        "storage-driver", "swarm-default-advertise-addr", "tlscacert", "tlscert", "tlskey", "userland-proxy-path",
        "userns-remap",
    ], str),
    **dict.fromkeys([
        "allow-direct-routing", "cri-containerd", "debug", "experimental", "icc", "init", "ip-forward",
        "ip-forward-no-drop", "ip-masq", "ip6tables", "iptables", "ipv6", "live-restore", "no-new-privileges",
        "raw-logs", "rootless", "selinux-enabled", "tls", "tlsverify", "userland-proxy",
    ], bool),
    **dict.fromkeys([
        "cpu-rt-period", "cpu-rt-runtime", "default-stop-timeout", "max-concurrent-downloads",
        "max-concurrent-uploads", "max-download-attempts", "mtu", "network-control-plane-mtu",
        "network-diagnostic-port", "oom-score-adjust", "shutdown-timeout", "swarm-raft-election-tick",
        "swarm-raft-heartbeat-tick",
    ], int),
    **dict.fromkeys([
        "allow-nondistributable-artifacts", "authorization-plugins", "cdi-spec-dirs", "dns", "dns-opts",
        "dns-search", "exec-opts", "host-gateway-ips", "hosts", "insecure-registries", "labels",
        "node-generic-resources", "registry-mirrors", "storage-opts",
    ], STRINGS),
    "log-opts": MapOf(str),                       # LogConfig.Config map[string]string
    "cluster-store-opts": MapOf(str),
    "features": MapOf(bool),
    "default-network-opts": MapOf(MapOf(str)),    # map[string]map[string]string
    "default-ulimits": MapOf(ULIMIT),
    "runtimes": MapOf(RUNTIME),
    "default-address-pools": ListOf(POOL),
    "proxies": Struct({"http-proxy": str, "https-proxy": str, "no-proxy": str}),
    "builder": BUILDER,
    "nri-opts": MapOf(ANY),
}

# Keys dockerd 20.10.24 does not know, and the release that added them (diff of the json tags by tag; "29.0":
# in master after v28.5.2, first in the api/v1.52.0 tags).
SINCE: dict[str, str] = {
    "proxies": "23.0", "default-network-opts": "24.0", "cdi-spec-dirs": "25.0", "log-format": "25.0",
    "bip6": "28.0", "host-gateway-ips": "28.0", "ip-forward-no-drop": "28.0", "allow-direct-routing": "28.2",
    "bridge-accept-fwmark": "29.0", "default-stop-timeout": "29.0", "firewall-backend": "29.0",
    "min-api-version": "29.0", "nri-opts": "29.0",
}
# dockerd 20.10 accepts a file key only when a flag (or named option) has its name (moby v20.10.24
# daemon/config/config.go findConfigurationConflicts; flags in cmd/dockerd/config*.go). These json tags have
# none there, so 20.10 refuses them as unknown (its flag is "containerd-plugins-namespace", with an s).
NO_FLAG_20_10 = frozenset({
    "containerd-plugin-namespace", "default-init", "resolv-conf", "swarm-raft-election-tick",
    "swarm-raft-heartbeat-tick",
})
KEYS_20_10 = frozenset(DAEMON_KEYS) - frozenset(SINCE) - NO_FLAG_20_10

# `dockerd --validate` first ships in v23.0.0 (moby cmd/dockerd/options.go, flag "validate").
VALIDATE_SINCE = (23, 0)

JSON_NAMES = {bool: "a boolean", int: "an integer", str: "a string", list: "a list", dict: "a mapping"}


def type_errors(options: dict[str, Any]) -> list[str]:
    """What dockerd would refuse to decode: one message per wrong value, naming its key path."""
    errors: list[str] = []
    for key, value in options.items():
        spec = DAEMON_KEYS.get(key)
        if spec is not None:
            errors += _check(value, spec, key)
    return errors


def unknown_keys(options: dict[str, Any], known: frozenset[str] = KEYS_20_10) -> list[str]:
    """Top-level keys outside ``known``, each with a likely intended key when one is close."""
    notes = []
    for key in options:
        if key in known:
            continue
        if key in SINCE:
            notes.append(f"'{key}' (dockerd {SINCE[key]}+)")
        elif key in NO_FLAG_20_10:
            notes.append(f"'{key}' (no dockerd flag)")
        else:
            near = difflib.get_close_matches(key, known, n=1)
            notes.append(f"'{key}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
    return notes


def parse_version(text: str | None) -> tuple[int, int] | None:
    """(major, minor) from `dockerd --version` ("Docker version 20.10.24+dfsg1, build 297e128")."""
    match = re.search(r"version (\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _check(value: Any, spec: Spec, where: str) -> list[str]:
    if value is None or spec is ANY:
        return []
    if isinstance(spec, tuple):
        results = [_check(value, one, where) for one in spec]
        return [] if any(not r for r in results) else results[0]
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            return [_wrong(where, "a list", value)]
        return [e for i, item in enumerate(value) for e in _check(item, spec.item, f"{where}[{i}]")]
    if isinstance(spec, MapOf | Struct):
        if not isinstance(value, dict):
            return [_wrong(where, "a mapping", value)]
        if isinstance(spec, MapOf):
            return [e for k, item in value.items() for e in _check(item, spec.value, f"{where}.{k}")]
        fields = {name.lower(): field for name, field in spec.fields.items()}
        return [e for k, item in value.items() if str(k).lower() in fields
                for e in _check(item, fields[str(k).lower()], f"{where}.{k}")]
    assert isinstance(spec, type)
    if isinstance(value, spec) and not (spec is int and isinstance(value, bool)):
        return []
    return [_wrong(where, JSON_NAMES.get(spec, spec.__name__), value)]


def _wrong(where: str, expected: str, value: Any) -> str:
    hint = f' (quote it: "{value}")' if expected == "a string" and isinstance(value, int | float) \
        and not isinstance(value, bool) else ""
    return f"'{where}' must be {expected}, got {value!r} ({type(value).__name__}){hint}"
