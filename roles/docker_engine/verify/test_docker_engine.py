"""docker_engine: the host against what the inventory declares, and the CIS Docker Benchmark controls.

Every fact comes from the host's one facts command (see conftest.py). Controls the inventory breaks on
purpose are accepted risks (docker_accepted_risks, or the runner's docker mode), never skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from berth.checks.container_controls import CONTROLS, from_inspect
from berth.checks.container_controls import problems as container_problems
from berth.docker.hosts import BadHost, host_flags, tcp_listeners
from berth.role import Contributions, Facts, FileFacts, Host, RoleContext, load_role

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
GROUP_RECORD = "/var/lib/berth/docker-group-members"      # the members converge added (roles/docker_engine/role.py)


def declared_daemon_json(roles_dir: Path, host: Host, contributions: Contributions) -> dict[str, Any]:
    """daemon.json as role docker_engine builds it from the host's variables and the other roles' contributions
    (the same code as a converge)."""
    return load_role(roles_dir, "docker_engine").daemon_json(host, contributions)


def test_packages_installed(facts: Facts, host_vars: dict[str, Any], declared_packages: list[str]) -> None:
    """The packages of the declared install method are installed."""
    missing = [name for name in declared_packages if facts.package(name) is None]
    method = host_vars["docker_install_method"]
    assert not missing, f"not installed: {', '.join(missing)} (docker_install_method {method})"


def test_service_enabled(facts: Facts) -> None:
    """docker.service starts at boot."""
    state = facts.unit("docker.service").get("UnitFileState") or "unknown"
    assert state == "enabled", f"docker.service is {state}, not enabled: dockerd would not start at boot"


def test_service_running(facts: Facts) -> None:
    """dockerd runs."""
    unit = facts.unit("docker.service")
    assert unit.get("ActiveState") == "active", (
        f"docker.service is {unit.get('ActiveState')} ({unit.get('SubState')}): dockerd is not running")


def test_daemon_json_as_declared(daemon_json: dict[str, Any], inventory_host: Host, roles_dir: Path,
                                 contributions: Contributions) -> None:
    """daemon.json parses and holds exactly the declared keys and values."""
    declared = declared_daemon_json(roles_dir, inventory_host, contributions)
    problems = [f"{key} missing" for key in declared if key not in daemon_json]
    problems += [f"{key} is {daemon_json[key]!r}, declared {declared[key]!r}"
                 for key in declared if key in daemon_json and daemon_json[key] != declared[key]]
    problems += [f"{key} is not declared" for key in daemon_json if key not in declared]
    assert not problems, "daemon.json: " + "; ".join(problems)


def test_hosts_dropin(facts: Facts, host_vars: dict[str, Any], inventory_host: Host, roles_dir: Path,
                     contributions: Contributions) -> None:
    """With `hosts` in daemon.json, berth's drop-in replaces the unit's -H fd:// and systemd has loaded it."""
    path = f"/etc/systemd/system/docker.service.d/{host_vars['docker_dropin_name']}"
    dropin = facts.file(path)
    unit = facts.unit("docker.service")
    if "hosts" not in declared_daemon_json(roles_dir, inventory_host, contributions):
        assert not dropin.exists, f"{path} exists, but daemon.json declares no hosts"
        return
    assert dropin.exists, f"{path} is missing: the unit's -H fd:// conflicts with hosts in daemon.json"
    dockerd = "/usr/bin/dockerd" if host_vars["docker_install_method"] == "docker-repo" else "/usr/sbin/dockerd"
    wanted = RoleContext(roles_dir).render("docker_engine", "docker-hosts.conf.j2", {"dockerd": dockerd})
    assert dropin.content == wanted, f"{path} differs from the role's template"
    assert path in unit.get("DropInPaths", "").split(), f"{path} is not loaded by systemd (daemon-reload pending)"
    argv = dockerd_argv(unit)
    flags = [a for a in argv if a in ("-H", "--host") or a.startswith(("-H=", "--host="))]
    assert not flags, f"dockerd runs with {' '.join(flags)} although daemon.json sets hosts: {' '.join(argv)}"


@pytest.mark.cis("2.15")
def test_live_restore(daemon_json: dict[str, Any], request: pytest.FixtureRequest,
                      deviation: Callable[[str, str], None]) -> None:
    """live-restore is on, in daemon.json and in the running dockerd: a restart keeps containers running."""
    if daemon_json.get("live-restore") is not True:
        deviation("2.15", "daemon.json: live-restore is not true: restarting dockerd stops every container")
        return
    live = request.getfixturevalue("docker_info").get("LiveRestoreEnabled")
    assert live is True, "dockerd runs without live-restore: daemon.json was changed but not applied (reload)"


