"""Converge one host: probe (one command), plan (local), apply (one command).

A converged host costs one SSH command. A host with changes costs two, plus one per certificate
to issue (the host makes its key and CSR) and one SFTP upload when local .deb files are needed.

When a notified handler is disruptive (it ends running CI jobs), or a changed package asks for it, the apply
request carries a drain:
the agent stops the runner from taking jobs and waits for running job containers before it
changes anything (berth/agent.py, Drain).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from berth.errors import BerthError, ConfigError, HostFailed, HostUnreachable, InventoryError
from berth.fleet import HeavySteps
from berth.inventory import Host
from berth.plan import Change, Plan, make_plan, probe_request
from berth.resources import Drain, Handler, Resource
from berth.roles import RoleContext, declare_roles
from berth.ssh import Session, SSHSettings

AGENT_SOURCE = (Path(__file__).parent / "agent.py").read_text()
REQUEST_MARK = "\n#--berth-request--\n"
# The agent's source and the request travel on stdin; nothing is installed on the host.
# -I -S: no site-packages, user site or PYTHON* variables (the agent is stdlib only), and 3 ms less start-up.
AGENT_COMMAND = (
    "python3 -I -S -c \"import sys; s = sys.stdin.read(); c, _, r = s.partition('\\n#--berth-request--\\n'); "
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
    # Where the host's time went, in seconds (bench/README.md): connect, probe, plan, csr, upload, heavy_wait,
    # apply (the round trip), and the agent's own split of it: steps, validate, handler:NAME, health:NAME.
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "status": str(self.status), "changed": len(self.changes),
            "changes": [{"kind": c.kind, "target": c.target, "summary": c.summary} for c in self.changes],
            "handlers": self.handlers, "ssh_commands": self.commands, "seconds": round(self.seconds, 3),
            "error": self.error, "notes": self.notes, "drain": self.drain,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def run_agent(session: Session, request: dict[str, Any]) -> dict[str, Any]:
    result = session.run(AGENT_COMMAND, stdin=(AGENT_SOURCE + REQUEST_MARK + json.dumps(request)).encode())
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
    heavy: HeavySteps | None = None      # bounds the applies with package installs, apart from forks

    def converge(self, host: Host, *, on_plan: Any = None) -> HostReport:
        report = HostReport(host.name)
        started = time.monotonic()
        session = Session(host, self.ssh)
        clock = _Clock(report.timings)
        try:
            with clock("plan"):
                states = declare_roles(host, self.context)
                resources: list[Resource] = [r for s in states for r in s.resources]
                handlers: list[Handler] = [h for s in states for h in s.handlers]
                request = probe_request(resources)
                request["files"] += [f for s in states for d in s.derived for f in d.probe_files()]
            with clock("connect"):
                session.open()
            with clock("probe"):
                found = run_agent(session, request)
            report.facts = found["facts"]
            if "agent" in found.get("timings", {}):
                report.timings["probe:agent"] = found["timings"]["agent"]
            with clock("plan"):
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
        finally:
            report.commands = session.commands
            session.close()
            report.seconds = time.monotonic() - started
        return report

    def _apply(self, session: Session, plan: Plan, derived: list[Any], report: HostReport) -> None:
        clock = _Clock(report.timings)
        with clock("csr"):
            for resource in derived:
                plan.steps += resource.prepare(session, self.context)
        request: dict[str, Any] = {
            "action": "apply",
            "steps": plan.steps,
            "handlers": [handler_request(h) for h in plan.handlers],
        }
        heavy = self.heavy is not None and HeavySteps.is_heavy(plan.steps, plan.uploads)
        with (self.heavy.hold(heavy) if self.heavy is not None else nullcontext(lambda: 0.0)) as waited:
            if heavy:
                report.timings["heavy_wait"] = waited()
            if plan.uploads:
                request["upload_dir"] = plan.upload_dir     # the agent removes it when the apply ends
                with clock("upload"):
                    session.put_private(plan.upload_dir, plan.uploads)
            if plan.drains:
                request["drain"] = self._drain_request(plan.drains)
            with clock("apply"):
                answer = run_agent(session, request)
        report.timings.update({("apply:agent" if k == "agent" else k): v for k, v in answer.get("timings", {}).items()})
        report.handlers = answer.get("handlers", [])
        report.drain = answer.get("drain")
        if answer.get("error"):
            raise HostFailed(f"{session.host.name}: {answer['error']}")
        report.status = Status.CHANGED


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


class _Clock:
    """``with clock("probe"):`` adds the block's wall time to ``timings["probe"]``."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.monotonic() - started


def handler_request(handler: Handler) -> dict[str, Any]:
    health = None
    if handler.health:
        health = {"unix": handler.health.unix, "tcp": [list(t) for t in handler.health.tcp],
                  "timeout": handler.health.timeout}
    return {"name": handler.name, "cmd": handler.command, "unit": handler.unit, "health": health,
            "rollback": handler.rollback}
