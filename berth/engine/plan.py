"""Plan: the difference between what roles want and what the probe found, computed locally.

The plan is data: human-readable changes (with diffs) and the agent steps that make them. Check
mode prints the changes and stops; apply sends the steps in one command.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from berth.engine.resources import (
    DAEMON_RELOAD,
    Absent,
    Attributes,
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


@dataclass
class Change:
    kind: str              # file, directory, absent, packages, service, certificate
    target: str
    summary: str
    diff: str | None = None


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    handlers: list[Handler] = field(default_factory=list)
    # The drains this apply needs before its first step: disruptive handlers', and changed packages' that ask.
    drains: list[Drain] = field(default_factory=list)
    uploads: list[tuple[bytes, str]] = field(default_factory=list)   # (data, remote path) sent by SFTP first
    # Where this apply's uploads go: a name nobody can guess, made by the SFTP client (mkdir 0700, refused if
    # anything is there already) and removed by the agent when the apply ends, also on failure.
    upload_dir: str = field(default_factory=lambda: f"{UPLOAD_ROOT}/berth-{secrets.token_hex(16)}")
    notes: list[str] = field(default_factory=list)                     # told to the operator, not changes

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def notify(self, names: Sequence[str], handlers: Sequence[Handler]) -> None:
        """Add notified handlers, keeping one order: daemon-reload first, then as the roles declare them.

        A handler superseded by another notified one is dropped (see ``Handler.supersedes``).
        """
        by_name = {h.name: h for h in handlers}
        by_name.setdefault(DAEMON_RELOAD, Handler(DAEMON_RELOAD, "systemctl daemon-reload"))
        by_name.setdefault("apt update", Handler("apt update", "apt-get update -qq"))
        unknown = set(names) - set(by_name)
        if unknown:
            raise ValueError(f"resources notify undefined handlers: {', '.join(sorted(unknown))}")
        wanted = {h.name for h in self.handlers} | set(names)
        wanted -= {gone for name in wanted for gone in by_name[name].supersedes}
        order = [DAEMON_RELOAD, "apt update", *[h.name for h in handlers]]
        self.handlers = [by_name[name] for name in dict.fromkeys(order) if name in wanted]


def probe_request(resources: Sequence[Resource]) -> dict[str, Any]:
    files = [{"path": r.path, "content": True} for r in resources if isinstance(r, File)]
    files += [{"path": r.path} for r in resources if isinstance(r, Directory | Absent | Attributes)]
    packages = [n for r in resources if isinstance(r, Packages) for n in (*r.names, *r.absent)]
    services = [r.name for r in resources if isinstance(r, Service)]
    return {"action": "probe", "files": files, "packages": packages, "services": services}


def make_plan(resources: Sequence[Resource], handlers: Sequence[Handler], found: dict[str, Any]) -> Plan:
    plan = Plan()
    notified: list[str] = []
    for resource in resources:
        notified += _plan_resource(plan, resource, found)
    if "apt update" in notified:
        # Folded into the package step so that a new repository is read before installing from it.
        for step in plan.steps:
            if step["op"] == "packages":
                step["update"] = True
                notified = [n for n in notified if n != "apt update"]
    plan.notify(notified, handlers)
    plan.drains += [h.drain for h in plan.handlers if h.disruptive]
    return plan


def _plan_resource(plan: Plan, resource: Resource, found: dict[str, Any]) -> list[str]:
    match resource:
        case File():
            return _plan_file(plan, resource, found["files"].get(resource.path, {"exists": False}))
        case Directory():
            state = found["files"].get(resource.path, {"exists": False})
            drift = _attr_drift(resource, state) if state.get("is_dir") else ["missing"]
            if drift:
                plan.changes.append(Change("directory", resource.path, ", ".join(drift)))
                plan.steps.append(_attrs_step("directory", resource))
            return []
        case Attributes():
            state = found["files"].get(resource.path, {"exists": False})
            if not state.get("exists") or state.get("is_link"):
                return []           # the package makes the file; a link's own mode means nothing
            mode = state.get("mode", 0)
            drift = []
            if mode & ~resource.max_mode:
                drift.append(f"mode {mode:04o} -> {mode & resource.max_mode:04o}")
            if (state.get("owner"), state.get("group")) != (resource.owner, resource.group):
                drift.append(f"owner {state.get('owner')}:{state.get('group')} -> {resource.owner}:{resource.group}")
            if drift:
                plan.changes.append(Change("attributes", resource.path, ", ".join(drift)))
                # The agent's write step without content only sets owner, group and mode (berth/remote/agent.py).
                plan.steps.append({"op": "write", "path": resource.path, "mode": mode & resource.max_mode,
                                   "owner": resource.owner, "group": resource.group, "content": None})
            return []
        case Absent():
            if found["files"].get(resource.path, {}).get("exists"):
                plan.changes.append(Change("absent", resource.path, "remove"))
                plan.steps.append({"op": "remove", "path": resource.path})
                return list(resource.notify)
            return []
        case Packages():
            missing = [n for n in resource.names if not _installed(found["packages"].get(n), resource.versions.get(n))]
            unwanted = [n for n in resource.absent if found["packages"].get(n) is not None]
            if not missing and not unwanted:
                return []
            pinned = [f"{n}={resource.versions[n]}" if n in resource.versions else n for n in missing]
            actions = " and ".join(a for a, todo in (("install", pinned), ("remove", unwanted)) if todo)
            plan.changes.append(Change("packages", " ".join(pinned + [f"{n}-" for n in unwanted]), actions))
            step: dict[str, Any] = {"op": "packages", "install": pinned, "debs": []}
            if unwanted:
                step["remove"] = unwanted
                step["reinstall"] = [f"{n}={resource.versions[n]}" if n in resource.versions else n
                                     for n in resource.names]
            for deb in resource.debs:
                data = deb.read_bytes()
                remote = f"{plan.upload_dir}/{hashlib.sha256(data).hexdigest()[:16]}.deb"
                if remote not in (path for _, path in plan.uploads):     # the same file for two roles: once
                    plan.uploads.append((data, remote))
                step["debs"].append(remote)
            if resource.debs:
                step["install"] = []   # the uploaded files are the packages
                step["upload_dir"] = plan.upload_dir
            plan.steps.append(step)
            if resource.drain is not None:
                plan.drains.append(resource.drain)
            return list(resource.notify)
        case Service():
            state = found["services"].get(resource.name, {})
            drift = []
            if resource.enabled and not state.get("enabled"):
                drift.append("enable")
            if resource.running and not state.get("active"):
                drift.append("start")
            if drift:
                plan.changes.append(Change("service", resource.name, " and ".join(drift)))
                plan.steps.append({"op": "service", "name": resource.name,
                                   "enabled": resource.enabled, "running": resource.running})
            return []
    raise TypeError(f"unknown resource {resource!r}")


def _plan_file(plan: Plan, wanted: File, state: dict[str, Any]) -> list[str]:
    previous = base64.b64decode(state["content"]) if "content" in state else None
    if not state.get("exists") or state.get("sha256") != hashlib.sha256(wanted.content).hexdigest():
        summary = "create" if not state.get("exists") else "update content"
        plan.changes.append(Change("file", wanted.path, summary, file_diff(wanted, previous)))
        plan.steps.append({**_attrs_step("write", wanted), "content": base64.b64encode(wanted.content).decode(),
                           "backup": wanted.backup, "validate": wanted.validate})
        return list(wanted.handlers_for(previous))
    drift = _attr_drift(wanted, state)
    if drift:
        plan.changes.append(Change("file", wanted.path, ", ".join(drift)))
        plan.steps.append({**_attrs_step("write", wanted), "content": None})
    return []


def _installed(version: str | None, wanted: str | None) -> bool:
    return version is not None and (wanted is None or version == wanted)


def _attrs_step(op: str, resource: File | Directory) -> dict[str, Any]:
    return {"op": op, "path": resource.path, "mode": resource.mode, "owner": resource.owner, "group": resource.group}


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
