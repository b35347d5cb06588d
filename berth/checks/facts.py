"""What a host's checks read: the request every role's ``verify/conftest.py`` fills, and the one answer.

The plugin (berth/checks/plugin.py) sends the request to the host in one SSH command (berth/remote/facts.py
runs there) and gives the checks the answer as the ``facts`` fixture. No pytest here: the role API
(berth.role) re-exports these for checks.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CommandFacts", "Facts", "FactsRequest", "FileFacts"]


@dataclass
class FactsRequest:
    """What one host's checks want to know; filled by every role's pytest_berth_verify_facts."""

    files: dict[str, bool] = field(default_factory=dict)      # path -> read the content too
    globs: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)

    def file(self, path: str, *, content: bool = False) -> None:
        """Stat ``path``; ``content`` reads it too: only for public files, never for keys."""
        self.files[path] = self.files.get(path, False) or content

    def glob(self, pattern: str) -> None:
        self.globs.append(pattern)

    def unit(self, *names: str) -> None:
        self.units += [n for n in names if n not in self.units]

    def package(self, *names: str) -> None:
        self.packages += [n for n in names if n not in self.packages]

    def command(self, name: str, command: str) -> None:
        """A read-only shell command run as root; its rc, stdout and stderr come back as facts.command(name)."""
        self.commands[name] = command

    def as_json(self) -> dict[str, Any]:
        return {"files": [{"path": p, "content": c} for p, c in self.files.items()], "globs": self.globs,
                "units": self.units, "packages": self.packages, "commands": self.commands}


@dataclass(frozen=True)
class FileFacts:
    path: str
    exists: bool
    mode: int = 0
    owner: str = ""
    group: str = ""
    type: str = ""
    content: bytes | None = None

    def describe(self) -> str:
        return f"{self.path} {self.owner}:{self.group} {self.mode:04o}" if self.exists else f"{self.path} missing"


@dataclass(frozen=True)
class CommandFacts:
    rc: int
    stdout: str
    stderr: str


class Facts:
    """The answer of the one facts command of a host."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.raw = answer
        self.host: dict[str, Any] = answer["host"]

    def file(self, path: str) -> FileFacts:
        state = self.raw["files"].get(path)
        if state is None:
            raise KeyError(f"{path} was not requested: add request.file({path!r}) to pytest_berth_verify_facts")
        if not state["exists"]:
            return FileFacts(path, False)
        content = base64.b64decode(state["content"]) if "content" in state else None
        return FileFacts(path, True, state["mode"], state["owner"], state["group"], state["type"], content)

    def glob(self, pattern: str) -> list[str]:
        return self.raw["globs"][pattern]

    def unit(self, name: str) -> dict[str, str]:
        return self.raw["units"][name]

    def package(self, name: str) -> str | None:
        """The installed version, or None."""
        return self.raw["packages"][name]

    def command(self, name: str) -> CommandFacts:
        return CommandFacts(**self.raw["commands"][name])
