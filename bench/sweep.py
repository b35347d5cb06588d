"""The cost per host as the fleet grows: berth no-op converges on 1..N of the running testbed hosts.

    .venv/bin/python -m bench.sweep --hosts 1,2,5,10,20,50,100 --repeat 3 [--old DIR]

Runs only berth (the full benchmark, ``python -m bench``, compares the tools); each point is the median of
``--repeat`` no-ops: wall time, controller CPU and peak memory, the hosts' CPU (their containers' cgroups),
SSH commands. ``--old DIR`` also runs another copy of berth on the same hosts, interleaved, to show what a
change did (e.g. ``git archive COMMIT | tar -x -C DIR`` and DIR/.testbed a symlink to this .testbed); the same
Python environment runs both (DIR comes first on PYTHONPATH). The hosts must be converged already
(``python -m bench`` leaves them so). Results are added to bench/results.json under "sweep";
``python -m bench --render`` puts them in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.__main__ import WORK, compile_berth, container_ids, hosts_cpu, log
from bench.measure import Measurement, run_measured
from bench.tools import BIN, ROOT, Berth, Context
from berth.testbed import Testbed


def run_version(ctx: Context, tool: Berth, run_id: str, root: Path) -> tuple[Measurement, float]:
    """One converge by the copy of berth in ``root`` (this one, or another on PYTHONPATH in the same Python
    environment): its measurement and the CPU seconds the hosts used meanwhile."""
    tool.clean(ctx, run_id)
    command, env = tool.command(ctx, run_id)
    if root != ROOT:
        env = dict(env, PYTHONPATH=str(root))
        command = [str(BIN / "python"), "-m", "invoke", *command[1:]]
    before = hosts_cpu(ctx.container_ids)
    m = run_measured(command, env=env, cwd=root, log=WORK / "logs" / f"{run_id}.log")
    return m, hosts_cpu(ctx.container_ids) - before


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--hosts", default="1,2,5,10,20,50,100")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--old", default="", help="another berth checkout to run alongside (its project directory)")
    p.add_argument("--results", default=str(Path(__file__).parent / "results.json"))
    args = p.parse_args(argv)
    counts = sorted(int(x) for x in args.hosts.split(",") if x.strip())
    bed = Testbed(ROOT, log=log)
    running = {h.name: h for h in bed.status() if h.state == "running"}
    missing = [f"r{i}" for i in range(1, counts[-1] + 1) if f"r{i}" not in running]
    if missing:
        log(f"hosts not running: {', '.join(missing[:5])}...: start them with python -m bench --hosts {counts[-1]}")
        return 1
    versions = {"new": ROOT}
    if args.old:
        versions["old"] = Path(args.old).resolve()
    for root in versions.values():
        compile_berth(root)
    points: list[dict[str, Any]] = []
    for n in counts:
        hosts = [f"r{i}" for i in range(1, n + 1)]
        ctx = Context(WORK, hosts, {h: running[h].address for h in hosts}, WORK / "ca", WORK / "pki")
        ctx.container_ids = container_ids(bed, hosts)
        tool = Berth()
        tool.prepare(ctx)
        for rep in range(args.repeat):
            for label, root in (versions.items() if rep % 2 == 0 else reversed(versions.items())):
                run_id = f"sweep-n{n}-{label}-{rep + 1}"
                m, host_cpu = run_version(ctx, tool, run_id, root)
                outcome = tool.outcome(ctx, run_id, m)
                if not outcome.ok or outcome.changes:
                    log(f"{run_id}: not a clean no-op ({outcome.problem or f'{outcome.changes} changes'})")
                    return 1
                point = {"n": n, "version": label, "rep": rep, "wall": round(m.wall, 3), "cpu": round(m.cpu, 3),
                         "host_cpu": round(host_cpu, 3), "tree_mb": round(m.tree_mb, 1),
                         "ssh": sum(outcome.ssh.values()) / n, "load1": round(os.getloadavg()[0], 1)}
                points.append(point)
                log(f"  sweep N={n:3} {label:3} rep {rep + 1}: {m.wall:6.2f} s  cpu {m.cpu:5.2f} s  "
                    f"hosts' cpu {host_cpu:5.2f} s  {m.tree_mb:4.0f} MB  load {point['load1']}")
    path = Path(args.results)
    results = json.loads(path.read_text()) if path.exists() else {}
    results["sweep"] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                        "command": " ".join([".venv/bin/python -m bench.sweep", *(argv or sys.argv[1:])]),
                        "versions": {k: str(v) for k, v in versions.items()}, "points": points}
    path.write_text(json.dumps(results, indent=1) + "\n")
    for n in counts:
        for label in versions:
            runs = [pt for pt in points if pt["n"] == n and pt["version"] == label]
            log(f"N={n:3} {label}: wall {statistics.median(r['wall'] for r in runs):.2f} s, controller "
                f"{statistics.median(r['cpu'] for r in runs) / n * 1000:.0f} ms/host, hosts "
                f"{statistics.median(r['host_cpu'] for r in runs) / n * 1000:.0f} ms/host")
    return 0


if __name__ == "__main__":
    sys.exit(main())
