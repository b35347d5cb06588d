"""CIS Docker Benchmark on the testbed: the docker group (1.1.2), job containers judged from config.toml (section 5),
auditing (1.1.3-1.1.18) as far as a container can have it, and converge repairing every drift verify reports.
"""

from __future__ import annotations

import json
import tomllib

import pytest
import yaml

from berth.checks.container_controls import CONTROLS
from tests.integration.test_verify import assert_all_pass, message, problems
from tests.standins.gitlab_api import GitLabStandIn

MARKER = "BERTHMARKER"
ACCESS_TOKEN = f"glpat-{MARKER}-access-token"
CONFIG = "/etc/gitlab-runner/config.toml"
RECORD = "/var/lib/berth/docker-group-members"


def members(testbed, host: str) -> list[str]:
    line = testbed.exec(host, "getent", "group", "docker").stdout.strip()
    return [m for m in line.split(":")[3].split(",") if m]


def extra(**values) -> str:
    return json.dumps(values)


# -- 1.1.2 ---------------------------------------------------------------------------------------------------
def test_a_foreign_docker_group_member_fails_verify_and_converge_removes_only_the_members_it_added(
        converged, berth, testbed):
    testbed.exec("r2", "sh", "-c", "useradd -M alice; useradd -M mallory; gpasswd -a mallory docker")
    try:
        run = berth("verify", "--limit", "r2")
        assert run.code == 2, run.output
        assert problems(run, "r2") == {"docker_engine/docker_group_members": "failed"}
        assert message(run, "r2", "docker_engine/docker_group_members").startswith(
            "mallory in the docker group (root on the host) but not in docker_group_members")
        assert "r2 docker_engine/docker_group_members [CIS 1.1.2]: FAIL: mallory" in run.err

        # Declared alice is added; mallory, whom berth did not add, is reported and left alone.
        declared = extra(docker_group_members=["alice"])
        run = berth("setup-runner", "--limit", "r2", "-e", declared)
        assert run.code == 0, run.output
        assert "mallory in the docker group" in run.output and "left alone" in run.output
        assert members(testbed, "r2") == ["mallory", "alice"]
        assert testbed.exec("r2", "cat", RECORD).stdout == "alice\n"
        run = berth("verify", "--limit", "r2", "-e", declared)
        assert problems(run, "r2") == {"docker_engine/docker_group_members": "failed"}
        assert "alice" not in message(run, "r2", "docker_engine/docker_group_members")

        testbed.exec("r2", "gpasswd", "-d", "mallory", "docker")
        assert_all_pass(berth("verify", "--limit", "r2", "-e", declared), ["r2"])
        # alice is no longer declared: verify says converge removes her, and it does (berth added her).
        run = berth("verify", "--limit", "r2")
        assert "alice no longer declared in docker_group_members: converge removes them" in message(
            run, "r2", "docker_engine/docker_group_members")
        assert berth("setup-runner", "--limit", "r2").code == 0
        assert members(testbed, "r2") == []
        assert_all_pass(berth("verify", "--limit", "r2"), ["r2"])
    finally:
        testbed.exec("r2", "sh", "-c", "gpasswd -d mallory docker; gpasswd -d alice docker; userdel alice; "
                                       "userdel mallory; rm -f " + RECORD, check=False)


# -- section 5, ahead of time ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gitlab():
    with GitLabStandIn(access_token=ACCESS_TOKEN) as standin:
        yield standin


