"""Plan: the difference between what roles want and what the probe found, computed locally.

The plan is data: human-readable changes (with diffs) and the typed agent steps that make them
(berth/engine/protocol.py). Check mode prints the changes and stops; apply sends the steps in one command.

Each resource kind is declared once, in ``KINDS``: what the probe asks about it and how it is planned
(its changes, its steps, the handlers it notifies). A new kind is a dataclass in resources.py, one
``ResourceKind`` here and, if it needs a new step, that step in protocol.py and berth/remote/agent.py.
Derived resources (planned after the probe with the controller's help: certificates, config.toml)
return a ``Planned`` of the same shape, with ``prepare`` for what can only happen during the apply.
"""

from __future__ import annotations

import difflib
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from berth.engine.protocol import (
    DirectoryStep,
    FileQuery,
    PackagesStep,
    ProbeAnswer,
    ProbeRequest,
    RemoveStep,
    Request,
    ServiceStep,
    Step,
    WriteStep,
)
from berth.engine.resources import (
    DAEMON_RELOAD,
    Absent,
    Attributes,
    Derived,
    Directory,
    Drain,
    File,
    Handler,
    Packages,
    Resource,
    Service,
)

# On disk (not /run or a tmpfs /tmp: gitlab-runner's packages are hundreds of MB) and writable by a non-root
# SSH user; sticky, so nobody else can move or remove berth's directory there. apt-get then reads the files
# as root: its _apt sandbox cannot enter a 0700 directory (apt says so in a notice, and installs them).
UPLOAD_ROOT = "/var/tmp"
APT_UPDATE = "apt update"


@dataclass
class Change:
    kind: str              # file, directory, absent, packages, service, certificate
    target: str
    summary: str
    diff: str | None = None


# What a derived resource does during the apply (have the host make a CSR, register a runner in GitLab):
# called with a way to ask the host's agent (the process that answered the probe), it returns the steps that
# go out with the rest of the apply. The agent's answer comes back as a dict; an answer with an error raises.
AskAgent = Callable[[Request], dict[str, Any]]
Prepare = Callable[[AskAgent], list[Step]]


@dataclass(frozen=True)
class Planned:
    """One resource's share of a plan. Empty: nothing to do."""

    changes: tuple[Change, ...] = ()
    steps: tuple[Step, ...] = ()
    first: tuple[Step, ...] = ()                      # before every other step of the apply
    notify: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    drains: tuple[Drain, ...] = ()
    uploads: tuple[tuple[bytes, str], ...] = ()       # (data, remote path) sent by SFTP first
    prepare: Prepare | None = None


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    handlers: list[Handler] = field(default_factory=list)
    # The drains this apply needs before its first step: disruptive handlers', and changed packages' that ask.
    drains: list[Drain] = field(default_factory=list)
    uploads: list[tuple[bytes, str]] = field(default_factory=list)   # (data, remote path) sent by SFTP first
    # Where this apply's uploads go: a name nobody can guess, made by the SFTP client (mkdir 0700, refused if
    # anything is there already) and removed by the agent when the apply ends, also on failure.
    upload_dir: str = field(default_factory=lambda: f"{UPLOAD_ROOT}/berth-{secrets.token_hex(16)}")
    notes: list[str] = field(default_factory=list)                     # told to the operator, not changes
    prepare: list[Prepare] = field(default_factory=list)               # run during the apply, in order

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def add(self, planned: Planned) -> None:
        self.changes += planned.changes
        self.steps[:0] = planned.first
        self.steps += planned.steps
        self.notes += planned.notes
        self.drains += planned.drains
        have = {path for _, path in self.uploads}
        self.uploads += [u for u in planned.uploads if u[1] not in have]     # the same file for two roles: once
        if planned.prepare is not None:
            self.prepare.append(planned.prepare)

    def notify(self, names: Sequence[str], handlers: Sequence[Handler]) -> None:
        """Add notified handlers, keeping one order: daemon-reload first, then as the roles declare them.

        A handler superseded by another notified one is dropped (see ``Handler.supersedes``).
        """
        by_name = {h.name: h for h in handlers}
        by_name.setdefault(DAEMON_RELOAD, Handler(DAEMON_RELOAD, "systemctl daemon-reload"))
        by_name.setdefault(APT_UPDATE, Handler(APT_UPDATE, "apt-get update -qq"))
        unknown = set(names) - set(by_name)
        if unknown:
            raise ValueError(f"resources notify undefined handlers: {', '.join(sorted(unknown))}")
        wanted = {h.name for h in self.handlers} | set(names)
        wanted -= {gone for name in wanted for gone in by_name[name].supersedes}
        order = [DAEMON_RELOAD, APT_UPDATE, *[h.name for h in handlers]]
        self.handlers = [by_name[name] for name in dict.fromkeys(order) if name in wanted]


