"""Resources: the state a role wants, as plain data.

A role returns resources and the handlers they may notify; it never talks to a host. The engine
probes the host for the state of every resource in one command, plans locally, and applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from berth.engine.protocol import FileQuery, ProbeAnswer

if TYPE_CHECKING:
    from berth.engine.plan import Planned

DAEMON_RELOAD = "systemd daemon-reload"

# A notify rule chooses handlers from the file's previous and new content (for example a reload
# of dockerd for reloadable daemon.json keys, a restart for the others).
NotifyRule = Callable[[bytes | None, bytes], tuple[str, ...]]


@dataclass(frozen=True)
class File:
    path: str
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    notify: tuple[str, ...] = ()
    notify_rule: NotifyRule | None = None
    secret: bool = False        # never shown in diffs
    backup: bool = False        # keep a timestamped copy of the previous file on the host
    validate: str | None = None  # checked on the host before it replaces the file (agent VALIDATORS: "dockerd")

    def handlers_for(self, previous: bytes | None) -> tuple[str, ...]:
        rule = self.notify_rule(previous, self.content) if self.notify_rule else ()
        return tuple(dict.fromkeys((*self.notify, *rule)))


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int = 0o755
    owner: str = "root"
    group: str = "root"


@dataclass(frozen=True)
class Attributes:
    """Owner, group and a ceiling on the permissions of a file berth does not write (a vendor unit, a socket).

    The content is never read or changed, and a missing file is left missing (its package makes it). A mode
    with bits beyond ``max_mode`` loses those bits; a stricter mode is kept.
    """

    path: str
    max_mode: int = 0o644
    owner: str = "root"
    group: str = "root"


@dataclass(frozen=True)
class Absent:
    """A file that must not exist (for example a drop-in that is no longer wanted)."""

    path: str
    notify: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Packages:
    """Debian packages installed with apt; ``debs`` are local files uploaded from the controller."""

    names: tuple[str, ...]
    debs: tuple[Path, ...] = ()
    notify: tuple[str, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)   # pins: name -> exact Debian version
    # Packages that must not be installed; removed in the same apt run, then the pinned ones are
    # reinstalled (their files may have been held by the removed package through Replaces).
    absent: tuple[str, ...] = ()
    # A change to these packages ends running CI jobs unless the host is drained first (set: it is).
    drain: Drain | None = None


@dataclass(frozen=True)
class Service:
    name: str
    enabled: bool = True
    running: bool = True


@dataclass(frozen=True)
class Health:
    """What "the service came back" means: its unix socket answers /_ping, its TCP ports accept."""

    unix: str | None = None
    tcp: tuple[tuple[str, int], ...] = ()
    timeout: float = 30.0


# gitlab-runner puts this label on every container of a job: build, services, helper (its labels package).
JOB_LABEL = "com.gitlab.gitlab-runner.job.id"


@dataclass(frozen=True)
class Drain:
    """How a host is drained before a disruptive change (a disruptive handler, a package that asks for it).

    The runner unit (when the host has it) stops taking jobs; then berth waits until no container
    carrying ``job_label`` runs on the daemon at ``socket``, for at most ``timeout`` seconds.
    """

    socket: str = "/var/run/docker.sock"
    timeout: float = 600.0
    runner_unit: str = "gitlab-runner"     # the unit `gitlab-runner install` creates
    job_label: str = JOB_LABEL


@dataclass(frozen=True)
class Handler:
    """A command run once at the end of an apply when a changed resource notified it.

    With ``health`` set, the handler is checked afterwards; with ``rollback`` the files written in
    this apply are restored and the command run again when the check fails. A ``disruptive``
    handler ends running CI jobs, so the host is drained first (``drain``). A handler that
    ``supersedes`` others makes them redundant when both are notified (a restart covers a reload). A
    handler that ``starts`` its ``unit`` (``systemctl restart`` starts a stopped one) does so in place of the
    unit's start step, after the new configuration is in place (``berth.engine.plan.leave_starts_to_handlers``).
    A handler that ``signals`` a unit's running process (a reload by SIGHUP) has nothing to do on a host that
    has no such unit, while the apply installs no package (``berth.engine.plan.skip_what_does_not_run``).
    """

    name: str
    command: str
    unit: str | None = None
    health: Health | None = None
    rollback: bool = False
    disruptive: bool = False
    drain: Drain = field(default_factory=Drain)
    supersedes: tuple[str, ...] = ()
    starts: bool = False
    signals: str | None = None


def drop_in(unit: str, name: str, content: bytes, *, notify: tuple[str, ...] = ()) -> File:
    """A systemd drop-in: survives package upgrades, unlike edits to the vendor unit."""
    return File(f"/etc/systemd/system/{unit}.d/{name}", content, notify=(DAEMON_RELOAD, *notify))


def apt_source(name: str, line: str, keyring: bytes) -> list[File]:
    """An apt repository with its own keyring (signed-by), never a key in the global trust store."""
    keyring_path = f"/usr/share/keyrings/{name}.gpg"
    return [
        File(keyring_path, keyring, notify=("apt update",)),
        File(f"/etc/apt/sources.list.d/{name}.list",
             f"deb [signed-by={keyring_path}] {line}\n".encode(), notify=("apt update",)),
    ]


Resource = File | Directory | Attributes | Absent | Packages | Service


class Derived(Protocol):
    """A resource whose wanted state depends on the probe (a certificate to sign, a config to merge).

    ``plan`` returns its share of the plan (berth.engine.plan.Planned: changes, steps, notified handlers,
    notes) and reads, never changes, the plan so far; what can only happen during the apply (a CSR made
    on the host, a runner registered in GitLab) is its ``prepare``, which returns the steps to add.
    """

    def probe_files(self) -> list[FileQuery]: ...

    def plan(self, host: Any, found: ProbeAnswer, ctx: Any, plan: Any) -> Planned: ...


@dataclass
class RoleState:
    """What one role wants on one host."""

    role: str
    resources: list[Resource] = field(default_factory=list)
    handlers: list[Handler] = field(default_factory=list)
    derived: list[Derived] = field(default_factory=list)
