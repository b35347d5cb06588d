"""CIS Docker Benchmark section 5 (container runtime) judged on a container's HostConfig.

One evaluator for both kinds of container verify looks at: the containers running at the time of the check
(``docker inspect``'s HostConfig and Mounts) and the containers a runner WILL start for its jobs, whose
HostConfig berth derives from config.toml (berth/checks/job_containers.py). Each control follows
docker-bench-security's test of it (tests/5_container_runtime.sh, commit ff26d67), on the same fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# docker-bench 5.6: mounting one of these (read-write) gives a container the host.
SENSITIVE_DIRS = ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr")
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
# docker-bench 5.4: the capabilities Docker grants by default; adding any other is a finding.
DEFAULT_CAPS = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                          "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


@dataclass
class Container:
    """The HostConfig fields section 5 reads, whatever the container came from."""

    name: str
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    mounts: list[tuple[str, bool, str]] = field(default_factory=list)   # (host source, read-write, propagation)
    network_mode: str = ""
    pid_mode: str = ""
    ipc_mode: str = ""
    uts_mode: str = ""
    userns_mode: str = ""
    memory: int = 0
    cpu_shares: int = 0
    nano_cpus: int = 0
    pids_limit: int | None = None
    cgroup_parent: str = ""
    readonly_rootfs: bool = False
    ports: list[tuple[str, int]] = field(default_factory=list)          # (host ip, host port) published
    restart_retries: int = 0
    healthcheck: bool = False
    apparmor_profile: str | None = None     # None: not known ahead of time (dockerd picks docker-default)
    devices: list[str] = field(default_factory=list)

    def opt(self, name: str) -> str | None:
        """The value of a security_opt (``seccomp=unconfined`` or ``seccomp:unconfined``), None when unset."""
        for entry in self.security_opt:
            key, sep, value = entry.replace(":", "=", 1).partition("=")
            if key == name:
                return value if sep else "true"
        return None


def from_inspect(data: Mapping[str, Any]) -> Container:
    """A running container from `docker inspect` (only the fields berth's template asks for)."""
    hc = data.get("HostConfig") or {}
    ports = [(b.get("HostIp") or "", int(b.get("HostPort") or 0))
             for bindings in (hc.get("PortBindings") or {}).values() for b in (bindings or [])]
    return Container(
        name=str(data.get("Name", "?")).lstrip("/"),
        privileged=bool(hc.get("Privileged")),
        cap_add=list(hc.get("CapAdd") or []),
        security_opt=list(hc.get("SecurityOpt") or []),
        mounts=[(m.get("Source", ""), bool(m.get("RW", True)), m.get("Propagation") or "")
                for m in data.get("Mounts") or []],
        network_mode=hc.get("NetworkMode") or "", pid_mode=hc.get("PidMode") or "", ipc_mode=hc.get("IpcMode") or "",
        uts_mode=hc.get("UTSMode") or "", userns_mode=hc.get("UsernsMode") or "",
        memory=int(hc.get("Memory") or 0), cpu_shares=int(hc.get("CpuShares") or 0),
        nano_cpus=int(hc.get("NanoCpus") or 0), pids_limit=hc.get("PidsLimit") or None,
        cgroup_parent=hc.get("CgroupParent") or "", readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
        ports=ports, restart_retries=int((hc.get("RestartPolicy") or {}).get("MaximumRetryCount") or 0),
        healthcheck=bool(data.get("Healthcheck")), apparmor_profile=data.get("AppArmorProfile", ""),
        devices=[d.get("PathOnHost", "") for d in hc.get("Devices") or []],
    )


def _caps(c: Container) -> str | None:
    extra = sorted({cap.upper().removeprefix("CAP_") for cap in c.cap_add} - DEFAULT_CAPS)
    return f"adds capabilities {', '.join(extra)}" if extra else None


def _sensitive(c: Container) -> str | None:
    sources = {src.rstrip("/") or "/" for src, rw, _ in c.mounts if rw}
    found = sorted(sources & set(SENSITIVE_DIRS))
    return f"mounts {', '.join(found)} read-write" if found else None


def _apparmor(c: Container) -> str | None:
    if c.privileged or c.opt("apparmor") == "unconfined" or c.apparmor_profile == "unconfined":
        return "runs without an AppArmor profile (unconfined)"
    if c.apparmor_profile == "":
        return "runs without an AppArmor profile"
    return None


def _mode(field_name: str, what: str) -> Callable[[Container], str | None]:
    return lambda c: f"shares the host's {what} ({field_name} host)" if getattr(c, field_name) == "host" else None


# (CIS ID, what the control wants, problem(container) -> None when it complies)
CONTROLS: list[tuple[str, str, Callable[[Container], str | None]]] = [
    ("5.2", "an AppArmor profile", _apparmor),
    ("5.3", "SELinux labels", lambda c: None if c.opt("label") not in (None, "disable") else
     "runs without SELinux label options (security_opt label=...)"),
    ("5.4", "no capabilities beyond Docker's default set", _caps),
    ("5.5", "not privileged", lambda c: "is privileged" if c.privileged else None),
    ("5.6", "no sensitive host directory mounted", _sensitive),
    ("5.8", "no privileged host port", lambda c: (
        f"publishes host ports {sorted(p for _, p in c.ports if 0 < p < 1024)}"
        if any(0 < p < 1024 for _, p in c.ports) else None)),
    ("5.10", "its own network namespace", _mode("network_mode", "network namespace")),
    ("5.11", "a memory limit", lambda c: "has no memory limit" if not c.memory else None),
    ("5.12", "a CPU limit or share", lambda c: "has no CPU limit or share" if not (c.cpu_shares or c.nano_cpus)
     else None),
    ("5.13", "a read-only root file system", lambda c: "writes to its root file system" if not c.readonly_rootfs
     else None),
    ("5.14", "published ports bound to one interface", lambda c: (
        "publishes ports on every interface" if any(ip in ("", "0.0.0.0", "::") for ip, _ in c.ports) else None)),
    ("5.15", "on-failure restarts at most 5", lambda c: (
        f"restarts up to {c.restart_retries} times" if c.restart_retries > 5 else None)),
    ("5.16", "its own PID namespace", _mode("pid_mode", "PID namespace")),
    ("5.17", "its own IPC namespace", _mode("ipc_mode", "IPC namespace")),
    ("5.20", "no shared mount propagation", lambda c: (
        "mounts with shared propagation" if any("shared" in p for _, _, p in c.mounts) else None)),
    ("5.21", "its own UTS namespace", _mode("uts_mode", "UTS namespace")),
    ("5.22", "the default seccomp profile", lambda c: (
        "runs without seccomp (seccomp=unconfined)" if c.opt("seccomp") == "unconfined" else None)),
    ("5.25", "the default cgroup", lambda c: f"runs under cgroup parent {c.cgroup_parent} (confirm it)"
     if c.cgroup_parent else None),
    ("5.26", "no-new-privileges", lambda c: (
        None if c.opt("no-new-privileges") in ("true", "") else "may gain new privileges (no-new-privileges unset)")),
    ("5.27", "a health check", lambda c: "has no health check" if not c.healthcheck else None),
    ("5.29", "a PIDs limit", lambda c: "has no PIDs limit" if not c.pids_limit or c.pids_limit < 0 else None),
    ("5.31", "its own user namespace", _mode("userns_mode", "user namespace")),
    ("5.32", "no Docker socket mounted", lambda c: (
        "mounts docker.sock (root on the host)" if any(src in DOCKER_SOCKETS for src, _, _ in c.mounts) else None)),
]
TITLES = {cis: title for cis, title, _ in CONTROLS}


def problems(cis_id: str, containers: list[Container]) -> list[str]:
    """One line per container that breaks the control: "name: what is wrong"."""
    check = next(fn for cis, _, fn in CONTROLS if cis == cis_id)
    return [f"{c.name}: {p}" for c in containers if (p := check(c))]