# -- the resource kinds --------------------------------------------------------------------------------
R = TypeVar("R")


def _nothing(resource: Any) -> list[Any]:
    return []


@dataclass(frozen=True)
class ResourceKind(Generic[R]):
    """How one resource class is probed (files, packages, services to ask about) and planned."""

    plan: Callable[[R, ProbeAnswer, Plan], Planned]
    files: Callable[[R], list[FileQuery]] = _nothing
    packages: Callable[[R], list[str]] = _nothing
    services: Callable[[R], list[str]] = _nothing


def _plan_file(wanted: File, found: ProbeAnswer, plan: Plan) -> Planned:
    state = found.file(wanted.path)
    previous = found.content(wanted.path)
    if not state.get("exists") or state.get("sha256") != hashlib.sha256(wanted.content).hexdigest():
        summary = "create" if not state.get("exists") else "update content"
        step = WriteStep(wanted.path, wanted.content, wanted.mode, wanted.owner, wanted.group,
                         backup=wanted.backup, validate=wanted.validate)
        return Planned((Change("file", wanted.path, summary, file_diff(wanted, previous)),), (step,),
                       notify=wanted.handlers_for(previous))
    drift = _attr_drift(wanted, state)
    if not drift:
        return Planned()
    return Planned((Change("file", wanted.path, ", ".join(drift)),),
                   (WriteStep(wanted.path, None, wanted.mode, wanted.owner, wanted.group),))


def _plan_directory(resource: Directory, found: ProbeAnswer, plan: Plan) -> Planned:
    state = found.file(resource.path)
    drift = _attr_drift(resource, state) if state.get("is_dir") else ["missing"]
    if not drift:
        return Planned()
    return Planned((Change("directory", resource.path, ", ".join(drift)),),
                   (DirectoryStep(resource.path, resource.mode, resource.owner, resource.group),))


def _plan_absent(resource: Absent, found: ProbeAnswer, plan: Plan) -> Planned:
    if not found.file(resource.path).get("exists"):
        return Planned()
    return Planned((Change("absent", resource.path, "remove"),), (RemoveStep(resource.path),),
                   notify=resource.notify)


def _plan_packages(resource: Packages, found: ProbeAnswer, plan: Plan) -> Planned:
    missing = [n for n in resource.names if not _installed(found.packages.get(n), resource.versions.get(n))]
    unwanted = [n for n in resource.absent if found.packages.get(n) is not None]
    if not missing and not unwanted:
        return Planned()
    pinned = [f"{n}={resource.versions[n]}" if n in resource.versions else n for n in missing]
    actions = " and ".join(a for a, todo in (("install", pinned), ("remove", unwanted)) if todo)
    uploads = []
    for deb in resource.debs:
        data = deb.read_bytes()
        uploads.append((data, f"{plan.upload_dir}/{hashlib.sha256(data).hexdigest()[:16]}.deb"))
    reinstall = [f"{n}={resource.versions[n]}" if n in resource.versions else n for n in resource.names]
    step = PackagesStep(
        install=() if resource.debs else tuple(pinned),     # uploaded files: they are the packages
        debs=tuple(remote for _, remote in uploads),
        remove=tuple(unwanted), reinstall=tuple(reinstall) if unwanted else (),
        upload_dir=plan.upload_dir if resource.debs else None,
    )
    return Planned((Change("packages", " ".join(pinned + [f"{n}-" for n in unwanted]), actions),), (step,),
                   notify=resource.notify, drains=(resource.drain,) if resource.drain else (),
                   uploads=tuple(uploads))


