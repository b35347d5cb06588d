"""CIS Docker Benchmark pieces on hand-made facts: job containers from config.toml, running containers, the
docker group (1.1.2), vendor file attributes, the audit rules (1.1.3-1.1.18)."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.checks.container_controls import from_inspect, problems
from berth.checks.job_containers import FAIL, PASS, RISK, RunnerFacts, judge, nano_cpus, ram_bytes
from berth.docker.group_members import RECORD, DockerGroupMembers
from berth.engine.plan import Plan, Planned, make_plan
from berth.engine.protocol import GroupMembersStep, ProbeAnswer, WriteStep
from berth.errors import ConfigError
from berth.gitlab.runner_config import RunnerSpec, docker_settings, harden, job_settings
from berth.role import Attributes, Facts, Host, load_role

ROOT = Path(__file__).resolve().parents[2]
RUNNER_DEFAULTS = yaml.safe_load((ROOT / "roles" / "gitlab_runner" / "defaults.yml").read_text())
ENGINE_DEFAULTS = yaml.safe_load((ROOT / "roles" / "docker_engine" / "defaults.yml").read_text())
AUDIT_DEFAULTS = yaml.safe_load((ROOT / "roles" / "docker_audit" / "defaults.yml").read_text())
DIND = {"privileged": True, "volumes": ["/certs/client", "/cache"], "image": "docker:27.5-cli"}
SOCKET = {"privileged": False, "volumes": ["/var/run/docker.sock:/var/run/docker.sock", "/cache"]}


def verdict(cis_id: str, docker: dict, mode: str | None = None, form: str = "privileged", **host_vars: Any):
    return judge(cis_id, RunnerFacts("build", docker, mode, form), {**RUNNER_DEFAULTS, **host_vars}, {})


# -- job containers, from config.toml (gitlab-runner executors/docker/docker.go) ---------------------------
def test_gitlab_runner_units_for_memory_and_cpus():
    assert ram_bytes("2g") == 2 << 30 and ram_bytes("512m") == 512 << 20 and ram_bytes("") == 0
    assert nano_cpus("1.5") == 1_500_000_000 and nano_cpus(None) == 0


def test_dind_privileged_is_the_modes_risk_and_elsewhere_a_failure():
    assert verdict("5.5", DIND, "dind").status == RISK
    assert "mode dind" in verdict("5.5", DIND, "dind").message
    failed = verdict("5.5", {**SOCKET, "privileged": True}, "socket")
    assert failed.status == FAIL and "build job: is privileged" in failed.message


def test_the_socket_mount_is_the_socket_modes_risk_only():
    assert verdict("5.32", SOCKET, "socket").status == RISK
    assert verdict("5.32", SOCKET, "dind").status == FAIL
    assert verdict("5.32", DIND, "dind").status == PASS


def test_services_get_privileged_from_services_privileged_and_no_cap_add():
    docker = {"privileged": False, "services_privileged": True, "cap_add": ["SYS_ADMIN"]}
    found = verdict("5.5", docker, None)
    assert found.status == FAIL and "build service: is privileged" in found.message
    assert "build job" not in found.message
    assert "build job: adds capabilities SYS_ADMIN" in verdict("5.4", docker).message
    assert "service" not in verdict("5.4", docker).message


def test_an_undeclared_limit_is_a_named_risk_a_declared_one_fails_when_config_toml_breaks_it():
    loose = verdict("5.11", SOCKET, "socket")
    assert loose.status == RISK and "gitlab_runner_job_memory" in loose.message
    broken = verdict("5.11", SOCKET, "socket", gitlab_runner_job_memory="2g")
    assert broken.status == FAIL and "build job: has no memory limit" in broken.message
    held = verdict("5.11", {**SOCKET, "memory": "2g", "service_memory": "1g"}, "socket",
                   gitlab_runner_job_memory="2g", gitlab_runner_service_memory="1g")
    assert held.status == PASS


def test_declared_cap_drop_and_no_new_privileges_are_held():
    assert verdict("5.4", SOCKET, "socket", gitlab_runner_job_cap_drop=["NET_RAW"]).status == FAIL
    dropped = {**SOCKET, "cap_drop": ["NET_RAW"]}
    assert verdict("5.4", dropped, "socket", gitlab_runner_job_cap_drop=["NET_RAW"]).status == PASS
    assert verdict("5.26", SOCKET, "socket", gitlab_runner_job_no_new_privileges=True).status == FAIL
    nnp = {**SOCKET, "security_opt": ["no-new-privileges:true"], "services_security_opt": ["no-new-privileges"]}
    assert verdict("5.26", nnp, "socket", gitlab_runner_job_no_new_privileges=True).status == PASS


@pytest.mark.parametrize("cis_id, docker", [
    ("5.10", {"network_mode": "host"}), ("5.16", {"pid_mode": "host"}), ("5.17", {"ipcmode": "host"}),
    ("5.31", {"userns_mode": "host"}), ("5.6", {"volumes": ["/etc:/host-etc"]}),
    ("5.22", {"security_opt": ["seccomp=unconfined"]}), ("5.20", {"volumes": ["/srv:/srv:rshared"]}),
])
def test_dangerous_settings_fail_whatever_the_mode(cis_id, docker):
    assert verdict(cis_id, docker, "socket").status == FAIL
    assert verdict(cis_id, {}, "socket").status == PASS


def test_read_only_volumes_and_anonymous_volumes_are_not_sensitive_mounts():
    assert verdict("5.6", {"volumes": ["/etc/ssl/certs:/etc/ssl/certs:ro", "/cache"]}, "socket").status == PASS


def test_userns_host_is_the_price_of_dind_under_userns_remap():
    docker = {**DIND, "userns_mode": "host"}
    assert judge("5.31", RunnerFacts("b", docker, "dind"), RUNNER_DEFAULTS, {}, userns_remap=True).status == RISK
    assert judge("5.31", RunnerFacts("b", docker, "dind"), RUNNER_DEFAULTS, {}, userns_remap=False).status == FAIL


def test_controls_gitlab_runner_has_no_key_for_are_risks_of_every_runner():
    for cis_id in ("5.13", "5.27", "5.29"):
        found = verdict(cis_id, SOCKET, "socket")
        assert found.status == RISK, found


def test_the_inventorys_accepted_risks_apply_to_jobs():
    found = judge("5.3", RunnerFacts("b", SOCKET, "socket"), RUNNER_DEFAULTS, {"5.3": "Debian uses AppArmor"})
    assert found.status == RISK and "Debian uses AppArmor" in found.message


# -- the role writes the fleet's hardening into config.toml --------------------------------------------------
def test_job_hardening_variables_become_runner_docker_keys():
    wanted = job_settings({"gitlab_runner_job_memory": "4g", "gitlab_runner_job_cpus": 2,
                           "gitlab_runner_job_cap_drop": ["cap_net_raw"], "gitlab_runner_job_no_new_privileges": True})
    assert wanted == {"memory": "4g", "cpus": "2", "cap_drop": ["NET_RAW"], "security_opt": ["no-new-privileges:true"]}
    spec = RunnerSpec("b", "https://g.example", "dind", privileged_form="capabilities")
    settings = docker_settings(harden([spec], {**RUNNER_DEFAULTS, "gitlab_runner_job_cap_drop": ["NET_RAW"],
                                                "gitlab_runner_job_no_new_privileges": True})[0])
    assert settings["cap_drop"] == ["SYS_RESOURCE", "NET_RAW"]        # added to the mode's own, not replacing
    assert settings["security_opt"][-1] == "no-new-privileges:true"
    assert "memory" not in docker_settings(harden([spec], RUNNER_DEFAULTS)[0])


def test_a_memory_size_gitlab_runner_cannot_read_is_an_error():
    with pytest.raises(ConfigError, match="gitlab_runner_job_memory"):
        job_settings({"gitlab_runner_job_memory": "lots"})


# -- running containers (docker inspect) ----------------------------------------------------------------------
def test_running_containers_are_judged_from_their_inspect_fields():
    data = {"Name": "/web", "AppArmorProfile": "docker-default", "HostConfig": {
        "NetworkMode": "host", "Memory": 0, "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "80"}]}},
        "Mounts": [{"Source": "/var/run/docker.sock", "RW": True, "Propagation": "rprivate"}]}
    c = from_inspect(data)
    assert problems("5.10", [c]) == ["web: shares the host's network namespace (network_mode host)"]
    assert problems("5.8", [c]) and problems("5.14", [c]) and problems("5.32", [c]) and problems("5.11", [c])
    assert problems("5.2", [c]) == []


# -- CIS 1.1.2: the docker group ----------------------------------------------------------------------------
def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def group_plan(declared: list[str], group: str, record: str | None = None, passwd: str = "alice:x:1000:\n"
               "bob:x:1001:\nmallory:x:1002:\n") -> Planned:
    files = {"/etc/group": {"exists": True, "content": _b64(f"root:x:0:\ndocker:x:102:{group}\n")},
             "/etc/passwd": {"exists": True, "content": _b64(passwd)},
             RECORD: {"exists": record is not None, **({"content": _b64(record)} if record else {})}}
    return DockerGroupMembers(declared, "group_vars/runners.yml:3").plan(
        Host("r1", [], {}, {}, []), ProbeAnswer(files=files), None, Plan())


def commands(planned: Planned) -> list[str]:
    """The gpasswd commands the agent runs for the plan's group step."""
    return [f"gpasswd {flag} {user} {s.group}" for s in planned.steps if isinstance(s, GroupMembersStep)
            for flag, users in (("-a", s.add), ("-d", s.remove)) for user in users]


