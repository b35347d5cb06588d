"""Rolling converge of a fleet: a shard of the hosts, in batches, within a failure budget.

1. Shard (``--shard I/N``, else GitLab's ``CI_NODE_INDEX``/``CI_NODE_TOTAL`` in a ``parallel:`` job):
   the selected hosts are sorted by the SHA-256 of their name and shard I takes every Nth from
   position I (1-based, like CI_NODE_INDEX). A host's shard depends on the set of selected hosts,
   not on their order, so the N jobs of one pipeline (same inventory, same --limit) cover every host
   exactly once, and shard sizes differ by at most one.
2. Batches (``--batch N|P%``): consecutive slices of the shard in inventory order, so hosts listed
   first (canaries) go first. P% is of the shard's hosts, rounded down, at least 1.
3. Within a batch up to ``--parallel K`` hosts converge at once (berth.engine.converge.Converger: probe, plan,
   apply; a dockerd restart drains the runner first).
4. After a batch, one health command per host that converged or was unchanged: the daemons answer as
   the roles' handlers define it (socket /_ping; the TLS port with role docker_tls). Failing it
   makes the host failed.
5. Failure budget (``--max-fail N|P%`` of the shard's hosts): once more hosts have failed or been
   unreachable than the budget allows, no further batch starts ("--max-fail 0": stop after any
   failure). Without --max-fail, a batch in which every host failed stops the rollout, which is
   ansible-playbook's rule for ``serial``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rich.markup import escape
from rich.table import Table

from berth.engine.converge import Converger, HostReport
from berth.engine.fleet import make_progress, run_parallel
from berth.engine.results import HostResult, Status, exit_code
from berth.errors import ExitCode, OptionError
from berth.inventory.loader import Host


class Outcome(StrEnum):
    CONVERGED = "converged"
    UNCHANGED = "unchanged"
    PENDING = "pending"            # --check: changes would be made
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    INVALID = "invalid"            # the host's variables or roles are wrong; nothing was changed
    NOT_STARTED = "not started"    # the rollout stopped before this host's batch


FAILURES = frozenset({Outcome.FAILED, Outcome.UNREACHABLE, Outcome.INVALID})
FROM_STATUS = {
    Status.OK: Outcome.UNCHANGED, Status.CHANGED: Outcome.CONVERGED, Status.PENDING: Outcome.PENDING,
    Status.FAILED: Outcome.FAILED, Status.UNREACHABLE: Outcome.UNREACHABLE, Status.INVALID: Outcome.INVALID,
}
STYLE = {
    Outcome.CONVERGED: "yellow", Outcome.UNCHANGED: "green", Outcome.PENDING: "yellow", Outcome.FAILED: "bold red",
    Outcome.UNREACHABLE: "bold red", Outcome.INVALID: "bold red", Outcome.NOT_STARTED: "dim",
}


# -- options ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    index: int      # 1-based, like CI_NODE_INDEX
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"

    def select(self, hosts: Sequence[Host]) -> list[Host]:
        """This shard's hosts, in the order given (see the module docstring for the rule)."""
        ranked = sorted(hosts, key=lambda h: hashlib.sha256(h.name.encode()).hexdigest())
        mine = {h.name for h in ranked[self.index - 1 :: self.total]}
        return [h for h in hosts if h.name in mine]


def parse_shard(text: str, source: str = "--shard") -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise OptionError(f"{source}: expected I/N such as 2/3, got {text!r}")
    index, total = int(match[1]), int(match[2])
    if total < 1 or not 1 <= index <= total:
        raise OptionError(f"{source} {text}: I must be from 1 to N (1-based, like GitLab's CI_NODE_INDEX)")
    return Shard(index, total)


