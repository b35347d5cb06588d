"""Converge one host: probe (one command), plan (local), apply (one command).

A converged host costs one SSH command. A host with changes costs two, plus one per certificate
to issue (the host makes its key and CSR) and one SFTP upload when local .deb files are needed.

When a notified handler is disruptive (it ends running CI jobs), or a changed package asks for it, the apply
request carries a drain:
the agent stops the runner from taking jobs and waits for running job containers before it
changes anything (berth/remote/agent.py, Drain).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from berth.engine.plan import Change, Plan, make_plan, probe_request
from berth.engine.resources import Directory, Drain, Handler, Resource
from berth.engine.roles import RoleContext, declare_roles
from berth.errors import BerthError, ConfigError, HostFailed, HostUnreachable, InventoryError
from berth.inventory.loader import Host
from berth.transport.ssh import CommandResult, Session, SessionBroken, SSHSettings

AGENT_SOURCE = (Path(__file__).parents[1] / "remote" / "agent.py").read_text()
REQUEST_MARK = "\n#--berth-request--\n"
# The agent's source and the request travel on stdin; nothing is installed on the host.
AGENT_COMMAND = (
    "python3 -c \"import sys; s = sys.stdin.read(); c, _, r = s.partition('\\n#--berth-request--\\n'); "
    "g = {'__name__': 'berth_agent'}; exec(compile(c, 'berth-agent', 'exec'), g); g['main'](r)\""
)


# Who this run is, as the host's apply lock records it (berth/remote/agent.py ApplyLock) for a run that waits for it.
RUN_ID = secrets.token_hex(4)
EVENT_MARK = "berth-event: "
NO_EXIT_STATUS = -1           # paramiko's exit status of a channel that closed without one


def controller_identity() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"controller": f"{user}@{socket.gethostname()}", "pid": os.getpid(), "run": RUN_ID}


DEFAULT_SECONDS = {"berth_apply_lock_timeout": 600.0, "berth_apt_lock_timeout": 300.0}   # config/defaults.yml


def seconds_var(host: Host, name: str) -> float:
    """A timeout variable of the host, in seconds (a number >= 0), or an error naming where it was set."""
    value = host.vars.get(name, DEFAULT_SECONDS.get(name))
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{host.origins.get(name, name)}: {host.name}: {name} must be a number of seconds "
                          f">= 0, not {value!r}")
    return float(value)


def lock_request(host: Host) -> dict[str, Any]:
    return {"timeout": seconds_var(host, "berth_apply_lock_timeout"), "holder": controller_identity()}


def expectations(resources: list[Resource], found: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """What the plan was made from, for the agent to re-check before it writes anything.

    Every probed file but directories (a certificate's preparation may make its folder), with the units the
    plan starts or enables.
    """
    folders = {r.path for r in resources if isinstance(r, Directory)}
    files = {path: {k: state.get(k) for k in ("exists", "sha256", "mode", "owner", "group")}
             for path, state in found["files"].items() if path not in folders and not state.get("is_dir")}
    units = {s["name"] for s in steps if s.get("op") == "service"}
    return {"files": files, "services": {u: found["services"][u] for u in units if u in found["services"]}}


class Status(StrEnum):
    OK = "ok"
    CHANGED = "changed"
    PENDING = "pending"          # check mode found changes
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    INVALID = "invalid"          # the host's variables or roles are wrong; nothing was changed


@dataclass
class HostReport:
    host: str
    status: Status = Status.OK
    changes: list[Change] = field(default_factory=list)
    handlers: list[str] = field(default_factory=list)
    commands: int = 0
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    drain: dict[str, Any] | None = None      # the agent's account of a drain: runner, jobs, waited, forced

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "status": str(self.status), "changed": len(self.changes),
            "changes": [{"kind": c.kind, "target": c.target, "summary": c.summary} for c in self.changes],
            "handlers": self.handlers, "ssh_commands": self.commands, "seconds": round(self.seconds, 3),
            "error": self.error, "notes": self.notes, "drain": self.drain,
        }


def run_agent(session: Session, request: dict[str, Any],
              on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    def line(text: str) -> None:
        if on_event is not None and text.startswith(EVENT_MARK):
            with contextlib.suppress(ValueError):
                on_event(json.loads(text[len(EVENT_MARK):]))

    try:
        result = session.run(AGENT_COMMAND, stdin=(AGENT_SOURCE + REQUEST_MARK + json.dumps(request)).encode(),
                             on_stderr_line=line)
    except HostUnreachable as exc:
        if request.get("action") == "apply":
            raise HostUnreachable(lost_during_apply(session, str(exc))) from None
        raise
    result = CommandResult(result.exit_code, result.stdout, "\n".join(
        t for t in result.stderr.splitlines() if not t.startswith(EVENT_MARK)))
    if result.exit_code == NO_EXIT_STATUS and request.get("action") == "apply":
        raise HostUnreachable(lost_during_apply(session, "the connection closed without an exit status"))
    if not result.ok:
        hint = " (is python3 installed on the host?)" if "python3" in result.stderr else ""
        raise HostFailed(f"{session.host.name}: the berth agent failed{hint}: {result.stderr.strip()[-800:]}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise HostFailed(f"{session.host.name}: unreadable agent answer: {result.stdout[:300]!r}") from None


def lost_during_apply(session: Session, why: str) -> str:
    return (f"{session.host.name}: the SSH connection was lost during the apply ({why}). The agent on the host "
            "goes on to the end of the apply and holds the host's apply lock until then; re-run to see the result "
            "(a re-run waits for that apply, up to berth_apply_lock_timeout)")


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an apply that has not said who it is yet"
    return (f"run {holder.get('run', '?')} of {holder.get('controller', '?')} "
            f"(controller pid {holder.get('pid', '?')}), applying since {holder.get('since', '?')}")


def event_text(host: str, event: dict[str, Any]) -> str:
    if event.get("wait") == "apply lock":
        return (f"{host}: waiting for another berth apply on this host to end: {describe_holder(event.get('holder'))} "
                f"(up to {event.get('timeout', 0):g}s, berth_apply_lock_timeout)")
    if event.get("wait") == "apt lock":
        return (f"{host}: waiting for apt's lock {event.get('lock')}, held by {event.get('holder')} "
                f"(up to {event.get('timeout', 0):g}s, berth_apt_lock_timeout)")
    return f"{host}: {event}"


@dataclass
class Converger:
    """Converges hosts with their roles. Safe to share between worker threads (one Session per call)."""

    ssh: SSHSettings
    context: RoleContext
    check: bool = False
    drain_timeout: float | None = None   # None: each handler's own (docker_drain_timeout)
    force: bool = False                  # disruptive handlers run without waiting for jobs
    log: Callable[[str], None] | None = None   # told at once when an apply waits (for another apply, for apt)

    def converge(self, host: Host, *, on_plan: Any = None) -> HostReport:
        report = HostReport(host.name)
        started = time.monotonic()
        session = Session(host, self.ssh)
        try:
            states = declare_roles(host, self.context)
            resources: list[Resource] = [r for s in states for r in s.resources]
            handlers: list[Handler] = [h for s in states for h in s.handlers]
            request = probe_request(resources)
            request["files"] += [f for s in states for d in s.derived for f in d.probe_files()]
            found = self._probe(session, request)
            report.facts = found["facts"]
            plan = make_plan(resources, handlers, found)
            derived = self.context.plan_derived(host, states, found, plan)
            report.changes = plan.changes
            report.notes = plan.notes
            if on_plan is not None:
                on_plan(host, plan)
            if not plan.changed:
                report.status = Status.OK
            elif self.check:
                report.status = Status.PENDING
            else:
                self._apply(session, plan, derived, report,
                            expectations(resources, found, plan.steps), host)
        except HostUnreachable as exc:
            report.status, report.error = Status.UNREACHABLE, str(exc)
        except (ConfigError, InventoryError) as exc:
            report.status, report.error = Status.INVALID, str(exc)
        except BerthError as exc:
            report.status, report.error = Status.FAILED, str(exc)
        finally:
            report.commands = session.commands
            session.close()
            report.seconds = time.monotonic() - started
        return report

    def _apply(self, session: Session, plan: Plan, derived: list[Any], report: HostReport,
               expect: dict[str, Any], host: Host) -> None:
        request: dict[str, Any] = {
            "action": "apply",
            "lock": lock_request(host),
            "apt_lock_timeout": seconds_var(host, "berth_apt_lock_timeout"),
            "expect": expect,
        }
        for resource in derived:
            plan.steps += resource.prepare(session, self.context)
        request["steps"] = plan.steps
        request["handlers"] = [handler_request(h) for h in plan.handlers]
        if plan.uploads:
            request["upload_dir"] = plan.upload_dir     # the agent removes it when the apply ends
            session.put_private(plan.upload_dir, plan.uploads)
        if plan.drains:
            request["drain"] = self._drain_request(plan.drains)
        answer = run_agent(session, request, on_event=lambda e: self._tell(event_text(host.name, e)))
        report.handlers = answer.get("handlers", [])
        report.drain = answer.get("drain")
        if answer.get("waited"):
            waited = answer["waited"]
            report.notes.append(f"waited {waited['seconds']:g}s for another berth apply on this host: "
                                f"{describe_holder(waited['for'])}")
        if answer.get("apt_waited"):
            report.notes.append(f"waited {answer['apt_waited']:g}s for apt's lock (another apt or dpkg was running)")
        if answer.get("error"):
            raise HostFailed(f"{session.host.name}: {answer['error']}")
        report.status = Status.CHANGED


    def _probe(self, session: Session, request: dict[str, Any]) -> dict[str, Any]:
        """The probe is read-only: a session that broke during it is opened again and the probe repeated."""
        for attempt in Retrying(stop=stop_after_attempt(max(1, self.ssh.connect_attempts)),
                                retry=retry_if_exception_type(SessionBroken), reraise=True,
                                wait=wait_exponential(multiplier=self.ssh.retry_wait, max=10)):
            with attempt:
                return run_agent(session, request)
        raise AssertionError("unreachable")     # Retrying either returns or raises

    def _tell(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def _drain_request(self, drains: list[Drain]) -> dict[str, Any]:
        drain = drains[0]
        timeout = self.drain_timeout if self.drain_timeout is not None else max(d.timeout for d in drains)
        return {"socket": drain.socket, "timeout": timeout, "runner_unit": drain.runner_unit,
                "job_label": drain.job_label, "force": self.force}

    def check_health(self, host: Host, timeout: float = 10.0) -> tuple[str | None, int]:
        """Do the host's daemons answer, as its handlers' health checks define it? (error or None, commands)

        One SSH command. Roles are declared again (locally) only to find those checks.
        """
        session = Session(host, self.ssh)
        try:
            states = declare_roles(host, self.context)
            checks = list({h.health: None for s in states for h in s.handlers if h.health})
            if not checks:
                return None, 0
            answer = run_agent(session, {
                "action": "health", "timeout": timeout,
                "checks": [{"unix": c.unix, "tcp": [list(t) for t in c.tcp]} for c in checks],
            })
            return answer.get("error"), session.commands
        except BerthError as exc:
            return str(exc), session.commands
        finally:
            session.close()


def handler_request(handler: Handler) -> dict[str, Any]:
    health = None
    if handler.health:
        health = {"unix": handler.health.unix, "tcp": [list(t) for t in handler.health.tcp],
                  "timeout": handler.health.timeout}
    return {"name": handler.name, "cmd": handler.command, "unit": handler.unit, "health": health,
            "rollback": handler.rollback}
