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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from berth.engine.options import RunOptions
from berth.engine.plan import Change, Plan, make_plan, probe_request
from berth.engine.resources import Drain, Handler, Resource
from berth.engine.results import HostResult, Status
from berth.engine.roles import RoleContext, declare_roles, role_code
from berth.errors import BerthError, ConfigError, HostFailed, HostUnreachable, InventoryError
from berth.inventory.loader import Host
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


def run_agent(session: Session, request: dict[str, Any]) -> dict[str, Any]:
    result = AGENT.run(session, json.dumps(request))
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

    @property
    def check(self) -> bool:
        return self.options.check

    @property
    def force(self) -> bool:
        return self.options.force

    def converge(self, host: Host, *, on_plan: Any = None) -> HostReport:
        """Never raises for one host's problem: a role's bug, too, is this host's failure (the others go on)."""
        report = HostReport(host.name)
        started = time.monotonic()
        session = Session(host, self.ssh)
        try:
            states = declare_roles(host, self.context)
            resources: list[Resource] = [r for s in states for r in s.resources]
            handlers: list[Handler] = [h for s in states for h in s.handlers]
            with role_code(self.context.roles_dir):
                request = probe_request(resources)
                request["files"] += [f for s in states for d in s.derived for f in d.probe_files()]
            found = run_agent(session, request)
            report.facts = found["facts"]
            with role_code(self.context.roles_dir):      # notify rules and derived plans are role code
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
                self._apply(session, plan, derived, report)
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

    def _apply(self, session: Session, plan: Plan, derived: list[Any], report: HostReport) -> None:
        for resource in derived:
            plan.steps += resource.prepare(session, self.context)
        request: dict[str, Any] = {
            "action": "apply",
            "steps": plan.steps,
            "handlers": [handler_request(h) for h in plan.handlers],
        }
        if plan.uploads:
            request["upload_dir"] = plan.upload_dir     # the agent removes it when the apply ends
            session.put_private(plan.upload_dir, plan.uploads)
        if plan.drains:
            request["drain"] = self._drain_request(plan.drains)
        answer = run_agent(session, request)
        report.handlers = answer.get("handlers", [])
        report.drain = answer.get("drain")
        if answer.get("error"):
            raise HostFailed(f"{session.host.name}: {answer['error']}")
        report.status = Status.CHANGED


    def _drain_request(self, drains: list[Drain]) -> dict[str, Any]:
        drain = drains[0]
        given = self.options.drain_timeout
        timeout = given if given is not None else max(d.timeout for d in drains)
        return {"socket": drain.socket, "timeout": timeout, "runner_unit": drain.runner_unit,
                "job_label": drain.job_label, "force": self.options.force}

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
