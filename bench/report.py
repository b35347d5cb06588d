"""bench/RESULTS.md from the raw results (bench/results.json): one table per number of hosts."""

from __future__ import annotations

import statistics
from typing import Any

NOOP_VS_ANSIBLE = 20.0   # issue #6: no-op converge at least 20x faster than ansible-playbook
NOOP_VS_PYINFRA = 2.0    # ... and at least 2x faster than pyinfra
MAX_SSH_PER_HOST = 2     # ... with at most 2 SSH commands per converged host
TARGET_FROM_HOSTS = 10   # ... for 10 and for 30 hosts
# issue #16: at 100 hosts a no-op 3x faster than pyinfra, 50x than ansible-playbook, one SSH command per host,
# controller peak memory under 150 MB and under 15 ms of controller CPU per host (marginal); a first converge at
# 10 and 30 hosts 2x faster than pyinfra and within 1.3x of the restart floor; at 100 hosts, controller CPU at
# most pyinfra's.
SCALE_HOSTS = 100
SCALE_VS_PYINFRA, SCALE_VS_ANSIBLE, SCALE_MAX_MB, SCALE_MS_PER_HOST = 3.0, 50.0, 150, 15.0
FIRST_VS_PYINFRA, FIRST_VS_FLOOR = 2.0, 1.3


def _runs(results: dict[str, Any], n: int, phase: str, tool: str) -> list[dict[str, Any]]:
    return [r for r in results["runs"] if r["n"] == n and r["phase"] == phase and r["tool"] == tool]


def summary(results: dict[str, Any], n: int, phase: str, tool: str) -> dict[str, float] | None:
    """Medians over the repetitions; SSH sessions as the mean per host of each run, and the largest on one host."""
    runs = _runs(results, n, phase, tool)
    if not runs:
        return None
    return {
        "wall": statistics.median(r["wall"] for r in runs),
        "wall_min": min(r["wall"] for r in runs),
        "wall_max": max(r["wall"] for r in runs),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "tree_mb": statistics.median(r["tree_mb"] for r in runs),
        "process_mb": statistics.median(r["process_mb"] for r in runs),
        "ssh": statistics.median(sum(r["ssh"].values()) / n for r in runs),
        "ssh_max": max((max(r["ssh"].values(), default=0) for r in runs), default=0),
        "count": len(runs),
        "host_cpu": statistics.median(r.get("host_cpu", 0.0) for r in runs),
        "load1": statistics.median(r.get("load1", 0.0) for r in runs),
    }


_NOT_RUN: dict[str, float] = dict.fromkeys(
    ("wall", "wall_min", "wall_max", "cpu", "tree_mb", "process_mb", "ssh", "host_cpu", "load1"), 0.0)


