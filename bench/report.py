"""bench/RESULTS.md from the raw results (bench/results.json): one table per number of hosts."""

from __future__ import annotations

import statistics
from typing import Any

NOOP_VS_ANSIBLE = 20.0   # issue #6: no-op converge at least 20x faster than ansible-playbook
NOOP_VS_PYINFRA = 2.0    # ... and at least 2x faster than pyinfra
MAX_SSH_PER_HOST = 2     # ... with at most 2 SSH commands per converged host
TARGET_FROM_HOSTS = 10   # ... for 10 and for 30 hosts


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
    }


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


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
        "| CPU s first / no-op | peak MB no-op (tree / largest process) | first vs berth | no-op vs berth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in tools:
        f, o = first[tool], noop[tool]
        if f is None or o is None:
            continue
        ratio_first = _x(f["wall"] / base_first["wall"]) if base_first else "-"
        ratio_noop = _x(o["wall"] / base_noop["wall"]) if base_noop else "-"
        lines.append(
            f"| {tool} | {_s(f['wall'])} | **{_s(o['wall'])}** | {_s(o['wall_min'])} - {_s(o['wall_max'])} "
            f"| {f['ssh']:.1f} / {o['ssh']:.1f} | {f['cpu']:.2f} / {o['cpu']:.2f} "
            f"| {o['tree_mb']:.0f} / {o['process_mb']:.0f} | {ratio_first} | **{ratio_noop}** |"
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
