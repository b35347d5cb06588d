"""The engine end to end without SSH or Docker: the real Converger and the real agent (berth.transport.local)
on a temporary root, with stand-in host commands (tests/standins/host_commands.py). See tests/unit/localhost.py.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat

from berth.cli.app import exit_code
from berth.engine.converge import AGENT, Status, run_agent
from berth.engine.plan import Plan
from berth.engine.protocol import PROTOCOL, ApplyRequest, ProbeAnswer, ProbeRequest, ProtocolError, envelope
from berth.errors import ExitCode, HostFailed
from tests.standins import host_commands
from tests.unit.localhost import LocalHost


def owner(path) -> tuple[str, str, int]:
    st = os.stat(path)
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


# -- probe, plan, apply ---------------------------------------------------------------------------
def test_first_run_installs_writes_starts_and_restarts_once(local: LocalHost) -> None:
    report = local.converge()
    assert report.status == Status.CHANGED, report.error
    assert report.commands == 1       # one agent process: the probe, then the apply on the same command
    assert local.path("/etc/demo/demo.conf").read_text() == "listen = 1\n"
    assert owner(local.path("/etc/demo/demo.conf")) == ("root", "adm", 0o640)
    assert owner(local.path("/etc/demo")) == ("root", "adm", 0o750)
    assert owner(local.path("/etc/demo/token")) == ("root", "root", 0o600)
    assert host_commands.packages(local.state) == {"demo-daemon": "1.0-standin"}
    assert host_commands.unit(local.state, "demo") == {"enabled": "enabled", "active": "active"}
    # daemon-reload first (a drop-in changed), then the restart, which supersedes the reload.
    assert report.handlers == ["systemd daemon-reload", "restart demo"]
    changing = local.changing_calls()
    assert changing.index(["systemctl", "daemon-reload"]) < changing.index(["systemctl", "restart", "demo"])
    assert ["systemctl", "reload", "demo"] not in changing
    assert {c.kind for c in report.changes} == {"packages", "directory", "file", "service"}
    assert report.facts["addresses"] == ["192.0.2.10"] and report.facts["arch"] == "amd64"


def test_a_second_run_changes_nothing_in_one_command(local: LocalHost) -> None:
    assert local.converge().status == Status.CHANGED
    local.forget_calls()
    report = local.converge()
    assert (report.status, report.changes, report.handlers, report.commands) == (Status.OK, [], [], 1)
    assert local.changing_calls() == []                 # the probe only reads


def test_a_changed_file_notifies_only_its_handler(local: LocalHost) -> None:
    local.converge()
    local.forget_calls()
    report = local.converge(demo_limits="files = 4096\n")
    assert report.status == Status.CHANGED
    assert [c.target for c in report.changes] == ["/etc/demo/limits.conf"]
    assert report.handlers == ["reload demo"]
    assert local.changing_calls() == [["systemctl", "reload", "demo"]]
    assert local.path("/etc/demo/limits.conf").read_text() == "files = 4096\n"


def test_a_restart_supersedes_the_reload_and_no_daemon_reload_without_a_unit_change(local: LocalHost) -> None:
    local.converge()
    report = local.converge(demo_limits="files = 1\n", demo_conf="listen = 2\n")
    assert report.handlers == ["restart demo"]


def test_mode_and_owner_drift_is_repaired_without_rewriting_the_content(local: LocalHost) -> None:
    local.converge()
    conf = local.path("/etc/demo/demo.conf")
    os.chmod(conf, 0o666)
    os.chown(conf, 0, 0)
    inode = os.stat(conf).st_ino
    report = local.converge()
    (change,) = report.changes
    assert change.summary == "mode 0666 -> 0640, owner root:root -> root:adm"
    assert owner(conf) == ("root", "adm", 0o640) and os.stat(conf).st_ino == inode     # not rewritten
    assert report.handlers == []                        # attributes notify nothing


def test_a_file_removed_on_the_host_is_written_again(local: LocalHost) -> None:
    local.converge()
    local.path("/etc/demo/limits.conf").unlink()
    report = local.converge()
    assert [(c.target, c.summary) for c in report.changes] == [("/etc/demo/limits.conf", "create")]
    assert local.path("/etc/demo/limits.conf").read_text() == "files = 1024\n"


# -- rollback --------------------------------------------------------------------------------------
def test_a_restart_that_fails_its_health_check_restores_the_previous_files(local: LocalHost) -> None:
    local.converge()
    host_commands.set_unit(local.state, "demo", fails_if=["/etc/demo/demo.conf", "broken"])
    report = local.converge(demo_conf="listen = broken\n", demo_limits="files = 2\n")
    assert report.status == Status.FAILED
    assert "restart demo failed" in report.error and "the service is running again" in report.error
    assert "/etc/demo/demo.conf" in report.error and "/etc/demo/limits.conf" in report.error
    assert "unable to configure" in report.error        # the journal's reason
    assert local.path("/etc/demo/demo.conf").read_text() == "listen = 1\n"
    assert local.path("/etc/demo/limits.conf").read_text() == "files = 1024\n"
    assert host_commands.unit(local.state, "demo")["active"] == "active"
    assert exit_code([report]) == ExitCode.HOST_FAILED


def test_a_unit_that_stays_down_after_the_rollback_is_said_to_be_down(local: LocalHost) -> None:
    local.converge()
    # Broken by something outside this run: the restored file does not bring it back either.
    host_commands.set_unit(local.state, "demo", fails_if=["/etc/demo/limits.conf", "files"])
    report = local.converge(demo_conf="listen = 3\n")
    assert report.status == Status.FAILED and "BUT THE SERVICE IS STILL DOWN" in report.error
    assert local.path("/etc/demo/demo.conf").read_text() == "listen = 1\n"


def test_a_unit_that_runs_but_does_not_answer_is_said_to_run_without_answering(local: LocalHost) -> None:
    # As dockerd does when its socket file was unlinked under docker.socket: the unit starts, the file is gone.
    local.converge()
    socket = local.path("/run/demo.sock")
    socket.unlink()
    report = local.converge(demo_conf="listen = 3\n", demo_health_timeout=1)
    assert report.status == Status.FAILED
    assert f"restart demo failed: demo is running but {socket} does not answer" in report.error
    assert f"BUT THE SERVICE STILL DOES NOT ANSWER: {socket} does not answer" in report.error
    assert "unable to configure" not in report.error        # no journal line of an unrelated start
    assert local.path("/etc/demo/demo.conf").read_text() == "listen = 1\n"


# -- check mode ------------------------------------------------------------------------------------
def test_check_mode_writes_nothing_shows_the_diff_and_exits_6(local: LocalHost) -> None:
    plans: list[Plan] = []
    report = local.converge(check=True, on_plan=lambda host, plan: plans.append(plan))
    assert report.status == Status.PENDING and report.commands == 1
    assert exit_code([report]) == ExitCode.CHANGES_PENDING
    assert not local.path("/etc/demo").exists()
    assert local.changing_calls() == []
    (plan,) = plans
    diffs = {c.target: c.diff for c in plan.changes}
    assert "+listen = 1" in diffs["/etc/demo/demo.conf"]
    assert diffs["/etc/demo/token"] == "(secret content: diff hidden)\n"


def test_check_mode_on_a_converged_host_with_drift_shows_the_old_and_new_lines(local: LocalHost) -> None:
    local.converge()
    plans: list[Plan] = []
    report = local.converge(check=True, on_plan=lambda host, plan: plans.append(plan), demo_conf="listen = 9\n")
    assert report.status == Status.PENDING
    (change,) = plans[0].changes
    assert "-listen = 1" in change.diff and "+listen = 9" in change.diff
    assert local.path("/etc/demo/demo.conf").read_text() == "listen = 1\n"


# -- the protocol, as the real agent speaks it -------------------------------------------------------
def raw(local: LocalHost, wire: dict) -> dict:
    session = local.session(local.host())
    result = AGENT.run(session, json.dumps(wire))
    assert result.ok, result.stderr
    return json.loads(result.stdout)


def test_the_agent_refuses_another_protocol_before_it_changes_anything(local: LocalHost) -> None:
    request = ApplyRequest(steps=(), handlers=())
    answer = raw(local, {**envelope(request, root=str(local.root)), "protocol": PROTOCOL + 1})
    assert answer["refused"] and f"this agent speaks {PROTOCOL}" in answer["error"]
    try:
        ProbeAnswer.from_wire(answer)
    except ProtocolError as exc:
        assert "agent protocol" in str(exc)
    else:
        raise AssertionError("a refusal must not read as a probe answer")


def test_the_agent_refuses_a_step_it_does_not_know_and_runs_none(local: LocalHost) -> None:
    wire = envelope(ApplyRequest(), root=str(local.root))
    wire["steps"] = [{"op": "directory", "path": "/etc/early", "mode": 0o755, "owner": "root", "group": "root"},
                     {"op": "format_disk", "path": "/dev/sda"}]
    answer = raw(local, wire)
    assert answer["refused"] and "unknown step 'format_disk'" in answer["error"]
    assert not local.path("/etc/early").exists()


def test_a_request_without_a_protocol_is_protocol_1(local: LocalHost) -> None:
    wire = envelope(ProbeRequest(), root=str(local.root))
    del wire["protocol"]
    assert raw(local, wire)["protocol"] == PROTOCOL == 1


def test_the_local_transport_runs_only_the_agent(local: LocalHost) -> None:
    session = local.session(local.host())
    try:
        session.run("mkdir -p /etc/should-not-exist")
    except HostFailed as exc:
        assert "runs only berth's agent" in str(exc)
    else:
        raise AssertionError("a command other than the agent ran on this machine")
    assert not os.path.exists("/etc/should-not-exist") and session.commands == 0
    answer = run_agent(session, ProbeRequest())
    assert answer["protocol"] == PROTOCOL and session.commands == 1
