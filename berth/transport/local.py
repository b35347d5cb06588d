"""A host played by this machine: berth's real agent runs in a subprocess here, on a temporary root.

For tests of the engine without SSH, Docker or root's real files: every path the agent reads or writes
is under ``root`` (the request's root, berth/remote/agent.py host_path), and the commands it runs
(systemctl, dpkg-query, apt-get, dockerd, ...) are looked up on a PATH that starts with ``bin_dir``,
where a test puts stand-ins (openssl, which makes a certificate's key and CSR, is this machine's own). Only
the agent runs here: any other command would act on this machine outside ``root``, so it is refused.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from berth.errors import HostFailed
from berth.inventory.loader import Host
from berth.transport.base import CommandResult
from berth.transport.bootstrap import PYTHON as AGENT_PREFIX  # how every host-side script's bootstrap starts


@dataclass
class LocalSession:
    host: Host
    root: Path                       # the agent's root: every path it touches is under it
    bin_dir: Path | None = None      # stand-ins for the host's commands (python3 too, to pick one), first on PATH
    commands: int = 0

    @property
    def agent_root(self) -> str:
        return str(self.root)

    def run(self, command: str, *, stdin: bytes | None = None, sudo: bool = True, timeout: float | None = 600,
            on_stderr_line: Callable[[str], None] | None = None) -> CommandResult:
        """Run the agent's bootstrap here (counted, as an SSH command is)."""
        self._admit(command)
        try:
            done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=timeout,
                                  env=self._env(), cwd=self.root)
        except subprocess.TimeoutExpired:
            raise HostFailed(f"{self.host.name}: the agent did not answer within {timeout}s") from None
        stderr = done.stderr.decode(errors="replace")
        if on_stderr_line is not None:
            for line in stderr.splitlines():
                on_stderr_line(line)       # after the fact: a local run is short
        return CommandResult(done.returncode, done.stdout.decode(errors="replace"), stderr)

    def start(self, command: str, *, stdin: bytes, sudo: bool = True,
              on_stderr_line: Callable[[str], None] | None = None) -> LocalExchange:
        """As ``run``, stdin left open (counted once, as the SSH session's)."""
        self._admit(command)
        errors = tempfile.TemporaryFile()     # noqa: SIM115 (LocalExchange.finish closes it)
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                env=self._env(), cwd=self.root)
        exchange = LocalExchange(proc, errors, on_stderr_line)
        exchange.send(stdin)
        return exchange

    def _admit(self, command: str) -> None:
        if not command.startswith(AGENT_PREFIX):
            raise HostFailed(f"{self.host.name}: the local transport runs only berth's agent; refused "
                             f"{command[:60]!r}, which would act on this machine outside {self.root}")
        self.commands += 1

    def _env(self) -> dict[str, str]:
        path = [str(self.bin_dir)] if self.bin_dir else []
        return {**os.environ, "PATH": os.pathsep.join([*path, os.environ.get("PATH", "")])}

    def put_private(self, directory: str, files: list[tuple[bytes, str]]) -> None:
        """As the SSH session's: a new 0700 directory (refused if anything is there), files made exclusively."""
        local = self.root / directory.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            local.mkdir(mode=0o700)
        except OSError as exc:
            raise HostFailed(f"{self.host.name}: cannot make the upload directory {directory} ({exc})") from None
        for data, remote_path in files:
            if not remote_path.startswith(directory + "/"):
                raise HostFailed(f"{self.host.name}: {remote_path} is outside the upload directory {directory}")
            self.commands += 1
            with open(self.root / remote_path.lstrip("/"), "xb") as fh:
                fh.write(data)

    def close(self) -> None:
        pass


@dataclass
class LocalExchange:
    """LocalSession.start's open command (berth.transport.base.Exchange): a subprocess with pipes."""

    proc: subprocess.Popen[bytes]
    errors: IO[bytes]                  # stderr, read when the command ends
    on_stderr_line: Callable[[str], None] | None = None

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass          # the agent ended: finish() says how

    def read_line(self) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().rstrip(b"\n")

    def finish(self) -> CommandResult:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        rest = self.proc.stdout.read()
        code = self.proc.wait()
        self.errors.seek(0)
        stderr = self.errors.read().decode(errors="replace")
        self.errors.close()
        if self.on_stderr_line is not None:
            for line in stderr.splitlines():
                self.on_stderr_line(line)       # after the fact: a local run is short
        return CommandResult(code, rest.decode(errors="replace"), stderr)
