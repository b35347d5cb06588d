"""The converge benchmark: berth vs ansible-playbook (pipelining) vs pyinfra on the same testbed hosts.

    .venv/bin/python -m bench --hosts 1,10,30 --repeat 5

For each N it starts testbed hosts r1..rN, converges them once with berth (installs Docker, issues the
server certificates from the bench CA), then measures, interleaved (the order rotates every repetition):

- first converge: the managed files are removed from every host first (see RESET_FILES), then the tool
  converges: it writes them, reloads systemd, restarts dockerd and waits for its TLS port, reloads
  gitlab-runner. After each one, `berth setup-runner --check` must find nothing to change: every tool
  converges to the same bytes, modes and owners.
- no-op converge: nothing to change; the tool must say so itself, right after another tool's run.

Raw figures go to bench/results.json, the tables to bench/RESULTS.md (see bench/README.md).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.floor import FloorError, measure_floor
from bench.measure import Measurement, run_measured
from bench.report import first_breakdown, per_host_line, scale_verdict, table
from bench.tools import ROOT, TOOLS, Berth, Context, Tool, berth_argv
from berth.pki.ca import CertificateAuthority
from berth.testbed import Testbed, TestbedError

BENCH = Path(__file__).resolve().parent
WORK = ROOT / ".testbed" / "bench"

# What "first converge" starts from: every file the three tools write, removed (Docker stays installed,
# the server key and certificate stay: ansible and pyinfra only hold them to their mode and owner).
RESET_FILES = (
    "/etc/docker/daemon.json",
    "/etc/systemd/system/docker.service.d/berth-hosts.conf",
    "/etc/docker/tls/ca.pem",
    "/etc/systemd/system/gitlab-runner.service.d/berth-kill.conf",
    "/etc/gitlab-runner/config.toml",
)


class BenchError(Exception):
    """A run failed, or a tool did not converge to the same state as the others."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--hosts", default="1,10,30", help="numbers of hosts, comma-separated (default 1,10,30)")
    p.add_argument("--repeat", type=int, default=5, help="no-op converges per tool and N (default 5)")
    p.add_argument("--first-repeat", type=int, default=None, help="first converges per tool and N (default: --repeat)")
    p.add_argument("--tools", default="berth,ansible,pyinfra", help="tools to run, comma-separated")
    p.add_argument("--ansible-first-repeat", default="",
                   help="fewer first converges of ansible-playbook from N hosts on, N:K pairs (K may be 0; default: "
                        "as --ansible-repeat)")
    p.add_argument("--skip-warmup", default="",
                   help="tools whose unmeasured warm-up is skipped, comma-separated: only for hosts on which they "
                        "ran before (their no-ops must still report no change)")
    p.add_argument("--ansible-repeat", default="",
                   help="fewer first and no-op converges of ansible-playbook from N hosts on, N:K pairs, e.g. "
                        "30:2,100:1 (default: --repeat and --first-repeat): one 100-host no-op of it takes minutes")
    p.add_argument("--out", default=str(BENCH / "RESULTS.md"), help="the Markdown report (default bench/RESULTS.md)")
    p.add_argument("--down", action="store_true", help="remove the testbed at the end")
    p.add_argument("--render", action="store_true",
                   help="run nothing: rewrite --out from the results.json beside it (after a change of report.py)")
    args = p.parse_args(argv)
    args.host_counts = [int(x) for x in args.hosts.split(",") if x.strip()]
    try:
        args.ansible_limits = _pairs(args.ansible_repeat)
        args.ansible_first_limits = _pairs(args.ansible_first_repeat) or args.ansible_limits
    except ValueError:
        p.error(f"--ansible-repeat, --ansible-first-repeat: N:K pairs such as 30:2,100:1, got "
                f"{args.ansible_repeat!r}, {args.ansible_first_repeat!r}")
    args.skip_warmup = {t.strip() for t in args.skip_warmup.split(",") if t.strip()}
    args.tool_names = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(args.tool_names) - set(TOOLS)
    if unknown or args.tool_names[:1] != ["berth"]:
        p.error(f"--tools: berth first, then any of {', '.join(TOOLS)} (unknown: {', '.join(sorted(unknown))})")
    if args.first_repeat is None:
        args.first_repeat = args.repeat
    return args


