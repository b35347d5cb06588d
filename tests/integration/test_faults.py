"""Faults on the testbed: each leaves the host fully converged or untouched, says what happened, and a re-run
converges (README, "What berth guarantees after a fault").

One host (r1: dockerd, its TLS port and the gitlab-runner stand-in) and short timeouts through variables. The long
applies are drains: a "CI job" container keeps a dockerd restart waiting (tests/integration/test_rollout.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from berth.engine.resources import JOB_LABEL
from tests.conftest import HOSTS, ROOT, Run
from tests.standins.gitlab_api import GitLabStandIn

DAEMON_JSON = "/etc/docker/daemon.json"
CONFIG_TOML = "/etc/gitlab-runner/config.toml"
JOB_IMAGE = "berth-job:local"
IMPORT_JOB_IMAGE = (   # as in test_rollout.py: the testbed has no registry, the job image is /usr/bin/sleep
    'set -e; cd /; files="usr/bin/sleep $(ldd /usr/bin/sleep | grep -o "/[^ ]*" | sed "s#^/##")"; '
    f"tar -ch $files 2>/dev/null | docker import - {JOB_IMAGE} >/dev/null"
)
INSECURE = ["172.16.0.0/12", "192.168.0.0/16"]        # inventory/group_vars/runners.yml


def options(**extra: object) -> str:
    """-e value for docker_daemon_options: the inventory's testbed options plus ``extra``."""
    return json.dumps({"docker_daemon_options": {"userland-proxy": True, "insecure-registries": INSECURE, **extra}})


RESTART = options(dns=["192.0.2.53"])                  # dns: not reloadable, so a drained restart
RELOAD = options(debug=True)                          # a reload: no drain


def sha_on(testbed, path: str) -> str:
    return hashlib.sha256(testbed.exec("r1", "cat", path).stdout.encode()).hexdigest()


def active(testbed, unit: str) -> str:
    return testbed.exec("r1", "systemctl", "is-active", unit, check=False).stdout.strip()


def pids(testbed, pattern: str) -> list[str]:
    """Processes on r1 whose command line matches ``pattern`` (grep -E), from /proc (the hosts have no procps)."""
    script = ('for d in /proc/[0-9]*; do c=$(tr "\\0" " " < $d/cmdline 2>/dev/null) || continue; '
              'printf "%s\\n" "$c" | grep -qE -- "$1" && echo ${d#/proc/}; done; true')
    return testbed.exec("r1", "sh", "-c", script, "pids", pattern).stdout.split()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}")
        time.sleep(0.3)


class Background:
    """berth as a separate process (to kill it, or to run two at once), with its JSON report; its stderr is read
    as it comes, so that a test can act on what berth says while it runs."""

    def __init__(self, tmp: Path, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.report = tmp / f"{name}.json"
        argv = [str(Path(sys.executable).parent / "invoke"), *args, "--json", str(self.report)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "COLUMNS": "200", **(env or {})})
        self.err: list[str] = []
        self._reader = threading.Thread(target=lambda: self.err.extend(self.proc.stderr or ()), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.err))

    def result(self, timeout: float = 600) -> Run:
        self.proc.wait(timeout=timeout)
        self._reader.join()
        out = self.proc.stdout.read() if self.proc.stdout else ""
        data = json.loads(self.report.read_text()) if self.report.exists() else None
        return Run(self.proc.returncode, out, "".join(self.err), data)


@pytest.fixture
def background(berth, tmp_path) -> Iterator[Callable[..., Background]]:
    started: list[Background] = []

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Background:
        run = Background(tmp_path, name, *args, "--inventory", str(ROOT / "tests/integration/inventory/hosts.yml"),
                         env={"BERTH_PKI_DIR": str(berth.pki_dir), **(env or {})})
        started.append(run)
        return run

    yield start
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


@pytest.fixture
def repaired(first_converge, berth) -> Iterator[None]:
    """r1 as the inventory declares it after the test (each test here starts from that and breaks only r1)."""
    yield
    repair = berth("setup-runner", "--host", "r1")
    assert repair.code == 0, repair.output


@pytest.fixture(scope="module")
def job_image(first_converge, testbed) -> str:
    testbed.exec("r1", "sh", "-c", IMPORT_JOB_IMAGE)
    return JOB_IMAGE


