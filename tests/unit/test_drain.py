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


JOB = {"Id": "0123456789abcdef", "Labels": {JOB_LABEL: "42"}}


def test_drain_waits_until_job_containers_are_gone(monkeypatch):
    polls = iter([[JOB], [JOB], [JOB], [], [], []])
    monkeypatch.setattr(agent, "job_containers", lambda sock, label: next(polls))
    drain = agent.Drain(spec(timeout=5))
    drain.run()
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


def test_force_does_not_wait_and_reports_the_jobs_it_will_hit(monkeypatch):
    monkeypatch.setattr(agent, "job_containers", lambda sock, label: [JOB, JOB])
    drain = agent.Drain(spec(force=True, timeout=1000))
    drain.run()
    assert drain.state == {"forced": True, "runner": "absent", "jobs": 2, "waited": 0.0, "resumed": False}


def test_job_containers_asks_the_docker_api_for_running_containers_with_the_label(tmp_path):
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
    assert request_line.startswith("GET /containers/json?filters=")
    assert "com.gitlab.gitlab-runner.job.id" in unquote(request_line.split("filters=")[1])
    assert agent.job_containers(str(tmp_path / "none.sock"), JOB_LABEL) == []   # no daemon: nothing to stop