def _pairs(text: str) -> list[tuple[int, int]]:
    return sorted((int(n), int(k)) for n, _, k in (pair.partition(":") for pair in text.split(",") if pair.strip()))


def ansible_repeat(args: argparse.Namespace, n: int, phase: str = "noop") -> int | None:
    """ansible-playbook's repetitions at ``n`` hosts under --ansible-repeat (None: as the other tools)."""
    pairs = args.ansible_first_limits if phase == "first" else args.ansible_limits
    limits = [k for at_least, k in pairs if n >= at_least]
    return limits[-1] if limits else None


def rotate(tools: list[Tool], rep: int, args: argparse.Namespace | None = None, n: int = 0,
           phase: str = "noop") -> list[Tool]:
    limit = ansible_repeat(args, n, phase) if args is not None else None
    if limit is not None and rep >= limit:
        tools = [t for t in tools if t.name != "ansible"]
    k = rep % len(tools)
    return tools[k:] + tools[:k]


def reset(bed: Testbed, hosts: list[str]) -> None:
    """Remove the managed files on every host (through docker exec, not measured)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda h: bed.exec(h, "rm", "-f", *RESET_FILES), hosts))


CGROUP_CPU = Path("/sys/fs/cgroup/cpuacct/docker")        # cgroup v1 (this machine); v2 below
CGROUP2 = Path("/sys/fs/cgroup/system.slice")


def hosts_cpu(container_ids: list[str]) -> float:
    """CPU seconds used so far by the testbed hosts' containers, all their processes (sshd, sudo, python3,
    systemd answering systemctl, dockerd): what a tool's run costs the hosts. 0 when the cgroup is unreadable."""
    total = 0.0
    for cid in container_ids:
        try:
            total += int((CGROUP_CPU / cid / "cpuacct.usage").read_text()) / 1e9
        except OSError:
            try:
                stat = (CGROUP2 / f"docker-{cid}.scope" / "cpu.stat").read_text().split()
                total += int(stat[stat.index("usage_usec") + 1]) / 1e6
            except (OSError, ValueError):
                pass
    return total


def container_ids(bed: Testbed, hosts: list[str]) -> list[str]:
    names = [bed.container_name(h) for h in hosts]
    return subprocess.run(["docker", "inspect", "-f", "{{.Id}}", *names], capture_output=True, text=True,
                          check=True).stdout.split()


def measure(tool: Tool, ctx: Context, run_id: str) -> tuple[Measurement, Any]:
    tool.clean(ctx, run_id)
    argv, env = tool.command(ctx, run_id)
    host_cpu = hosts_cpu(ctx.container_ids)
    m = run_measured(argv, env=env, cwd=ROOT, log=WORK / "logs" / f"{run_id}-{tool.name}.log")
    m.host_cpu = hosts_cpu(ctx.container_ids) - host_cpu
    outcome = tool.outcome(ctx, run_id, m)
    if not outcome.ok:
        raise BenchError(f"{tool.name} ({run_id}) failed: {outcome.problem}; log: {WORK / 'logs' / run_id}*")
    return m, outcome


