"""What the docker_engine checks need from a host, gathered in the host's one facts command."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from berth.role import Facts, FactsRequest

# The checks of 1.1.3-1.1.18 that stand for a missing role docker_audit; that role's own checks replace them.
AUDIT_STANDIN = "test_audit_without_role"
GROUP_RECORD = "/var/lib/berth/docker-group-members"


def data_root(host_vars: dict[str, Any]) -> str:
    options = {**host_vars["docker_daemon_defaults"], **host_vars["docker_daemon_options"]}
    return str(options.get("data-root") or "/var/lib/docker")

# Files of CIS Docker Benchmark section 3 that berth does not write itself (vendor and runtime files);
# the units' own files are found through systemd (FragmentPath), wherever the package put them.
SOCKETS = ("/var/run/docker.sock", "/run/containerd/containerd.sock")
# Read only when dockerd runs: touching docker.sock would start a stopped dockerd (socket activation).
DOCKER_INFO = "systemctl is-active -q docker.service && docker info --format '{{json .}}'"
# Only the fields the checks read (CIS 5.5, 5.32), one JSON object a line: a full `docker inspect` would bring
# every CI job's environment (its variables, tokens among them) to the controller.
# Section 5 reads the HostConfig fields below (berth/checks/container_controls.py); Config only for the
# health check and the job label (job containers are judged from config.toml by role gitlab_runner).
_HOST_CONFIG = ("Privileged", "CapAdd", "SecurityOpt", "NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode",
                "Memory", "CpuShares", "NanoCpus", "PidsLimit", "CgroupParent", "ReadonlyRootfs", "PortBindings",
                "RestartPolicy", "Devices")
CONTAINER_FIELDS = (
    '{"Name":{{json .Name}},"AppArmorProfile":{{json .AppArmorProfile}},"HostConfig":{'
    + ",".join(f'"{k}":{{{{json .HostConfig.{k}}}}}' for k in _HOST_CONFIG)
    + '},"Healthcheck":{{json .Config.Healthcheck}},'
    # `with`: an image without labels has none (index of a nil map is an error in Go templates).
    '"Job":{{with .Config.Labels}}{{json (index . "com.gitlab.gitlab-runner.job.id")}}{{else}}null{{end}},'
    '"Mounts":[{{range $i, $m := .Mounts}}{{if $i}},{{end}}{"Source":{{json $m.Source}},"RW":{{json $m.RW}},'
    '"Propagation":{{json $m.Propagation}}}{{end}}]}')
CONTAINERS = ("systemctl is-active -q docker.service && ids=$(docker ps -q) && "
              f"if [ -n \"$ids\" ]; then docker inspect --format '{CONTAINER_FIELDS}' $ids; fi")


def install_packages(host_vars: dict[str, Any]) -> list[str]:
    """The packages the declared install method puts on the host."""
    key = {"distro": "docker_distro_packages", "docker-repo": "docker_repo_packages",
           "local-debs": "docker_local_packages"}.get(host_vars["docker_install_method"], "docker_distro_packages")
    return list(host_vars[key])


def pytest_berth_verify_facts(request: FactsRequest, host_vars: dict[str, Any]) -> None:
    request.package(*install_packages(host_vars))
    request.unit("docker.service", "docker.socket")
    request.file(host_vars["docker_daemon_json"], content=True)
    request.file("/etc/docker")
    request.file(f"/etc/systemd/system/docker.service.d/{host_vars['docker_dropin_name']}", content=True)
    request.file("/etc/default/docker")
    for path in SOCKETS:
        request.file(path)
    request.glob("/etc/docker/certs.d/**")
    # The unit files' paths are only known on the host: stat them there, in the same command.
    request.command("unit_files", "for u in docker.service docker.socket; do "
                                  "p=$(systemctl show -p FragmentPath --value $u); "
                                  "[ -n \"$p\" ] && stat -L -c \"$u %U %G %a %n\" \"$p\"; done")
    request.file("/etc/sysconfig/docker")
    request.file("/etc/group", content=True)          # CIS 1.1.2: who is in the docker group
    request.file(GROUP_RECORD, content=True)          # the members berth added (roles/docker_engine/role.py)
    # CIS 1.1.1: the mount point holding dockerd's data root (its own partition when they are equal).
    request.command("data_root_mount", f"stat -L -c %m {shlex.quote(data_root(host_vars))}")
    request.command("docker_info", DOCKER_INFO)
    request.command("containers", CONTAINERS)


@pytest.fixture(scope="session")
def declared_packages(host_vars: dict[str, Any]) -> list[str]:
    return install_packages(host_vars)


@pytest.fixture(scope="session")
def accepted_risks(host_vars: dict[str, Any]) -> dict[str, str]:
    """CIS IDs whose deviation the inventory accepts (docker_accepted_risks), with the reason."""
    return {str(k): str(v) for k, v in host_vars["docker_accepted_risks"].items()}


@pytest.fixture(scope="session")
def daemon_json(facts: Facts, host_vars: dict[str, Any]) -> dict[str, Any]:
    """daemon.json as the host has it; a missing or unparsable file fails every check that reads it."""
    found = facts.file(host_vars["docker_daemon_json"])
    assert found.exists, f"{found.path} does not exist"
    try:
        data = json.loads(found.content or b"")
    except ValueError as exc:
        pytest.fail(f"{found.path} is not valid JSON: {exc}", pytrace=False)
    assert isinstance(data, dict), f"{found.path} is not a JSON object"
    return data


@pytest.fixture(scope="session")
def docker_info(facts: Facts) -> dict[str, Any]:
    """`docker info` of the running daemon; fails the checks that need it when dockerd is not running."""
    result = facts.command("docker_info")
    running = facts.unit("docker.service").get("ActiveState") == "active"
    assert running, "dockerd is not running: its live configuration cannot be read"
    assert result.rc == 0, f"docker info failed: {result.stderr.strip()[-200:]}"
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def containers(facts: Facts) -> list[dict[str, Any]]:
    """The running containers' name, privileged flag and mount sources (from `docker inspect`)."""
    result = facts.command("containers")
    running = facts.unit("docker.service").get("ActiveState") == "active"
    assert running, "dockerd is not running: its containers cannot be inspected"
    assert result.rc == 0, f"docker ps/inspect failed: {result.stderr.strip()[-200:]}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A host with role docker_audit has its audit controls checked there, not reported missing here."""
    context = config.getoption("berth_context")
    if not context or "docker_audit" not in json.loads(Path(context).read_text())["host"]["roles"]:
        return
    dropped = [i for i in items if getattr(i, "originalname", "") == AUDIT_STANDIN]
    if dropped:
        items[:] = [i for i in items if i not in dropped]
        config.hook.pytest_deselected(items=dropped)