def _plan_service(resource: Service, found: ProbeAnswer, plan: Plan) -> Planned:
    state = found.services.get(resource.name, {})
    drift = []
    if resource.enabled and not state.get("enabled"):
        drift.append("enable")
    if resource.running and not state.get("active"):
        drift.append("start")
    if not drift:
        return Planned()
    return Planned((Change("service", resource.name, " and ".join(drift)),),
                   (ServiceStep(resource.name, True if "enable" in drift else None,
                                True if "start" in drift else None),))


def _plan_attributes(resource: Attributes, found: ProbeAnswer, plan: Plan) -> Planned:
    state = found.file(resource.path)
    if not state.get("exists") or state.get("is_link"):
        return Planned()            # the package makes the file; a link's own mode means nothing
    mode = state.get("mode", 0)
    drift = []
    if mode & ~resource.max_mode:
        drift.append(f"mode {mode:04o} -> {mode & resource.max_mode:04o}")
    if (state.get("owner"), state.get("group")) != (resource.owner, resource.group):
        drift.append(f"owner {state.get('owner')}:{state.get('group')} -> {resource.owner}:{resource.group}")
    if not drift:
        return Planned()
    # A write step without content sets owner, group and mode only (berth/remote/agent.py Applier.write).
    return Planned((Change("attributes", resource.path, ", ".join(drift)),),
                   (WriteStep(resource.path, None, mode & resource.max_mode, resource.owner, resource.group),))


KINDS: dict[type, ResourceKind[Any]] = {
    File: ResourceKind[File](_plan_file, files=lambda r: [FileQuery(r.path, content=True)]),
    Directory: ResourceKind[Directory](_plan_directory, files=lambda r: [FileQuery(r.path)]),
    Attributes: ResourceKind[Attributes](_plan_attributes, files=lambda r: [FileQuery(r.path)]),
    Absent: ResourceKind[Absent](_plan_absent, files=lambda r: [FileQuery(r.path)]),
    Packages: ResourceKind[Packages](_plan_packages, packages=lambda r: [*r.names, *r.absent]),
    Service: ResourceKind[Service](_plan_service, services=lambda r: [r.name]),
}


def kind_of(resource: Resource) -> ResourceKind[Any]:
    try:
        return KINDS[type(resource)]
    except KeyError:
        raise TypeError(f"unknown resource {resource!r}: not one of {', '.join(k.__name__ for k in KINDS)} "
                        "(berth.engine.plan.KINDS)") from None


def probe_request(resources: Sequence[Resource], derived: Sequence[Derived] = (),
                  handlers: Sequence[Handler] = ()) -> ProbeRequest:
    """What the probe reads: every resource's files, packages and units, and the units a handler may signal or
    drain (on the same `systemctl show`: a unit more costs the host nothing worth measuring)."""
    kinds = [(r, kind_of(r)) for r in resources]
    units = [n for r, k in kinds for n in k.services(r)]
    units += [u for h in handlers for u in (h.signals, h.drain.runner_unit if h.disruptive else None) if u]
    return ProbeRequest(
        files=(*[f for r, k in kinds for f in k.files(r)], *[f for d in derived for f in d.probe_files()]),
        packages=tuple(n for r, k in kinds for n in k.packages(r)),
        services=tuple(dict.fromkeys(units)),
    )