def record_written(planned: Planned) -> bytes | None:
    return next((s.content for s in planned.steps if isinstance(s, WriteStep) and s.path == RECORD), None)


def test_declared_members_are_added_and_recorded():
    planned = group_plan(["alice"], "")
    assert commands(planned) == ["gpasswd -a alice docker"]
    assert record_written(planned) == b"alice\n"


def test_members_berth_added_are_removed_once_undeclared_others_only_reported():
    planned = group_plan([], "alice,mallory", record="alice\n")
    assert commands(planned) == ["gpasswd -d alice docker"]
    assert any("mallory" in n and "left alone" in n for n in planned.notes)
    assert record_written(planned) == b""


def test_a_converged_group_plans_nothing():
    planned = group_plan(["alice"], "alice", record="alice\n")
    assert planned.steps == () and planned.changes == ()


def test_a_declared_user_that_does_not_exist_is_an_error_naming_the_variable():
    with pytest.raises(ConfigError, match=r"runners.yml:3: r1: docker_group_members: no user carol"):
        group_plan(["carol"], "")
    with pytest.raises(ConfigError, match="not user names"):
        group_plan(["bob; rm -rf /"], "")


def engine_facts(group: str, record: str | None = None) -> Facts:
    files = {"/etc/group": {"exists": True, "mode": 0o644, "owner": "root", "group": "root", "type": "file",
                            "content": _b64(f"docker:x:102:{group}\n")},
             RECORD: {"exists": record is not None, "mode": 0o644, "owner": "root", "group": "root", "type": "file",
                      **({"content": _b64(record)} if record else {})}}
    return Facts({"host": {}, "files": files, "globs": {}, "units": {}, "packages": {}, "commands": {}})


