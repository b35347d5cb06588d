"""The agent's drain (its systemd and Docker calls replaced); which handlers drain: test_docker_engine.py."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote

from berth.engine.resources import JOB_LABEL
from berth.remote import agent


# -- the agent's drain ------------------------------------------------------------------------
def spec(**kw) -> dict:
    return {"socket": "/nonexistent.sock", "timeout": 0.3, "interval": 0.05, "runner_unit": None,
            "job_label": JOB_LABEL, "force": False, **kw}


JOB = {"Id": "0123456789abcdef", "State": "running", "Labels": {JOB_LABEL: "42"}}
# A job between two sections: its container exists, stopped, until the job ends (gitlab-runner docker.go Cleanup).
BETWEEN = {"Id": "fedcba9876543210", "State": "exited", "Labels": {JOB_LABEL: "41"}}


def test_drain_waits_until_job_containers_are_gone(monkeypatch):
    polls = iter([[JOB], [JOB], [JOB], [BETWEEN], [BETWEEN], []])
    monkeypatch.setattr(agent, "job_containers", lambda sock, label: next(polls))
    drain = agent.Drain(spec(timeout=5))
    drain.begin()
    drain.settle()
    assert next(polls) == []                  # two quiet polls in a row, no more
    assert drain.state["jobs"] == 1
    assert drain.state["waited"] > 0
    assert not drain.state["forced"]


def test_drain_timeout_happens_before_any_step_so_nothing_changes(monkeypatch, tmp_path):
    monkeypatch.setattr(agent, "job_containers", lambda sock, label: [JOB])
    target = tmp_path / "daemon.json"
    upload_dir = tempfile.mkdtemp(prefix="berth-", dir=agent.UPLOAD_ROOT)   # as the controller's SFTP makes it
    deb = Path(upload_dir) / "0123.deb"         # uploaded by the controller before the apply
    deb.write_bytes(b"!<arch>\n")
    answer = agent.apply({
        "drain": spec(),
        "steps": [{"op": "write", "path": str(target), "content": "e30K", "mode": 0o644, "owner": "root",
                   "group": "root"},
                  {"op": "packages", "install": [], "debs": [str(deb)], "upload_dir": upload_dir}],
        "handlers": [{"name": "restart docker", "cmd": "false"}],
        "upload_dir": upload_dir,
    })
    assert not target.exists()
    assert not Path(upload_dir).exists()        # not left behind
    assert answer["steps"] == [] and answer["handlers"] == []
    assert answer["error"].startswith("drain timed out after 0.3s: 1 job container(s) still running")
    assert "0123456789ab job 42" in answer["error"] and "nothing was changed" in answer["error"]


def test_the_last_poll_comes_after_the_files_and_the_daemon_reload_and_before_the_restart(monkeypatch, tmp_path):
    events: list[str] = []

    def poll(sock, label):
        events.append("poll")
        return [BETWEEN]

    monkeypatch.setattr(agent, "job_containers", poll)
    monkeypatch.setattr(agent, "sh", lambda argv, **kw: (events.append(" ".join(argv)), (0, ""))[1])
    target = tmp_path / "docker.conf"
    answer = agent.apply({
        "drain": spec(interval=0.4),
        "steps": [{"op": "write", "path": str(target), "content": "e30K", "mode": 0o644, "owner": "root",
                   "group": "root"}],
        "handlers": [{"name": "systemd daemon-reload", "cmd": "systemctl daemon-reload", "disruptive": False},
                     {"name": "restart docker", "cmd": "systemctl restart docker"}],
    })
    assert answer["error"] is None, answer
    assert events == ["poll", "sh -c systemctl daemon-reload", "poll", "sh -c systemctl restart docker"]
    assert target.exists()


def test_the_polls_of_a_drain_are_an_interval_apart_when_nothing_runs_between_them(monkeypatch):
    times: list[float] = []
    monkeypatch.setattr(agent, "job_containers",
                        lambda sock, label: times.append(agent.time.monotonic()) or [BETWEEN])
    drain = agent.Drain(spec(interval=0.3))
    drain.begin()
    drain.settle()
    assert len(times) == 2 and times[1] - times[0] >= 0.3


def test_one_poll_is_enough_when_no_job_container_exists_in_any_state(monkeypatch):
    polls: list[int] = []
    monkeypatch.setattr(agent, "job_containers", lambda sock, label: polls.append(1) or [])
    drain = agent.Drain(spec(interval=30))
    drain.begin()
    drain.settle()
    assert polls == [1] and drain.state["waited"] == 0.0


def test_a_stopped_container_of_a_job_is_no_running_job_but_keeps_the_second_poll(monkeypatch):
    assert agent.running([BETWEEN, JOB, {**JOB, "State": "paused"}, {**JOB, "State": "created"}]) == [
        JOB, {**JOB, "State": "paused"}]


def test_a_job_that_shows_up_before_the_last_poll_puts_the_files_back_and_restarts_nothing(monkeypatch, tmp_path):
    polls = iter([[BETWEEN], [JOB]])
    monkeypatch.setattr(agent, "job_containers", lambda sock, label: next(polls, [JOB]))
    ran: list[str] = []
    monkeypatch.setattr(agent, "sh", lambda argv, **kw: (ran.append(" ".join(argv)), (0, ""))[1])
    dropin = tmp_path / "docker.conf"
    dropin.write_bytes(b"old\n")
    answer = agent.apply({
        "drain": spec(),
        "steps": [{"op": "write", "path": str(dropin), "content": "bmV3Cg==", "mode": 0o644, "owner": "root",
                   "group": "root"},
                  {"op": "write", "path": str(tmp_path / "new.json"), "content": "e30K", "mode": 0o644,
                   "owner": "root", "group": "root"}],
        "handlers": [{"name": "systemd daemon-reload", "cmd": "systemctl daemon-reload", "disruptive": False},
                     {"name": "restart docker", "cmd": "systemctl restart docker"}],
    })
    assert answer["error"].startswith("drain timed out after 0.3s: 1 job container(s) still running")
    assert "the files this apply wrote were put back" in answer["error"]
    assert "nothing was restarted" in answer["error"]
    assert dropin.read_bytes() == b"old\n" and not (tmp_path / "new.json").exists()
    assert answer["handlers"] == ["systemd daemon-reload"]
    # systemd read the new drop-in: it reads the old one again; dockerd was never restarted.
    assert ran == ["sh -c systemctl daemon-reload", "systemctl daemon-reload"]


def test_force_does_not_wait_and_reports_the_jobs_it_will_hit(monkeypatch):
    monkeypatch.setattr(agent, "job_containers", lambda sock, label: [JOB, JOB])
    drain = agent.Drain(spec(force=True, timeout=1000))
    drain.begin()
    drain.settle()
    assert drain.state == {"forced": True, "runner": "absent", "jobs": 2, "waited": 0.0, "resumed": False}


def test_job_containers_asks_the_docker_api_for_every_container_with_the_label(tmp_path):
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    seen: list[bytes] = []

    def answer() -> None:
        conn, _ = server.accept()
        seen.append(conn.recv(65536))
        body = json.dumps([JOB]).encode()
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    assert agent.job_containers(path, JOB_LABEL) == [JOB]
    thread.join()
    request_line = seen[0].split(b"\r\n")[0].decode()
    assert request_line.startswith("GET /containers/json?all=1&filters=")    # stopped ones too
    assert "com.gitlab.gitlab-runner.job.id" in unquote(request_line.split("filters=")[1])
    assert agent.job_containers(str(tmp_path / "none.sock"), JOB_LABEL) == []   # no daemon: nothing to stop


# -- stopping the runner: gracefully, with a runtime drop-in only when its unit's stop is not graceful already --
class RunnerUnit:
    """systemctl as the drain calls it, for one runner unit (systemd(1) show's Key=value lines)."""

    def __init__(self, kill_signal: str, timeout: str) -> None:
        self.props = {"LoadState": "loaded", "ActiveState": "active", "KillSignal": kill_signal,
                      "TimeoutStopUSec": timeout}
        self.ran: list[str] = []

    def sh(self, argv: list[str], **kw) -> tuple[int, str]:
        self.ran.append(" ".join(argv))
        if argv[1] == "stop":
            self.props["ActiveState"] = "inactive"
        if argv[1] == "show":
            asked = argv[argv.index("-p") + 1].split(",")
            if "--value" in argv:
                return 0, "\n".join(self.props[k] for k in asked) + "\n"
            return 0, "".join(f"{k}={self.props[k]}\n" for k in asked)
        return 0, ""


def drain_and_resume(monkeypatch, tmp_path, unit: RunnerUnit) -> tuple[bool, bool]:
    """(was the drop-in there while the runner was stopped, is it there after the resume)"""
    monkeypatch.setattr(agent, "ROOT", str(tmp_path))
    monkeypatch.setattr(agent, "sh", unit.sh)
    monkeypatch.setattr(agent, "job_containers", lambda sock, label: [])
    dropin = tmp_path / (agent.DRAIN_DROPIN % "gitlab-runner").lstrip("/")
    drain = agent.Drain(spec(runner_unit="gitlab-runner"))
    drain.begin()
    drain.settle()
    during = dropin.exists()
    drain.resume(None)
    assert drain.state["runner"] == "resumed" and drain.state["resumed"]
    return during, dropin.exists()


def test_a_runner_whose_stop_is_not_graceful_gets_a_runtime_drop_in_for_the_drain(monkeypatch, tmp_path):
    unit = RunnerUnit("15", "1min 30s")            # the packaged unit: SIGTERM, then SIGKILL after 90 s
    assert drain_and_resume(monkeypatch, tmp_path, unit) == (True, False)
    changing = [c for c in unit.ran if not c.startswith("systemctl show")]
    assert changing == ["systemctl daemon-reload", "systemctl stop --no-block gitlab-runner",
                        "systemctl daemon-reload", "systemctl start --no-block gitlab-runner"]


def test_a_runner_stopped_gracefully_by_its_own_drop_in_is_drained_without_a_daemon_reload(monkeypatch, tmp_path):
    unit = RunnerUnit("3", "infinity")             # role gitlab_runner's berth-kill.conf: SIGQUIT, no time limit
    assert drain_and_resume(monkeypatch, tmp_path, unit) == (False, False)
    changing = [c for c in unit.ran if not c.startswith("systemctl show")]
    assert changing == ["systemctl stop --no-block gitlab-runner", "systemctl start --no-block gitlab-runner"]


def test_a_graceful_signal_with_a_time_limit_still_gets_the_drop_in(monkeypatch, tmp_path):
    unit = RunnerUnit("3", "1h")                   # systemd would kill a job still running after an hour
    assert drain_and_resume(monkeypatch, tmp_path, unit) == (True, False)


def test_the_query_value_is_percent_encoded_as_urllib_does_it() -> None:
    from urllib.parse import quote

    for text in (json.dumps({"label": [JOB_LABEL]}), "a b/c?d=e&f", "é€ ~_.-", ""):
        assert agent._query_value(text) == quote(text, safe="")
