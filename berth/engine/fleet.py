"""Run one per-host function across many hosts at once, with a progress display."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import nullcontext
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
