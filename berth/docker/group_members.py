"""CIS 1.1.2: the members of the `docker` group, who are root on the host through docker.sock (root:docker 0660).

Converge adds the users the inventory declares (``docker_group_members``) and removes the members it added
itself once they are no longer declared. It knows which those are from a record on the host
(:data:`RECORD`, one user name a line, written in the same apply as the group change): a member berth did
not add (put there by hand, by another tool, by a package) is never removed, only reported, because berth
cannot tell an intruder from an administrator's deliberate choice. `invoke verify` fails on every member that
is not declared, naming it.
"""

from __future__ import annotations

import re
from typing import Any

from berth.engine.plan import Change, Planned
from berth.engine.protocol import DirectoryStep, FileQuery, GroupMembersStep, ProbeAnswer, WriteStep
from berth.errors import ConfigError

GROUP = "docker"
RECORD = "/var/lib/berth/docker-group-members"
_USER = re.compile(r"^[a-z_][a-z0-9_.-]*\$?$")


def members(group_file: str, group: str = GROUP) -> list[str]:
    """The members of ``group`` in an /etc/group text (its 4th field)."""
    for line in group_file.splitlines():
        fields = line.split(":")
        if len(fields) == 4 and fields[0] == group:
            return [m for m in fields[3].split(",") if m]
    return []


def users(passwd_file: str) -> set[str]:
    return {line.split(":", 1)[0] for line in passwd_file.splitlines() if ":" in line}


def _text(found: ProbeAnswer, path: str) -> str:
    return (found.content(path) or b"").decode()


class DockerGroupMembers:
    """A derived resource: the group change depends on /etc/group, /etc/passwd and the record as probed."""

    notify: tuple[str, ...] = ()

    def __init__(self, declared: list[str], origin: object) -> None:
        self.declared = list(dict.fromkeys(declared))
        self.origin = origin

    def probe_files(self) -> list[FileQuery]:
        return [FileQuery(p, content=True) for p in ("/etc/group", "/etc/passwd", RECORD)]

    def plan(self, host: Any, found: ProbeAnswer, ctx: Any, plan: Any) -> Planned:
        bad = [u for u in self.declared if not isinstance(u, str) or not _USER.match(u)]
        if bad:
            raise ConfigError(f"{self.origin}: {host.name}: docker_group_members: {bad} are not user names")
        current = members(_text(found, "/etc/group"))
        managed = _text(found, RECORD).split()
        known = users(_text(found, "/etc/passwd"))
        add = [u for u in self.declared if u not in current]
        unknown = [u for u in add if u not in known]
        if unknown:
            raise ConfigError(f"{self.origin}: {host.name}: docker_group_members: no user {', '.join(unknown)} on the "
                              "host: create the user first (berth does not create accounts)")
        remove = [u for u in current if u in managed and u not in self.declared]
        foreign = [u for u in current if u not in managed and u not in self.declared]
        notes = (f"CIS 1.1.2: {', '.join(foreign)} in the docker group (root on the host) but not in "
                 "docker_group_members, and not added by berth: left alone; declare them or remove them "
                 "(gpasswd -d USER docker)",) if foreign else ()
        record = [u for u in managed if u in current and u not in remove] + [u for u in add if u not in managed]
        if not add and not remove and sorted(record) == sorted(managed):
            return Planned(notes=notes)
        summary = "; ".join(part for part in (f"add {', '.join(add)}" if add else "",
                                              f"remove {', '.join(remove)}" if remove else "") if part)
        steps = (
            GroupMembersStep(GROUP, add=tuple(add), remove=tuple(remove)),
            DirectoryStep(RECORD.rsplit("/", 1)[0], 0o755),
            WriteStep(RECORD, "".join(f"{u}\n" for u in record).encode(), 0o644),
        )
        return Planned((Change("group", GROUP, summary or "record the members berth added"),), steps, notes=notes)
