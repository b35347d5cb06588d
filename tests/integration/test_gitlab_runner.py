"""gitlab-runner on r1 and r2: registration through the GitLab API stand-in, config.toml merged, modes exact.

The gitlab-runner binary on the hosts is the test stand-in (tests/standins/gitlab_runner), installed
through berth's local-debs path; GitLab's API is the stand-in HTTP server on loopback.
"""

from __future__ import annotations

import hashlib
import re
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from berth.gitlab.runner_config import docker_settings, parse_runners
from tests.standins.gitlab_api import GitLabStandIn

MARKER = "BERTHMARKER"                     # in every token the tests hand to berth
ACCESS_TOKEN = f"glpat-{MARKER}-access-token"
CONFIG = "/etc/gitlab-runner/config.toml"
SYSTEM_ID_FILE = "/etc/gitlab-runner/.runner_system_id"
STANDIN_DEB = ".testbed/standins/gitlab-runner-standin.deb"


@pytest.fixture(scope="module")
def gitlab():
    with GitLabStandIn(access_token=ACCESS_TOKEN) as standin:
        yield standin


@pytest.fixture(scope="module")
def socket_token(gitlab) -> str:
    return gitlab.add_runner(token=f"glrt-{MARKER}-socket-runner").token


def runners_file(tmp: Path, name: str, runners: list[dict]) -> Path:
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump({"gitlab_runners": runners}))
    return path


def two_runners(url: str) -> list[dict]:
    return [
        {"name": "build-dind", "url": url, "mode": "dind", "privileged_form": "capabilities",
         "runner_type": "instance_type", "tag_list": ["docker", "dind"], "run_untagged": False},
        {"name": "build-socket", "url": url, "mode": "socket", "token_env": "BERTH_TEST_SOCKET_TOKEN"},
    ]


def config_on(testbed, host: str = "r1") -> str:
    return testbed.exec(host, "cat", CONFIG).stdout


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def registered(converged, berth, gitlab, socket_token, tmp_path):
    """r1 with a dind and a socket runner, registered through the API."""
    vars_file = runners_file(tmp_path, "two", two_runners(gitlab.url))
    env = {"GITLAB_TOKEN": ACCESS_TOKEN, "BERTH_TEST_SOCKET_TOKEN": socket_token}
    run = berth("setup-runner", "--host", "r1", "--diff", "-e", f"@{vars_file}", env=env)   # diffs hold tokens
    assert run.code == 0, run.output
    if 'token = "' in run.err:                 # the config.toml diff showed a token line: masked
        assert 'token = "***"' in run.err
    assert socket_token not in run.err
    return vars_file, env, run


