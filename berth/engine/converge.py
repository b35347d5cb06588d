"""Converge one host: probe (one command), plan (local), apply (one command).

A converged host costs one SSH command. A host with changes costs two, plus one per certificate
to issue (the host makes its key and CSR) and one SFTP upload when local .deb files are needed.

When a notified handler is disruptive (it ends running CI jobs), or a changed package asks for it, the apply
request carries a drain:
the agent stops the runner from taking jobs and waits for running job containers before it
changes anything (berth/remote/agent.py, Drain).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from berth.engine.plan import Change, Plan, make_plan, probe_request
from berth.engine.protocol import (
    ApplyAnswer,
    ApplyRequest,
    DrainSpec,
    HandlerCall,
    HealthAnswer,
    HealthCheck,
    HealthRequest,
    ProbeAnswer,
    Request,
    envelope,
)
from berth.engine.resources import Drain, Handler, Resource
from berth.engine.roles import RoleContext, declare_roles
from berth.errors import BerthError, ConfigError, HostFailed, HostUnreachable, InventoryError
from berth.inventory.loader import Host
from berth.transport.base import HostSession
from berth.transport.ssh import Session, SSHSettings

AGENT_SOURCE = (Path(__file__).parents[1] / "remote" / "agent.py").read_text()
REQUEST_MARK = "\n#--berth-request--\n"
# The agent's source and the request travel on stdin; nothing is installed on the host.
AGENT_COMMAND = (
    "python3 -c \"import sys; s = sys.stdin.read(); c, _, r = s.partition('\\n#--berth-request--\\n'); "
    "g = {'__name__': 'berth_agent'}; exec(compile(c, 'berth-agent', 'exec'), g); g['main'](r)\""
)


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


def run_agent(session: HostSession, request: Request) -> dict[str, Any]:
    """Send one request to the agent (one command); its answer as JSON. Read it with the answer's type."""
    wire = envelope(request, root=session.agent_root)
    result = session.run(AGENT_COMMAND, stdin=(AGENT_SOURCE + REQUEST_MARK + json.dumps(wire)).encode())
    if not result.ok:
        hint = " (is python3 installed on the host?)" if "python3" in result.stderr else ""
        raise HostFailed(f"{session.host.name}: the berth agent failed{hint}: {result.stderr.strip()[-800:]}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise HostFailed(f"{session.host.name}: unreadable agent answer: {result.stdout[:300]!r}") from None


@dataclass
class Converger:
    """Converges hosts with their roles. Safe to share between worker threads (one Session per call)."""

    ssh: SSHSettings
    context: RoleContext
    check: bool = False
    drain_timeout: float | None = None   # None: each handler's own (docker_drain_timeout)
    force: bool = False                  # disruptive handlers run without waiting for jobs
    # How a host is reached: an SSH session; berth.transport.local's for tests without hosts.
    connect: Callable[[Host], HostSession] | None = None

    def session(self, host: Host) -> HostSession:
        return self.connect(host) if self.connect is not None else Session(host, self.ssh)

    def converge(self, host: Host, *, on_plan: Any = None) -> HostReport:
        report = HostReport(host.name)
        started = time.monotonic()
        session = self.session(host)
        try:
            states = declare_roles(host, self.context)
            resources: list[Resource] = [r for s in states for r in s.resources]
            handlers: list[Handler] = [h for s in states for h in s.handlers]
            derived = [d for s in states for d in s.derived]
            found = ProbeAnswer.from_wire(run_agent(session, probe_request(resources, derived)))
            report.facts = found.facts
            plan = make_plan(resources, handlers, found, derived=derived, host=host, ctx=self.context)
            report.changes = plan.changes
            report.notes = plan.notes
            if on_plan is not None:
                on_plan(host, plan)
            if not plan.changed:
                report.status = Status.OK
            elif self.check:
                report.status = Status.PENDING
            else:
                self._apply(session, plan, report)
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

    def _apply(self, session: HostSession, plan: Plan, report: HostReport) -> None:
        for prepare in plan.prepare:
            plan.steps += prepare(session)
        if plan.uploads:
            session.put_private(plan.upload_dir, plan.uploads)
        request = ApplyRequest(
            steps=tuple(plan.steps), handlers=tuple(handler_call(h) for h in plan.handlers),
            drain=self._drain_request(plan.drains) if plan.drains else None,
            upload_dir=plan.upload_dir if plan.uploads else None,     # the agent removes it when the apply ends
        )
        answer = ApplyAnswer.from_wire(run_agent(session, request))
        report.handlers = answer.handlers
        report.drain = answer.drain
        if answer.error:
            raise HostFailed(f"{session.host.name}: {answer.error}")
        report.status = Status.CHANGED

    def _drain_request(self, drains: list[Drain]) -> DrainSpec:
        drain = drains[0]
        timeout = self.drain_timeout if self.drain_timeout is not None else max(d.timeout for d in drains)
        return DrainSpec(drain.socket, timeout, drain.runner_unit, drain.job_label, force=self.force)

    def check_health(self, host: Host, timeout: float = 10.0) -> tuple[str | None, int]:
        """Do the host's daemons answer, as its handlers' health checks define it? (error or None, commands)

        One SSH command. Roles are declared again (locally) only to find those checks.
        """
        session = self.session(host)
        try:
            states = declare_roles(host, self.context)
            checks = list({h.health: None for s in states for h in s.handlers if h.health})
            if not checks:
                return None, 0
            request = HealthRequest(checks=tuple(HealthCheck(c.unix, c.tcp) for c in checks), timeout=timeout)
            return HealthAnswer.from_wire(run_agent(session, request)).error, session.commands
        except BerthError as exc:
            return str(exc), session.commands
        finally:
            session.close()


def handler_call(handler: Handler) -> HandlerCall:
    health = HealthCheck(handler.health.unix, handler.health.tcp, handler.health.timeout) if handler.health else None
    return HandlerCall(handler.name, handler.command, handler.unit, health, handler.rollback)