def resolve_shard(option: str, env: Mapping[str, str]) -> Shard | None:
    """--shard, else a GitLab ``parallel:`` job's variables. GitLab sets CI_NODE_TOTAL=1 in every other
    job and CI_NODE_INDEX only in parallel ones, so CI_NODE_INDEX is what turns sharding on."""
    if option:
        return parse_shard(option)
    index = env.get("CI_NODE_INDEX", "").strip()
    if not index:
        return None
    total = env.get("CI_NODE_TOTAL", "").strip()
    if not total:
        raise OptionError("CI_NODE_INDEX is set but CI_NODE_TOTAL is not (a GitLab parallel: job sets both)")
    return parse_shard(f"{index}/{total}", source="CI_NODE_INDEX/CI_NODE_TOTAL")


def parse_amount(text: str, total: int, *, option: str) -> int:
    """``N`` hosts or ``P%`` of ``total`` hosts (rounded down)."""
    match = re.fullmatch(r"\s*(\d+)\s*(%?)\s*", text)
    if not match:
        raise OptionError(f"{option}: expected a number of hosts or a percentage such as 25%, got {text!r}")
    value = int(match[1])
    if match[2]:
        if value > 100:
            raise OptionError(f"{option} {text}: a percentage is at most 100%")
        return total * value // 100
    return value


def batch_size(text: str, total: int) -> int:
    """--batch: N or P% of the hosts being rolled out, at least 1."""
    return max(1, parse_amount(text, total, option="--batch"))


def failure_budget(text: str, total: int) -> int | None:
    """--max-fail: how many failed or unreachable hosts are tolerated; None when not given."""
    return None if not text.strip() else parse_amount(text, total, option="--max-fail")


def batches(hosts: Sequence[Host], size: int) -> list[list[Host]]:
    return [list(hosts[i : i + size]) for i in range(0, len(hosts), size)]


def should_stop(failed_so_far: int, budget: int | None, batch: Sequence[Outcome]) -> str | None:
    """Why no further batch may start, or None."""
    if budget is not None and failed_so_far > budget:
        return f"{failed_so_far} host(s) failed or unreachable, more than --max-fail allows ({budget})"
    if budget is None and batch and all(o in FAILURES for o in batch):
        return "every host of the batch failed (without --max-fail, a wholly failed batch stops the rollout)"
    return None


# -- results ------------------------------------------------------------------------------------
@dataclass
class RolloutHost(HostResult):
    """A host in a rollout: its ``status`` is an Outcome (the same names as a converge's for failures)."""

    status: str = Outcome.NOT_STARTED
    batch: int | None = None                  # 1-based; None: not started
    report: HostReport | None = None
    health: str | None = None                 # "ok", the health check's error, or None (not checked)

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.status)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"host": self.host, "batch": self.batch, "status": str(self.outcome),
                                "health": self.health, "error": self.error}
        if self.report is not None:
            engine = self.report.as_dict()
            data.update({k: engine[k] for k in ("changed", "changes", "handlers", "drain", "ssh_commands",
                                                "seconds", "notes")})
        return data


@dataclass
class RolloutResult:
    hosts: list[RolloutHost]
    batch_size: int
    batches: int
    batches_run: int = 0
    shard: Shard | None = None
    budget: int | None = None
    check: bool = False
    forced: bool = False
    stopped: str | None = None                # why no further batch started
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        counted = Counter(h.outcome for h in self.hosts)
        return {str(o): counted[o] for o in Outcome if counted[o]}

    def exit_code(self) -> ExitCode:
        """The worst host decides, as for setup-runner (berth.engine.results.exit_code)."""
        return exit_code(h.status for h in self.hosts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": {
                "hosts": len(self.hosts), "shard": str(self.shard) if self.shard else None,
                "batch_size": self.batch_size, "batches": self.batches, "batches_run": self.batches_run,
                "max_fail": self.budget, "check": self.check, "force": self.forced, "stopped": self.stopped,
                "counts": self.counts(), "exit_code": int(self.exit_code()), "seconds": round(self.seconds, 3),
            },
            "hosts": [h.as_dict() for h in self.hosts],
        }


