"""The fleet runner (berth/engine/fleet.py) and the SSH session's command count, without hosts or a network."""

from __future__ import annotations

import threading

import pytest

from berth.engine.fleet import make_progress, run_parallel
from berth.errors import HostUnreachable
from berth.inventory.loader import Host
from berth.transport.ssh import Session, SSHSettings


def hosts(*names: str) -> list[Host]:
    return [Host(n, ["all"], {}, {}, []) for n in names]


def test_results_come_in_the_hosts_order_whatever_order_they_finish_in():
    fleet = hosts("a", "b", "c", "d")
    gates = {h.name: threading.Event() for h in fleet}

    def work(host: Host) -> str:
        gates[host.name].wait(10)
        # Each host lets the one before it in the inventory finish: completion order is d, c, b, a.
        index = [h.name for h in fleet].index(host.name)
        if index:
            gates[fleet[index - 1].name].set()
        return host.name.upper()

    gates["d"].set()
    assert run_parallel(fleet, work, forks=4, label="t") == ["A", "B", "C", "D"]


def test_forks_bound_the_hosts_worked_on_at_once():
    lock, running, peak = threading.Lock(), [0], [0]
    release = threading.Event()

    def work(host: Host) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            if running[0] == 2:
                release.set()
        release.wait(10)
        with lock:
            running[0] -= 1

    run_parallel(hosts(*"abcdef"), work, forks=2, label="t")
    assert peak[0] == 2


def test_no_hosts_no_work_and_a_shared_progress_display_gets_its_bar_removed():
    assert run_parallel([], lambda h: 1 / 0, forks=3, label="t") == []
    progress = make_progress()
    with progress:
        assert run_parallel(hosts("a", "b"), lambda h: h.name, forks=1, label="t", progress=progress) == ["a", "b"]
        assert progress.tasks == []


class Channel:
    """What Session.run uses of a paramiko channel: one command's exit status and output."""

    def __init__(self, command_log: list[str]) -> None:
        self.log, self.sent = command_log, b""
        self.status_event = threading.Event()
        self.status_event.set()
        self._out = [b"out"]

    def settimeout(self, timeout):
        pass

    def exec_command(self, command: str) -> None:
        self.log.append(command)

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def shutdown_write(self) -> None:
        pass

    def recv_ready(self) -> bool:
        return bool(self._out)

    def recv(self, n: int) -> bytes:
        return self._out.pop()

    def recv_stderr_ready(self) -> bool:
        return False

    def exit_status_ready(self) -> bool:
        return True

    def recv_exit_status(self) -> int:
        return 0

    def close(self) -> None:
        pass


class Connection:
    """An open Fabric connection as far as Session.run reads it (no network: the channel is the one above)."""

    def __init__(self, user: str) -> None:
        self.user, self.log = user, []
        transport = type("T", (), {"open_session": lambda _, timeout=None: Channel(self.log)})()
        self.client = type("C", (), {"get_transport": lambda _: transport})()

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("user", "sudo"), [("root", False), ("deploy", True)])
def test_every_command_is_counted_once_and_a_non_root_user_goes_through_sudo(user, sudo):
    session = Session(hosts("r1")[0], SSHSettings())
    session._cx = Connection(user)
    first = session.run("true", stdin=b"input")
    session.run("echo two", sudo=False)
    assert session.commands == 2 and first.ok and first.stdout == "out"
    assert session._cx.log[0] == ("sudo -n -- sh -c true" if sudo else "true")
    assert session._cx.log[1] == "echo two"


def test_a_missing_ssh_config_named_by_the_host_is_unreachable_before_any_connection(tmp_path):
    host = Host("r1", ["all"], {"berth_ssh_config": str(tmp_path / "nope")}, {}, [])
    with pytest.raises(HostUnreachable, match="does not exist"):
        Session(host, SSHSettings()).open()
