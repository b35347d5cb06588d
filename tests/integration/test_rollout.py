"""invoke rollout against the testbed: batches and the failure budget, drains around job containers (also
where live-restore would keep them), shards, and a broken daemon config that stops the rollout."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from berth.engine.resources import JOB_LABEL
from tests.conftest import HOSTS, ROOT

JOB_IMAGE = "berth-job:local"
# The testbed has no registry: the job image is /usr/bin/sleep and its libraries, imported on r1.
IMPORT_JOB_IMAGE = (
    'set -e; cd /; files="usr/bin/sleep $(ldd /usr/bin/sleep | grep -o "/[^ ]*" | sed "s#^/##")"; '
    f"tar -ch $files 2>/dev/null | docker import - {JOB_IMAGE} >/dev/null"
)
DNS_CHANGE = '{"docker_daemon_options": {"userland-proxy": true, "dns": ["192.0.2.53"]}}'   # a restart
INSECURE_REGISTRIES = ["172.16.0.0/12", "192.168.0.0/16"]     # inventory/group_vars/runners.yml
LOG_LEVEL_CHANGE = '{"docker_daemon_options": {"userland-proxy": true, "log-level": "warn"}}'  # a restart too


def hosts_of(run) -> dict[str, dict]:
    return {h["host"]: h for h in run.report["hosts"]}


def stop_settings(testbed) -> dict[str, str]:
    """How systemd stops r1's runner: its KillSignal (a number) and TimeoutStopUSec."""
    out = testbed.exec("r1", "systemctl", "show", "-p", "KillSignal,TimeoutStopUSec", "gitlab-runner").stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def sha256_on(testbed, host: str, path: str) -> str:
    return hashlib.sha256(testbed.exec(host, "cat", path).stdout.encode()).hexdigest()


def systemd(testbed, host: str, prop: str, unit: str) -> str:
    return testbed.exec(host, "systemctl", "show", "-p", prop, "--value", unit).stdout.strip()


@pytest.fixture(autouse=True)
def no_ci_shard(monkeypatch):
    """These tests may themselves run in a GitLab parallel: job; its variables would shard every rollout."""
    monkeypatch.delenv("CI_NODE_INDEX", raising=False)
    monkeypatch.delenv("CI_NODE_TOTAL", raising=False)


@pytest.fixture(scope="module")
def job_image(first_converge, testbed) -> str:
    testbed.exec("r1", "sh", "-c", IMPORT_JOB_IMAGE)
    return JOB_IMAGE


@pytest.fixture
def start_job(job_image, testbed):
    """Start a "CI job" on r1: a container with gitlab-runner's labels, removed after the test."""
    started: list[str] = []

    def start(seconds: int) -> str:
        cid = testbed.exec("r1", "docker", "run", "-d", "--network", "none", "--label", f"{JOB_LABEL}=1",
                           "--label", "com.gitlab.gitlab-runner.type=build", job_image, "/usr/bin/sleep",
                           str(seconds)).stdout.strip()
        started.append(cid)
        return cid

    yield start
    if started:
        testbed.exec("r1", "docker", "rm", "-f", *started, check=False)


