"""What the engine needs of a connection to one host, whichever transport makes it (SSH, or local for tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from berth.inventory.loader import Host


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Exchange(Protocol):
    """A command that stays open: lines written to its stdin, lines read back from its stdout.

    How one agent process answers the probe and then the apply it leads to (one SSH command for both).
    """

    def send(self, data: bytes) -> None: ...

    def read_line(self) -> bytes:
        """The next line of stdout, without its newline; b"" once stdout has ended."""
        ...

    def finish(self) -> CommandResult:
        """Close stdin, read what is left, and the exit status (the stdout returned is what was not read)."""
        ...


class HostSession(Protocol):
    """One host's session: commands (each counted: the count is the figure berth reports) and uploads."""

    host: Host
    commands: int
    agent_root: str          # the agent's root: "/" on a host, a temporary directory for the local transport

    def run(self, command: str, *, stdin: bytes | None = None, sudo: bool = True, timeout: float | None = 600,
            on_stderr_line: Callable[[str], None] | None = None) -> CommandResult:
        """``on_stderr_line``: told each line of stderr (as it comes where the transport can), e.g. an apply's
        "waiting for the apply lock" while it waits."""
        ...

    def start(self, command: str, *, stdin: bytes, sudo: bool = True,
              on_stderr_line: Callable[[str], None] | None = None) -> Exchange:
        """As ``run``, but stdin stays open for more (counted as one command, as it is one)."""
        ...

    def put_private(self, directory: str, files: list[tuple[bytes, str]]) -> None: ...

    def close(self) -> None: ...
