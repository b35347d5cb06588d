"""Run one per-host function across many hosts at once, with a progress display."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from berth.inventory.loader import Host

R = TypeVar("R")

console = Console(stderr=True)


def make_progress() -> Progress:
    """The progress display (stderr, only on a terminal: CI logs get no spinner noise)."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )


def run_parallel(
    hosts: Sequence[Host], work: Callable[[Host], R], *, forks: int, label: str, progress: Progress | None = None
) -> list[R]:
    """Results in the hosts' order; ``work`` must not raise (it reports failures in its result).

    With ``progress`` (an already started display, e.g. a rollout's), its bar is added there and
    removed at the end; otherwise the call shows its own.
    """
    if not hosts:
        return []
    results: dict[str, R] = {}
    own = progress is None
    shown = progress or make_progress()
    with shown if own else nullcontext(), ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        task = shown.add_task(label, total=len(hosts))
        futures = {pool.submit(work, host): host for host in hosts}
        for future in as_completed(futures):
            results[futures[future].name] = future.result()
            shown.advance(task)
        if not own:
            shown.remove_task(task)
    return [results[h.name] for h in hosts]


# Plan steps that are heavy for the hosts' package mirror or registry and for the hosts themselves (dpkg).
HEAVY_OPS = frozenset({"packages"})


class HeavySteps:
    """At most ``limit`` hosts at once in an apply with heavy steps (package installs, uploaded .debs).

    ``forks`` bounds the hosts converged at once; a first rollout of a large fleet with forks 100 would
    otherwise run dpkg on 100 hosts together and stampede their mirror. The plan is made on the controller,
    so whether an apply is heavy is known before it starts: light applies (configuration files, restarts)
    never wait here.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the heavy-step concurrency must be at least 1, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    @staticmethod
    def is_heavy(steps: Sequence[object], uploads: Sequence[object] = ()) -> bool:
        ops = (step.get("op") if isinstance(step, dict) else getattr(step, "op", None) for step in steps)
        return bool(uploads) or any(op in HEAVY_OPS for op in ops)

    @contextmanager
    def hold(self, heavy: bool) -> Iterator[Callable[[], float]]:
        """A slot for a heavy apply (none for a light one); yields how long the caller waited for it."""
        started = time.monotonic()
        if not heavy:
            yield lambda: 0.0
            return
        with self._slots:
            waited = time.monotonic() - started
            yield lambda: waited
