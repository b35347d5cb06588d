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
from rich.table import Table
from rich.tree import Tree

from berth.engine import Converger, HostReport, Status
from berth.errors import BerthError, ExitCode, OptionError
from berth.fleet import run_parallel
from berth.inventory import Host, Inventory
from berth.plan import Plan
from berth.redact import redact
from berth.roles import RoleContext
from berth.settings import Settings, load_settings
from berth.ssh import SSHSettings

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
            console.print(f"[bold red]error:[/] {redact(str(exc), secrets())}", soft_wrap=True)
            raise Exit(code=int(exc.exit_code)) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            raise Exit(code=int(ExitCode.INTERRUPTED)) from None

    return wrapper


def secrets() -> list[str]:
    """Values never to print: every environment variable that looks like it holds a secret."""
    markers = ("TOKEN", "PASSWORD", "PASSPHRASE", "SECRET")
    return [v for k, v in os.environ.items() if any(m in k for m in markers) and len(v) >= 4]


@dataclass
class Project:
    settings: Settings
    inventory: Inventory

    def hosts(self, limit: str | Sequence[str] | None) -> list[Host]:
        return self.inventory.select(limit or None)

    def ssh(self, host_key_checking: str | None = None) -> SSHSettings:
        return SSHSettings(host_key_checking=host_key_checking or self.settings.host_key_checking,
                           connect_timeout=self.settings.connect_timeout)

    def role_context(self) -> RoleContext:
        passphrase = os.environ.get("BERTH_CA_PASSPHRASE")
        return RoleContext(self.settings.roles_dir, self.settings.pki_dir,
                           passphrase.encode() if passphrase else None)


def load_project(inventory: str = "", extra: Sequence[str] = ()) -> Project:
    settings = load_settings()
    path = Path(inventory) if inventory else settings.inventory
    inv = Inventory.load(path, extra_vars=list(extra), config_defaults=settings.config_defaults,
                         roles_dir=settings.roles_dir, base_dir=settings.root)
    return Project(settings, inv)


def converge(
    project: Project, hosts: Sequence[Host], *, check: bool, diff: bool, accept_new: bool,
    forks: int | None = None, label: str = "converging",
) -> list[HostReport]:
    converger = Converger(project.ssh("accept-new" if accept_new else None), project.role_context(), check=check)

    def show_plan(host: Host, plan: Plan) -> None:
        if diff:
            print_plan(host.name, plan)

    return run_parallel(hosts, lambda h: converger.converge(h, on_plan=show_plan),
                        forks=forks or project.settings.forks, label=label)


def print_plan(host: str, plan: Plan) -> None:
    for change in plan.changes:
        console.print(f"[bold]{host}[/] {change.kind} [cyan]{change.target}[/]: {change.summary}")
        if change.diff:
            console.print(redact(change.diff, secrets()), markup=False, highlight=False, end="")


STATUS_STYLE = {
    Status.OK: "green", Status.CHANGED: "yellow", Status.PENDING: "yellow",
    Status.FAILED: "bold red", Status.UNREACHABLE: "bold red",
}


def print_reports(reports: Sequence[HostReport], *, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("host", "status", "changed", "handlers", "ssh cmds", "time"):
        table.add_column(column, justify="right" if column in ("changed", "ssh cmds", "time") else "left")
    for r in reports:
        table.add_row(r.host, f"[{STATUS_STYLE[r.status]}]{r.status}[/]", str(len(r.changes)),
                      ", ".join(r.handlers) or "-", str(r.commands), f"{r.seconds:.2f}s")
    console.print(table)
    for r in reports:
        if r.error:
            console.print(f"[bold red]{redact(r.error, secrets())}[/]", soft_wrap=True)


def exit_code(reports: Sequence[HostReport]) -> ExitCode:
    statuses = {r.status for r in reports}
    if Status.FAILED in statuses:
        return ExitCode.HOST_FAILED
    if Status.UNREACHABLE in statuses:
        return ExitCode.HOST_UNREACHABLE
    if Status.PENDING in statuses:
        return ExitCode.CHANGES_PENDING
    return ExitCode.OK


def write_json(path: str, data: Any) -> None:
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(target)


def print_tree(inv: Inventory) -> None:
    root = inv.tree()

    def add(branch: Tree, node: Any) -> None:
        for child in node.children:
            add(branch.add(f"[bold]{child.name}[/]"), child)
        for host in node.hosts:
            branch.add(host)

    tree = Tree(f"[bold]{root.name}[/]")
    add(tree, root)
    console.print(tree)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise OptionError(message)