# (CIS ID, daemon.json key, compliant(value of the key or None), what is wrong otherwise)
DAEMON_CONTROLS: list[tuple[str, str, Callable[[Any], bool], str]] = [
    ("2.2", "icc", lambda v: v is False, "icc is not false: containers on the default bridge can reach each other"),
    ("2.3", "log-level", lambda v: v in (None, "info"), "log-level is not info"),
    ("2.4", "iptables", lambda v: v is not False, "iptables is false: Docker does not manage its firewall rules"),
    ("2.5", "insecure-registries", lambda v: not v, "insecure-registries is set: images travel without TLS"),
    ("2.14", "no-new-privileges", lambda v: v is True, "no-new-privileges is not true: setuid binaries in "
                                                       "containers can gain privileges"),
    ("2.16", "userland-proxy", lambda v: v is False, "userland-proxy is not false"),
    ("2.18", "experimental", lambda v: v is not True, "experimental features are on"),
]


@pytest.mark.parametrize("cis_id, key, compliant, problem", [
    pytest.param(*c, id=c[1], marks=pytest.mark.cis(c[0])) for c in DAEMON_CONTROLS])
def test_daemon_option(cis_id: str, key: str, compliant: Callable[[Any], bool], problem: str,
                       daemon_json: dict[str, Any], deviation: Callable[[str, str], None]) -> None:
    """A section 2 daemon control, read from daemon.json (what dockerd starts with)."""
    if not compliant(daemon_json.get(key)):
        deviation(cis_id, f"daemon.json: {problem} ({key}: {daemon_json.get(key)!r})")


def dockerd_argv(unit: dict[str, str]) -> list[str]:
    """dockerd's command line as systemd runs it (ExecStart's argv[])."""
    return unit.get("ExecStart", "").partition("argv[]=")[2].partition(" ;")[0].split()


@pytest.mark.cis("2.7")
def test_tcp_requires_tls_verify(daemon_json: dict[str, Any], facts: Facts,
                                 deviation: Callable[[str, str], None]) -> None:
    """When dockerd listens on TCP (daemon.json `hosts` or -H in its unit), it verifies client certificates."""
    argv = dockerd_argv(facts.unit("docker.service"))
    entries = [*(daemon_json.get("hosts") or []), *host_flags(argv)]
    tls = daemon_json.get("tls") is True or "--tls" in argv
    # Read as dockerd reads it (berth/docker/hosts.py): "0.0.0.0:2375" and " tcp://..." are TCP too.
    try:
        tcp = [t.address for t in tcp_listeners(entries, tls=tls)]
    except BadHost as exc:
        pytest.fail(f"dockerd hosts: {exc}: dockerd refuses to start with it", pytrace=False)
    if tcp and daemon_json.get("tlsverify") is not True and "--tlsverify" not in argv:
        deviation("2.7", f"dockerd listens on {', '.join(tcp)} without tlsverify: any client is root on the host")


@pytest.mark.cis("2.6")
def test_storage_driver_not_aufs(docker_info: dict[str, Any]) -> None:
    """The running dockerd does not use the aufs storage driver."""
    assert docker_info.get("Driver") != "aufs", "dockerd uses the aufs storage driver"


# Section 3: (IDs, check id, owner, group, mode, exact) where the path is found by `where`; "exact" for the
# files berth writes (their declared mode), "at most" (no permission bit beyond) for vendor and runtime files.
FILE_CONTROLS = [
    (("3.1", "3.2"), "docker.service", "root", "root", 0o644, False),
    (("3.3", "3.4"), "docker.socket", "root", "root", 0o644, False),
    (("3.5", "3.6"), "etc-docker", "root", "root", 0o755, True),
    (("3.7", "3.8"), "certs.d", "root", "root", 0o444, False),
    (("3.15", "3.16"), "docker.sock", "root", "docker", 0o660, False),
    (("3.17", "3.18"), "daemon.json", "root", "root", 0o644, True),
    (("3.19", "3.20"), "etc-default-docker", "root", "root", 0o644, False),
    (("3.21", "3.22"), "etc-sysconfig-docker", "root", "root", 0o644, False),
    (("3.23", "3.24"), "containerd.sock", "root", "root", 0o660, False),
]


