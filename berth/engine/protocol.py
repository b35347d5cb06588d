"""The agent protocol: every request berth sends to berth/remote/agent.py and every answer, as types.

The agent runs on the hosts (stdlib only, Python 3.9) and cannot import this module: it knows the
protocol version and the step names by value (agent.PROTOCOL, agent.STEPS) and refuses a request of
another version, or naming a step it does not know, before it changes anything.
tests/unit/test_protocol.py keeps both sides in step.

On the wire a request is one JSON object: ``protocol``, ``action``, ``root`` (the prefix of every path
the agent touches: "/" on a host, a temporary directory for berth.transport.local) and the action's
fields. A new field is added with a default on both sides, so that an older answer or request still reads.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from berth.errors import HostFailed

PROTOCOL = 1


# -- steps: what an apply changes, in order -------------------------------------------------------
@dataclass(frozen=True)
class WriteStep:
    """A file's content (None: only its mode and owner), written atomically; ``validate`` names an agent
    validator that checks the new file before it replaces the old one."""

    op: ClassVar[str] = "write"
    path: str
    content: bytes | None
    mode: int
    owner: str = "root"
    group: str = "root"
    backup: bool = False
    backup_keep: int | None = None
    validate: str | None = None

    def wire(self) -> dict[str, Any]:
        data = {"op": self.op, "path": self.path, "mode": self.mode, "owner": self.owner, "group": self.group,
                "content": None if self.content is None else base64.b64encode(self.content).decode()}
        if self.content is not None:
            data.update(backup=self.backup, validate=self.validate)
            if self.backup_keep is not None:
                data["backup_keep"] = self.backup_keep
        return data


@dataclass(frozen=True)
class InstallKeyStep:
    """Swap a key the host made (``src``) into ``path``; a rollback puts the old one back."""

    op: ClassVar[str] = "install_key"
    src: str
    path: str

    def wire(self) -> dict[str, Any]:
        return {"op": self.op, "src": self.src, "path": self.path}


@dataclass(frozen=True)
class DirectoryStep:
    op: ClassVar[str] = "directory"
    path: str
    mode: int
    owner: str = "root"
    group: str = "root"

    def wire(self) -> dict[str, Any]:
        return {"op": self.op, "path": self.path, "mode": self.mode, "owner": self.owner, "group": self.group}


@dataclass(frozen=True)
class RemoveStep:
    op: ClassVar[str] = "remove"
    path: str

    def wire(self) -> dict[str, Any]:
        return {"op": self.op, "path": self.path}


@dataclass(frozen=True)
class PackagesStep:
    """One apt-get run (two when a removal may have taken files of a pinned package: ``reinstall``)."""

    op: ClassVar[str] = "packages"
    install: tuple[str, ...] = ()
    debs: tuple[str, ...] = ()             # uploaded files, inside upload_dir
    remove: tuple[str, ...] = ()
    reinstall: tuple[str, ...] = ()
    update: bool = False                   # apt-get update first, however fresh the lists are
    upload_dir: str | None = None

    def wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "install": list(self.install), "debs": list(self.debs)}
        if self.remove:
            data.update(remove=list(self.remove), reinstall=list(self.reinstall))
        if self.upload_dir is not None:
            data["upload_dir"] = self.upload_dir
        if self.update:
            data["update"] = True
        return data


@dataclass(frozen=True)
class ServiceStep:
    op: ClassVar[str] = "service"
    name: str
    enabled: bool | None = None
    running: bool | None = None

    def wire(self) -> dict[str, Any]:
        return {"op": self.op, "name": self.name, "enabled": self.enabled, "running": self.running}


@dataclass(frozen=True)
class GroupMembersStep:
    """Add users to / remove them from a group (gpasswd -a / -d, no shell): CIS 1.1.2's docker group."""

    op: ClassVar[str] = "group_members"
    group: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    def wire(self) -> dict[str, Any]:
        return {"op": self.op, "group": self.group, "add": list(self.add), "remove": list(self.remove)}


