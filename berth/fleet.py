"""Run one per-host function across many hosts at once, with a progress display."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
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

from berth.inventory import Host

R = TypeVar("R")

console = Console(stderr=True)


def run_parallel(
    hosts: Sequence[Host], work: Callable[[Host], R], *, forks: int, label: str
) -> list[R]:
    """Results in the hosts' order; ``work`` must not raise (it reports failures in its result)."""
    results: dict[str, R] = {}
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )
    with progress, ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        task = progress.add_task(label, total=len(hosts))
        futures = {pool.submit(work, host): host for host in hosts}
        for future in as_completed(futures):
            results[futures[future].name] = future.result()
            progress.advance(task)
    return [results[h.name] for h in hosts]