@pytest.fixture
def start_job(job_image, testbed) -> Iterator[Callable[[int], str]]:
    """A "CI job" on r1 (a container with gitlab-runner's job label): it keeps a drained restart waiting until the
    test ends it (end_job), so that the test, not the machine's speed, decides when the apply goes on."""
    started: list[str] = []

    def start(seconds: int) -> str:
        cid = testbed.exec("r1", "docker", "run", "-d", "--network", "none", "--label", f"{JOB_LABEL}=1",
                           job_image, "/usr/bin/sleep", str(seconds)).stdout.strip()
        started.append(cid)
        return cid

    yield start
    if started:
        testbed.exec("r1", "docker", "rm", "-f", *started, check=False)


def end_job(testbed, cid: str) -> None:
    testbed.exec("r1", "docker", "rm", "-f", cid)


def lock_users(testbed) -> int:
    """How many processes on r1 have the apply lock open: the apply holding it, and those waiting for it."""
    script = "for d in /proc/[0-9]*/fd; do ls -l $d 2>/dev/null | grep -q /run/berth/apply.lock && echo $d; done; true"
    return len(testbed.exec("r1", "sh", "-c", script).stdout.split())


def drain_started(testbed) -> Callable[[], bool]:
    """True once a drain has stopped r1's runner: the apply is under way and has written nothing yet."""
    return lambda: active(testbed, "gitlab-runner") in ("inactive", "deactivating", "failed")


def apply_over(testbed) -> Callable[[], bool]:
    """True once r1's apply of RESTART has ended: the new daemon.json is there and the runner runs again."""
    def over() -> bool:
        return "192.0.2.53" in testbed.exec("r1", "cat", DAEMON_JSON).stdout and \
            active(testbed, "gitlab-runner") == "active" and active(testbed, "docker") == "active"
    return over


# -- two runs, one host ------------------------------------------------------------------------------------
def test_two_converges_of_one_host_never_interleave(repaired, berth, testbed, background, start_job):
    job = start_job(600)
    first = background("first", "setup-runner", "--host", "r1", "-e", RESTART)
    wait_for("the first run's drain", drain_started(testbed))
    before = sha_on(testbed, DAEMON_JSON)
    # Both probe while the first one drains (nothing written yet); one may not wait at all, the other may.
    no_wait = background("impatient", "setup-runner", "--host", "r1", "-e", RELOAD, "-e",
                         "berth_apply_lock_timeout=0").result()
    second = background("second", "setup-runner", "--host", "r1", "-e", RELOAD)
    # Once the second's apply waits for the lock the first holds, the job ends, and the first goes on.
    wait_for("the second run's apply to wait for the lock", lambda: lock_users(testbed) == 2, timeout=180)
    end_job(testbed, job)
    one, two = first.result(), second.result()
    assert one.code == 0, one.output
    assert one.host("r1")["status"] == "changed" and one.host("r1")["handlers"] == ["restart docker"]
    # The impatient one failed at once, naming the first: who, from where, since when; it changed nothing.
    assert no_wait.code == 2, no_wait.output
    error = no_wait.host("r1")["error"]
    assert "another berth apply is running on this host: run " in error
    assert f"(controller pid {first.pid}), applying since " in error and "berth_apply_lock_timeout" in error
    assert no_wait.host("r1")["handlers"] == []
    # The second waited for the first (and said so as it waited), then found daemon.json no longer the file its
    # plan was made from: it changed nothing and names the run it waited for.
    assert two.code == 2, two.output
    assert "waiting for another berth apply on this host to end" in two.err
    error = two.host("r1")["error"]
    assert "changed since it was read: /etc/docker/daemon.json (content)" in error
    assert f"(controller pid {first.pid})" in error and error.endswith("re-run")
    assert two.host("r1")["handlers"] == []
    daemon = json.loads(testbed.exec("r1", "cat", DAEMON_JSON).stdout)
    assert daemon["dns"] == ["192.0.2.53"] and "debug" not in daemon            # the first run's, whole
    assert sha_on(testbed, DAEMON_JSON) != before
    again = berth("setup-runner", "--host", "r1", "-e", RELOAD)
    assert again.code == 0, again.output
    assert json.loads(testbed.exec("r1", "cat", DAEMON_JSON).stdout).get("debug") is True