def load_checks(role: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"{role}_{name}", ROOT / "roles" / role / "verify" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


engine_checks = load_checks("docker_engine", "test_docker_engine")
audit_checks = load_checks("docker_audit", "test_docker_audit")


def test_verify_names_a_foreign_member_of_the_docker_group():
    with pytest.raises(AssertionError, match=r"^mallory in the docker group .* not in docker_group_members"):
        engine_checks.test_docker_group_members(engine_facts("alice,mallory", "alice\n"),
                                                {**ENGINE_DEFAULTS, "docker_group_members": ["alice"]})
    with pytest.raises(AssertionError, match="alice no longer declared"):
        engine_checks.test_docker_group_members(engine_facts("alice", "alice\n"), ENGINE_DEFAULTS)
    engine_checks.test_docker_group_members(engine_facts("alice", "alice\n"),
                                            {**ENGINE_DEFAULTS, "docker_group_members": ["alice"]})


# -- vendor files: owner and permissions, never content ---------------------------------------------------
def test_attributes_take_away_bits_and_fix_the_owner_without_touching_content():
    unit = "/lib/systemd/system/docker.service"
    found = {"files": {unit: {"exists": True, "mode": 0o666, "owner": "root", "group": "staff", "is_dir": False}},
             "packages": {}, "services": {}}
    plan = make_plan([Attributes(unit, 0o644)], [], found)
    assert plan.steps == [WriteStep(unit, None, 0o644, "root", "root")]
    stricter = {"files": {unit: {"exists": True, "mode": 0o600, "owner": "root", "group": "root"}}}
    assert make_plan([Attributes(unit, 0o644)], [], {**found, **stricter}).steps == []
    assert make_plan([Attributes(unit, 0o644)], [], {**found, "files": {}}).steps == []      # missing: left missing


# -- CIS 1.1.3-1.1.18: the audit rules -----------------------------------------------------------------------
def audit_host(**more: Any) -> Host:
    return Host("r1", [], {**ENGINE_DEFAULTS, **AUDIT_DEFAULTS, **more}, {}, ["docker_engine", "docker_audit"])


def test_the_rules_file_covers_every_audit_control_at_the_install_methods_paths():
    role = load_role(ROOT / "roles", "docker_audit")
    rules = role.audit_rules(audit_host())
    assert [r[0] for r in rules] == [f"1.1.{n}" for n in range(3, 19) if n != 13]
    assert rules[0][2] == "-w /usr/sbin/dockerd -p rwxa -k docker"
    assert "-a always,exit -F path=/run/containerd -F perm=war -k docker" in role.rules_file(audit_host()).decode()
    repo = role.audit_rules(audit_host(docker_install_method="docker-repo", docker_audit_sysconfig=True))
    assert repo[0][1] == "/usr/bin/dockerd" and "1.1.13" in [r[0] for r in repo]


def test_loaded_rules_are_read_as_auditctl_lists_them():
    assert audit_checks.watched("-w /usr/sbin/dockerd -p rwxa -k docker") == "/usr/sbin/dockerd"
    assert audit_checks.watched("-a always,exit -S all -F path=/run/containerd -F perm=rwa -F key=docker") == (
        "/run/containerd")
    assert audit_checks.watched("-a always,exit -F arch=b64 -S adjtimex -F key=time-change") is None


def test_a_job_variable_holds_the_job_container_not_the_services():
    found = verdict("5.11", {**SOCKET, "memory": "2g"}, "socket", gitlab_runner_job_memory="2g")
    assert found.status == RISK and "build service: has no memory limit" in found.message
    assert "gitlab_runner_service_memory" in found.message
