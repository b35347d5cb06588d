"""A first converge that issues every host's server certificate too, berth against another copy of berth.

    .venv/bin/python -m bench.first_with_certs --hosts 10 --repeat 6 --old DIR

The benchmark's first converge keeps each host's key and certificate (ansible and pyinfra do not make keys);
this one removes them as well (with ``RESET_FILES``), so that berth makes the key and CSR on the host and signs
it. Runs only berth, the copy in DIR interleaved with this one on the same hosts (DIR as for ``bench.sweep``:
``git archive COMMIT | tar -x -C DIR`` and DIR/.testbed a symlink to this .testbed). The hosts r1..rN must be
running and converged (``python -m bench --hosts N`` leaves them so). Prints each run and the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.__main__ import RESET_FILES, WORK, compile_berth, container_ids, log
from bench.sweep import run_version
from bench.tools import ROOT, Berth, Context
from berth.testbed import Testbed

KEY_AND_CERT = ("/etc/docker/tls/key.pem", "/etc/docker/tls/cert.pem")     # docker_tls_dir's (role docker_tls)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.first_with_certs", description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=10)
    p.add_argument("--repeat", type=int, default=6)
    p.add_argument("--old", required=True, help="another berth checkout to run alongside (its project directory)")
    args = p.parse_args(argv)
    bed = Testbed(ROOT, log=log)
    running = {h.name: h for h in bed.status() if h.state == "running"}
    hosts = [f"r{i}" for i in range(1, args.hosts + 1)]
    if any(h not in running for h in hosts):
        log(f"hosts not running: start them with python -m bench --hosts {args.hosts}")
        return 1
    ctx = Context(WORK, hosts, {h: running[h].address for h in hosts}, WORK / "ca", WORK / "pki")
    ctx.container_ids = container_ids(bed, hosts)
    tool = Berth()
    tool.prepare(ctx)
    versions = {"new": ROOT, "old": Path(args.old).resolve()}
    for root in versions.values():
        compile_berth(root)
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        for label, root in (list(versions.items()) if rep % 2 == 0 else list(reversed(versions.items()))):
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda h: bed.exec(h, "rm", "-f", *RESET_FILES, *KEY_AND_CERT), hosts))
            time.sleep(3)       # the hosts settle after the reset
            run_id = f"certs-{label}-{rep + 1}"
            m, host_cpu = run_version(ctx, tool, run_id, root)
            reports = json.loads(tool.report(ctx, run_id).read_text())
            issued = all(r["status"] == "changed" and any(c["kind"] == "certificate" for c in r["changes"])
                         for r in reports)
            if m.code != 0 or not issued:
                log(f"{run_id}: exit {m.code}, certificates issued on every host: {issued}")
                return 1
            run = {"version": label, "wall": m.wall, "cpu": m.cpu, "host_cpu": host_cpu,
                   "ssh": sum(r["ssh_commands"] for r in reports) / len(hosts),
                   "csr": statistics.median(r["timings"].get("csr", 0.0) for r in reports)}
            runs.append(run)
            log(f"  {run_id}: {m.wall:5.2f} s  cpu {m.cpu:4.2f} s  hosts' cpu {host_cpu:5.2f} s  "
                f"ssh/host {run['ssh']:.1f}  csr {run['csr'] * 1000:.0f} ms (median host)")
    for label in versions:
        mine = [r for r in runs if r["version"] == label]
        medians = {k: statistics.median(r[k] for r in mine) for k in ("wall", "cpu", "host_cpu", "ssh", "csr")}
        log(f"{label}: median of {len(mine)}: {medians['wall']:.2f} s, controller cpu {medians['cpu']:.2f} s, "
            f"hosts' cpu {medians['host_cpu']:.2f} s, {medians['ssh']:.1f} SSH commands per host, "
            f"csr {medians['csr'] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