def test_a_runner_whose_config_toml_breaks_a_declared_job_control_fails_naming_runner_and_control(
        converged, berth, testbed, gitlab, tmp_path):
    hardened = tmp_path / "hardened.yml"
    hardened.write_text(yaml.safe_dump({
        "gitlab_runners": [{"name": "cis-socket", "url": gitlab.url, "mode": "socket", "runner_type": "instance_type"},
                           {"name": "cis-dind", "url": gitlab.url, "mode": "dind", "privileged_form": "capabilities",
                            "runner_type": "instance_type"}],
        "gitlab_runner_job_memory": "2g", "gitlab_runner_job_no_new_privileges": True}))
    env = {"GITLAB_TOKEN": ACCESS_TOKEN}
    try:
        run = berth("setup-runner", "--host", "r1", "-e", f"@{hardened}", env=env)
        assert run.code == 0, run.output
        runners = {r["name"]: r["docker"] for r in tomllib.loads(testbed.exec("r1", "cat", CONFIG).stdout)["runners"]}
        assert runners["cis-socket"]["memory"] == "2g"                       # the role wrote the declared hardening
        assert runners["cis-socket"]["security_opt"] == ["no-new-privileges:true"]
        assert runners["cis-dind"]["security_opt"][-1] == "no-new-privileges:true"

        run = berth("verify", "--limit", "r1", "-e", f"@{hardened}")
        assert_all_pass(run, ["r1"], risks=None)
        checks = {c["id"]: c for c in run.host("r1")["checks"]}
        assert {f"gitlab_runner/job_containers[{c[0]}]" for c in CONTROLS} <= set(checks)
        # Per runner, by mode: the socket mount of the socket runner, the testbed's capability form of dind.
        assert "runner cis-socket: cis-socket job: mounts docker.sock" in checks["gitlab_runner/job_containers[5.32]"][
            "message"]
        assert "runner cis-dind" not in checks["gitlab_runner/job_containers[5.32]"]["message"]
        assert "mode dind, privileged_form capabilities" in checks["gitlab_runner/job_containers[5.4]"]["message"]
        assert checks["gitlab_runner/job_containers[5.11]"]["status"] == "risk"       # services: not declared
        assert "cis-socket job" not in checks["gitlab_runner/job_containers[5.11]"]["message"]

        # Behind berth's back: the socket runner loses its memory limit.
        testbed.exec("r1", "sed", "-i", '/memory = "2g"/d', CONFIG)
        run = berth("verify", "--limit", "r1", "-e", f"@{hardened}")
        assert run.code == 2, run.output
        assert problems(run, "r1") == {"gitlab_runner/job_containers[5.11]": "failed",
                                       "gitlab_runner/declared_runners_have_their_modes_exact_settings": "failed"}
        assert message(run, "r1", "gitlab_runner/job_containers[5.11]").startswith(
            "runner cis-socket: cis-socket job: has no memory limit, but the inventory declares "
            "gitlab_runner_job_memory")
        assert "gitlab_runner/job_containers[5.11] [CIS 5.11]: FAIL: runner cis-socket" in run.err

        assert berth("setup-runner", "--host", "r1", "-e", f"@{hardened}", env=env).code == 0
        assert_all_pass(berth("verify", "--limit", "r1", "-e", f"@{hardened}"), ["r1"], risks=None)
    finally:
        for name in ("cis-socket", "cis-dind"):
            berth("runner.remove", "--host", "r1", "--name", name, "--delete", env=env)


# -- converge repairs what verify reports ------------------------------------------------------------------------
# (what is broken behind berth's back, the check that must fail)
REPAIRABLE = [
    ("chmod 0666 /lib/systemd/system/docker.service", "docker_engine/file[docker.service]"),
    ("chown root:daemon /lib/systemd/system/docker.socket", "docker_engine/file[docker.socket]"),
    ("chmod 0666 /var/run/docker.sock", "docker_engine/file[docker.sock]"),
    ("chmod 0666 /run/containerd/containerd.sock", "docker_engine/file[containerd.sock]"),
    ("chmod 0664 /etc/default/docker", "docker_engine/file[etc-default-docker]"),
    ("chmod 0777 /etc/docker", "docker_engine/file[etc-docker]"),
    ("chmod 0600 /etc/docker/daemon.json", "docker_engine/file[daemon.json]"),
    ("chmod 0644 /etc/docker/tls/key.pem", "docker_tls/tls_file[key.pem]"),
    ("chmod 0666 /etc/docker/tls/ca.pem", "docker_tls/tls_file[ca.pem]"),
    ("chown daemon /etc/docker/tls/cert.pem", "docker_tls/tls_file[cert.pem]"),
    ("useradd -M cisdrift && gpasswd -a cisdrift docker && mkdir -p /var/lib/berth && echo cisdrift > " + RECORD,
     "docker_engine/docker_group_members"),
    ("systemctl disable docker.service", "docker_engine/service_enabled"),
]


def test_every_repairable_drift_is_repaired_by_one_converge(converged, berth, testbed):
    for command, _ in REPAIRABLE:
        testbed.exec("r4", "sh", "-c", command)
    try:
        run = berth("verify", "--limit", "r4")
        assert run.code == 2, run.output
        assert set(problems(run, "r4")) == {check for _, check in REPAIRABLE}
        repair = berth("setup-runner", "--limit", "r4")
        assert repair.code == 0, repair.output
        assert_all_pass(berth("verify", "--limit", "r4"), ["r4"])
        # Modes only: the vendor unit's content is the package's, untouched.
        dpkg = testbed.exec("r4", "dpkg", "--verify", "docker.io", check=False).stdout
        assert "docker.service" not in dpkg and "docker.socket" not in dpkg
    finally:
        testbed.exec("r4", "sh", "-c", "userdel cisdrift", check=False)


