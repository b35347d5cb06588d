"""Where the CPU of a first converge goes, by process, on the whole machine: ``perf`` samples every CPU.

    .venv/bin/python -m bench.profile --hosts 10 --tools berth,pyinfra --out bench/first-converge/PROFILE.md

On these testbeds every host shares the machine's CPUs, so a first converge of many hosts is bound by the CPU
that all of them use together: dockerd's start (with its iptables calls), systemd's daemon-reload (its
generators), the SSH logins, the tool's own work on the hosts and on the controller. This profiles, on hosts
r1..rN that the benchmark left converged (run ``python -m bench --hosts N`` first), one first converge of
each tool and the floor (every host's daemon-reload and dockerd restart, nothing else: bench/floor.py), and
sorts the samples by the process that was running. Needs ``perf`` and root (the bench's machine has both).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.__main__ import BenchError, hosts_context, log, measure, reset
from bench.floor import measure_floor
from bench.tools import ROOT, TOOLS, Tool
from berth.testbed import Testbed

HZ = 999         # samples per second and CPU

# Process name (perf's comm, at most 15 characters) -> what it is part of. First match wins.
CATEGORIES: list[tuple[str, str]] = [
    (r"^(invoke|pyinfra|ansible.*)$", "the tool on the controller"),
    (r"^python3$", "python3 on the hosts: berth's agent (the floor: its timing script)"),
    (r"^(sshd|bash|sudo|sh|env|run-parts|10-uname|uname)$", "SSH logins, sudo and shells"),
    (r"^(systemd|systemctl|systemd-.*|\(sd-.*\)|\(direxec\))$", "systemd: daemon-reload, unit jobs, systemctl"),
    (r"^(dockerd|\(dockerd\)|iptables|ip6tables|containerd.*|runc|docker-init|ip)$",
     "dockerd's stop and start (iptables, containerd)"),
    (r"^swapper", "idle"),
]
OTHER = "everything else on the machine"


def category(comm: str) -> str:
    return next((name for pattern, name in CATEGORIES if re.match(pattern, comm)), OTHER)


class Recording:
    """``perf record`` of every CPU from start to stop; ``seconds()`` is CPU time by category."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-a", "-F", str(HZ), "-o", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)         # perf is sampling before the measured work starts

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)

    def seconds(self) -> dict[str, float]:
        out = subprocess.run(["perf", "report", "-i", str(self.path), "--sort", "comm", "-F", "sample,comm",
                              "--stdio", "-g", "none"], capture_output=True, text=True, check=True).stdout
        total: dict[str, float] = {}
        for line in out.splitlines():
            match = re.match(r"\s*(\d+)\s+(\S.*?)\s*$", line)
            if match and not line.lstrip().startswith("#"):
                name = category(match.group(2))
                total[name] = total.get(name, 0.0) + int(match.group(1)) / HZ
        return total


def profile(what: str, action: Callable[[], float | None], scratch: Path) -> tuple[dict[str, float], float]:
    """CPU by category while ``action`` runs, and its wall time (or the time it measured itself)."""
    recording = Recording(scratch / f"{what}.data")
    started = time.monotonic()
    try:
        measured = action()
    finally:
        wall = time.monotonic() - started
        recording.stop()
    return recording.seconds(), wall if measured is None else measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10, help="hosts r1..rN, as the benchmark left them")
    parser.add_argument("--tools", default="berth,pyinfra", help="tools to profile, comma-separated")
    parser.add_argument("--out", default="bench/first-converge/PROFILE.md", help="the Markdown report")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        parser.error("perf is not installed (linux-perf): this profile samples every CPU with it")
    bed = Testbed(ROOT, log=log)
    ctx = hosts_context(bed, args.hosts)
    columns: dict[str, tuple[dict[str, float], float]] = {}
    with tempfile.TemporaryDirectory(prefix="berth-profile-") as tmp:
        scratch = Path(tmp)

        def floor() -> float:
            return measure_floor(bed, ctx.hosts, reload=True).slowest    # from the common start: no lead time

        columns["floor (daemon-reload, restart)"] = profile("floor", floor, scratch)
        for name in args.tools.split(","):
            tool = TOOLS[name]()
            tool.prepare(ctx)
            reset(bed, ctx.hosts)
            time.sleep(3)       # the hosts settle after the reset

            def converge(tool: Tool = tool) -> None:
                measure(tool, ctx, f"profile-{tool.name}")      # as the benchmark runs and checks it

            try:
                columns[f"{name} first converge"] = profile(name, converge, scratch)
            except BenchError as exc:
                log(f"error: {exc}")
                return 1
            log(f"{name}: {columns[f'{name} first converge'][1]:.2f} s")
    text = markdown(columns, args.hosts)
    Path(args.out).write_text(text)
    print(text)
    return 0


def markdown(columns: dict[str, tuple[dict[str, float], float]], n: int) -> str:
    names = [name for _, name in CATEGORIES if name != "idle"] + [OTHER]
    head = "| CPU seconds, all CPUs | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"
    rows = [f"| {name} | " + " | ".join(f"{c.get(name, 0.0):.2f}" for c, _ in columns.values()) + " |"
            for name in names]
    busy = [sum(v for k, v in c.items() if k != "idle") for c, _ in columns.values()]
    rows.append("| **busy, all processes** | " + " | ".join(f"**{b:.2f}**" for b in busy) + " |")
    rows.append("| per host (ms) | " + " | ".join(f"{b / n * 1000:.0f}" for b in busy) + " |")
    rows.append("| wall time (s) | " + " | ".join(f"{w:.2f}" for _, w in columns.values()) + " |")
    return (f"# First converge of {n} hosts: CPU by process\n\nProduced by `python -m bench.profile --hosts {n}` "
            f"(perf, {HZ} samples per second and CPU; the floor is bench/floor.py's, with the daemon-reload; "
            "its dockerd row includes the machine's own dockerd answering its `docker exec`).\n\n"
            + head + "\n".join(rows) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
