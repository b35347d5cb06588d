"""What the Invoke tasks share: loading the inventory, choosing hosts, reporting, exit codes.

Human output goes to stderr (rich); machine output (``--json``) to a file. Every BerthError
becomes one line on stderr and its exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from invoke.exceptions import Exit
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from berth.engine.converge import Converger, HostReport
from berth.engine.fleet import HeavySteps, run_parallel
from berth.engine.options import RolloutOptions, RunOptions
from berth.engine.plan import Plan
from berth.engine.results import HostResult, Status
from berth.engine.results import exit_code as results_exit_code
from berth.engine.roles import RoleContext
from berth.engine.rollout import (
    Rollout,
    RolloutResult,
    batch_size,
    failure_budget,
    resolve_shard,
    summary_line,
    summary_table,
)
from berth.errors import BerthError, ExitCode, OptionError
from berth.files import write_atomic
from berth.inventory import vault
from berth.inventory.loader import Host, Inventory
from berth.redact import environment_secrets, redact, redact_data, redact_xml
from berth.role import make_context
from berth.settings import Settings, load_settings
from berth.transport.ssh import SSHSettings

console = Console(stderr=True, highlight=False)
P = ParamSpec("P")
T = TypeVar("T")


def exits_cleanly(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn BerthError into its message and exit code; Ctrl-C into exit 99."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except BerthError as exc:
            console.print(f"[bold red]error:[/] {safe(str(exc))}", soft_wrap=True)
            raise Exit(code=int(exc.exit_code)) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            raise Exit(code=int(ExitCode.INTERRUPTED)) from None

    return wrapper


def ca_passphrase() -> bytes | None:
    value = os.environ.get("BERTH_CA_PASSPHRASE")
    return value.encode() if value else None


def secrets() -> list[str]:
    """Values never to print: every environment variable that looks like it holds a secret, and every
    value decrypted from Ansible Vault."""
    return [*environment_secrets(), *vault.revealed()]


def safe(text: str) -> str:
    """Host-provided or error text, ready for rich: secrets masked, markup escaped (a `[` in a path is text)."""
    return escape(redact(text, secrets()))


@dataclass
class Project:
    settings: Settings
    inventory: Inventory

    def hosts(self, limit: str | Sequence[str] | None) -> list[Host]:
        return self.inventory.select(limit or None)

    def ssh(self, host_key_checking: str | None = None) -> SSHSettings:
        return SSHSettings(host_key_checking=host_key_checking or self.settings.host_key_checking,
                           connect_timeout=self.settings.connect_timeout,
                           connect_attempts=self.settings.connect_attempts)

    def role_context(self, *, read_only: bool = False) -> RoleContext:
        """``read_only`` (--check, with or without --diff): the CA is read from ca.pem, never its key."""
        return make_context(self.settings.role_path, self.settings.pki_dir, ca_passphrase(), read_only=read_only,
                            inventory=self.inventory,
                            warn=lambda line: console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True))


def load_project(inventory: str | Sequence[str] | None = None, extra: Sequence[str] = (),
                 vault_password_files: Sequence[str] | None = None) -> Project:
    """``inventory``: one source or several (``-i`` repeated), files or directories; none means
    berth.yml's. Vault passwords: ``[id@]file`` items, else $ANSIBLE_VAULT_PASSWORD_FILE."""
    settings = load_settings()
    given = [inventory] if isinstance(inventory, str) else list(inventory or [])
    paths = [Path(item) for item in given if item] or [settings.inventory]
    inv = Inventory.load(paths, extra_vars=list(extra), config_defaults=settings.config_defaults,
                         roles_dir=settings.role_path, base_dir=settings.root,
                         vault_passwords=vault.load_passwords(vault_password_files or []))
    for host in inv.hosts.values():
        # A controller path in the inventory is the project's, wherever berth is run from.
        named = host.vars.get("berth_ssh_config")
        if isinstance(named, str) and named and not Path(named).expanduser().is_absolute():
            host.vars["berth_ssh_config"] = str(settings.root / named)
    return Project(settings, inv)


def converge(project: Project, hosts: Sequence[Host], options: RunOptions) -> list[HostReport]:
    converger = make_converger(project, options)

    def show_plan(host: Host, plan: Plan) -> None:
        if options.diff:
            print_plan(host.name, plan)

    return run_parallel(hosts, lambda h: converger.converge(h, on_plan=show_plan),
                        forks=options.forks or project.settings.forks, label=options.label)


def make_converger(project: Project, options: RunOptions) -> Converger:
    if options.force and not options.check:
        console.print("[bold yellow]--force:[/] dockerd restarts will NOT wait for running CI jobs; "
                      "those jobs are killed")
    ssh = project.ssh("accept-new" if options.accept_new_host_keys else None)
    require(options.heavy_forks >= 0, "--heavy-forks must be at least 1")
    heavy = HeavySteps(options.heavy_forks or project.settings.package_concurrency)
    return Converger(ssh, project.role_context(read_only=options.check), options, heavy=heavy,
                     log=lambda line: console.print(f"[yellow]{safe(line)}[/]", soft_wrap=True))


def rollout(project: Project, hosts: Sequence[Host], options: RolloutOptions) -> RolloutResult:
    """Shard, batch and roll out (berth/engine/rollout.py); options are checked before any host is touched."""
    chosen = resolve_shard(options.shard, os.environ)
    if chosen is not None:
        hosts = chosen.select(hosts)
        console.print(f"shard {chosen}: {len(hosts)} host(s): {', '.join(h.name for h in hosts) or '-'}")
    size = batch_size(options.batch, len(hosts))
    budget = failure_budget(options.max_fail, len(hosts))
    converger = make_converger(project, options.run)
    rolling = Rollout(converger, size, options.parallel or project.settings.forks, budget, chosen,
                      log=lambda line: console.print(f"[dim]{safe(line)}[/]", highlight=False))
    return rolling.run(hosts)


