"""The agent's side of serialized, truthful applies: the host's apply lock (flock, its holder named), the plan's
files re-checked before any write, apt's locks waited for, a handler that hangs bounded. Real processes hold the
locks; the agent runs as it does on a host (berth/remote/agent.py), in a temporary lock folder."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from berth.remote import agent

HOLD = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.{}(f, fcntl.LOCK_EX); print('held', flush=True); " \
       "time.sleep(float(sys.argv[2]))"


def holder_process(path: Path, seconds: float, kind: str = "flock") -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(kind), str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def write_step(path: Path, text: str) -> dict:
    return {"op": "write", "path": str(path), "content": base64.b64encode(text.encode()).decode(), "mode": 0o644,
            "owner": "root", "group": "root"}


def seen(path: Path) -> dict:
    state = agent.file_state(str(path), False)
    return {k: state.get(k) for k in ("exists", "sha256", "mode", "owner", "group")}


def lock(tmp: Path, timeout: float = 5) -> dict:
    return {"dir": str(tmp / "lock"), "timeout": timeout,
            "holder": {"controller": "alice@ctl", "pid": 4242, "run": "r-first"}}


def test_a_second_apply_waits_for_the_first_then_applies(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text("old\n")
    (tmp_path / "lock").mkdir(mode=0o700)
    holder = holder_process(tmp_path / "lock" / "apply.lock", 3)
    (tmp_path / "lock" / "apply.holder").write_text(json.dumps({"controller": "bob@ops", "pid": 7, "run": "r-bob",
                                                                 "since": "2026-01-01T00:00:00Z"}))
    answer = agent.apply({"lock": lock(tmp_path), "expect": {"files": {str(target): seen(target)}},
                          "steps": [write_step(target, "new\n")]})
    holder.wait()
    assert answer["error"] is None
    assert target.read_text() == "new\n"
    assert answer["waited"]["for"]["controller"] == "bob@ops" and answer["waited"]["seconds"] > 0
    assert not (tmp_path / "lock" / "apply.holder").exists()        # released with the lock
    assert oct((tmp_path / "lock").stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "lock" / "apply.lock").stat().st_mode & 0o777) == "0o600"


def test_an_apply_that_cannot_wait_long_enough_names_the_holder_and_changes_nothing(tmp_path):
    target = tmp_path / "daemon.json"
    target.write_text("old\n")
    (tmp_path / "lock").mkdir(mode=0o700)
    holder = holder_process(tmp_path / "lock" / "apply.lock", 30)
    try:
        (tmp_path / "lock" / "apply.holder").write_text(json.dumps(
            {"controller": "bob@ops", "pid": 7, "run": "r-bob", "since": "2026-01-01T00:00:00Z", "agent_pid": 99}))
        answer = agent.apply({"lock": lock(tmp_path, timeout=0.5), "steps": [write_step(target, "new\n")]})
    finally:
        holder.kill()
        holder.wait()
    assert answer["error"] == (
        "another berth apply is running on this host: run r-bob of bob@ops (controller pid 7), applying since "
        "2026-01-01T00:00:00Z (agent pid 99 on this host); waited 0.5s for it (berth_apply_lock_timeout); nothing was "
        "changed. Re-run when it has ended")
    assert target.read_text() == "old\n"


def test_a_file_changed_since_the_probe_stops_the_apply_before_any_write(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text("a\n")
    second.write_text("b\n")
    expect = {"files": {str(first): seen(first), str(second): seen(second), str(tmp_path / "new"): {"exists": False}}}
    second.write_text("someone else's\n")                   # between the probe and the apply
    second.chmod(0o600)
    answer = agent.apply({"lock": lock(tmp_path), "expect": expect,
                          "steps": [write_step(first, "A\n"), write_step(second, "B\n")]})
    assert answer["error"] == f"changed since it was read: {second} (content); nothing was changed: re-run"
    assert first.read_text() == "a\n" and second.read_text() == "someone else's\n"
    assert answer["steps"] == []


def test_mode_owner_and_existence_count_as_changes():
    assert agent.check_expected({"files": {"/nonexistent/x": {"exists": True, "sha256": "0"}}}) == \
        ["/nonexistent/x (removed)"]
    path = Path(__file__)
    state = agent.file_state(str(path), False)
    assert agent.check_expected({"files": {str(path): {**state, "mode": 0o600}}}) == [f"{path} (mode)"]
    assert agent.check_expected({"files": {str(path): {"exists": False}}}) == [f"{path} (created)"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert agent.check_expected({"files": {str(path): {**state, "sha256": digest}}}) == []


def test_a_unit_that_reached_the_wanted_state_meanwhile_is_no_conflict(monkeypatch):
    monkeypatch.setattr(agent, "services", lambda names: {n: {"active": True, "enabled": True} for n in names})
    seen = {"services": {"gitlab-runner": {"active": False, "enabled": True}}}
    start = {"op": "service", "name": "gitlab-runner", "running": True, "enabled": True}
    assert agent.check_expected(seen, [start]) == []          # started by someone else: the step would do the same
    assert agent.check_expected(seen, []) == ["unit gitlab-runner (active)"]
    stopped = {"services": {"gitlab-runner": {"active": True, "enabled": True}}}
    monkeypatch.setattr(agent, "services", lambda names: {n: {"active": False, "enabled": True} for n in names})
    assert agent.check_expected(stopped, [start]) == ["unit gitlab-runner (active)"]   # stopped meanwhile: re-run


def test_apt_lock_held_by_a_posix_lock_names_the_process_then_is_waited_for(tmp_path):
    frontend = tmp_path / "lock-frontend"
    frontend.touch()
    holder = holder_process(frontend, 3, kind="lockf")       # as apt and dpkg take it
    events: list[dict] = []
    waited = agent.wait_for_apt(30, events.append, locks=(str(frontend),))
    holder.wait()
    assert waited > 0
    [event] = events
    assert event["lock"] == str(frontend) and f"process {holder.pid} (" in event["holder"]


def test_apt_lock_held_too_long_fails_naming_the_holder(tmp_path):
    frontend = tmp_path / "lock-frontend"
    frontend.touch()
    holder = holder_process(frontend, 30)
    try:
        try:
            agent.wait_for_apt(0.5, lambda event: None, locks=(str(frontend),))
        except agent.StepFailed as exc:
            message = str(exc)
        else:
            raise AssertionError("no error")
    finally:
        holder.kill()
        holder.wait()
    assert message.startswith(f"apt's lock {frontend} is still held after 0.5s (berth_apt_lock_timeout) by process "
                              f"{holder.pid} ({sys.executable} -c import fcntl")
    assert "nothing was installed" in message


def test_a_handler_command_that_hangs_is_bounded():
    error = agent._run_bounded("sleep 30", 0.5, None)
    assert error == "`sleep 30` did not finish within 0.5s (the health timeout): the service hangs while starting"
    assert agent._run_bounded("true", 5, None) is None
