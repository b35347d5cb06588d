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
from pathlib import Path
from typing import Any

from berth.engine.options import RunOptions
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
from berth.engine.results import HostResult, Status
from berth.engine.roles import RoleContext, declare_roles, role_code
from berth.errors import BerthError, ConfigError, HostFailed, HostUnreachable, InventoryError
from berth.inventory.loader import Host
from berth.transport.base import HostSession
from berth.transport.bootstrap import HostScript
from berth.transport.ssh import Session, SSHSettings

AGENT = HostScript(Path(__file__).parents[1] / "remote" / "agent.py", "berth_agent")


@dataclass
class HostReport(HostResult):
    """A converge's account of one host."""

    changes: list[Change] = field(default_factory=list)
    handlers: list[str] = field(default_factory=list)
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
    result = AGENT.run(session, json.dumps(envelope(request, root=session.agent_root)))
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
    options: RunOptions = field(default_factory=RunOptions)
    # How a host is reached: an SSH session; berth.transport.local's for tests without hosts.
    connect: Callable[[Host], HostSession] | None = None

    @property
    def check(self) -> bool:
        return self.options.check

    @property
    def force(self) -> bool:
        return self.options.force

    def session(self, host: Host) -> HostSession:
        return self.connect(host) if self.connect is not None else Session(host, self.ssh)

    def converge(self, host: Host, *, on_plan: Any = None) -> HostReport:
        """Never raises for one host's problem: a role's bug, too, is this host's failure (the others go on)."""
        report = HostReport(host.name)
        started = time.monotonic()
        session = self.session(host)
        try:
            states = declare_roles(host, self.context)
            resources: list[Resource] = [r for s in states for r in s.resources]
            handlers: list[Handler] = [h for s in states for h in s.handlers]
            with role_code(self.context.roles_dir):
                derived = [d for s in states for d in s.derived]
                request = probe_request(resources, derived)
            found = ProbeAnswer.from_wire(run_agent(session, request))
            report.facts = found.facts
            with role_code(self.context.roles_dir):      # notify rules and derived plans are role code
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
        except Exception as exc:        # berth's own bug: this host fails with it, the other hosts are reported
            report.status = Status.FAILED
            report.error = f"{host.name}: internal error: {exc.__class__.__name__}: {exc}"
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
        given = self.options.drain_timeout
        timeout = given if given is not None else max(d.timeout for d in drains)
        return DrainSpec(drain.socket, timeout, drain.runner_unit, drain.job_label, force=self.options.force)

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