def _files_of(control: str, facts: Facts, host_vars: dict[str, Any]) -> list[FileFacts]:
    """The files a control covers; optional ones (certs.d, /etc/default/docker) may be absent."""
    if control in ("docker.service", "docker.socket"):
        for line in facts.command("unit_files").stdout.splitlines():
            unit, owner, group, mode, path = line.split(" ", 4)
            if unit == control:
                return [FileFacts(path, True, int(mode, 8), owner, group, "file")]
        return [FileFacts(control, False)]
    if control == "certs.d":
        return [facts.file(p) for p in facts.glob("/etc/docker/certs.d/**") if p in facts.raw["files"]]
    if control in ("etc-default-docker", "etc-sysconfig-docker"):
        found = facts.file("/etc/default/docker" if control == "etc-default-docker" else "/etc/sysconfig/docker")
        return [found] if found.exists else []
    path = {"etc-docker": "/etc/docker", "docker.sock": "/var/run/docker.sock",
            "daemon.json": host_vars["docker_daemon_json"], "containerd.sock": "/run/containerd/containerd.sock"}
    return [facts.file(path[control])]


@pytest.mark.parametrize("control, owner, group, mode, exact", [
    pytest.param(c[1], *c[2:], id=c[1], marks=pytest.mark.cis(*c[0])) for c in FILE_CONTROLS])
def test_file(control: str, owner: str, group: str, mode: int, exact: bool, facts: Facts,
              host_vars: dict[str, Any]) -> None:
    """A section 3 file control: owner, group and permissions."""
    want = f"{owner}:{group} {'' if exact else 'at most '}{mode:04o}"
    for found in _files_of(control, facts, host_vars):
        assert found.exists, f"{found.path} is missing"
        mode_ok = found.mode == mode if exact else not found.mode & ~mode
        # certs.d holds the operator's registry certificates, which berth does not manage: say the manual step.
        repair = (f": run chown {owner}:{group} {found.path}; chmod {mode:o} {found.path}" if control == "certs.d"
                  else "")
        assert (found.owner, found.group) == (owner, group) and mode_ok, f"{found.describe()}, want {want}{repair}"


def mode_reason(host_vars: dict[str, Any], contributions: Contributions, mode: str) -> str | None:
    """Why this host runs jobs in ``mode``: what a role contributed to docker.job_modes (gitlab_runner: its
    runners) or runner_docker_mode (runners berth does not manage), else None."""
    why = contributions.values("docker.job_modes").get(mode)
    if why:
        return f"mode {mode} ({why})"
    if host_vars.get("runner_docker_mode") == mode:
        return f"mode {mode} (runner_docker_mode)"
    return None


@pytest.mark.cis("5.5")
def test_no_privileged_containers(host_vars: dict[str, Any], contributions: Contributions,
                                  request: pytest.FixtureRequest, accept_risk: Callable[[str], None]) -> None:
    """No running container is privileged, unless the runner's docker mode needs it (dind)."""
    reason = mode_reason(host_vars, contributions, "dind")
    if reason:
        accept_risk(f"{reason}: job services (docker:dind) run privileged, and a privileged job can be root on "
                    "the host")
        return
    containers = request.getfixturevalue("containers")
    privileged = [c["Name"].lstrip("/") for c in containers if c.get("HostConfig", {}).get("Privileged")]
    assert not privileged, f"privileged containers run: {', '.join(privileged)}"


@pytest.mark.cis("5.32")
def test_docker_sock_not_mounted(host_vars: dict[str, Any], contributions: Contributions,
                                 request: pytest.FixtureRequest, accept_risk: Callable[[str], None]) -> None:
    """No running container mounts docker.sock, unless the runner's docker mode is socket binding."""
    reason = mode_reason(host_vars, contributions, "socket")
    if reason:
        accept_risk(f"{reason}: jobs mount docker.sock by design, and any job is root on the host")
        return
    containers = request.getfixturevalue("containers")
    mounting = [c["Name"].lstrip("/") for c in containers
                if any(m.get("Source") in DOCKER_SOCKETS for m in c.get("Mounts", []))]
    assert not mounting, f"containers mount docker.sock (root on the host): {', '.join(mounting)}"


# -- Section 1: the host -------------------------------------------------------------------------
@pytest.mark.cis("1.1.1")
def test_data_root_partition(facts: Facts, host_vars: dict[str, Any], deviation: Callable[[str, str], None]) -> None:
    """dockerd's data root (/var/lib/docker) is a file system of its own: containers cannot fill the host's."""
    options = {**host_vars["docker_daemon_defaults"], **host_vars["docker_daemon_options"]}
    root = str(options.get("data-root") or "/var/lib/docker")
    result = facts.command("data_root_mount")
    assert result.rc == 0, f"cannot find the mount point of {root}: {result.stderr.strip()[-200:]}"
    mount = result.stdout.strip()
    if mount != root:
        deviation("1.1.1", f"{root} is on the file system mounted at {mount}, not a partition of its own "
                           "(create one and mount it there before installing Docker)")