def _s(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def _n(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if value else "-"


def _x(ratio: float) -> str:
    return f"{ratio:.1f}x"


def table(results: dict[str, Any], n: int) -> list[str]:
    tools = results["tools"]
    first = {t: summary(results, n, "first", t) for t in tools}
    noop = {t: summary(results, n, "noop", t) for t in tools}
    base_first, base_noop = first.get("berth"), noop.get("berth")
    lines = [
        f"### {n} host{'s' if n > 1 else ''}",
        "",
        "| tool | first converge (median) | no-op converge (median) | no-op min-max | SSH cmds/host first / no-op "
        "| CPU s first / no-op | hosts' CPU s first / no-op | peak MB no-op (tree / largest process) "
        "| first vs berth | no-op vs berth | load first / no-op |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in tools:
        f, o = first[tool], noop[tool]
        if f is None and o is None:
            continue
        f = f or _NOT_RUN     # e.g. ansible's first converge at 100 hosts (--ansible-first-repeat 100:0)
        o = o or _NOT_RUN
        ratio_first = _x(f["wall"] / base_first["wall"]) if base_first and f["wall"] else "-"
        ratio_noop = _x(o["wall"] / base_noop["wall"]) if base_noop and o["wall"] else "-"
        lines.append(
            f"| {tool} | {_s(f['wall'])} | **{_s(o['wall'])}** | {_s(o['wall_min'])} - {_s(o['wall_max'])} "
            f"| {_n(f['ssh'], 1)} / {_n(o['ssh'], 1)} | {_n(f['cpu'], 2)} / {_n(o['cpu'], 2)} "
            f"| {_n(f['host_cpu'], 2)} / {_n(o['host_cpu'], 2)} "
            f"| {_n(o['tree_mb'], 0)} / {_n(o['process_mb'], 0)} | {ratio_first} | **{ratio_noop}** "
            f"| {_n(f['load1'], 0)} / {_n(o['load1'], 0)} |"
        )
    counts = {phase: {summary(results, n, phase, t)["count"] for t in tools if summary(results, n, phase, t)}
              for phase in ("first", "noop")}
    lines += ["", f"Repetitions per tool: first converge {_one(counts['first'])}, no-op {_one(counts['noop'])}."]
    lines += verdict(results, n)
    return lines


def _one(values: set[int]) -> str:
    return "/".join(str(v) for v in sorted(values)) or "0"


def verdict(results: dict[str, Any], n: int) -> list[str]:
    """The issue's acceptance figures for this N, each with its threshold."""
    b, a, p = (summary(results, n, "noop", t) for t in ("berth", "ansible", "pyinfra"))
    if not (b and a and p):
        return []
    vs_a, vs_p = a["wall"] / b["wall"], p["wall"] / b["wall"]
    first = summary(results, n, "first", "berth")
    ssh_max = max(b["ssh_max"], first["ssh_max"] if first else 0)

    def mark(ok: bool) -> str:
        if n < TARGET_FROM_HOSTS:
            return "met" if ok else f"not met; the issue sets the targets for {TARGET_FROM_HOSTS} hosts and more"
        return "met" if ok else "NOT met"

    return [
        "",
        f"No-op: berth is {_x(vs_a)} faster than ansible-playbook (target {NOOP_VS_ANSIBLE:.0f}x: "
        f"{mark(vs_a >= NOOP_VS_ANSIBLE)}) and {_x(vs_p)} faster than pyinfra (target {NOOP_VS_PYINFRA:.0f}x: "
        f"{mark(vs_p >= NOOP_VS_PYINFRA)}); berth used at most {b['ssh_max']} SSH command(s) on a host in a no-op "
        f"and {first['ssh_max'] if first else '-'} in a first converge (target at most {MAX_SSH_PER_HOST} per "
        f"converged host: {mark(ssh_max <= MAX_SSH_PER_HOST)}).",
    ]


def per_host_line(results: dict[str, Any]) -> list[str]:
    """The no-op's cost per host at every N measured, for each tool: a line, not a point."""
    counts = sorted({r["n"] for r in results["runs"]})
    lines = [
        "### Cost per host as the fleet grows (no-op converge)",
        "",
        "Controller CPU per host is the run's CPU over N; the marginal cost is (CPU at N - CPU at 1 host) / (N - 1), "
        "start-up excluded. Hosts' CPU is what the N testbed containers used during the run (sshd, sudo, the "
        "tool's remote processes, systemd's answers). Load is the machine's 1-minute load average after the runs.",
        "",
        "| tool | hosts | wall (median) | controller CPU ms/host | marginal ms/host | hosts' CPU ms/host "
        "| peak MB (tree) | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in results["tools"]:
        one = summary(results, 1, "noop", tool)
        for n in counts:
            o = summary(results, n, "noop", tool)
            if o is None:
                continue
            marginal = f"{(o['cpu'] - one['cpu']) / (n - 1) * 1000:.1f}" if one and n > 1 else "-"
            lines.append(f"| {tool} | {n} | {_s(o['wall'])} | {o['cpu'] / n * 1000:.1f} | {marginal} "
                         f"| {o['host_cpu'] / n * 1000:.0f} | {o['tree_mb']:.0f} | {o['load1']:.0f} |")
    return [*lines, "", *sweep_table(results)]


def sweep_table(results: dict[str, Any]) -> list[str]:
    sweep = results.get("sweep")
    if not sweep:
        return []
    points = sweep["points"]
    labels = {"new": "this branch", "old": "before (main)"}
    lines = [
        f"Finer, berth alone (`{sweep['command']}`, {sweep['date']}; medians; "
        + ("`before` is main's code on the same hosts, interleaved" if "old" in sweep["versions"] else "")
        + "):",
        "",
        "| berth | hosts | wall | controller CPU ms/host | marginal ms/host | hosts' CPU ms/host | peak MB | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for version in sweep["versions"]:
        def med(n: int, key: str, v: str = version) -> float | None:
            runs = [p[key] for p in points if p["n"] == n and p["version"] == v]
            return statistics.median(runs) if runs else None
        counts = sorted({p["n"] for p in points})
        for n in counts:
            cpu, one = med(n, "cpu"), med(1, "cpu")
            marginal = f"{(cpu - one) / (n - 1) * 1000:.1f}" if one is not None and n > 1 else "-"
            lines.append(f"| {labels.get(version, version)} | {n} | {_s(med(n, 'wall'))} | {cpu / n * 1000:.1f} "
                         f"| {marginal} | {med(n, 'host_cpu') / n * 1000:.0f} | {med(n, 'tree_mb'):.0f} "
                         f"| {med(n, 'load1'):.0f} |")
    return [*lines, ""]


FLOOR_PHASES = ("handler:restart docker", "health:restart docker")
RELOAD_PHASE = "handler:systemd daemon-reload"
SHOWN_PHASES = (
    ("connect", "SSH connect and authentication"),
    ("plan", "roles and plan (controller)"),
    ("probe", "probe round trip"),
    ("probe:agent", "  of which the agent's own work"),
    ("csr", "key and CSR round trips"),
    ("upload", "uploads"),
    ("heavy_wait", "waiting for a package slot"),
    ("apply", "apply round trip"),
    ("apply:agent", "  of which the agent's own work"),
    ("drain", "    drain: waiting for job containers (beyond the work it overlaps)"),
    ("steps", "    writing files"),
    ("validate", "    dockerd --validate"),
    ("handler:systemd daemon-reload", "    systemctl daemon-reload"),
    ("handler:restart docker", "    restart dockerd"),
    ("health:restart docker", "    health wait (TLS port, socket)"),
    ("handler:reload gitlab-runner", "    reload gitlab-runner"),
    ("resume", "    resume the runner"),
)


def first_breakdown(results: dict[str, Any]) -> list[str]:
    """berth's first converge, phase by phase (its JSON report's timings), against the restart floor."""
    counts = sorted({r["n"] for r in results["runs"] if r["tool"] == "berth" and r["phase"] == "first"
                     and r.get("phases")})
    if not counts:
        return []
    lines = [
        "### First converge: where berth's time goes",
        "",
        "Per host, in seconds: the median over the hosts of a run, then the median over the runs (the slowest "
        "host in brackets). The floor is what no tool can skip: dockerd's restart and the wait for it to "
        "answer. " + (
            "The measured floor (bench/floor.py) is the wall time of exactly that on every host at once, nothing "
            "else running (no SSH, no controller), from a common start; the per-host floor is the restart phase "
            "of the slowest host within berth's own run, where the hosts restart at different moments and "
            "share the CPUs with berth's other work. The ratios are berth's wall time over them."
            if results.get("floors") else
            "The per-host floor is the restart phase of the slowest host within berth's own run (this run did "
            "not measure the floor on its own: bench/floor.py came later); the ratio is berth's wall time over it."
        ),
        "",
        "| phase | " + " | ".join(f"{n} host{'s' if n > 1 else ''}" for n in counts) + " |",
        "|---|" + "---:|" * len(counts),
    ]
    runs = {n: [r for r in results["runs"] if r["n"] == n and r["tool"] == "berth" and r["phase"] == "first"]
            for n in counts}

    def phase(n: int, name: str, key: str) -> float | None:
        values = [r["phases"][name][key] for r in runs[n] if name in r.get("phases", {})]
        return statistics.median(values) if values else None

    for name, label in SHOWN_PHASES:
        cells = []
        for n in counts:
            median, top = phase(n, name, "median"), phase(n, name, "max")
            cells.append("-" if median is None else f"{median:.2f} ({top:.2f})")
        if any(c != "-" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rows: dict[str, list[str]] = {key: [] for key in ("floor", "floor2", "fleet", "fleet2", "wall", "ratio",
                                                         "ratio2", "fleet_ratio", "fleet_ratio2")}
    for n in counts:
        floor = sum(phase(n, name, "max") or 0.0 for name in FLOOR_PHASES)
        floor2 = floor + (phase(n, RELOAD_PHASE, "max") or 0.0)
        fleet, fleet2 = measured_floor(results, n, reload=False), measured_floor(results, n, reload=True)
        wall = statistics.median(r["wall"] for r in runs[n])
        rows["wall"].append(_s(wall))
        for key, value in (("floor", floor), ("floor2", floor2), ("fleet", fleet), ("fleet2", fleet2)):
            rows[key].append(f"{value:.2f}" if value else "-")
        for key, value in (("ratio", floor), ("ratio2", floor2), ("fleet_ratio", fleet), ("fleet_ratio2", fleet2)):
            rows[key].append(f"{wall / value:.2f}x" if value else "-")
    labels = (
        ("fleet", "**measured floor**: restart + health wait, every host at once, nothing else (median of runs)"),
        ("fleet2", "measured floor with the daemon-reload (the drop-ins changed: every tool runs it)"),
        ("floor", "per-host floor: restart + health wait of the slowest host in berth's run"),
        ("floor2", "per-host floor with the daemon-reload"),
        ("wall", "berth's wall time (median)"),
        ("fleet_ratio", "**ratio to the measured floor**"),
        ("fleet_ratio2", "ratio to the measured floor with the daemon-reload"),
        ("ratio", "ratio to the per-host floor"),
        ("ratio2", "ratio to the per-host floor with the daemon-reload"),
    )
    lines += [f"| {label} | " + " | ".join(rows[key]) + " |" for key, label in labels if any(
        cell != "-" for cell in rows[key])]
    return [*lines, ""]


def measured_floor(results: dict[str, Any], n: int, *, reload: bool) -> float | None:
    """The median over the runs of bench/floor.py's slowest host, for N hosts (None: not measured)."""
    values = [f["max"] for f in results.get("floors", []) if f["n"] == n and f["reload"] == reload]
    return statistics.median(values) if values else None


def scale_verdict(results: dict[str, Any]) -> list[str]:
    """The targets of issue #16, each with its figure and threshold."""
    out: list[str] = []
    b, a, p = (summary(results, SCALE_HOSTS, "noop", t) for t in ("berth", "ansible", "pyinfra"))
    one = summary(results, 1, "noop", "berth")
    if b:
        marginal = (b["cpu"] - one["cpu"]) / (SCALE_HOSTS - 1) * 1000 if one else None
        facts = []
        if p:
            facts.append(f"{p['wall'] / b['wall']:.1f}x faster than pyinfra (target {SCALE_VS_PYINFRA:.0f}x: "
                         f"{_met(p['wall'] / b['wall'] >= SCALE_VS_PYINFRA)})")
        if a:
            facts.append(f"{a['wall'] / b['wall']:.1f}x faster than ansible-playbook (target {SCALE_VS_ANSIBLE:.0f}x: "
                         f"{_met(a['wall'] / b['wall'] >= SCALE_VS_ANSIBLE)})")
        facts.append(f"at most {b['ssh_max']} SSH command(s) on a host (target 1: {_met(b['ssh_max'] <= 1)})")
        facts.append(f"controller peak {b['tree_mb']:.0f} MB (target under {SCALE_MAX_MB} MB: "
                     f"{_met(b['tree_mb'] < SCALE_MAX_MB)})")
        if marginal is not None:
            facts.append(f"{marginal:.1f} ms of controller CPU per additional host (target under "
                         f"{SCALE_MS_PER_HOST:.0f} ms: {_met(marginal < SCALE_MS_PER_HOST)})")
        out.append(f"- No-op at {SCALE_HOSTS} hosts: berth " + "; ".join(facts) + ".")
        bf, pf = summary(results, SCALE_HOSTS, "first", "berth"), summary(results, SCALE_HOSTS, "first", "pyinfra")
        if bf and pf:
            out.append(f"- First converge at {SCALE_HOSTS} hosts: berth's controller used {bf['cpu']:.1f} s of CPU, "
                       f"pyinfra's {pf['cpu']:.1f} s (target at most pyinfra's: {_met(bf['cpu'] <= pf['cpu'])}).")
    for n in (10, 30):
        bf, pf = summary(results, n, "first", "berth"), summary(results, n, "first", "pyinfra")
        if not (bf and pf):
            continue
        text = (f"- First converge at {n} hosts: {pf['wall'] / bf['wall']:.2f}x faster than pyinfra (target "
                f"{FIRST_VS_PYINFRA:.0f}x: {_met(pf['wall'] / bf['wall'] >= FIRST_VS_PYINFRA)})")
        fleet, fleet2 = measured_floor(results, n, reload=False), measured_floor(results, n, reload=True)
        runs = _runs(results, n, "first", "berth")
        per_host = statistics.median(sum(r.get("phases", {}).get(k, {}).get("max", 0.0) for k in FLOOR_PHASES)
                                     for r in runs)
        floor, which = (fleet, "measured restart floor") if fleet else (per_host, "per-host restart floor")
        if floor:
            ratio = bf["wall"] / floor
            text += f"; {ratio:.2f}x the {which} (target {FIRST_VS_FLOOR}x: {_met(ratio <= FIRST_VS_FLOOR)})"
        if fleet2:
            text += f"; {bf['wall'] / fleet2:.2f}x that floor with the daemon-reload"
        out.append(text + ".")
    return ["### Targets of issue #16", "", *out, ""] if out else []


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"