def test_a_certs_d_drift_says_the_manual_step(converged, berth, testbed):
    testbed.exec("r3", "sh", "-c", "mkdir -p /etc/docker/certs.d/reg.example && "
                                   "echo x > /etc/docker/certs.d/reg.example/ca.crt && chmod 0666 "
                                   "/etc/docker/certs.d/reg.example/ca.crt")
    try:
        run = berth("verify", "--limit", "r3")
        assert problems(run, "r3") == {"docker_engine/file[certs.d]": "failed"}
        path = "/etc/docker/certs.d/reg.example/ca.crt"
        wanted = f"run chown root:root {path}; chmod 444 {path}"
        assert message(run, "r3", "docker_engine/file[certs.d]").endswith(wanted)
    finally:
        testbed.exec("r3", "rm", "-rf", "/etc/docker/certs.d/reg.example")


# -- 1.1.3-1.1.18 ---------------------------------------------------------------------------------------------
AUDIT = ["docker_engine", "docker_tls", "docker_audit"]


def test_audit_rules_on_a_container_host_are_rendered_parsed_and_reported_as_not_loadable(converged, berth, testbed):
    """The testbed's hosts are containers: the kernel refuses their audit requests (kernel/audit.c
    audit_netlink_ok: only the initial PID namespace), so the rules cannot be loaded here. What can be tested is
    tested: the role's rules file, auditctl's parsing of every line, and verify's report of both."""
    roles = extra(berth_roles=AUDIT)
    try:
        run = berth("setup-runner", "--limit", "r3", "-e", roles)
        assert run.code == 2, run.output                         # auditd cannot start in a container
        assert "auditd" in run.host("r3")["error"]
        rules = testbed.exec("r3", "cat", "/etc/audit/rules.d/berth-docker.rules").stdout.splitlines()
        assert "-w /usr/sbin/dockerd -p rwxa -k docker" in rules and len([r for r in rules if r[:1] == "-"]) == 15
        # auditctl parses every line up to sending it; the kernel then refuses it (EPERM), and only that.
        testbed.exec("r3", "sh", "-c", "(echo -i; cat /etc/audit/rules.d/berth-docker.rules) > /tmp/cis.rules")
        parsed = testbed.exec("r3", "auditctl", "-R", "/tmp/cis.rules", check=False)
        lines = [x for x in parsed.stderr.splitlines() + parsed.stdout.splitlines() if not x.startswith("There was")]
        assert lines == ["Error sending add rule data request (Operation not permitted)"] * 15, parsed
        # ... and a broken line is told apart (the parse test can fail).
        testbed.exec("r3", "sh", "-c", "(cat /tmp/cis.rules; echo '-a exit,alwayz -F path=/etc/docker') "
                                       "> /tmp/bad.rules")
        bad = testbed.exec("r3", "auditctl", "-R", "/tmp/bad.rules", check=False)
        assert "bad keyword" in bad.stderr + bad.stdout

        run = berth("verify", "--limit", "r3", "-e", roles)
        checks = {c["id"]: c for c in run.host("r3")["checks"]}
        assert not any(i.startswith("docker_engine/audit_without_role") for i in checks)
        assert checks["docker_audit/audit_rule[1.1.5]"]["status"] == "failed"
        assert "initial PID namespace" in checks["docker_audit/audit_rule[1.1.5]"]["message"]
        assert checks["docker_audit/audit_rule[1.1.13]"]["status"] == "passed"     # no /etc/sysconfig here

        # A missing rule: verify names the rule missing from the file, for that control only.
        testbed.exec("r3", "sed", "-i", "\\#/var/lib/docker#d", "/etc/audit/rules.d/berth-docker.rules")
        run = berth("verify", "--limit", "r3", "-e", roles)
        assert message(run, "r3", "docker_audit/audit_rule[1.1.5]").startswith(
            "no rule for /var/lib/docker in /etc/audit/rules.d/berth-docker.rules (want `-w /var/lib/docker -p wa -k "
            "docker`): converge writes it")
        assert "no rule for" not in message(run, "r3", "docker_audit/audit_rule[1.1.6]")
        berth("setup-runner", "--limit", "r3", "-e", roles)
        assert "-w /var/lib/docker -p wa -k docker" in testbed.exec("r3", "cat",
                                                                   "/etc/audit/rules.d/berth-docker.rules").stdout

        # Without the role, the same controls are accepted risks, named.
        run = berth("verify", "--limit", "r3")
        assert "no audit rule for /var/lib/docker: the host does not have role docker_audit" in message(
            run, "r3", "docker_engine/audit_without_role[1.1.5]")
    finally:
        # Nothing reached the machine's kernel (every request was refused); the host gets its packages back.
        testbed.exec("r3", "sh", "-c", "apt-get purge -y -qq auditd >/dev/null; rm -rf /etc/audit /tmp/cis.rules "
                                       "/tmp/bad.rules", check=False)