def make_plan(resources: Sequence[Resource], handlers: Sequence[Handler], found: ProbeAnswer | dict[str, Any], *,
              derived: Sequence[Derived] = (), host: Any = None, ctx: Any = None) -> Plan:
    """The plan for one host: its resources, then its derived resources (each sees the plan so far)."""
    found = ProbeAnswer.of(found)
    plan = Plan()
    notified: list[str] = []
    for resource in resources:
        planned = kind_of(resource).plan(resource, found, plan)
        plan.add(planned)
        notified += planned.notify
    for derived_resource in derived:
        planned = derived_resource.plan(host, found, ctx, plan)
        plan.add(planned)
        notified += planned.notify
    if APT_UPDATE in notified and any(isinstance(s, PackagesStep) for s in plan.steps):
        # Folded into the package step so that a new repository is read before installing from it.
        plan.steps = [replace(s, update=True) if isinstance(s, PackagesStep) else s for s in plan.steps]
        notified = [n for n in notified if n != APT_UPDATE]
    plan.notify(notified, handlers)
    leave_starts_to_handlers(plan, handlers)
    # After every resource, derived ones too: a renewed certificate's disruptive restart drains as well.
    plan.drains += [h.drain for h in plan.handlers if h.disruptive]
    skip_what_does_not_run(plan, found)
    return plan


def skip_what_does_not_run(plan: Plan, found: ProbeAnswer) -> None:
    """No signal to a unit the host does not have, and no drain of such a runner: each is a systemctl the host
    would run for nothing (5 ms of its CPU). Only while this apply cannot make it appear: it installs no
    package (a package's scripts make and start units) and starts no such unit. The drain still waits for job
    containers: it only has no runner to stop."""
    if any(isinstance(s, PackagesStep) for s in plan.steps):
        return
    started = {s.name for s in plan.steps if isinstance(s, ServiceStep) and s.running}

    def absent(unit: str | None) -> bool:
        seen = found.services.get(unit or "")
        return seen is not None and seen.get("loaded") is False and not seen.get("active") and unit not in started

    plan.handlers = [h for h in plan.handlers if not absent(h.signals)]
    plan.drains = [replace(d, runner_unit="") if absent(d.runner_unit) else d for d in plan.drains]


def leave_starts_to_handlers(plan: Plan, handlers: Sequence[Handler]) -> None:
    """A stopped unit that this apply notifies is started by its handler that starts it, not by a service step.

    The steps run before the staged daemon.json is in place and before the daemon-reload: a start there runs
    the unit with its old configuration, or fails on it (the very configuration this apply repairs), and a
    dockerd started with the new drop-in but without its daemon.json binds its own /run/docker.sock over
    docker.socket's, which its exit then unlinks. A reload of a stopped unit becomes that start too.
    """
    starting = {h.unit: h for h in handlers if h.starts and h.unit}
    notified = {h.unit for h in plan.handlers if h.unit}
    started = {s.name for s in plan.steps if isinstance(s, ServiceStep) and s.running}
    taken = started & notified & set(starting)
    if not taken:
        return
    plan.notify([starting[unit].name for unit in sorted(taken)], handlers)
    steps: list[Step] = []
    for step in plan.steps:
        if isinstance(step, ServiceStep) and step.running and step.name in taken:
            if step.enabled is None:
                continue
            step = replace(step, running=None)
        steps.append(step)
    plan.steps = steps


def _installed(version: str | None, wanted: str | None) -> bool:
    return version is not None and (wanted is None or version == wanted)


def _attr_drift(wanted: File | Directory, state: dict[str, Any]) -> list[str]:
    drift = []
    if state.get("mode") != wanted.mode:
        drift.append(f"mode {state.get('mode', 0):04o} -> {wanted.mode:04o}")
    if (state.get("owner"), state.get("group")) != (wanted.owner, wanted.group):
        drift.append(f"owner {state.get('owner')}:{state.get('group')} -> {wanted.owner}:{wanted.group}")
    return drift


def file_diff(wanted: File, previous: bytes | None) -> str:
    if wanted.secret:
        return "(secret content: diff hidden)\n"
    try:
        old = (previous or b"").decode().splitlines(keepends=True)
        new = wanted.content.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return "(binary content changed)\n"
    label = wanted.path
    return "".join(difflib.unified_diff(old, new, f"{label} (host)" if previous is not None else "/dev/null",
                                        f"{label} (wanted)"))