# -- the rollout --------------------------------------------------------------------------------
@dataclass
class Rollout:
    converger: Converger
    batch_size: int
    parallel: int
    budget: int | None = None
    shard: Shard | None = None
    log: Callable[[str], None] = print
    _results: dict[str, RolloutHost] = field(default_factory=dict)

    def run(self, hosts: Sequence[Host]) -> RolloutResult:
        """Converge ``hosts`` (already sharded) batch by batch; never raises for a host's failure."""
        started = time.monotonic()
        self._results = {h.name: RolloutHost(h.name) for h in hosts}
        groups = batches(hosts, self.batch_size)
        result = RolloutResult(list(self._results.values()), self.batch_size, len(groups), shard=self.shard,
                               budget=self.budget, check=self.converger.check, forced=self.converger.force)
        with make_progress() as progress:
            overall = progress.add_task("rollout", total=len(hosts))
            for number, batch in enumerate(groups, 1):
                label = f"batch {number}/{len(groups)}"
                self.log(f"{label}: {', '.join(h.name for h in batch)}")
                run_parallel(batch, functools.partial(self._converge, batch=number), forks=self.parallel,
                             label=f"{label}: converging", progress=progress)
                if not self.converger.check:
                    healthy = [h for h in batch if self._results[h.name].outcome in (Outcome.CONVERGED,
                                                                                     Outcome.UNCHANGED)]
                    run_parallel(healthy, self._check_health, forks=self.parallel, label=f"{label}: health",
                                 progress=progress)
                progress.advance(overall, len(batch))
                result.batches_run = number
                outcomes = [self._results[h.name].outcome for h in batch]
                self.log(f"{label}: " + ", ".join(f"{n} {o}" for o, n in Counter(outcomes).items()))
                failed = sum(r.outcome in FAILURES for r in self._results.values())
                reason = should_stop(failed, self.budget, outcomes)
                if reason and number < len(groups):
                    result.stopped = reason
                    left = sum(map(len, groups[number:]))
                    self.log(f"stopping before batch {number + 1}: {reason}; {left} host(s) not started")
                    break
        result.seconds = time.monotonic() - started
        return result

    def _converge(self, host: Host, batch: int) -> RolloutHost:
        result = self._results[host.name]
        result.batch = batch
        result.report = self.converger.converge(host)
        result.status = FROM_STATUS[Status(result.report.status)]
        result.error = result.report.error
        return result

    def _check_health(self, host: Host) -> RolloutHost:
        result = self._results[host.name]
        error, commands = self.converger.check_health(host)
        if result.report is not None:
            result.report.commands += commands
        result.health = "ok" if error is None else error
        if error is not None:
            result.status = Outcome.FAILED
            result.error = f"{host.name}: health check after the batch: {error}"
        return result


# -- display ------------------------------------------------------------------------------------
def drain_summary(drain: dict[str, Any] | None) -> str:
    if not drain:
        return "-"
    jobs = drain.get("jobs", 0)
    if drain.get("forced"):
        return f"--force: {jobs} job(s) running"
    text = f"waited {drain.get('waited', 0):g}s, {jobs} job(s)"
    runner = drain.get("runner")
    return text if runner in (None, "absent") else f"{text}; runner {runner}"


def summary_table(result: RolloutResult, *, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("host", "batch", "status", "changed", "handlers", "drain", "health", "ssh cmds", "time"):
        table.add_column(column, justify="right" if column in ("batch", "changed", "ssh cmds", "time") else "left")
    for h in result.hosts:
        r = h.report
        table.add_row(
            escape(h.host), str(h.batch or "-"), f"[{STYLE[h.outcome]}]{h.outcome}[/]",
            str(len(r.changes)) if r else "-", escape(", ".join(r.handlers)) if r and r.handlers else "-",
            drain_summary(r.drain if r else None), "-" if h.health is None else "ok" if h.health == "ok" else "FAILED",
            str(r.commands) if r else "-", f"{r.seconds:.2f}s" if r else "-",
        )
    return table


def summary_line(result: RolloutResult) -> str:
    counts = ", ".join(f"{n} {o}" for o, n in result.counts().items())
    shard = f" (shard {result.shard})" if result.shard else ""
    line = f"{len(result.hosts)} host(s){shard}, {result.batches_run}/{result.batches} batch(es): {counts}"
    return line + (f"; stopped: {result.stopped}" if result.stopped else "")
