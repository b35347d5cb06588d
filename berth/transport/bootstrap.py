"""The one way berth runs its host-side scripts (berth/remote/): everything on stdin.

Nothing is installed on the host. ``python3 -I -S -c`` reads a line with the length of berth/remote/loader.py's
source and runs it; the loader reads the script the same way (its length, its source), runs it (compiled once and
kept in a root-only /run/berth: loader.py says why and how that is trusted), and calls its ``main`` with the rest
of stdin: requests, one JSON line each. The converge agent (berth/remote/agent.py) answers each request on a line
of stdout, so one process answers a probe and then the apply made from it; verify's facts command
(berth/remote/facts.py) answers one. Both go through ``HostScript``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from berth.transport.base import CommandResult, Exchange, HostSession

LOADER = (Path(__file__).parents[1] / "remote" / "loader.py").read_bytes()
CACHE_DIR = "/run/berth"        # on the host; under the agent's root for berth.transport.local
PYTHON = "exec python3 -I -S -c "      # how every bootstrap starts (berth.transport.local admits only these)


def command(module_name: str, cache_dir: str | None = None) -> str:
    """The shell command that runs a script sent on stdin (after the loader) as module ``module_name`` (shown in
    tracebacks), its compiled code kept in ``cache_dir`` (None: compiled every time).

    ``-I -S``: the standard library alone. Without ``-I`` the working directory (the SSH user's home) comes
    first on ``sys.path`` and a ``json.py`` there would run as root; without ``-S`` every ``.pth`` file of the
    host's site-packages runs first, and the start-up takes longer. ``exec``: the shell that runs it (sudo's
    ``sh -c``, or the login shell) becomes python3 instead of waiting for it, a process fewer per host.
    """
    return (PYTHON + "\"import sys; f = sys.stdin.buffer; exec(f.read(int(f.readline())))\" "
            f"{module_name} {shlex.quote(cache_dir or '-')}")


def cache_dir(session: HostSession) -> str:
    root = session.agent_root
    return CACHE_DIR if root == "/" else os.path.join(root, CACHE_DIR.lstrip("/"))


def framed(data: bytes) -> bytes:
    """As the bootstrap and the loader read a source: a line with its length, then the bytes."""
    return b"%d\n" % len(data) + data


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
        """Without a cache: compiled every time."""
        return command(self.module_name)

    def payload(self, request: str) -> bytes:
        """The loader and the source, each framed by its length, then the request's line."""
        return framed(LOADER) + framed(self.source.encode()) + line(request)

    def run(self, session: HostSession, request: str,
            on_stderr_line: Callable[[str], None] | None = None) -> CommandResult:
        """One request, one answer: stdin ends after the request."""
        return session.run(command(self.module_name, cache_dir(session)), stdin=self.payload(request),
                           on_stderr_line=on_stderr_line)

    def start(self, session: HostSession, request: str,
              on_stderr_line: Callable[[str], None] | None = None) -> Exchange:
        """The first request; the script waits for more on the open stdin (``Exchange.send``)."""
        return session.start(command(self.module_name, cache_dir(session)), stdin=self.payload(request),
                             on_stderr_line=on_stderr_line)


def line(request: str) -> bytes:
    """A request as the scripts read it: one line (JSON has no raw newline)."""
    if "\n" in request:
        raise ValueError("a request is one line")
    return request.encode() + b"\n"
