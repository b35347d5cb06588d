"""The one way berth runs its host-side scripts (berth/remote/): source and requests on stdin.

Nothing is installed on the host. ``python3 -I -S -c`` reads a line with the length of the script's source, the
source, compiles and runs it, and calls its ``main`` with the rest of stdin: requests, one JSON line each.
The converge agent (berth/remote/agent.py) answers each request on a line of stdout, so one process answers
a probe and then the apply made from it; verify's facts command (berth/remote/facts.py) answers one. Both go
through ``HostScript``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from berth.transport.base import CommandResult, Exchange, HostSession


def command(module_name: str) -> str:
    """The shell command that runs a script sent on stdin as module ``module_name`` (shown in tracebacks).

    ``-I -S``: the standard library alone. Without ``-I`` the working directory (the SSH user's home) comes
    first on ``sys.path`` and a ``json.py`` there would run as root; without ``-S`` every ``.pth`` file of the
    host's site-packages runs first, and the start-up takes longer.
    """
    label = module_name.replace("_", "-")
    return (
        "python3 -I -S -c \"import sys; f = sys.stdin.buffer; c = f.read(int(f.readline())); "
        f"g = {{'__name__': '{module_name}'}}; exec(compile(c, '{label}', 'exec'), g); g['main'](f)\""
    )


@dataclass(frozen=True)
class HostScript:
    """A stdlib-only script of berth/remote/, run on a host with one request (a JSON text)."""

    path: Path
    module_name: str
    source: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", self.path.read_text())

    @property
    def command(self) -> str:
        return command(self.module_name)

    def payload(self, request: str) -> bytes:
        """The source, framed by its length, then the request's line."""
        source = self.source.encode()
        return b"%d\n" % len(source) + source + line(request)

    def run(self, session: HostSession, request: str,
            on_stderr_line: Callable[[str], None] | None = None) -> CommandResult:
        """One request, one answer: stdin ends after the request."""
        return session.run(self.command, stdin=self.payload(request), on_stderr_line=on_stderr_line)

    def start(self, session: HostSession, request: str,
              on_stderr_line: Callable[[str], None] | None = None) -> Exchange:
        """The first request; the script waits for more on the open stdin (``Exchange.send``)."""
        return session.start(self.command, stdin=self.payload(request), on_stderr_line=on_stderr_line)


def line(request: str) -> bytes:
    """A request as the scripts read it: one line (JSON has no raw newline)."""
    if "\n" in request:
        raise ValueError("a request is one line")
    return request.encode() + b"\n"