def group_members(facts: Facts, group: str = "docker") -> list[str]:
    """The members of ``group`` in /etc/group (its 4th field)."""
    found = facts.file("/etc/group")
    for line in (found.content or b"").decode().splitlines():
        fields = line.split(":")
        if len(fields) == 4 and fields[0] == group:
            return [m for m in fields[3].split(",") if m]
    return []


@pytest.mark.cis("1.1.2")
def test_docker_group_members(facts: Facts, host_vars: dict[str, Any]) -> None:
    """Only the declared users (docker_group_members) are in the docker group: each member is root on the host."""
    declared = list(host_vars["docker_group_members"])
    record = facts.file(GROUP_RECORD)
    managed = set((record.content or b"").decode().split()) if record.exists else set()
    members = group_members(facts)
    foreign = [m for m in members if m not in declared and m not in managed]
    stale = [m for m in members if m not in declared and m in managed]
    missing = [m for m in declared if m not in members]
    problems = []
    if foreign:
        problems.append(f"{', '.join(foreign)} in the docker group (root on the host) but not in docker_group_members: "
                        f"declare them, or remove them by hand (gpasswd -d USER docker); converge leaves members it "
                        "did not add alone")
    if stale:
        problems.append(f"{', '.join(stale)} no longer declared in docker_group_members: converge removes them")
    if missing:
        problems.append(f"{', '.join(missing)} declared in docker_group_members but not in the docker group: "
                        "converge adds them")
    assert not problems, "; ".join(problems)


# 1.1.3-1.1.18 (docker-bench's order): what role docker_audit watches. Without the role they are accepted risks.
AUDIT_CONTROLS = [("1.1.3", "/usr/bin/dockerd"), ("1.1.4", "/run/containerd"), ("1.1.5", "/var/lib/docker"),
                  ("1.1.6", "/etc/docker"), ("1.1.7", "docker.service"), ("1.1.8", "containerd.sock"),
                  ("1.1.9", "docker.socket"), ("1.1.10", "/etc/default/docker"), ("1.1.11", "/etc/docker/daemon.json"),
                  ("1.1.12", "/etc/containerd/config.toml"), ("1.1.13", "/etc/sysconfig/docker"),
                  ("1.1.14", "/usr/bin/containerd"), ("1.1.15", "/usr/bin/containerd-shim"),
                  ("1.1.16", "/usr/bin/containerd-shim-runc-v1"), ("1.1.17", "/usr/bin/containerd-shim-runc-v2"),
                  ("1.1.18", "/usr/bin/runc")]


@pytest.mark.parametrize("cis_id, target", [
    pytest.param(i, t, id=i, marks=pytest.mark.cis(i)) for i, t in AUDIT_CONTROLS])
def test_audit_without_role(cis_id: str, target: str, accept_risk: Callable[[str], None]) -> None:
    """Without role docker_audit nothing audits the daemon and its files (collected only for such hosts)."""
    accept_risk(f"no audit rule for {target}: the host does not have role docker_audit (add it to berth_roles to "
                "install auditd with the rules; it needs a host that may load audit rules, not a container)")


# -- Section 2: daemon controls docker-bench runs that daemon.json alone does not answer -----------------
@pytest.mark.cis("2.8")
def test_default_ulimits(daemon_json: dict[str, Any], deviation: Callable[[str, str], None]) -> None:
    """dockerd sets default ulimits for containers (default-ulimits)."""
    if not daemon_json.get("default-ulimits"):
        deviation("2.8", "daemon.json: default-ulimits is not set: containers inherit dockerd's limits")


@pytest.mark.cis("2.9")
def test_userns_remap(daemon_json: dict[str, Any], request: pytest.FixtureRequest,
                      deviation: Callable[[str, str], None]) -> None:
    """Containers' root is remapped to an unprivileged host user (userns-remap), in daemon.json and running."""
    if not daemon_json.get("userns-remap"):
        deviation("2.9", "daemon.json: userns-remap is not set: root in a container is root on the host")
        return
    options = request.getfixturevalue("docker_info").get("SecurityOptions") or []
    assert any("name=userns" in o for o in options), (
        "dockerd runs without userns-remap: restart it to apply daemon.json")


