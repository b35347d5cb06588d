"""One agent process per converge (berth.engine.converge.AgentProcess): the probe's answer, then the apply's,
on one command; how it reports an agent that ended without answering. The real agent on a real process:
test_engine_local.py; on real sshd: tests/integration/test_converge.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from berth.engine.converge import NO_EXIT_STATUS, AgentProcess
from berth.engine.protocol import ApplyRequest, ProbeRequest
from berth.errors import HostFailed, HostUnreachable
from berth.inventory.loader import Host
from berth.transport.base import CommandResult


@dataclass
class Exchange:
    """A command's open stdin and stdout, scripted: the lines it answers, then how it ends."""

    answers: list[bytes]
    ended: CommandResult = field(default_factory=lambda: CommandResult(0, "", ""))
    sent: list[bytes] = field(default_factory=list)
    finished: int = 0

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def read_line(self) -> bytes:
        return self.answers.pop(0) if self.answers else b""

    def finish(self) -> CommandResult:
        self.finished += 1
        return self.ended


@dataclass
class Session:
    exchange: Exchange
    host: Host = field(default_factory=lambda: Host("r1", [], {}, {}, []))
    agent_root: str = "/"
    commands: int = 0
    first: bytes = b""

    def start(self, command: str, *, stdin: bytes, sudo: bool = True, on_stderr_line=None) -> Exchange:
        self.commands += 1
        self.first = stdin
        return self.exchange


def test_the_probe_and_the_apply_go_to_one_process_and_end_closes_it() -> None:
    session = Session(Exchange([b'{"files": {}, "protocol": 1}', b'{"handlers": [], "protocol": 1}']))
    agent = AgentProcess(session, ProbeRequest())
    assert agent.first == {"files": {}, "protocol": 1}
    assert json.loads(session.first.rsplit(b"\n", 2)[-2])["action"] == "probe"
    assert agent.ask(ApplyRequest()) == {"handlers": [], "protocol": 1}
    (apply,) = session.exchange.sent
    assert apply.endswith(b"\n") and json.loads(apply)["action"] == "apply"
    agent.end()
    agent.end()
    assert session.commands == 1 and session.exchange.finished == 1


def test_an_agent_that_ends_without_answering_fails_the_host_with_its_stderr() -> None:
    session = Session(Exchange([], CommandResult(1, "", "Traceback ...\nNameError: x")))
    with pytest.raises(HostFailed) as failed:
        AgentProcess(session, ProbeRequest())
    assert str(failed.value) == "r1: the berth agent failed: Traceback ...\nNameError: x"


def test_a_connection_lost_during_the_apply_says_the_apply_goes_on_on_the_host() -> None:
    session = Session(Exchange([b'{"protocol": 1}'], CommandResult(NO_EXIT_STATUS, "", "")))
    agent = AgentProcess(session, ProbeRequest())
    with pytest.raises(HostUnreachable) as lost:
        agent.ask(ApplyRequest())
    assert "was lost during the apply" in str(lost.value) and "goes on to the end of the apply" in str(lost.value)
