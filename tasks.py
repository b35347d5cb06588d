"""berth's command line: `invoke --list` shows every task, `invoke --help TASK` its options.

Tasks are thin: they parse options and call into the ``berth`` package. Exit codes: README.md.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from berth import cli
from berth.cli import console, exits_cleanly

COMMON_HELP = {
    "limit": "hosts: a host, group, glob, or patterns joined by ',' (':' too); '!x' excludes, '&x' intersects",
    "inventory": "inventory file (default: config/berth.yml's inventory, inventory/hosts.yml)",
    "extra": "extra variables, highest precedence: -e key=value, -e @file.yml (repeatable)",
    "json": "write the results as JSON to this file",
}


@task(
    iterable=["extra"],
    help={**COMMON_HELP, "host": "the host (or pattern) to converge; same as --limit",
          "check": "plan only: change nothing, exit 6 when changes are pending",
          "diff": "show file diffs (secrets redacted)",
          "forks": "hosts converged at once (default: config/berth.yml)",
          "accept_new_host_keys": "trust unknown host keys on first use (changed keys are still refused)"},
)
@exits_cleanly
def setup_runner(c, host="", limit="", check=False, diff=False, extra=None, inventory="", forks=0,
                 accept_new_host_keys=False, json=""):
    """Converge hosts with all their roles (Docker Engine, TLS, gitlab-runner)."""
    cli.require(not (host and limit), "give --host or --limit, not both")
    project = cli.load_project(inventory, extra or [])
    hosts = project.hosts(host or limit)
    reports = cli.converge(project, hosts, check=check, diff=diff, accept_new=accept_new_host_keys,
                           forks=forks or None, label="checking" if check else "converging")
    cli.print_reports(reports, title="berth setup-runner" + (" --check" if check else ""))
    cli.write_json(json, [r.as_dict() for r in reports])
    code = cli.exit_code(reports)
    if code:
        raise Exit(code=int(code))


# -- inventory -------------------------------------------------------------------------------------
def _help(*names: str, **more: str) -> dict[str, str]:
    return {**{n: COMMON_HELP[n] for n in names}, **more}


@task(iterable=["extra"], help=_help("inventory", "extra"))
@exits_cleanly
def inventory_list(c, inventory="", extra=None):
    """Print the group tree of the inventory."""
    cli.print_tree(cli.load_project(inventory, extra or []).inventory)


@task(iterable=["extra"], help=_help("inventory", "extra", host="the host to show"))
@exits_cleanly
def inventory_show(c, host="", inventory="", extra=None):
    """Print a host's merged variables, each with the file (and line) it came from."""
    from rich.table import Table

    cli.require(bool(host), "give --host NAME")
    project = cli.load_project(inventory, extra or [])
    (h,) = project.hosts(host)[:1] or [None]
    table = Table(title=f"{h.name}: roles {', '.join(h.roles) or '-'}; groups {', '.join(h.groups)}",
                  title_justify="left")
    table.add_column("variable")
    table.add_column("value", overflow="fold")
    table.add_column("from", overflow="fold", min_width=24)
    for name in sorted(h.vars):
        table.add_row(name, cli.redact(repr(h.vars[name]), cli.secrets()), str(h.origins.get(name, "")))
    console.print(table)


# -- testbed ---------------------------------------------------------------------------------------
@task(help={"hosts": "number of hosts r1..rN (default 3)"}, auto_shortflags=False)
@exits_cleanly
def testbed_up(c, hosts=3):
    """Start the local testbed: runner hosts with systemd and sshd, reachable over SSH."""
    from berth.testbed import Testbed

    bed = Testbed(Path.cwd(), log=lambda m: console.print(f"[dim]{m}[/]"))
    started = bed.up(hosts)
    _print_testbed(started)
    console.print(f"ssh config: {bed.ssh_config}  (ssh -F {bed.ssh_config.relative_to(Path.cwd())} r1)")


@task
@exits_cleanly
def testbed_down(c):
    """Remove the testbed's containers and network (only this project's)."""
    from berth.testbed import Testbed

    removed = Testbed(Path.cwd()).down()
    console.print(f"removed {len(removed)} testbed host(s)")


@task
@exits_cleanly
def testbed_status(c):
    """Show the testbed hosts, their state and address."""
    from berth.testbed import Testbed

    _print_testbed(Testbed(Path.cwd()).status())


def _print_testbed(hosts):
    from rich.table import Table

    table = Table(title="testbed", title_justify="left")
    for column in ("host", "container", "state", "address"):
        table.add_column(column)
    for h in hosts:
        table.add_row(h.name, h.container, h.state, h.address)
    console.print(table)


inventory_ns = Collection("inventory")
inventory_ns.add_task(inventory_list, name="list")
inventory_ns.add_task(inventory_show, name="show")
testbed_ns = Collection("testbed")
testbed_ns.add_task(testbed_up, name="up")
testbed_ns.add_task(testbed_down, name="down")
testbed_ns.add_task(testbed_status, name="status")

ns = Collection(setup_runner, inventory_ns, testbed_ns)