def check_converged(ctx: Context, after: str) -> None:
    """berth --check on every host: exit 0 means the host is exactly in the desired state."""
    proc = subprocess.run(berth_argv(ctx, check=True), cwd=ROOT, env=ctx.base_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"after {after}, berth --check found drift (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def record(results: dict[str, Any], n: int, phase: str, rep: int, tool: Tool, m: Measurement, outcome: Any) -> None:
    results["runs"].append({
        "n": n, "phase": phase, "rep": rep, "tool": tool.name, "wall": round(m.wall, 3), "cpu": round(m.cpu, 3),
        "tree_mb": round(m.tree_mb, 1), "process_mb": round(m.process_mb, 1), "changes": outcome.changes,
        "changed_hosts": outcome.changed_hosts, "ssh": outcome.ssh, "load1": round(os.getloadavg()[0], 1),
        "host_cpu": round(m.host_cpu, 3), "phases": phase_split(outcome.timings),
    })
    per_host = sum(outcome.ssh.values()) / n
    log(f"  N={n} {phase:5} rep {rep + 1} {tool.name:8} {m.wall:7.2f} s  cpu {m.cpu:6.2f} s  "
        f"hosts' cpu {m.host_cpu:6.2f} s  tree {m.tree_mb:6.0f} MB  ssh/host {per_host:5.1f}  "
        f"changes {outcome.changes}  load {os.getloadavg()[0]:.1f}")


def phase_split(timings: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """berth's per-host timings (its JSON report) as the median and the largest over the hosts, per phase."""
    phases: dict[str, list[float]] = {}
    for per_host in timings.values():
        for phase, seconds in per_host.items():
            phases.setdefault(phase, []).append(seconds)
    return {phase: {"median": round(statistics.median(v), 3), "max": round(max(v), 3), "hosts": len(v)}
            for phase, v in phases.items()}


def testbed_up(bed: Testbed, n: int) -> list[Any]:
    """Hosts r1..rN (berth.testbed starts them in parallel, raises the inotify limit, caps each host's memory)."""
    log(f"testbed up: {n} hosts")
    try:
        return bed.up(n)
    except TestbedError as exc:
        stuck = [h.name for h in bed.status() if not _booted(bed, h.name)]
        log(f"testbed: {str(exc).splitlines()[0]}; starting {', '.join(stuck)} again")
        for name in stuck:
            subprocess.run(["docker", "rm", "-f", bed.container_name(name)], capture_output=True)
        return bed.up(n)


def _booted(bed: Testbed, host: str) -> bool:
    probe = "systemctl is-active ssh >/dev/null && test -s /etc/ssh/ssh_host_ed25519_key.pub"
    return bed.exec(host, "sh", "-c", probe, check=False).returncode == 0


def hosts_context(bed: Testbed, n: int) -> Context:
    """Hosts r1..rN up, with what every tool needs of them (addresses, the daemons' CA, their containers)."""
    started = testbed_up(bed, n)
    ctx = Context(WORK, [h.name for h in started], {h.name: h.address for h in started}, WORK / "ca",
                  WORK / "pki")
    ctx.container_ids = container_ids(bed, ctx.hosts)
    write_trust_bundles(ctx)
    return ctx


def bench_n(args: argparse.Namespace, bed: Testbed, tools: list[Tool], n: int, results: dict[str, Any]) -> None:
    ctx = hosts_context(bed, n)
    for tool in tools:
        tool.prepare(ctx)
    log(f"N={n}: berth converges every host once (installs Docker where missing, issues certificates)")
    m, outcome = measure(tools[0], ctx, f"n{n}-install")
    log(f"  install: {m.wall:.1f} s, {outcome.changed_hosts} host(s) changed")
    for tool in tools[1:]:
        if tool.name in args.skip_warmup:
            log(f"N={n}: no warm-up run of {tool.name} (--skip-warmup)")
            continue
        log(f"N={n}: warm-up run of {tool.name} (must change nothing)")
        m, outcome = measure(tool, ctx, f"n{n}-warmup")
        if outcome.changes:
            raise BenchError(f"{tool.name}'s warm-up changed {outcome.changes} thing(s) after berth's converge: "
                             f"its desired state differs from berth's (log {WORK / 'logs'})")
    for rep in range(args.first_repeat):
        for tool in rotate(tools, rep, args, n, "first"):
            reset(bed, ctx.hosts)
            m, outcome = measure(tool, ctx, f"n{n}-first-{rep + 1}")
            if outcome.changed_hosts != n:
                raise BenchError(f"{tool.name}: first converge changed {outcome.changed_hosts} of {n} hosts")
            check_converged(ctx, f"{tool.name}'s first converge")
            record(results, n, "first", rep, tool, m, outcome)
        for reload in (False, True):
            before = hosts_cpu(ctx.container_ids)
            floor = measure_floor(bed, ctx.hosts, reload=reload)
            host_cpu = hosts_cpu(ctx.container_ids) - before      # docker exec's python3 included (~10 ms a host)
            results.setdefault("floors", []).append({**floor.as_json(n, rep), "host_cpu": round(host_cpu, 3)})
            log(f"  N={n} first rep {rep + 1} floor    {floor.slowest:7.2f} s  hosts' cpu {host_cpu:6.2f} s  "
                f"(dockerd restart{' after a daemon-reload' if reload else ''} on every host at once, nothing else)")
    for rep in range(args.repeat):
        for tool in rotate(tools, rep, args, n):
            m, outcome = measure(tool, ctx, f"n{n}-noop-{rep + 1}")
            if outcome.changes:
                raise BenchError(f"{tool.name}: a no-op converge changed {outcome.changes} thing(s)")
            record(results, n, "noop", rep, tool, m, outcome)


def ensure_ca() -> None:
    pki = WORK / "pki"
    if not CertificateAuthority.exists(pki):
        CertificateAuthority.init(pki)


def write_trust_bundles(ctx: Context) -> None:
    """Each daemon's tlscacert is its own (its trust zones, berth.pki.ca): one file per host for ansible and pyinfra."""
    ca = CertificateAuthority.load(ctx.pki_dir)
    ctx.ca_pem.mkdir(parents=True, exist_ok=True)
    for host in ctx.hosts:
        (ctx.ca_pem / f"{host}.pem").write_bytes(ca.daemon_trust_pem(host))


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ours = f"label=berth.testbed={Testbed(ROOT).id}"
    everyone = subprocess.run(["docker", "ps", "-q"], capture_output=True, text=True).stdout.split()
    mine = subprocess.run(["docker", "ps", "-q", "--filter", ours], capture_output=True, text=True).stdout.split()
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {
        "cpus": os.cpu_count(), "memory_gib": round(int(meminfo[1]) / 1024**2, 1), "cpu": cpu,
        "kernel": platform.release(), "load_start": os.getloadavg(), "other_containers": len(everyone) - len(mine),
        "openssh": ssh,
    }


def versions() -> dict[str, str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "berth": f"{version('berth')} ({commit.stdout.strip() or '?'})",
        "ansible-core": version("ansible-core"), "pyinfra": version("pyinfra"), "paramiko": version("paramiko"),
        "fabric": version("fabric"), "python": platform.python_version(),
    }


def compile_berth(root: Path = ROOT) -> None:
    """berth's bytecode, as ``pip install`` leaves it: pip compiles what it installs (pyinfra and ansible in
    site-packages are), but an editable install compiles on first import only, and never where
    PYTHONDONTWRITEBYTECODE is set; berth would then compile its 15,000 lines on every run (0.1 s).
    ``root``: another copy of berth measured beside this one (bench.sweep --old)."""
    for package in (root / "berth", root / "roles"):
        compileall.compile_dir(package, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        out = Path(args.out)
        results = json.loads(out.with_name("results.json").read_text())
        old = out.read_text() if out.exists() else ""
        notes = old[old.index(NOTES_MARK):] if NOTES_MARK in old else NOTES_MARK
        out.write_text(markdown(results, out) + "\n" + notes)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    compile_berth()
    command = shlex.join([".venv/bin/python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    results: dict[str, Any] = {
        "command": command, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
        "versions": versions(), "tools": args.tool_names, "hosts": args.host_counts, "repeat": args.repeat,
        "first_repeat": args.first_repeat, "ansible_repeat": args.ansible_repeat,
        "ansible_first_repeat": args.ansible_first_repeat, "skip_warmup": sorted(args.skip_warmup), "runs": [],
    }
    tools = [TOOLS[name]() for name in args.tool_names]
    assert isinstance(tools[0], Berth)
    bed = Testbed(ROOT, log=log)
    ensure_ca()
    started = time.monotonic()
    try:
        for n in args.host_counts:
            bench_n(args, bed, tools, n, results)
            write(results, Path(args.out), started)
    except (BenchError, FloorError) as exc:
        log(f"error: {exc}")
        return 1
    finally:
        if args.down:
            bed.down()
    log(f"done in {(time.monotonic() - started) / 60:.1f} min: {args.out}")
    return 0


NOTES_MARK = "<!-- Written by hand below this line: kept when the bench rewrites this file. -->"


def write(results: dict[str, Any], out: Path, started: float) -> None:
    results["machine"]["load_end"] = os.getloadavg()
    results["minutes"] = round((time.monotonic() - started) / 60, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name("results.json").write_text(json.dumps(results, indent=1) + "\n")
    old = out.read_text() if out.exists() else ""
    notes = old[old.index(NOTES_MARK):] if NOTES_MARK in old else NOTES_MARK + "\n"
    out.write_text(markdown(results, out) + "\n" + notes)


TOOL_NAMES = {"berth": "berth", "ansible": "ansible-playbook", "pyinfra": "pyinfra"}


def markdown(results: dict[str, Any], out: Path) -> str:
    mc, v = results["machine"], results["versions"]
    load = "/".join(f"{x:.1f}" for x in mc["load_start"]), "/".join(f"{x:.1f}" for x in mc.get("load_end", ()))
    raw = out.resolve().with_name("results.json")
    lines = [
        "# Converge benchmark: " + ", ".join(TOOL_NAMES.get(t, t) for t in results.get("tools", TOOL_NAMES)),
        "",
        "Produced by (in the project directory, as root, with `pip install -e '.[dev,bench]'`):",
        "",
        "```sh",
        results["command"],
        "```",
        "",
        f"- date: {results['date']}; the whole run took {results.get('minutes', '?')} min",
        f"- machine: {mc['cpus']} CPUs ({mc['cpu']}), {mc['memory_gib']} GiB, Linux {mc['kernel']}; load average "
        f"(1/5/15 min) {load[0]} at the start, {load[1]} at the end. The machine was shared: "
        f"{mc['other_containers']} other containers (other engineers' testbeds and tests) were running at the "
        "start. The tools ran interleaved on the same hosts, so the load fell on all three alike; absolute times "
        "are noisier than the ratios." + _load_during(results),
        f"- versions: berth {v['berth']}, ansible-core {v['ansible-core']}, pyinfra {v['pyinfra']}, "
        f"paramiko {v['paramiko']}, fabric {v['fabric']}, Python {v['python']}, {mc['openssh']}",
        "- hosts: testbed containers (Debian 12, systemd, sshd) on a Docker network of this machine",
        "",
        "## Results",
        "",
        "Times are wall-clock medians. Ratios are the tool's median over berth's (higher: berth faster). SSH cmds/host "
        "is the mean number of SSH sessions (commands, SFTP and scp transfers) per host in a run.",
        "",
    ]
    for n in sorted(results["hosts"]):
        if any(r["n"] == n for r in results["runs"]):
            lines += [*table(results, n), ""]
    lines += [*per_host_line(results), *first_breakdown(results), *scale_verdict(results)]
    lines += METHOD.rstrip().splitlines()
    raw_path = raw.relative_to(ROOT) if raw.is_relative_to(ROOT) else raw
    lines += ["", f"Raw figures, every run: `{raw_path}`. Logs of each run: `.testbed/bench/logs/`."]
    return "\n".join(lines).rstrip() + "\n"


def _load_during(results: dict[str, Any]) -> str:
    loads = [r["load1"] for r in results["runs"] if "load1" in r]
    if not loads:
        return ""
    median = statistics.median(loads)
    return f" 1-minute load average at the end of each run: median {median:.1f}, max {max(loads):.1f}."


METHOD = """## What was measured

**Desired state**, the same for the three tools (berth: roles docker_engine, docker_tls, gitlab_runner with
`bench/inventory`; ansible: `bench/ansible/site.yml`; pyinfra: `bench/pyinfra/deploy.py`; both render the
templates in `bench/desired/`): package docker.io; `/etc/docker/daemon.json` (TLS listener on 2376); the
docker.service drop-in; `/etc/docker/tls/{ca.pem,cert.pem,key.pem}`; `/etc/gitlab-runner/config.toml` (global
keys, no runner); the gitlab-runner drop-in; directories with their modes; dockerd enabled and running; and the
handlers: systemd daemon-reload, restart dockerd and wait for its TLS port, reload gitlab-runner (SIGHUP).
gitlab-runner itself is not installed (its package repository is unreachable here), as in `make demo`.

**Simplification for ansible and pyinfra**: the server key and certificate are made the berth way (key generated
on the host, CSR signed by the bench CA) by berth's converge before anything is measured. The playbook and the
deploy then only hold `cert.pem` and `key.pem` to their mode and owner (Ansible `file: state=file`, pyinfra
`files.file`), not their content; berth additionally checks the certificate (CA, SANs, expiry) on every run.

**Same state, checked**: after every first converge of any tool, `berth setup-runner --check` must find nothing to
change on any host (same bytes, modes, owners); every no-op run must report no change itself (berth: its JSON
report; ansible: `changed=0` in the PLAY RECAP; pyinfra: no "Success" in its results table), and it runs right
after another tool's run. A failed check stops the benchmark.

**First converge** = converge after removing daemon.json, the two drop-ins, ca.pem and config.toml on every host
(Docker stays installed; key and certificate stay). Each tool then writes those five files and runs every
handler (daemon-reload, dockerd restart with wait for its port, gitlab-runner reload). **No-op converge** =
converge with nothing to change.

**Runs**: for each N, testbed hosts r1..rN; one berth converge installs Docker and issues certificates, one
unmeasured warm-up of ansible and pyinfra (ansible installs python3-apt for its apt module then), then the
first converges and the no-op converges, interleaved: each repetition runs the three tools in turn and the order
rotates (berth-ansible-pyinfra, ansible-pyinfra-berth, pyinfra-berth-ansible, ...). Each run is a fresh
process of the tool's own command line, with N hosts in parallel for every tool:
- berth: `invoke setup-runner --inventory bench/inventory/hosts.yml --limit r1,..,rN --forks N --json FILE`
- ansible: `ansible-playbook -i INVENTORY -f N bench/ansible/site.yml` with `bench/ansible/ansible.cfg`
  (pipelining on, host key checking on, `interpreter_python=/usr/bin/python3`, so no discovery round trip) and
  `ansible_ssh_common_args=-F .testbed/ssh_config`; OpenSSH with Ansible's default ControlMaster/ControlPersist=60s
  (a run can reuse the master connections of the previous ansible run when it started less than 60 s after it);
  `gather_facts: false` (no task needs facts).
- pyinfra: `pyinfra -y --sudo --parallel N INVENTORY bench/pyinfra/deploy.py` (paramiko; the inventory gives
  each host's address, user, key and the testbed's known_hosts with strict checking).

**Measures** (`bench/measure.py`): wall time from spawn to exit; CPU = user+system of the tool and every
descendant it waited for (ansible's detached ControlPersist masters are not included); peak memory = the largest
sum of resident set sizes of the process tree seen at once (sampled every 0.1 s; pages shared between forks count
once per process) and the largest single process (its VmHWM). SSH sessions: berth counts its own (JSON report);
ansible's `ssh`, `sftp` and `scp` are run through a counting wrapper first on PATH (`bench/sshcount/bin`); pyinfra's
paramiko `exec_command` and `invoke_subsystem` calls are counted by `bench/sshcount/sitecustomize.py`
(PYTHONPATH of the measured run only). The counters cost about a millisecond per session (ansible's: a fork
and exec of sh) and microseconds (pyinfra's).

"""


if __name__ == "__main__":
    sys.exit(main())
