"""Run one command as a child process and measure it: wall time, CPU of the process tree, peak memory.

- wall: from spawn to exit (``time.perf_counter``).
- CPU: user + system time of the child and every descendant it waited for (``RUSAGE_CHILDREN`` deltas of
  this process; nothing else runs as our child meanwhile). Daemonised descendants that are never waited
  for (ansible's ControlPersist ssh masters) are not included.
- memory: the process tree is sampled every ``interval`` seconds: ``tree_mb`` is the largest sum of resident
  set sizes seen at once (shared pages count once per process, which flatters no tool with many forks),
  ``process_mb`` the largest single process (its VmHWM high-water mark, so no peak is missed between samples).
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass
class Measurement:
    argv: list[str]
    code: int
    wall: float
    cpu: float
    tree_mb: float
    process_mb: float
    output: str
    host_cpu: float = 0.0       # CPU seconds of the testbed hosts meanwhile (set by the bench)


def _status_kb(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of a process in kB (0, 0 once it is gone)."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, hwm


class _Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.tree_kb = self.process_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.is_set():
            try:
                pids = [self.pid, *(p.pid for p in root.children(recursive=True))]
            except psutil.Error:
                break
            total = 0
            for pid in pids:
                rss, hwm = _status_kb(pid)
                total += rss
                self.process_kb = max(self.process_kb, hwm)
            self.tree_kb = max(self.tree_kb, total)
            self.stop.wait(self.interval)


def run_measured(argv: list[str], *, env: dict[str, str], cwd: Path, log: Path | None = None,
                 timeout: float = 3600, interval: float = 0.1) -> Measurement:
    """Run ``argv`` (output to ``log`` and returned), measured as the module docstring says."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out_path = log or Path(os.devnull)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        sampler = _Sampler(proc.pid, interval)
        sampler.start()
        try:
            code = proc.wait(timeout=timeout)
        finally:
            wall = time.perf_counter() - started
            sampler.stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = out_path.read_text(errors="replace") if log else ""
    return Measurement(argv, code, wall, cpu, sampler.tree_kb / 1024, sampler.process_kb / 1024, text)