def utc(docker_time: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, cut to microseconds."""
    head, _, frac = docker_time.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def unit_started(testbed, unit: str) -> datetime:
    out = testbed.exec("r1", "systemctl", "show", "-p", "ActiveEnterTimestamp", "--value", "--timestamp=us+utc",
                       unit).stdout.strip()
    return datetime.strptime(out, "%a %Y-%m-%d %H:%M:%S.%f %Z").replace(tzinfo=UTC)


def container_state(testbed, cid: str) -> tuple[bool, int]:
    out = testbed.exec("r1", "docker", "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", cid).stdout.split()
    return out[0] == "true", int(out[1])


def test_unreachable_host_fails_alone_and_max_fail_zero_stops_the_next_batch(converged, berth, tmp_path):
    ssh_config = (ROOT / ".testbed" / "ssh_config").read_text().replace("Host r2\n", "Host r2\n  Port 2\n")
    (tmp_path / "ssh_config").write_text(ssh_config)
    unreachable = ["-e", f"berth_ssh_config={tmp_path / 'ssh_config'}"]
    run = berth("rollout", "--batch", "2", *unreachable,
                "-e", '{"docker_daemon_options": {"userland-proxy": true, "debug": true}}')
    assert run.code == 3, run.output                      # a host unreachable (README: exit codes)
    by_host = hosts_of(run)
    assert {h: r["status"] for h, r in by_host.items()} == {
        "r1": "converged", "r2": "unreachable", "r3": "converged", "r4": "converged"}
    assert [by_host[h]["batch"] for h in HOSTS] == [1, 1, 2, 2]
    assert all(by_host[h]["health"] == "ok" for h in ("r1", "r3", "r4"))
    assert "r2: connection refused at" in run.err               # the summary names it, with the reason
    assert run.report["summary"]["stopped"] is None

    run = berth("rollout", "--batch", "2", "--max-fail", "0", *unreachable,
                "-e", '{"docker_daemon_options": {"userland-proxy": true, "debug": false}}')
    assert run.code == 3, run.output
    by_host = hosts_of(run)
    assert [by_host[h]["status"] for h in HOSTS] == ["converged", "unreachable", "not started", "not started"]
    assert run.report["summary"]["batches_run"] == 1
    assert "--max-fail" in run.report["summary"]["stopped"]
    assert "stopping before batch 2" in run.err


def test_restart_waits_for_the_running_job(converged, berth, testbed, start_job):
    # r1 runs gitlab-runner (role gitlab_runner; the test stand-in acts on SIGQUIT as the runner does).
    assert systemd(testbed, "r1", "ActiveState", "gitlab-runner") == "active"
    since = testbed.exec("r1", "date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    job = start_job(6)
    run = berth("rollout", "--limit", "r1", "-e", DNS_CHANGE)
    assert run.code == 0, run.output
    r1 = hosts_of(run)["r1"]
    assert r1["status"] == "converged" and r1["handlers"] == ["restart docker"]
    # The job ran to its end (exit 0) and only then did dockerd restart.
    assert container_state(testbed, job) == (False, 0)
    finished = testbed.exec("r1", "docker", "inspect", "-f", "{{.State.FinishedAt}}", job).stdout.strip()
    assert utc(finished) < unit_started(testbed, "docker")
    assert r1["drain"]["jobs"] == 1 and r1["drain"]["waited"] >= 2 and r1["drain"]["runner"] == "resumed"
    # The runner got SIGQUIT (its graceful stop), and was started again only after dockerd's restart.
    journal = testbed.exec("r1", "journalctl", "-u", "gitlab-runner", "--since", since, "-o", "cat",
                           "--no-pager").stdout
    assert "graceful (SIGQUIT)" in journal and "All jobs finished" in journal
    assert systemd(testbed, "r1", "ActiveState", "gitlab-runner") == "active"
    assert unit_started(testbed, "gitlab-runner") > unit_started(testbed, "docker")
    # Its unit stops gracefully already (role gitlab_runner's berth-kill.conf): the drain added no runtime drop-in.
    assert stop_settings(testbed) == {"KillSignal": "3", "TimeoutStopUSec": "infinity"}
    assert testbed.exec("r1", "ls", "/run/systemd/system/gitlab-runner.service.d/", check=False).stdout == ""


def test_a_runner_whose_unit_would_abort_its_jobs_is_stopped_gracefully_all_the_same(converged, berth, testbed,
                                                                                      start_job):
    # Without role gitlab_runner's berth-kill.conf, the packaged unit stops the runner with SIGTERM, which aborts
    # its jobs (gitlab-runner commands/multi.go): the drain puts a runtime drop-in first, and removes it after.
    testbed.exec("r1", "sh", "-c", "rm /etc/systemd/system/gitlab-runner.service.d/berth-kill.conf && "
                 "systemctl daemon-reload")
    assert stop_settings(testbed) == {"KillSignal": "15", "TimeoutStopUSec": "1min 30s"}
    since = testbed.exec("r1", "date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    job = start_job(6)
    run = berth("rollout", "--limit", "r1", "-e", LOG_LEVEL_CHANGE)
    assert run.code == 0, run.output
    r1 = hosts_of(run)["r1"]
    assert r1["status"] == "converged" and "restart docker" in r1["handlers"]
    assert r1["drain"]["jobs"] == 1 and r1["drain"]["runner"] == "resumed"
    assert container_state(testbed, job) == (False, 0)
    journal = testbed.exec("r1", "journalctl", "-u", "gitlab-runner", "--since", since, "-o", "cat",
                           "--no-pager").stdout
    assert "graceful (SIGQUIT)" in journal and "All jobs finished" in journal
    assert testbed.exec("r1", "ls", "/run/systemd/system/gitlab-runner.service.d/").stdout == ""
    assert stop_settings(testbed) == {"KillSignal": "3", "TimeoutStopUSec": "infinity"}    # berth-kill.conf back


def test_drain_timeout_leaves_the_host_unchanged_and_the_job_running(converged, berth, testbed, start_job):
    job = start_job(300)
    daemon_json = sha256_on(testbed, "r1", "/etc/docker/daemon.json")
    pid = systemd(testbed, "r1", "MainPID", "docker")
    run = berth("rollout", "--limit", "r1", "--drain-timeout", "3", "-e", DNS_CHANGE)
    assert run.code == 2, run.output
    r1 = hosts_of(run)["r1"]
    assert r1["status"] == "failed" and r1["handlers"] == []
    assert "drain timed out after 3s: 1 job container(s) still running" in r1["error"]
    assert "nothing was changed" in r1["error"]
    assert sha256_on(testbed, "r1", "/etc/docker/daemon.json") == daemon_json
    assert systemd(testbed, "r1", "MainPID", "docker") == pid
    assert container_state(testbed, job) == (True, 0)

    # --force does not wait, and says so. The runner is still finishing its job (its graceful stop):
    # the converge queues its start rather than waiting for that job.
    run = berth("rollout", "--limit", "r1", "--force", "-e", DNS_CHANGE)
    assert run.code == 0, run.output
    assert "--force" in run.err
    assert hosts_of(run)["r1"]["drain"]["forced"] is True
    assert "--force: 1 job(s) running" in run.err
    assert hosts_of(run)["r1"]["seconds"] < 60


def test_a_restart_live_restore_would_keep_containers_across_still_waits_for_the_running_job(
        converged, berth, testbed, start_job):
    # live-restore is on before and after, and log-level is neither reloadable nor networking: the container
    # would survive this restart, but not its job (gitlab-runner's attach stream ends with dockerd: executors/
    # docker/internal/exec/exec.go), so berth waits for it as for any restart.
    assert '"live-restore": true' in testbed.exec("r1", "cat", "/etc/docker/daemon.json").stdout
    job = start_job(6)
    run = berth("rollout", "--limit", "r1", "-e", LOG_LEVEL_CHANGE)
    assert run.code == 0, run.output
    r1 = hosts_of(run)["r1"]
    assert r1["status"] == "converged" and r1["handlers"] == ["restart docker"]
    assert r1["drain"]["jobs"] == 1 and r1["drain"]["waited"] >= 2 and r1["drain"]["runner"] == "resumed"
    assert container_state(testbed, job) == (False, 0)
    finished = testbed.exec("r1", "docker", "inspect", "-f", "{{.State.FinishedAt}}", job).stdout.strip()
    assert utc(finished) < unit_started(testbed, "docker")
    assert systemd(testbed, "r1", "ActiveState", "gitlab-runner") == "active"


def test_reload_does_not_drain_and_docker_restart_drains_false_restarts_at_once(converged, berth, testbed,
                                                                                 start_job):
    job = start_job(300)
    job_pid = testbed.exec("r1", "docker", "inspect", "-f", "{{.State.Pid}}", job).stdout
    dockerd = systemd(testbed, "r1", "MainPID", "docker")
    # labels are reloadable, and the inventory's insecure-registries stay (removing them would need a restart:
    # moby daemon/reload.go only sets what the new file contains).
    # (--drain-timeout: were this drained, the run would fail in seconds, not wait for the job.)
    run = berth("rollout", "--limit", "r1", "--drain-timeout", "5", "-e",
                '{"docker_daemon_options": {"userland-proxy": true, "labels": ["berth-test=1"], '
                f'"insecure-registries": {json.dumps(INSECURE_REGISTRIES)}}}}}')
    assert run.code == 0, run.output
    r1 = hosts_of(run)["r1"]
    assert r1["handlers"] == ["reload docker"] and r1["drain"] is None
    assert systemd(testbed, "r1", "MainPID", "docker") == dockerd
    labels = testbed.exec("r1", "docker", "info", "--format", "{{json .Labels}}").stdout
    assert "berth-test=1" in labels
    assert container_state(testbed, job) == (True, 0)
    # Opted out: the restart goes ahead at once, and live-restore keeps the container (not its job, on a real
    # runner: the cost docker_restart_drains documents).
    run = berth("rollout", "--limit", "r1", "--drain-timeout", "5", "-e",
                '{"docker_restart_drains": false, "docker_daemon_options": {"userland-proxy": true, '
                '"log-level": "warn"}}')
    assert run.code == 0, run.output
    r1 = hosts_of(run)["r1"]
    assert r1["handlers"] == ["restart docker"] and r1["drain"] is None
    assert systemd(testbed, "r1", "MainPID", "docker") != dockerd
    assert container_state(testbed, job) == (True, 0)
    assert testbed.exec("r1", "docker", "inspect", "-f", "{{.State.Pid}}", job).stdout == job_pid


def test_shards_cover_every_host_exactly_once(converged, berth):
    shards = []
    for i in (1, 2, 3):
        run = berth("rollout", "--check", "--shard", f"{i}/3")
        assert run.code == 0, run.output
        assert run.report["summary"]["shard"] == f"{i}/3"
        shards.append({h["host"] for h in run.report["hosts"]})
    assert sorted(h for shard in shards for h in shard) == HOSTS
    # A GitLab parallel: job gets the same shard from its variables.
    run = berth("rollout", "--check", env={"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3"})
    assert run.code == 0, run.output
    assert {h["host"] for h in run.report["hosts"]} == shards[1]


def test_config_that_breaks_dockerd_stops_the_rollout_and_is_rolled_back(converged, berth, testbed):
    before = {h: sha256_on(testbed, h, "/etc/docker/daemon.json") for h in HOSTS}
    # dockerd refuses an unknown log level at once (an unknown log driver costs it 15 s of plugin lookups).
    run = berth("rollout", "--batch", "1", "-e", "docker_health_timeout=8", "-e",
                '{"docker_daemon_options": {"userland-proxy": true, "log-level": "bogus"}}')
    assert run.code == 2, run.output
    by_host = hosts_of(run)
    assert [by_host[h]["status"] for h in HOSTS] == ["failed", "not started", "not started", "not started"]
    assert "restart docker" in by_host["r1"]["error"] and "restored" in by_host["r1"]["error"]
    assert "every host of the batch failed" in run.report["summary"]["stopped"]
    # r1 runs its previous configuration again; the others were never touched.
    assert {h: sha256_on(testbed, h, "/etc/docker/daemon.json") for h in HOSTS} == before
    assert testbed.exec("r1", "systemctl", "is-active", "docker").stdout.strip() == "active"
    assert testbed.exec("r1", "docker", "info", "--format", "{{json .LoggingDriver}}").stdout.strip() == '"json-file"'


def test_a_key_dockerd_20_10_does_not_know_is_a_warning_and_its_refusal_is_rolled_back(converged, berth, testbed):
    # The testbed's dockerd is Debian 12's 20.10, which has no --validate: berth's key table warns (proxies is
    # from Docker 23), and dockerd itself refuses the file at the restart (moby v20.10.24 daemon/config/config.go
    # findConfigurationConflicts: the unknown nested keys of "proxies"), which the health check rolls back.
    assert testbed.exec("r1", "dockerd", "--version").stdout.startswith("Docker version 20.10.")
    before = sha256_on(testbed, "r1", "/etc/docker/daemon.json")
    run = berth("rollout", "--limit", "r1", "-e", "docker_health_timeout=8", "-e",
                '{"docker_daemon_options": {"userland-proxy": true, "proxies": {"http-proxy": "http://192.0.2.1:3128"}}}')
    assert run.code == 2, run.output
    r1 = hosts_of(run)["r1"]
    assert any("key 'proxies' (dockerd 23.0+) unknown to dockerd 20.10" in n for n in r1["notes"]), r1["notes"]
    assert "r1: WARNING: /etc/docker/daemon.json: key 'proxies'" in " ".join(run.output.split())
    assert r1["status"] == "failed" and "don't match any configuration option" in r1["error"]
    assert "restored" in r1["error"]
    assert sha256_on(testbed, "r1", "/etc/docker/daemon.json") == before
    assert testbed.exec("r1", "systemctl", "is-active", "docker").stdout.strip() == "active"