# -- the controller's side goes away -----------------------------------------------------------------------
def test_ssh_connection_killed_mid_apply_the_apply_completes_and_a_rerun_converges(repaired, berth, testbed,
                                                                                  background, start_job):
    job = start_job(600)
    run = background("cut", "setup-runner", "--host", "r1", "-e", RESTART)
    wait_for("the drain", drain_started(testbed))
    # The session's sshd processes on the host, killed as a dropped connection would end them.
    sessions = pids(testbed, "^sshd: berth")
    assert sessions
    testbed.exec("r1", "kill", "-KILL", *sessions)
    cut = run.result()
    end_job(testbed, job)           # the apply, still running on the host, goes on
    assert cut.code == 3, cut.output
    assert "the SSH connection was lost during the apply" in cut.host("r1")["error"]
    assert "re-run" in cut.host("r1")["error"]
    wait_for("the apply to end on the host", apply_over(testbed))
    again = berth("setup-runner", "--host", "r1", "-e", RESTART)
    assert again.code == 0, again.output
    assert again.host("r1")["status"] == "ok"           # the cut-off apply had done it all


def test_controller_sigkilled_mid_apply_leaves_the_host_converged(repaired, berth, testbed, background, start_job):
    job = start_job(600)
    run = background("killed", "setup-runner", "--host", "r1", "-e", RESTART)
    wait_for("the drain", drain_started(testbed))
    os.kill(run.pid, signal.SIGKILL)
    run.proc.wait()
    end_job(testbed, job)
    wait_for("the apply to end on the host", apply_over(testbed))
    # The lock went with the agent's process, and its holder record with it.
    wait_for("the apply lock's holder record to go",
             lambda: "apply.holder" not in testbed.exec("r1", "ls", "/run/berth", check=False).stdout.split())
    again = berth("setup-runner", "--host", "r1", "-e", RESTART)
    assert again.code == 0, again.output
    assert again.host("r1")["status"] == "ok"


def test_host_restarted_mid_rollout_batch(repaired, berth, testbed, background, start_job):
    before = testbed.exec("r1", "cat", DAEMON_JSON).stdout
    start_job(600)
    run = background("reboot", "rollout", "--limit", "r1", "-e", RESTART)
    wait_for("the drain", drain_started(testbed))
    try:
        subprocess.run(["docker", "restart", "-t", "1", testbed.container_name("r1")], check=True, capture_output=True)
        cut = run.result()
    finally:
        testbed.up(len(HOSTS))      # r1 boots again (its address may change: ssh_config is written anew)
    assert cut.code == 3, cut.output
    [r1] = cut.report["hosts"]
    assert r1["status"] == "unreachable" and "the SSH connection was lost during the apply" in r1["error"]
    wait_for("dockerd after the reboot", lambda: active(testbed, "docker") == "active", timeout=300)
    assert testbed.exec("r1", "cat", DAEMON_JSON).stdout == before     # the drain had not ended: nothing written
    again = berth("rollout", "--limit", "r1", "-e", RESTART)
    assert again.code == 0, again.output
    assert again.report["hosts"][0]["status"] == "converged" and again.report["hosts"][0]["health"] == "ok"


# -- the host's side fails ---------------------------------------------------------------------------------
@pytest.fixture
def small_etc_docker(testbed) -> Iterator[None]:
    """/etc/docker on a tmpfs holding its files and little else: the next file written there does not fit."""
    testbed.exec("r1", "sh", "-c", "rm -rf /root/etc-docker && cp -a /etc/docker /root/etc-docker && "
                 "mount -t tmpfs -o size=256k,mode=0755 berth-full /etc/docker && "
                 "cp -a /root/etc-docker/. /etc/docker/ && "
                 # Full, then two pages freed: a write larger than that is taken in part, then refused.
                 "(dd if=/dev/zero of=/etc/docker/filler bs=4k 2>/dev/null; true) && "
                 "truncate -s -8192 /etc/docker/filler")
    yield
    testbed.exec("r1", "sh", "-c", "umount /etc/docker; rm -rf /root/etc-docker", check=False)


