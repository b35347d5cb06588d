"""What the docker_engine checks need from a host, gathered in the host's one facts command."""

from __future__ import annotations

import json
from typing import Any

import pytest

from berth.role import Facts, FactsRequest

# Files of CIS Docker Benchmark section 3 that berth does not write itself (vendor and runtime files);
# the units' own files are found through systemd (FragmentPath), wherever the package put them.
SOCKETS = ("/var/run/docker.sock", "/run/containerd/containerd.sock")
# Read only when dockerd runs: touching docker.sock would start a stopped dockerd (socket activation).
DOCKER_INFO = "systemctl is-active -q docker.service && docker info --format '{{json .}}'"
# Only the fields the checks read (CIS 5.5, 5.32), one JSON object a line: a full `docker inspect` would bring
# every CI job's environment (its variables, tokens among them) to the controller.
CONTAINER_FIELDS = ('{"Name":{{json .Name}},"HostConfig":{"Privileged":{{json .HostConfig.Privileged}}},'
                    '"Mounts":[{{range $i, $m := .Mounts}}{{if $i}},{{end}}{"Source":{{json $m.Source}}}{{end}}]}')
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
