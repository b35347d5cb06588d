"""The three tools under test: how each is run on hosts r1..rN, and how its output is read.

Every tool gets the same hosts, the same parallelism (N hosts at once) and the same desired state; each
counts its SSH sessions its own way (berth reports them; ansible's ssh/sftp/scp go through a counting
wrapper; pyinfra's paramiko channels are counted by a sitecustomize), and says itself whether it changed
anything, which the bench checks.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import Measurement

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = Path(sys.executable).parent


@dataclass
class Outcome:
    """What a tool said about one run: hosts with changes, and SSH sessions per host."""

    changed_hosts: int
    changes: int
    ssh: dict[str, int]
    ok: bool
    problem: str = ""
    timings: dict[str, dict[str, float]] = field(default_factory=dict)     # berth's per host and phase


@dataclass
class Context:
    """Paths and hosts of one N."""

    work: Path                      # .testbed/bench
    hosts: list[str]                # r1..rN
    addresses: dict[str, str]       # host -> IP on the testbed network
    ca_pem: Path            # a folder: <host>.pem, each daemon's tlscacert
    pki_dir: Path
    container_ids: list[str] = field(default_factory=list)     # the hosts' containers (their CPU is measured)

    @property
    def n(self) -> int:
        return len(self.hosts)

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYINFRA_", "BENCH_"))}
        env.update(BERTH_PKI_DIR=str(self.pki_dir), COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
        return env


class Tool:
    name: str = ""

    def prepare(self, ctx: Context) -> None:
        """Write what this tool needs for these hosts (its inventory)."""

    def command(self, ctx: Context, run_id: str) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def outcome(self, ctx: Context, run_id: str, m: Measurement) -> Outcome:
        raise NotImplementedError

    def clean(self, ctx: Context, run_id: str) -> None:
        """Remove what an earlier run with this id left (the SSH counters append)."""
        self.ssh_log(ctx, run_id).unlink(missing_ok=True)

    def ssh_log(self, ctx: Context, run_id: str) -> Path:
        folder = ctx.work / "ssh"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{run_id}-{self.name}.log"


class Berth(Tool):
    """``invoke setup-runner`` with bench/inventory; its JSON report has changes and SSH commands per host."""

    name = "berth"

    def prepare(self, ctx: Context) -> None:
        """hosts.yml for r1..rN beside bench/inventory/group_vars (the desired state), written for this N."""
        folder = berth_inventory(ctx).parent
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.yml").write_text(
            "# Written by the bench for these hosts; the variables are bench/inventory/group_vars.\n"
            + json.dumps({"all": {"vars": {"berth_ssh_config": ".testbed/ssh_config"},
                                  "children": {"runners": {"hosts": {h: None for h in ctx.hosts}}}}}, indent=1) + "\n")
        link = folder / "group_vars"
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            link.symlink_to(BENCH / "inventory" / "group_vars")

    def command(self, ctx: Context, run_id: str) -> tuple[list[str], dict[str, str]]:
        return berth_argv(ctx, self.report(ctx, run_id)), ctx.base_env()

    def clean(self, ctx: Context, run_id: str) -> None:
        self.report(ctx, run_id).unlink(missing_ok=True)

    def report(self, ctx: Context, run_id: str) -> Path:
        return ctx.work / "reports" / f"{run_id}-berth.json"

    def outcome(self, ctx: Context, run_id: str, m: Measurement) -> Outcome:
        path = self.report(ctx, run_id)
        if not path.exists():
            return Outcome(0, 0, {}, False, f"no JSON report (exit {m.code})")
        rows = json.loads(path.read_text())
        bad = [f"{r['host']}: {r['status']} {r.get('error') or ''}" for r in rows
               if r["status"] not in ("ok", "changed")]
        return Outcome(sum(1 for r in rows if r["changed"]), sum(r["changed"] for r in rows),
                       {r["host"]: r["ssh_commands"] for r in rows}, m.code == 0 and not bad, "; ".join(bad),
                       {r["host"]: r.get("timings", {}) for r in rows})


def berth_inventory(ctx: Context) -> Path:
    return ctx.work / "inventory" / "hosts.yml"


def berth_argv(ctx: Context, report: Path | None = None, *, check: bool = False) -> list[str]:
    argv = [str(BIN / "invoke"), "setup-runner", "--inventory", str(berth_inventory(ctx)), "--forks", str(ctx.n)]
    if check:
        argv.append("--check")
    if report is not None:
        argv += ["--json", str(report)]
    return argv


RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class Ansible(Tool):
    """``ansible-playbook bench/ansible/site.yml``, pipelining on, forks = N; changes from the PLAY RECAP."""

    name = "ansible"

    def prepare(self, ctx: Context) -> None:
        hosts = {h: {} for h in ctx.hosts}
        inventory = {"all": {"vars": {"ansible_ssh_common_args": f"-F {ROOT / '.testbed' / 'ssh_config'}"},
                             "children": {"runners": {"hosts": hosts}}}}
        # JSON is YAML: ansible's yaml inventory plugin reads it.
        (ctx.work / "ansible-hosts.yml").write_text(json.dumps(inventory, indent=2) + "\n")

    def command(self, ctx: Context, run_id: str) -> tuple[list[str], dict[str, str]]:
        env = ctx.base_env()
        env.update(
            ANSIBLE_CONFIG=str(BENCH / "ansible" / "ansible.cfg"),
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(ctx.work / "ansible-cp"),
            ANSIBLE_FORCE_COLOR="0",
            BENCH_SSH_LOG=str(self.ssh_log(ctx, run_id)),
            PATH=f"{BENCH / 'sshcount' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        )
        argv = [str(BIN / "ansible-playbook"), "-i", str(ctx.work / "ansible-hosts.yml"), "-f", str(ctx.n),
                str(BENCH / "ansible" / "site.yml"), "-e", f"bench_ca_dir={ctx.ca_pem}"]
        return argv, env

    def outcome(self, ctx: Context, run_id: str, m: Measurement) -> Outcome:
        recap = {host: (int(changed), int(unreachable) + int(failed))
                 for host, changed, unreachable, failed in RECAP.findall(m.output)}
        ssh: Counter[str] = Counter()
        log = self.ssh_log(ctx, run_id)
        for line in log.read_text().splitlines() if log.exists() else []:
            words = {w.strip("[]") for w in line.split()}
            host = next((h for h in ctx.hosts if h in words), "?")
            ssh[host] += 1
        bad = sorted(h for h, (_, errors) in recap.items() if errors)
        ok = m.code == 0 and not bad and set(recap) == set(ctx.hosts)
        return Outcome(sum(1 for c, _ in recap.values() if c), sum(c for c, _ in recap.values()), dict(ssh), ok,
                       f"failed or unreachable: {', '.join(bad)}" if bad else "" if ok else f"exit {m.code}")


GRAND_TOTAL = re.compile(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)")


class Pyinfra(Tool):
    """``pyinfra -y --sudo --parallel N INVENTORY bench/pyinfra/deploy.py``; changes from its results table."""

    name = "pyinfra"

    def prepare(self, ctx: Context) -> None:
        common = {
            "ssh_user": "berth", "ssh_key": str(ROOT / ".testbed" / "id_ed25519"),
            "ssh_known_hosts_file": str(ROOT / ".testbed" / "known_hosts"), "ssh_strict_host_key_checking": "yes",
        }
        hosts = [(h, {"ssh_hostname": ctx.addresses[h], "bench_ca_pem": str(ctx.ca_pem / f"{h}.pem"), **common})
                 for h in ctx.hosts]
        (ctx.work / "pyinfra_inventory.py").write_text(
            '"""Written by the bench: the testbed hosts for pyinfra."""\n\n' + f"runners = {hosts!r}\n"
        )

    def command(self, ctx: Context, run_id: str) -> tuple[list[str], dict[str, str]]:
        env = ctx.base_env()
        env.update(PYTHONPATH=str(BENCH / "sshcount"), BENCH_SSH_LOG=str(self.ssh_log(ctx, run_id)))
        argv = [str(BIN / "pyinfra"), "-y", "--sudo", "--parallel", str(ctx.n),
                str(ctx.work / "pyinfra_inventory.py"), str(BENCH / "pyinfra" / "deploy.py")]
        return argv, env

    def outcome(self, ctx: Context, run_id: str, m: Measurement) -> Outcome:
        by_address = {a: h for h, a in ctx.addresses.items()}
        ssh: Counter[str] = Counter()
        log = self.ssh_log(ctx, run_id)
        for line in log.read_text().splitlines() if log.exists() else []:
            address, count = line.split()
            ssh[by_address.get(address, address)] += int(count)
        total = GRAND_TOTAL.search(m.output)
        if total is None:
            return Outcome(0, 0, dict(ssh), False, f"no results table (exit {m.code})")
        changed, errors = (0 if x == "-" else int(x) for x in total.group(2, 3))
        changed_hosts = len(set(re.findall(r"^\s+\[(\S+)\]\s+Success", m.output, re.M)))
        ok = m.code == 0 and errors == 0
        return Outcome(changed_hosts, changed, dict(ssh), ok, "" if ok else f"exit {m.code}, {errors} errors")


TOOLS: dict[str, type[Tool]] = {"berth": Berth, "ansible": Ansible, "pyinfra": Pyinfra}