def test_runners_registered_with_exactly_their_modes_settings(registered, testbed, gitlab):
    vars_file, _, run = registered
    config = tomllib.loads(config_on(testbed))
    by_name = {r["name"]: r for r in config["runners"]}
    specs, _ = parse_runners(yaml.safe_load(vars_file.read_text())["gitlab_runners"], "test")
    for spec in specs:
        assert by_name[spec.name]["docker"] == docker_settings(spec), spec.name
        assert by_name[spec.name]["token"].startswith("glrt-")
    assert "privileged" in by_name["build-dind"]["docker"] and not by_name["build-dind"]["docker"]["privileged"]
    assert by_name["build-dind"]["docker"]["cap_add"] == ["ALL"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in by_name["build-socket"]["docker"]["volumes"]
    assert "/certs/client" not in by_name["build-socket"]["docker"]["volumes"]
    created = [r for r in gitlab.created if r.form.get("description") or r.form.get("runner_type")]
    assert any(r.form.get("tag_list") == "docker,dind" for r in created)
    stat = testbed.exec("r1", "stat", "-c", "%a %U", CONFIG, "/etc/gitlab-runner").stdout.split("\n")
    assert stat[:2] == ["600 root", "700 root"]
    assert "KillSignal=SIGQUIT" in testbed.exec(
        "r1", "cat", "/etc/systemd/system/gitlab-runner.service.d/berth-kill.conf").stdout
    assert testbed.exec("r1", "systemctl", "is-active", "gitlab-runner").stdout.strip() == "active"
    assert "reload gitlab-runner" in run.host("r1")["handlers"]


def test_hand_edits_survive_and_a_second_run_registers_nothing(registered, berth, testbed, gitlab):
    vars_file, env, _ = registered
    hand = '\n[[runners]]\n  name = "added-by-hand"\n  url = "https://gitlab.example.com"\n  executor = "shell"\n'
    testbed.exec("r1", "sh", "-c", f"printf '%s' '{hand}' >> {CONFIG}")
    config = tomllib.loads(config_on(testbed))
    old = next(r for r in config["runners"] if r["name"] == "build-socket")["token"]
    testbed.exec("r1", "sed", "-i", f"s/{old}/glrt-{MARKER}-rotated-by-the-runner/", CONFIG)
    creates = len(gitlab.created)
    run = berth("setup-runner", "--host", "r1", "-e", f"@{vars_file}", env=env)
    assert run.code == 0, run.output
    assert run.host("r1")["changed"] == 0 and run.host("r1")["handlers"] == []
    assert len(gitlab.created) == creates
    after = tomllib.loads(config_on(testbed))
    assert "added-by-hand" in [r["name"] for r in after["runners"]]
    assert next(r for r in after["runners"] if r["name"] == "build-socket")["token"] == \
        f"glrt-{MARKER}-rotated-by-the-runner"


def test_changing_concurrent_changes_that_key_only_and_restarts_nothing(registered, berth, testbed):
    vars_file, env, _ = registered
    before = config_on(testbed)
    pid = testbed.exec("r1", "systemctl", "show", "-p", "MainPID", "--value", "gitlab-runner").stdout
    run = berth("setup-runner", "--host", "r1", "-e", f"@{vars_file}", "-e", "gitlab_runner_concurrent=7", env=env)
    assert run.code == 0, run.output
    after = config_on(testbed)
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [("concurrent = 2", "concurrent = 7")]
    assert run.host("r1")["handlers"] == ["reload gitlab-runner"]
    assert testbed.exec("r1", "systemctl", "show", "-p", "MainPID", "--value", "gitlab-runner").stdout == pid


@pytest.mark.parametrize(("runner", "message"), [
    ({"mode": "dind", "volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}, "mounts the host's Docker socket"),
    ({"mode": "socket", "services": ["docker:27.5-dind"]}, "a dind service (docker:27.5-dind) on a socket runner"),
    ({"mode": "remote"}, "mode remote needs remote_host"),
])
def test_contradictory_runners_are_errors_naming_runner_and_file(first_converge, berth, tmp_path, runner, message):
    vars_file = runners_file(tmp_path, "bad", [{"name": "contradiction", "url": "https://gitlab.example.com",
                                                "token_env": "X", **runner}])
    run = berth("setup-runner", "--host", "r1", "-e", f"@{vars_file}")
    assert run.code == 4, run.output
    assert message in run.err and "contradiction" in run.err and "bad.yml" in run.err


@pytest.mark.parametrize("failure", ["401", "403", "410", "timeout"])
def test_api_failures_leave_config_untouched(registered, berth, testbed, gitlab, tmp_path, failure):
    _, env, _ = registered
    before = sha(config_on(testbed))
    runner = {"name": f"new-{failure}", "url": gitlab.url, "mode": "socket"}
    extra = []
    env = dict(env)
    if failure == "401":
        runner.update(runner_type="instance_type")
        env["GITLAB_TOKEN"] = f"glpat-{MARKER}-wrong"
        expected = "refused the access token (401)"
    elif failure == "403":
        runner["token_env"] = "NEW_TOKEN"
        env["NEW_TOKEN"] = f"glrt-{MARKER}-unknown-to-gitlab"
        expected = "403"
    elif failure == "410":
        runner["token_env"] = "NEW_TOKEN"
        env["NEW_TOKEN"] = f"GR1348941{MARKER}legacy"
        expected = "legacy registration tokens are disabled"
    else:
        slow = GitLabStandIn(access_token=ACCESS_TOKEN, delay=3).start()
        runner.update(url=slow.url, runner_type="instance_type")
        extra = ["-e", "gitlab_runner_api_timeout=1"]
        expected = "did not answer within 1"
    try:
        vars_file = runners_file(tmp_path, "failing", [*two_runners(gitlab.url), runner])
        run = berth("setup-runner", "--host", "r1", "-e", f"@{vars_file}", *extra, env=env)
    finally:
        if failure == "timeout":
            slow.stop()
    assert run.code == 2, run.output
    assert expected in run.err and "config.toml left as it was" in run.err
    assert sha(config_on(testbed)) == before


def test_runner_remove_leaves_the_other_runners_byte_identical(registered, berth, testbed, gitlab):
    before = config_on(testbed)
    dind = tomllib.loads(before)["runners"][0]
    assert dind["name"] == "build-dind"
    run = berth("runner.remove", "--host", "r1", "--name", "build-dind", "--delete")
    assert run.code == 0, run.output
    after = config_on(testbed)
    start = before.index("[[runners]]")
    end = before.index("[[runners]]", start + 1)
    assert after == before[:start] + before[end:]
    assert gitlab.runner_by_token(dind["token"]) is None     # deleted in GitLab
    missing = berth("runner.remove", "--host", "r1", "--name", "build-dind")
    assert missing.code == 4 and "no runner 'build-dind'" in missing.err


def test_remote_runner_jobs_reach_r1_with_a_client_key_made_on_r2(converged, berth, testbed, gitlab, tmp_path):
    token = gitlab.add_runner(token=f"glrt-{MARKER}-remote-runner").token
    vars_file = runners_file(tmp_path, "remote", [{"name": "to-r1", "url": gitlab.url, "mode": "remote",
                                                   "remote_host": "tcp://r1:2376", "token_env": "REMOTE_TOKEN"}])
    run = berth("setup-runner", "--host", "r2", "-e", f"@{vars_file}", env={"REMOTE_TOKEN": token})
    assert run.code == 0, run.output
    certs = "/etc/gitlab-runner/certs/to-r1"
    stat = testbed.exec("r2", "stat", "-c", "%n %a", f"{certs}/key.pem", f"{certs}/cert.pem").stdout.split("\n")
    assert stat[:2] == [f"{certs}/key.pem 400", f"{certs}/cert.pem 444"]
    runner = next(r for r in tomllib.loads(config_on(testbed, "r2"))["runners"] if r["name"] == "to-r1")
    assert set(runner["environment"]) >= {"DOCKER_HOST=tcp://r1:2376", "DOCKER_TLS_VERIFY=1",
                                          "DOCKER_CERT_PATH=/certs/client"}
    assert f"{certs}:/certs/client:ro" in runner["docker"]["volumes"]
    # What a job's docker CLI does with those variables and the mounted folder:
    version = testbed.exec("r2", "env", "DOCKER_HOST=tcp://r1:2376", "DOCKER_TLS_VERIFY=1", f"DOCKER_CERT_PATH={certs}",
                           "docker", "version", "--format", "{{.Server.Version}}", check=False)
    assert version.returncode == 0, version.stdout + version.stderr


def test_verify_catches_runner_drift_and_a_converge_repairs_it(registered, berth, testbed):
    vars_file, env, _ = registered
    check = "gitlab_runner/declared_runners_have_their_modes_exact_settings"

    def verify() -> dict[str, dict]:
        run = berth("verify", "--limit", "r1", "-e", f"@{vars_file}")
        return {c["id"]: c for c in run.host("r1")["checks"]} | {"exit": {"status": run.code}}

    assert verify()[check]["status"] == "passed"
    # A privileged flag flipped and the host's socket added to the dind runner, by hand.
    testbed.exec("r1", "python3", "-c", f"""
import re
p = "{CONFIG}"
s = open(p).read()
head, sep, rest = s.partition('name = "build-dind"')
rest = rest.replace("privileged = false", "privileged = true", 1)
rest = rest.replace('"/certs/client"', '"/certs/client", "/var/run/docker.sock:/var/run/docker.sock"', 1)
open(p, "w").write(head + sep + rest)
""")
    broken = verify()
    assert broken["exit"]["status"] == 2
    assert broken[check]["status"] == "failed"
    assert "build-dind (dind)" in broken[check]["message"] and "privileged=True" in broken[check]["message"]
    others = {k: v for k, v in broken.items() if k not in (check, "exit")}
    # The socket mount also breaks the section 5 controls judged for build-dind's job containers (CIS 5.31...);
    # nothing about another runner or the daemon fails.
    failed = {k: v.get("message", "") for k, v in others.items() if v["status"] not in ("passed", "risk")}
    assert all("build-dind" in message for message in failed.values()), failed
    repair = berth("setup-runner", "--host", "r1", "-e", f"@{vars_file}", env=env)
    assert repair.code == 0 and repair.host("r1")["changed"] == 1, repair.output
    assert verify()[check]["status"] == "passed"


def runner_pid(testbed, host: str = "r1") -> str:
    return testbed.exec(host, "systemctl", "show", "-p", "MainPID", "--value", "gitlab-runner").stdout.strip()


def ids_the_runner_used(testbed, host: str) -> set[str]:
    """The system IDs gitlab-runner processes on the host have run with (the stand-in logs it at start)."""
    journal = testbed.exec(host, "journalctl", "-u", "gitlab-runner", "-o", "cat", "--no-pager").stdout
    return set(re.findall(r"Runner system ID in use system_id=(\S+)", journal))


def test_a_runner_installed_and_registered_in_one_converge_has_one_system_id(converged, berth, testbed, gitlab,
                                                                          tmp_path):
    """Item 11: the package's postinst starts the runner, which keeps the system ID it finds in
    .runner_system_id or makes its own. berth registers in the same converge, so it must use the very ID the
    runner runs with, or GitLab sees two runner managers for this host (berth's from /runners/verify, the
    runner's from its job requests; the stand-in runner cannot reach the GitLab stand-in, so its ID is read
    from its log). r3 has no gitlab-runner yet: it gets the role from this test's vars."""
    token = gitlab.add_runner(token=f"glrt-{MARKER}-fresh-host").token
    vars_file = tmp_path / "fresh.yml"
    vars_file.write_text(yaml.safe_dump({
        "berth_roles": ["docker_engine", "docker_tls", "gitlab_runner"],
        "gitlab_runner_install_method": "local-debs",
        "gitlab_runner_local_debs": [STANDIN_DEB],
        "gitlab_runners": [{"name": "fresh", "url": gitlab.url, "mode": "socket", "token_env": "FRESH_TOKEN"}],
    }))
    assert testbed.exec("r3", "test", "-e", "/usr/bin/gitlab-runner", check=False).returncode != 0, \
        "r3 must not have gitlab-runner yet"
    try:
        run = berth("setup-runner", "--host", "r3", "-e", f"@{vars_file}", env={"FRESH_TOKEN": token})
        assert run.code == 0, run.output
        on_disk = testbed.exec("r3", "cat", SYSTEM_ID_FILE).stdout.strip()
        assert re.fullmatch(r"[sr]_[0-9a-zA-Z]{12}", on_disk), on_disk   # the runner's own format
        deadline = time.monotonic() + 15
        while not ids_the_runner_used(testbed, "r3") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ids_the_runner_used(testbed, "r3") == {on_disk}
        assert gitlab.runner_by_token(token).managers == {on_disk}
        assert testbed.exec("r3", "systemctl", "is-active", "gitlab-runner").stdout.strip() == "active"
    finally:
        testbed.exec("r3", "sh", "-c", "apt-get purge -y -qq gitlab-runner >/dev/null 2>&1; "
                     "rm -rf /etc/gitlab-runner /etc/systemd/system/gitlab-runner.service.d; "
                     "systemctl daemon-reload; systemctl reset-failed gitlab-runner 2>/dev/null; true")


def test_listen_address_restarts_the_runner_and_other_changes_reload_it(registered, berth, testbed):
    """Item 7: gitlab-runner reads listen_address only when it starts, so berth restarts it for that key
    (gracefully: the unit stops with SIGQUIT); every other change is a SIGHUP reload of the same process."""
    vars_file, env, _ = registered
    pid = runner_pid(testbed)
    metrics = ["python3", "-c", "import urllib.request as u; "
               "print(u.urlopen('http://127.0.0.1:9252/metrics', timeout=2).read().decode())"]
    try:
        run = berth("setup-runner", "--host", "r1", "-e", f"@{vars_file}",
                    "-e", "gitlab_runner_listen_address=127.0.0.1:9252", env=env)
        assert run.code == 0, run.output
        assert run.host("r1")["handlers"] == ["restart gitlab-runner"]
        deadline = time.monotonic() + 30
        while testbed.exec("r1", *metrics, check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        answer = testbed.exec("r1", *metrics, check=False)
        assert answer.returncode == 0, answer.stdout + answer.stderr     # the new process listens there
        assert runner_pid(testbed) != pid
        system_id = testbed.exec("r1", "cat", SYSTEM_ID_FILE).stdout.strip()
        assert set(re.findall(r'system_id="([^"]+)"', answer.stdout)) == {system_id}
        pid = runner_pid(testbed)
        run = berth("setup-runner", "--host", "r1", "-e", f"@{vars_file}",
                    "-e", "gitlab_runner_listen_address=127.0.0.1:9252 gitlab_runner_concurrent=3", env=env)
        assert run.code == 0, run.output
        assert run.host("r1")["handlers"] == ["reload gitlab-runner"]
        assert runner_pid(testbed) == pid
    finally:   # null leaves the key as the file has it: take it out by hand, and restart for it
        testbed.exec("r1", "sed", "-i", "/^listen_address = /d", CONFIG)
        testbed.exec("r1", "systemctl", "restart", "gitlab-runner")