@pytest.mark.cis("2.10")
def test_cgroup_parent(daemon_json: dict[str, Any], deviation: Callable[[str, str], None]) -> None:
    """Containers use the default cgroup (no daemon-wide cgroup-parent to confirm)."""
    if daemon_json.get("cgroup-parent"):
        deviation("2.10", f"daemon.json: cgroup-parent is {daemon_json['cgroup-parent']!r}: confirm its limits")


@pytest.mark.cis("2.11")
def test_base_device_size(daemon_json: dict[str, Any], deviation: Callable[[str, str], None]) -> None:
    """The devicemapper base device size is left alone (storage-opts dm.basesize)."""
    opts = [o for o in daemon_json.get("storage-opts") or [] if str(o).startswith("dm.basesize")]
    if opts:
        deviation("2.11", f"daemon.json: storage-opts sets {opts[0]}")


@pytest.mark.cis("2.12")
def test_authorization_plugin(daemon_json: dict[str, Any], deviation: Callable[[str, str], None]) -> None:
    """An authorization plugin decides which API calls a client may make (authorization-plugins)."""
    if not daemon_json.get("authorization-plugins"):
        deviation("2.12", "daemon.json: no authorization-plugins: any client that reaches the API may do anything")


@pytest.mark.cis("2.13")
def test_remote_logging(request: pytest.FixtureRequest, deviation: Callable[[str, str], None]) -> None:
    """Container logs leave the host (a log driver other than json-file or local)."""
    driver = request.getfixturevalue("docker_info").get("LoggingDriver")
    if driver in ("json-file", "local", "none", None):
        deviation("2.13", f"dockerd logs containers with {driver}: the logs stay on the host")


@pytest.mark.cis("2.17")
def test_seccomp_profile(daemon_json: dict[str, Any], request: pytest.FixtureRequest,
                         deviation: Callable[[str, str], None]) -> None:
    """Containers get a seccomp profile: Docker's default, or a daemon-wide custom one (seccomp-profile)."""
    options = request.getfixturevalue("docker_info").get("SecurityOptions") or []
    if daemon_json.get("seccomp-profile") in ("unconfined",) or not any("name=seccomp" in o for o in options):
        deviation("2.17", f"dockerd applies no seccomp profile (security options: {', '.join(options) or 'none'})")


# -- Section 5: the daemon and the containers running now ----------------------------------------
@pytest.mark.cis("5.1")
def test_swarm_mode(request: pytest.FixtureRequest, deviation: Callable[[str, str], None]) -> None:
    """Swarm mode is off (it opens cluster ports and keeps cluster secrets on the host)."""
    state = (request.getfixturevalue("docker_info").get("Swarm") or {}).get("LocalNodeState")
    if state not in ("inactive", "", None):
        deviation("5.1", f"swarm mode is {state}: leave it with `docker swarm leave` if the host needs no swarm")


@pytest.mark.cis("5.7")
def test_sshd_in_containers(deviation: Callable[[str, str], None]) -> None:
    """Containers run no sshd: verify never executes commands inside containers (CI jobs hold secrets)."""
    deviation("5.7", "not checked: it would mean running `ps` inside every container; check by hand with "
                     "`docker exec CONTAINER ps -e`")


@pytest.mark.cis("5.23")
def test_exec_privileged(deviation: Callable[[str, str], None]) -> None:
    """No `docker exec --privileged`: only the audit log (ausearch) shows past exec calls; verify does not read it."""
    deviation("5.23", "not checked: search the audit log by hand (ausearch -k docker | grep exec | grep privileged)")


RUNNING = [c for c in CONTROLS if c[0] not in ("5.5", "5.32")]      # those two: the tests above, with their modes


@pytest.mark.parametrize("cis_id", [pytest.param(c[0], id=c[0], marks=pytest.mark.cis(c[0])) for c in RUNNING])
def test_running_containers(cis_id: str, inventory_host: Host, request: pytest.FixtureRequest,
                            deviation: Callable[[str, str], None]) -> None:
    """A section 5 control for the containers running now, CI jobs aside (role gitlab_runner judges those from
    config.toml, before they start)."""
    containers = request.getfixturevalue("containers")
    jobs = "gitlab_runner" in inventory_host.roles
    found = container_problems(cis_id, [from_inspect(c) for c in containers if not (jobs and c.get("Job"))])
    if found:
        deviation(cis_id, "; ".join(found) + ": berth does not start these containers: fix them where they are "
                          f"started, or accept CIS {cis_id} in docker_accepted_risks")