Step = WriteStep | InstallKeyStep | DirectoryStep | RemoveStep | PackagesStep | ServiceStep | GroupMembersStep
STEP_OPS = frozenset(kind.op for kind in (WriteStep, InstallKeyStep, DirectoryStep, RemoveStep, PackagesStep,
                                          ServiceStep, GroupMembersStep))


# -- what handlers and drains send ---------------------------------------------------------------
@dataclass(frozen=True)
class HealthCheck:
    unix: str | None = None
    tcp: tuple[tuple[str, int], ...] = ()
    timeout: float | None = None           # None: the health request's own

    def wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {"unix": self.unix, "tcp": [list(t) for t in self.tcp]}
        if self.timeout is not None:
            data["timeout"] = self.timeout
        return data


@dataclass(frozen=True)
class HandlerCall:
    name: str
    cmd: str
    unit: str | None = None
    health: HealthCheck | None = None
    rollback: bool = False
    # It ends running jobs: an apply with a drain runs it only once the drain has settled. A handler that ends
    # none (daemon-reload, a reload) runs while the drain's last poll is still due (agent apply).
    disruptive: bool = True

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "cmd": self.cmd, "unit": self.unit, "disruptive": self.disruptive,
                "health": self.health.wire() if self.health else None, "rollback": self.rollback}


@dataclass(frozen=True)
class DrainSpec:
    socket: str
    timeout: float
    runner_unit: str
    job_label: str
    force: bool = False

    def wire(self) -> dict[str, Any]:
        return {"socket": self.socket, "timeout": self.timeout, "runner_unit": self.runner_unit,
                "job_label": self.job_label, "force": self.force}


# -- requests ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileQuery:
    path: str
    content: bool = False                  # read it (never for keys: their existence and mode only)

    def wire(self) -> dict[str, Any]:
        return {"path": self.path, "content": True} if self.content else {"path": self.path}


@dataclass(frozen=True)
class ProbeRequest:
    action: ClassVar[str] = "probe"
    files: tuple[FileQuery, ...] = ()
    packages: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        return {"files": [f.wire() for f in self.files], "packages": list(self.packages),
                "services": list(self.services)}


@dataclass(frozen=True)
class ApplyLock:
    """The host's apply lock (agent ApplyLock): wait for another apply at most ``timeout`` seconds; ``holder``
    is who this run is (controller user@host, pid, run id), shown to a run that waits for it."""

    timeout: float
    holder: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "holder": dict(self.holder)}


@dataclass(frozen=True)
class Expectation:
    """What the plan was made from, re-checked by the agent under the lock before it writes anything:
    path -> exists/sha256/mode/owner/group as probed; unit -> active/enabled as probed."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        return {"files": self.files, "services": self.services}


@dataclass(frozen=True)
class ApplyRequest:
    action: ClassVar[str] = "apply"
    steps: tuple[Step, ...] = ()
    handlers: tuple[HandlerCall, ...] = ()
    drain: DrainSpec | None = None
    upload_dir: str | None = None          # removed by the agent when the apply ends, also on failure
    lock: ApplyLock | None = None          # None: no lock (an agent of this protocol always gets one from berth)
    expect: Expectation | None = None
    apt_lock_timeout: float | None = None  # seconds to wait for apt's locks (berth_apt_lock_timeout)

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"steps": [s.wire() for s in self.steps], "handlers": [h.wire() for h in self.handlers]}
        if self.upload_dir is not None:
            data["upload_dir"] = self.upload_dir
        if self.drain is not None:
            data["drain"] = self.drain.wire()
        if self.lock is not None:
            data["lock"] = self.lock.wire()
        if self.expect is not None:
            data["expect"] = self.expect.wire()
        if self.apt_lock_timeout is not None:
            data["apt_lock_timeout"] = self.apt_lock_timeout
        return data


@dataclass(frozen=True)
class HealthRequest:
    action: ClassVar[str] = "health"
    checks: tuple[HealthCheck, ...] = ()
    timeout: float = 10.0

    def body(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "checks": [c.wire() for c in self.checks]}


@dataclass(frozen=True)
class CsrRequest:
    """Have the host make a certificate signing request for ``key`` (first the key itself, with openssl genpkey's
    ``genpkey`` options, when they are given): the key never leaves the host, only its CSR does."""

    action: ClassVar[str] = "csr"
    key: str
    common_name: str
    genpkey: tuple[str, ...] | None = None

    def body(self) -> dict[str, Any]:
        return {"key": self.key, "common_name": self.common_name,
                "genpkey": list(self.genpkey) if self.genpkey is not None else None}


Request = ProbeRequest | ApplyRequest | HealthRequest | CsrRequest


def envelope(request: Request, *, root: str = "/") -> dict[str, Any]:
    """The JSON object the agent reads on stdin."""
    return {"protocol": PROTOCOL, "action": request.action, "root": root, **request.body()}


# -- answers ---------------------------------------------------------------------------------------
class ProtocolError(HostFailed):
    """The agent's answer is not one this controller can read (another protocol, a refusal)."""