def test_disk_full_when_daemon_json_is_written_leaves_the_old_file(repaired, berth, testbed, small_etc_docker):
    before = sha_on(testbed, DAEMON_JSON)
    pid = testbed.exec("r1", "systemctl", "show", "-p", "MainPID", "--value", "docker").stdout
    labels = [f"berth.test.label{i}={'x' * 80}" for i in range(150)]      # ~15 kB: more than is free
    run = berth("setup-runner", "--host", "r1", "-e", options(labels=labels))
    assert run.code == 2, run.output
    error = run.host("r1")["error"]
    assert "cannot write /etc/docker/daemon.json: no space left on the file system of /etc/docker" in error
    assert "the old file is unchanged" in error
    assert sha_on(testbed, DAEMON_JSON) == before
    assert testbed.exec("r1", "sh", "-c", "ls -a /etc/docker | grep -c berth || true").stdout.strip() == "0"
    assert testbed.exec("r1", "systemctl", "show", "-p", "MainPID", "--value", "docker").stdout == pid


@pytest.fixture
def dockerd_hangs_on_marker(testbed) -> Iterator[None]:
    """dockerd's start hangs (forever) while daemon.json holds "berth-hang": a configuration that hangs it."""
    dropin = "/run/systemd/system/docker.service.d/zz-test-hang.conf"
    hang = "ExecStartPre=/bin/sh -c 'if grep -q berth-hang /etc/docker/daemon.json; then exec sleep 3600; fi'"
    testbed.exec("r1", "sh", "-c", f"mkdir -p {Path(dropin).parent} && printf '%s\\n' '[Service]' \"$1\" "
                 f"TimeoutStartSec=infinity > {dropin} && systemctl daemon-reload", "hang", hang)
    yield
    testbed.exec("r1", "sh", "-c", f"rm -f {dropin}; systemctl daemon-reload; systemctl is-active -q docker || "
                 "{ systemctl stop docker; systemctl start docker; }", check=False)


def test_dockerd_hanging_on_restart_times_out_and_the_previous_config_comes_back(repaired, berth, testbed,
                                                                                 dockerd_hangs_on_marker):
    before = sha_on(testbed, DAEMON_JSON)
    run = berth("setup-runner", "--host", "r1", "-e", "docker_health_timeout=6",
                "-e", options(dns=["192.0.2.53"], labels=["berth-hang=1"]), timeout=180)
    assert run.code == 2, run.output
    error = run.host("r1")["error"]
    assert "did not finish within 6s (the health timeout): docker hangs while starting" in error
    assert "the previous /etc/docker/daemon.json was restored and the service is running again" in error
    assert sha_on(testbed, DAEMON_JSON) == before
    assert active(testbed, "docker") == "active"
    wait_for("the runner to resume", lambda: active(testbed, "gitlab-runner") == "active", timeout=30)


# -- apt's lock --------------------------------------------------------------------------------------------
# A small package the testbed's apt cache holds and berth's docker.io install does not pull in (data files only).
EXTRA_PACKAGE = "libldap-common"
HOLD_APT_LOCK = ("import fcntl, sys, time; f = open('/var/lib/dpkg/lock-frontend', 'w'); "
                 "fcntl.lockf(f, fcntl.LOCK_EX); time.sleep(float(sys.argv[1]))")    # as apt and dpkg lock it


def hold_apt_lock(testbed) -> None:
    subprocess.run(["docker", "exec", "-d", testbed.container_name("r1"), "python3", "-c", HOLD_APT_LOCK, "900"],
                   check=True)
    wait_for("the lock", lambda: bool(pids(testbed, "fcntl.lockf")))


def release_apt_lock(testbed) -> None:
    for pid in pids(testbed, "fcntl.lockf"):
        testbed.exec("r1", "kill", pid, check=False)