def print_rollout(result: RolloutResult, *, title: str) -> None:
    console.print(summary_table(result, title=title))
    console.print(safe(summary_line(result)), soft_wrap=True)
    for h in result.hosts:
        for note in h.report.notes if h.report else []:
            console.print(f"[yellow]{escape(h.host)}[/]: {safe(note)}", soft_wrap=True)
        if h.error:
            console.print(f"[bold red]{safe(h.error)}[/]", soft_wrap=True)


def print_plan(host: str, plan: Plan) -> None:
    for change in plan.changes:
        console.print(f"[bold]{escape(host)}[/] {change.kind} [cyan]{safe(change.target)}[/]: {safe(change.summary)}")
        if change.diff:
            console.print(redact(change.diff, secrets()), markup=False, highlight=False, end="")


STATUS_STYLE: dict[str, str] = {
    Status.OK: "green", Status.CHANGED: "yellow", Status.PENDING: "yellow",
    Status.FAILED: "bold red", Status.UNREACHABLE: "bold red", Status.INVALID: "bold red",
}


def print_reports(reports: Sequence[HostReport], *, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("host", "status", "changed", "handlers", "ssh cmds", "time"):
        table.add_column(column, justify="right" if column in ("changed", "ssh cmds", "time") else "left")
    for r in reports:
        table.add_row(escape(r.host), f"[{STATUS_STYLE[r.status]}]{r.status}[/]", str(len(r.changes)),
                      escape(", ".join(r.handlers)) or "-", str(r.commands), f"{r.seconds:.2f}s")
    console.print(table)
    for r in reports:
        for note in r.notes:
            console.print(f"[yellow]{escape(r.host)}[/]: {safe(note)}", soft_wrap=True)
        if r.error:
            console.print(f"[bold red]{safe(r.error)}[/]", soft_wrap=True)


def exit_code(reports: Sequence[HostResult]) -> ExitCode:
    """The worst host decides (berth.engine.results.exit_code, the one mapping)."""
    return results_exit_code(r.status for r in reports)


def write_json(path: str, data: Any) -> None:
    """A JSON report, redacted like the console (berth/redact.py redact_data)."""
    if path:
        write_atomic(path, (json.dumps(redact_data(data, secrets()), indent=2, default=str) + "\n").encode())


def write_junit(path: str, xml: bytes) -> None:
    """A JUnit report, every attribute and text redacted like the console."""
    if path:
        write_atomic(path, redact_xml(xml, secrets()))


def print_json(data: Any) -> None:
    """Machine output: JSON on stdout (human output goes to stderr)."""
    print(json.dumps(data, indent=4, sort_keys=True))


def print_tree(inv: Inventory) -> None:
    root = inv.tree()

    def add(branch: Tree, node: Any) -> None:
        for child in node.children:
            if child.name == "ungrouped" and not child.hosts:
                continue  # always there (as in Ansible), only worth showing with hosts in it
            add(branch.add(f"[bold]{escape(child.name)}[/]"), child)
        for host in node.hosts:
            branch.add(escape(host))

    tree = Tree(f"[bold]{escape(root.name)}[/]")
    add(tree, root)
    console.print(tree)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise OptionError(message)


def served_rows(project: Project, ca: Any, hosts: Sequence[Host]) -> list[dict[str, Any]]:
    """Per host, what its daemon's TLS port serves, checked against berth's CA."""
    from berth.pki.tls import controller_identity, probe_port
    from berth.transport.ssh import network_address

    identity = controller_identity(ca, project.settings.pki_dir)
    ssh = project.ssh()

    def one(host: Host) -> dict[str, Any]:
        if "docker_tls" not in host.roles:
            return {"host": host.name, "error": "no role docker_tls"}
        try:
            address = network_address(host, ssh)
        except BerthError as exc:
            return {"host": host.name, "error": str(exc)}
        served = probe_port(address, int(host.vars["docker_tls_port"]), identity=identity, ca_pem=ca.bundle_pem(),
                            server_name=host.name)
        row: dict[str, Any] = {"host": host.name, "endpoint": f"tcp://{address}:{served.port}"}
        if served.cert:
            pem = served.cert
            row.update(subject=pem.subject_cn, sans=pem.sans, not_after=pem.not_after.isoformat(),
                       days_left=round(pem.days_left(), 1), issuer=pem.issuer_cn)
        row["issued_by_berth"] = _issued_by(ca, served)
        row["ping"] = served.ping
        row["error"] = served.error
        return row

    return run_parallel(hosts, one, forks=project.settings.forks, label="reading certificates")


def _issued_by(ca: Any, served: Any) -> str:
    if served.cert is None:
        return "-"
    for name, cert in (("current CA", ca.cert), ("previous CA", ca.previous)):
        if cert is not None and served.cert.issuer_cn == _cn(cert):
            return name
    return "no"


def _cn(cert: Any) -> str:
    from cryptography.x509.oid import NameOID

    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def client_rows(ca: Any) -> list[dict[str, Any]]:
    return [{"name": r.name, "zone": r.zone or "- (before zones)", "serial": r.serial,
             "not_after": r.not_after.isoformat(), "days_left": round(r.days_left, 1),
             "revoked": r.revoked or "-", "fingerprint": r.fingerprint[:16]}
            for r in ca.clients()]


def print_rows(rows: Sequence[dict[str, Any]], *, title: str) -> None:
    table = Table(title=title, title_justify="left")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return safe(", ".join(map(str, value)))
    return safe(str(value))
