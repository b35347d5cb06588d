"""Role docker_audit: auditd installed and running, with rules that audit dockerd and its files (CIS 1.1.3-1.1.18).

The rules go to a file of their own under /etc/audit/rules.d/ (augenrules merges that folder into
/etc/audit/audit.rules at boot); a change loads them at once with `augenrules --load`. verify reads the rules the
kernel has loaded (`auditctl -l`), not only the file.

The paths follow docker-bench-security's checks (tests/1_host_configuration.sh) with the binaries where the
install method puts them: Debian's docker.io has /usr/sbin/dockerd and /usr/sbin/runc, Docker's packages
/usr/bin/dockerd and /usr/bin/runc (/usr/bin/runc is only a link on Debian: a watch on it would watch the link).
"""

from __future__ import annotations

from typing import Any

from berth.role import File, Handler, Host, Packages, RoleState, Service

LOAD = "load audit rules"
# The kernel refuses audit requests from any PID namespace but its first (kernel/audit.c audit_netlink_ok), and
# rules locked with -e 2 until the next boot: say so rather than leave auditctl's bare "Operation not permitted".
LOAD_COMMAND = (
    "out=$(augenrules --load 2>&1) || { echo \"$out\"; echo 'auditctl could not load the rules: the kernel accepts "
    "them only from its initial PID namespace (not from a container) and not while they are locked (-e 2: reboot "
    "to change them)'; exit 1; }"
)


def audit_rules(host: Host) -> list[tuple[str, str, str]]:
    """(CIS ID, watched path, rule line) in docker-bench's order; 1.1.13 only with docker_audit_sysconfig."""
    v = host.vars
    repo = v.get("docker_install_method") == "docker-repo"
    sbin = "/usr/bin" if repo else "/usr/sbin"
    options = {**(v.get("docker_daemon_defaults") or {}), **(v.get("docker_daemon_options") or {})}
    key = v["docker_audit_key"]
    paths = [
        ("1.1.3", f"{sbin}/dockerd"), ("1.1.4", "/run/containerd"),
        ("1.1.5", str(options.get("data-root") or "/var/lib/docker")), ("1.1.6", "/etc/docker"),
        ("1.1.7", "/lib/systemd/system/docker.service"), ("1.1.8", "/run/containerd/containerd.sock"),
        ("1.1.9", "/lib/systemd/system/docker.socket"), ("1.1.10", "/etc/default/docker"),
        ("1.1.11", v.get("docker_daemon_json") or "/etc/docker/daemon.json"),
        ("1.1.12", "/etc/containerd/config.toml"), ("1.1.13", "/etc/sysconfig/docker"),
        ("1.1.14", "/usr/bin/containerd"), ("1.1.15", "/usr/bin/containerd-shim"),
        ("1.1.16", "/usr/bin/containerd-shim-runc-v1"), ("1.1.17", "/usr/bin/containerd-shim-runc-v2"),
        ("1.1.18", f"{sbin}/runc"),
    ]
    rules = []
    for cis_id, path in paths:
        if cis_id == "1.1.13" and not v["docker_audit_sysconfig"]:
            continue
        # 1.1.4 as docker-bench's remediation writes it: a syscall rule on the directory, not a watch.
        line = (f"-a always,exit -F path={path} -F perm=war -k {key}" if cis_id == "1.1.4"
                else f"-w {path} -p rwxa -k {key}" if cis_id in ("1.1.3", "1.1.14", "1.1.15", "1.1.16", "1.1.17",
                                                                  "1.1.18")
                else f"-w {path} -p wa -k {key}")
        rules.append((cis_id, path, line))
    return rules


def rules_file(host: Host) -> bytes:
    lines = ["# berth role docker_audit: CIS Docker Benchmark 1.1.3-1.1.18 (managed by berth: edits are replaced)"]
    lines += [line for _, _, line in audit_rules(host)]
    return ("\n".join(lines) + "\n").encode()


def declare(host: Host, ctx: Any) -> RoleState:
    state = RoleState("docker_audit")
    state.resources += [
        Packages(("auditd",)),
        File(host.vars["docker_audit_rules_file"], rules_file(host), mode=0o640, notify=(LOAD,)),
        Service("auditd", enabled=True, running=True),
    ]
    state.handlers.append(Handler(LOAD, LOAD_COMMAND))
    return state