def test_apt_lock_held_a_while_then_released(repaired, berth, testbed, background):
    assert testbed.exec("r1", "dpkg", "-s", EXTRA_PACKAGE, check=False).returncode != 0
    packages = json.dumps({"docker_distro_packages": ["docker.io", EXTRA_PACKAGE]})
    # Held past berth_apt_lock_timeout: the host fails naming the holder, nothing installed.
    hold_apt_lock(testbed)
    try:
        held = berth("setup-runner", "--host", "r1", "-e", packages, "-e", "berth_apt_lock_timeout=2")
    finally:
        release_apt_lock(testbed)
    assert held.code == 2, held.output
    error = held.host("r1")["error"]
    assert re.search(r"apt's lock /var/lib/dpkg/lock-frontend is still held after 2s \(berth_apt_lock_timeout\) "
                     r"by process \d+ \(python3 -c import fcntl", error), error
    assert testbed.exec("r1", "dpkg", "-s", EXTRA_PACKAGE, check=False).returncode != 0
    # Held until berth says it waits for it, then released: berth installs.
    hold_apt_lock(testbed)
    try:
        run = background("apt", "setup-runner", "--host", "r1", "-e", packages, "-e", "berth_apt_lock_timeout=600")
        wait_for("berth to wait for apt's lock", lambda: run.said("waiting for apt's lock"), timeout=300)
    finally:
        release_apt_lock(testbed)
    done = run.result()
    assert done.code == 0, done.output
    assert "waiting for apt's lock /var/lib/dpkg/lock-frontend, held by process" in done.err
    assert any(note.startswith("waited") and "apt's lock" in note for note in done.host("r1")["notes"])
    assert testbed.exec("r1", "dpkg", "-s", EXTRA_PACKAGE, check=False).returncode == 0


# -- GitLab ------------------------------------------------------------------------------------------------
ACCESS_TOKEN = "glpat-BERTHMARKER-faults"


@pytest.fixture
def gitlab(repaired, testbed) -> Iterator[GitLabStandIn]:
    """The API stand-in; r1's config.toml is put back afterwards (the runners made here are this test's)."""
    saved = testbed.exec("r1", "cat", CONFIG_TOML).stdout
    with GitLabStandIn(access_token=ACCESS_TOKEN) as standin:
        yield standin
    testbed.exec("r1", "sh", "-c", f"cat > {CONFIG_TOML} <<'EOF'\n{saved}EOF\n", check=False)


def runner_vars(tmp: Path, runner: dict) -> str:
    path = tmp / "runner.yml"
    path.write_text(yaml.safe_dump({"gitlab_runners": [runner], "gitlab_runner_api_timeout": 2}))
    return f"@{path}"


def test_gitlab_answering_500_then_200_is_retried(gitlab, berth, tmp_path, testbed):
    token = gitlab.add_runner(token="glrt-BERTHMARKER-faults-socket").token
    gitlab.fail_next("POST", "/api/v4/runners/verify")
    run = berth("setup-runner", "--host", "r1", "-e", runner_vars(tmp_path, {
        "name": "faults-socket", "url": gitlab.url, "mode": "socket", "token_env": "BERTH_FAULTS_TOKEN"}),
        env={"BERTH_FAULTS_TOKEN": token})
    assert run.code == 0, run.output
    assert [r.path for r in gitlab.requests].count("/api/v4/runners/verify") == 2
    assert 'name = "faults-socket"' in testbed.exec("r1", "cat", CONFIG_TOML).stdout


def test_gitlab_timing_out_on_create_makes_no_duplicate_runner(gitlab, berth, tmp_path, testbed):
    gitlab.hang_after_create(6)             # GitLab makes the runner; its answer comes after berth's 2 s
    run = berth("setup-runner", "--host", "r1", "-e", runner_vars(tmp_path, {
        "name": "faults-created", "url": gitlab.url, "mode": "socket", "runner_type": "instance_type"}),
        env={"GITLAB_TOKEN": ACCESS_TOKEN})
    assert run.code == 0, run.output
    assert len(gitlab.created) == 1 and len(gitlab.runners) == 1
    [runner] = gitlab.runners.values()
    assert runner.token in testbed.exec("r1", "cat", CONFIG_TOML).stdout      # the token GitLab knows now
    again = berth("setup-runner", "--host", "r1", "-e", runner_vars(tmp_path, {
        "name": "faults-created", "url": gitlab.url, "mode": "socket", "runner_type": "instance_type"}),
        env={"GITLAB_TOKEN": ACCESS_TOKEN})
    assert again.code == 0 and len(gitlab.runners) == 1
