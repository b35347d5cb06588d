"""Converge one host: probe, plan (local), apply, with one agent process on the host (AgentProcess).

A host costs one SSH command, converged or changed: the agent answers the probe, waits while the controller
plans, and answers the apply on the same command. A certificate to issue is one more request on that command
(the host makes its key and CSR, berth signs it), and local .deb files one SFTP upload.

When a notified handler is disruptive (it ends running CI jobs), or a changed package asks for it, the apply
request carries a drain: the agent stops the runner from taking jobs and waits for running job containers
before it changes anything, and polls once more before the first disruptive action (berth/remote/agent.py,
Drain).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from berth.engine.fleet import HeavySteps
from berth.engine.options import RunOptions
from berth.engine.plan import Change, Plan, make_plan, probe_request
from berth.engine.protocol import (
    ApplyAnswer,
    ApplyLock,
    ApplyRequest,
    DrainSpec,
    Expectation,
    HandlerCall,
    HealthAnswer,
    HealthCheck,
    HealthRequest,
    ProbeAnswer,
    Request,
    ServiceStep,
    Step,
    envelope,
)
from berth.engine.resources import Directory, Drain, Handler, Resource
from berth.engine.results import HostResult, Status
from berth.engine.roles import RoleContext, declare_roles, role_code
from berth.errors import BerthError, ConfigError, HostFailed, HostUnreachable, InventoryError
from berth.inventory.loader import Host
from berth.transport.base import CommandResult, Exchange, HostSession
from berth.transport.bootstrap import HostScript, line
from berth.transport.ssh import Session, SessionBroken, SSHSettings

AGENT = HostScript(Path(__file__).parents[1] / "remote" / "agent.py", "berth_agent")

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


def seconds_var(host: Host, name: str) -> float:
    """A timeout variable of the host, in seconds (a number >= 0), or an error naming where it was set.

    config/defaults.yml sets every one of them for every host."""
    if name not in host.vars:
        raise ConfigError(f"{host.name}: {name} is not set; berth's config/defaults.yml sets it: is the "
                          "inventory loaded with berth's defaults?")
    value = host.vars[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{host.origins.get(name, name)}: {host.name}: {name} must be a number of seconds "
                          f">= 0, not {value!r}")
    return float(value)


def lock_request(host: Host) -> ApplyLock:
    return ApplyLock(timeout=seconds_var(host, "berth_apply_lock_timeout"), holder=controller_identity())


def expectations(resources: list[Resource], found: ProbeAnswer, steps: list[Step]) -> Expectation:
    """What the plan was made from, for the agent to re-check before it writes anything.

    Every probed file but directories (a certificate's preparation may make its folder), with the units the
    plan starts or enables.
    """
    folders = {r.path for r in resources if isinstance(r, Directory)}
    files = {path: {k: state.get(k) for k in ("exists", "sha256", "mode", "owner", "group")}
             for path, state in found.files.items() if path not in folders and not state.get("is_dir")}
    units = {s.name for s in steps if isinstance(s, ServiceStep)}
    return Expectation(files, {u: found.services[u] for u in units if u in found.services})


@dataclass
class HostReport(HostResult):
    """A converge's account of one host."""

    changes: list[Change] = field(default_factory=list)
    handlers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    drain: dict[str, Any] | None = None      # the agent's account of a drain: runner, jobs, waited, forced
    # Where the host's time went, in seconds (bench/README.md): connect, probe, plan, csr, upload, heavy_wait,
    # apply (the round trip), and the agent's own split of it: drain, steps, validate, handler:NAME, health:NAME.
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "status": str(self.status), "changed": len(self.changes),
            "changes": [{"kind": c.kind, "target": c.target, "summary": c.summary} for c in self.changes],
            "handlers": self.handlers, "ssh_commands": self.commands, "seconds": round(self.seconds, 3),
            "error": self.error, "notes": self.notes, "drain": self.drain,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def run_agent(session: HostSession, request: Request,
              on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Send one request to the agent (one command); its answer as JSON. Read it with the answer's type.

    ``on_event``: told the agent's events (an apply waiting for the lock, for apt) while it runs.
    """
    agent = AgentProcess(session, request, on_event)
    agent.end()
    return agent.first


class AgentProcess:
    """One agent process on a host: it answers the first request (``first``) and waits for more. A converge
    sends the probe, plans while the agent waits, and asks it for the apply made from it: one SSH command per
    host, whether it changes or not."""

    def __init__(self, session: HostSession, first: Request,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.session = session
        self.on_event = on_event      # told the agent's events (an apply waiting for the lock, for apt)
        applying = isinstance(first, ApplyRequest)
        try:
            self.exchange: Exchange | None = AGENT.start(session, wire(first, session),
                                                        on_stderr_line=_events(lambda e: self._tell(e)))
        except HostUnreachable as exc:
            raise HostUnreachable(lost_during_apply(session, str(exc)) if applying else str(exc)) from None
        self.first = self._read(applying)

    def ask(self, request: Request, on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        assert self.exchange is not None, "the agent process has ended"
        applying = isinstance(request, ApplyRequest)
        self.on_event = on_event
        try:
            self.exchange.send(line(wire(request, self.session)))
        except HostUnreachable as exc:
            raise HostUnreachable(lost_during_apply(self.session, str(exc)) if applying else str(exc)) from None
        return self._read(applying)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    def end(self) -> None:
        """Close the agent's stdin: it exits. Quietly: what it had to say was read already."""
        if self.exchange is not None:
            exchange, self.exchange = self.exchange, None
            with contextlib.suppress(HostUnreachable):
                exchange.finish()

    def _read(self, applying: bool) -> dict[str, Any]:
        assert self.exchange is not None
        try:
            text = self.exchange.read_line()
            if text:
                return _answer(self.session, text.decode(errors="replace"), None, applying)
            # No answer: the agent ended. How it ended (its exit status, its stderr) says why.
            exchange, self.exchange = self.exchange, None
            result = exchange.finish()
        except HostUnreachable as exc:
            self.exchange = None
            if applying:
                raise HostUnreachable(lost_during_apply(self.session, str(exc))) from None
            raise
        return _answer(self.session, result.stdout, result, applying)

    def _tell(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)


def wire(request: Request, session: HostSession) -> str:
    return json.dumps(envelope(request, root=session.agent_root))


def _events(on_event: Callable[[dict[str, Any]], None] | None) -> Callable[[str], None]:
    def told(text: str) -> None:
        if on_event is not None and text.startswith(EVENT_MARK):
            with contextlib.suppress(ValueError):
                on_event(json.loads(text[len(EVENT_MARK):]))
    return told


def _answer(session: HostSession, stdout: str, ended: CommandResult | None, applying: bool) -> dict[str, Any]:
    """The agent's answer, or the host's failure: ``ended`` is how the agent's command ended, when it did."""
    if ended is not None:
        ended = CommandResult(ended.exit_code, ended.stdout, "\n".join(
            t for t in ended.stderr.splitlines() if not t.startswith(EVENT_MARK)))
        if ended.exit_code == NO_EXIT_STATUS and applying:
            raise HostUnreachable(lost_during_apply(session, "the connection closed without an exit status"))
        if not ended.ok:
            hint = " (is python3 installed on the host?)" if "python3" in ended.stderr else ""
            raise HostFailed(f"{session.host.name}: the berth agent failed{hint}: {ended.stderr.strip()[-800:]}")
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        raise HostFailed(f"{session.host.name}: unreadable agent answer: {stdout[:300]!r}") from None


def lost_during_apply(session: HostSession, why: str) -> str:
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
    options: RunOptions = field(default_factory=RunOptions)
    # How a host is reached: an SSH session; berth.transport.local's for tests without hosts.
    connect: Callable[[Host], HostSession] | None = None
    log: Callable[[str], None] | None = None   # told at once when an apply waits (for another apply, for apt)
    heavy: HeavySteps | None = None      # bounds the applies with package installs, apart from forks

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
        clock = _Clock(report.timings)
        agent: AgentProcess | None = None
        try:
            with clock("plan"):
                states = declare_roles(host, self.context)
                resources: list[Resource] = [r for s in states for r in s.resources]
                handlers: list[Handler] = [h for s in states for h in s.handlers]
                with role_code(self.context.roles_dir):
                    derived = [d for s in states for d in s.derived]
                    request = probe_request(resources, derived, handlers)
            with clock("probe"):
                agent = self._probe(session, request)
                raw = agent.first
            # The connection is made by the probe's command: its time is the session's, not the probe's.
            connect = getattr(session, "connected_in", 0.0)
            report.timings["connect"] = connect
            report.timings["probe"] -= connect
            if "agent" in (raw.get("timings") or {}):
                report.timings["probe:agent"] = raw["timings"]["agent"]
            found = ProbeAnswer.from_wire(raw)
            report.facts = found.facts
            with clock("plan"), role_code(self.context.roles_dir):    # notify rules and derived plans are role code
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
                self._apply(session, agent, plan, report, expectations(resources, found, plan.steps), host)
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
            if agent is not None:
                agent.end()
            report.commands = session.commands
            session.close()
            report.seconds = time.monotonic() - started
        return report

    def _apply(self, session: HostSession, agent: AgentProcess, plan: Plan, report: HostReport,
               expect: Expectation, host: Host) -> None:
        clock = _Clock(report.timings)

        def ask(request: Request) -> dict[str, Any]:       # a prepare's question to the agent (a CSR)
            answer = agent.ask(request)
            if answer.get("error"):
                raise HostFailed(f"{host.name}: {answer['error']}")
            return answer

        with clock("csr"):
            for prepare in plan.prepare:
                plan.steps += prepare(ask)
        heavy = self.heavy is not None and HeavySteps.is_heavy(
            [s if isinstance(s, dict) else s.wire() for s in plan.steps], plan.uploads)
        with (self.heavy.hold(heavy) if self.heavy is not None else nullcontext(lambda: 0.0)) as waited:
            if heavy:
                report.timings["heavy_wait"] = waited()
            if plan.uploads:
                with clock("upload"):
                    session.put_private(plan.upload_dir, plan.uploads)
            request = ApplyRequest(
                steps=tuple(plan.steps), handlers=tuple(handler_call(h) for h in plan.handlers),
                drain=self._drain_request(plan.drains) if plan.drains else None,
                upload_dir=plan.upload_dir if plan.uploads else None,     # the agent removes it when the apply ends
                lock=lock_request(host), expect=expect,
                apt_lock_timeout=seconds_var(host, "berth_apt_lock_timeout"),
            )
            with clock("apply"):
                answer = ApplyAnswer.from_wire(agent.ask(request,
                                                         on_event=lambda e: self._tell(event_text(host.name, e))))
        report.timings.update({("apply:agent" if k == "agent" else k): v
                               for k, v in (answer.extra.get("timings") or {}).items()})
        report.handlers = answer.handlers
        report.drain = answer.drain
        if answer.waited:
            report.notes.append(f"waited {answer.waited['seconds']:g}s for another berth apply on this host: "
                                f"{describe_holder(answer.waited['for'])}")
        if answer.apt_waited:
            report.notes.append(f"waited {answer.apt_waited:g}s for apt's lock (another apt or dpkg was running)")
        if answer.error:
            raise HostFailed(f"{session.host.name}: {answer.error}")
        report.status = Status.CHANGED

    def _probe(self, session: HostSession, request: Request) -> AgentProcess:
        """The agent started with the probe (its answer: ``first``). The probe is read-only: a session that broke
        during it is opened again and the probe repeated."""
        for attempt in Retrying(stop=stop_after_attempt(max(1, self.ssh.connect_attempts)),
                                retry=retry_if_exception_type(SessionBroken), reraise=True,
                                wait=wait_exponential(multiplier=self.ssh.retry_wait, max=10)):
            with attempt:
                return AgentProcess(session, request)
        raise AssertionError("unreachable")     # Retrying either returns or raises

    def _tell(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

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


def handler_call(handler: Handler) -> HandlerCall:
    health = HealthCheck(handler.health.unix, handler.health.tcp, handler.health.timeout) if handler.health else None
    return HandlerCall(handler.name, handler.command, handler.unit, health, handler.rollback,
                       disruptive=handler.disruptive)
