"""The one way berth runs its host-side scripts (berth/remote/): source and request on stdin.

Nothing is installed on the host: ``python3 -c`` reads stdin, splits the script's source from the request
at a marker line, runs the source and calls its ``main(request)``. The converge agent
(berth/remote/agent.py) and verify's facts command (berth/remote/facts.py) both go through ``HostScript``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from berth.transport.base import CommandResult, HostSession

REQUEST_MARK = "\n#--berth-request--\n"


def command(module_name: str) -> str:
    """The shell command that runs a script sent on stdin as module ``module_name`` (shown in tracebacks)."""
    label = module_name.replace("_", "-")
    return (
        "python3 -c \"import sys; s = sys.stdin.read(); c, _, r = s.partition('\\n#--berth-request--\\n'); "
        f"g = {{'__name__': '{module_name}'}}; exec(compile(c, '{label}', 'exec'), g); g['main'](r)\""
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
        return (self.source + REQUEST_MARK + request).encode()

    def run(self, session: HostSession, request: str,
            on_stderr_line: Callable[[str], None] | None = None) -> CommandResult:
        return session.run(self.command, stdin=self.payload(request), on_stderr_line=on_stderr_line)
