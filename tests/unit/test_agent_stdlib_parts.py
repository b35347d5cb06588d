"""The agent's own stand-ins for what it no longer imports: json's C half, subprocess's spawn and wait, socket's
getfqdn and create_connection. Each must behave as the stdlib does where the agent relies on it."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path

import pytest

from berth.remote import agent

SAMPLES = [
    {"files": {"/etc/docker/daemon.json": {"exists": True, "mode": 420, "sha256": "ab" * 32}}, "n": None},
    [1, -2, 3.25, 1e300, 2**70, True, False, None, "", "é ü 日本 \U0001F433", "\x00\x1f\"\\/"],
    {"nested": [[[]], {}, {"a": {"b": [1.5e-7]}}]},
    "plain",
    12,
]


@pytest.mark.parametrize("value", SAMPLES)
def test_the_lean_json_writes_what_json_writes_and_reads_it_back(value: object) -> None:
    assert isinstance(agent.json, agent._Json)     # this interpreter takes the lean one
    assert agent.json.dumps(value) == json.dumps(value)
    assert agent.json.loads(json.dumps(value)) == value
    assert agent.json.loads(json.dumps(value).encode()) == value      # the requests come as bytes


def test_the_lean_json_reads_what_json_reads_and_refuses_what_it_refuses() -> None:
    text = ' \n{"a" : [1,2 , {"b":"\\u00e9\\ud83d\\udc33"}], "c": NaN, "d": -Infinity}\n'
    read = agent.json.loads(text)
    assert read["a"] == json.loads(text)["a"] and math.isnan(read["c"]) and read["d"] == -math.inf
    for bad in ("", "{", '{"a": 1} x', "[1,]", "{'a': 1}", '"\x01"', "01"):
        with pytest.raises(ValueError):
            json.loads(bad)
        with pytest.raises(ValueError):
            agent.json.loads(bad)
    with pytest.raises(TypeError, match="not JSON serializable"):
        agent.json.dumps({"a": object()})


def test_the_lean_json_reads_and_writes_files(tmp_path: Path) -> None:
    path = tmp_path / "entry.json"
    with open(path, "w") as fh:
        agent.json.dump({"key": [1, "x"], "version": "Docker version 20.10.24+dfsg1"}, fh)
    assert json.loads(path.read_text()) == {"key": [1, "x"], "version": "Docker version 20.10.24+dfsg1"}
    with open(path) as fh:
        assert agent.json.load(fh)["key"] == [1, "x"]


def test_sh_returns_the_exit_code_and_stdout_and_stderr_together() -> None:
    code, out = agent.sh(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, out) == (3, "out\nerr\n")
    with pytest.raises(agent.StepFailed, match="exited 3: out"):
        agent.sh(["sh", "-c", "echo out; exit 3"], check=True)
    code, _ = agent.sh(["sh", "-c", "kill -TERM $$"])
    assert code == -15                        # as subprocess's returncode says a signal


def test_sh_gives_the_command_an_empty_stdin_its_env_and_default_sigpipe() -> None:
    code, out = agent.sh(["sh", "-c", "cat; echo \"[$LC_ALL $DEBIAN_FRONTEND $EXTRA]\""], env={"EXTRA": "x"})
    assert (code, out) == (0, "[C noninteractive x]\n")
    # Python ignores SIGPIPE; a child must not (subprocess restores it): `yes` ends when head is done.
    code, out = agent.sh(["sh", "-c", "yes | head -n 2"], timeout=20)
    assert (code, out) == (0, "y\ny\n")


def test_sh_finds_commands_on_the_path_it_is_given_and_says_when_one_is_missing(tmp_path: Path) -> None:
    tool = tmp_path / "berth-test-tool"
    tool.write_text("#!/bin/sh\necho stand-in \"$@\"\n")
    tool.chmod(0o755)
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    assert agent.sh(["berth-test-tool", "a b"], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}) == (0, "stand-in a b\n")
    with pytest.raises(FileNotFoundError):
        agent.sh(["berth-no-such-command"])
    with pytest.raises(FileNotFoundError):
        agent.sh(["not-executable"], env={"PATH": str(tmp_path)})


def test_sh_kills_a_command_that_outlives_its_timeout_and_leaks_no_fd() -> None:
    fds = len(os.listdir("/proc/self/fd"))
    started = time.monotonic()
    with pytest.raises(agent.CommandTimeout, match=r"did not finish within 0\.3s"):
        agent.sh(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - started < 10
    assert len(os.listdir("/proc/self/fd")) == fds
    assert agent.sh(["true"], timeout=10) == (0, "")


def test_a_bounded_handler_command_is_killed_with_its_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child-pid"
    error = agent._run_bounded(f"sleep 30 & echo $! > {marker}; wait", 0.5, None)
    assert error is not None and "did not finish within 0.5s" in error
    child = int(marker.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the handler's child outlived the kill of its group"
        time.sleep(0.05)
    assert agent._run_bounded("exit 0", 5, None) is None
    assert agent._run_bounded("exit 1", 5, None) is None     # its exit code is the health check's to judge


def test_fqdn_and_the_tcp_check_answer_as_the_socket_module_does() -> None:
    assert agent.fqdn() == socket.getfqdn()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert agent._tcp_open("127.0.0.1", port) is None
        assert agent._tcp_open("localhost", port) is None
    error = agent._tcp_open("127.0.0.1", port)
    assert error is not None and error.startswith(f"nothing listens on 127.0.0.1:{port}")


@pytest.mark.parametrize(("version", "expected"), [
    ("Docker version 20.10.24+dfsg1, build 297e128", (20, 10)),
    ("Docker version 28.5.2, build ecc6942", (28, 5)),
    ("Docker version 23.0, build x", (23, 0)),
    ("Docker version dev, build x", (0, 0)),
    (None, (0, 0)),
])
def test_the_dockerd_version_is_read_as_major_and_minor(version: str | None, expected: tuple[int, int]) -> None:
    assert agent.major_minor(version) == expected