def _check(answer: Mapping[str, Any]) -> None:
    version = answer.get("protocol", PROTOCOL)
    if version != PROTOCOL:
        raise ProtocolError(f"the agent answered in protocol {version}, this berth speaks {PROTOCOL}")
    if answer.get("refused"):
        raise ProtocolError(str(answer.get("error")))


@dataclass
class ProbeAnswer:
    """What the host has: facts, and the state of every file, package and service asked for.

    A file's state is the agent's dict (exists, mode, owner, group, is_dir, is_link, sha256, content in base64).
    """

    facts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    packages: dict[str, str | None] = field(default_factory=dict)
    services: dict[str, dict[str, bool]] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, answer: Mapping[str, Any]) -> ProbeAnswer:
        _check(answer)
        return cls(facts=dict(answer.get("facts") or {}), files=dict(answer.get("files") or {}),
                   packages=dict(answer.get("packages") or {}), services=dict(answer.get("services") or {}))

    @classmethod
    def of(cls, found: ProbeAnswer | Mapping[str, Any]) -> ProbeAnswer:
        """A probe answer, also from its wire form (tests and callers that build one by hand)."""
        return found if isinstance(found, ProbeAnswer) else cls.from_wire(found)

    def file(self, path: str) -> dict[str, Any]:
        return self.files.get(path, {"exists": False})

    def content(self, path: str) -> bytes | None:
        state = self.files.get(path, {})
        return base64.b64decode(state["content"]) if state.get("content") is not None else None


@dataclass
class ApplyAnswer:
    steps: list[str | None] = field(default_factory=list)
    handlers: list[str] = field(default_factory=list)
    error: str | None = None
    drain: dict[str, Any] | None = None    # the agent's account of a drain: runner, jobs, waited, forced
    waited: dict[str, Any] | None = None   # {"seconds", "for": holder} when another apply held the lock first
    apt_waited: float | None = None        # seconds spent waiting for apt's locks
    extra: dict[str, Any] = field(default_factory=dict)   # keys this controller does not read (newer agents)

    @classmethod
    def from_wire(cls, answer: Mapping[str, Any]) -> ApplyAnswer:
        _check(answer)
        known = {"steps", "handlers", "error", "drain", "waited", "apt_waited", "protocol"}
        return cls(steps=list(answer.get("steps") or []), handlers=list(answer.get("handlers") or []),
                   error=answer.get("error"), drain=answer.get("drain"), waited=answer.get("waited"),
                   apt_waited=answer.get("apt_waited"), extra={k: v for k, v in answer.items() if k not in known})


@dataclass
class HealthAnswer:
    error: str | None = None

    @classmethod
    def from_wire(cls, answer: Mapping[str, Any]) -> HealthAnswer:
        _check(answer)
        return cls(error=answer.get("error"))


@dataclass
class CsrAnswer:
    csr: str | None = None          # PEM
    error: str | None = None

    @classmethod
    def from_wire(cls, answer: Mapping[str, Any]) -> CsrAnswer:
        _check(answer)
        return cls(csr=answer.get("csr"), error=answer.get("error"))


def steps_wire(steps: Sequence[Step]) -> list[dict[str, Any]]:
    return [s.wire() for s in steps]
