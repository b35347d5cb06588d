"""This repository's tasks: everything `berth` does (berth/cli/tasks.py), plus the local testbed and the demo.

`invoke --list` shows every task, `invoke --help TASK` its options; `invoke setup-runner ...` is
`berth setup-runner ...`. Exit codes: README.md.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from berth.cli import app as cli
from berth.cli.app import console, exits_cleanly
from berth.cli.tasks import certs_client, certs_init, collection
from berth.engine.options import RunOptions
from berth.settings import load_settings


def _root() -> Path:
    """This project's directory (the nearest berth.yml upward, or $BERTH_PROJECT): the testbed belongs to it."""
    return load_settings().root


# -- testbed ---------------------------------------------------------------------------------------
@task(help={"hosts": "number of hosts r1..rN (default 3)"}, auto_shortflags=False)
@exits_cleanly
def testbed_up(c, hosts=3):
    """Start the local testbed: runner hosts with systemd and sshd, reachable over SSH."""
    from berth.testbed import Testbed

    bed = Testbed(_root(), log=lambda m: console.print(f"[dim]{m}[/]"))
    started = bed.up(hosts)
    _print_testbed(started)
    console.print(f"ssh config: {bed.ssh_config}  (ssh -F {bed.ssh_config.relative_to(_root())} r1)")


@task
@exits_cleanly
def testbed_down(c):
    """Remove the testbed's containers and network (only this project's)."""
    from berth.testbed import Testbed

    removed = Testbed(_root()).down()
    console.print(f"removed {len(removed)} testbed host(s)")


@task
@exits_cleanly
def testbed_status(c):
    """Show the testbed hosts, their state and address."""
    from berth.testbed import Testbed

    _print_testbed(Testbed(_root()).status())


def _print_testbed(hosts):
    from rich.table import Table

    table = Table(title="testbed", title_justify="left")
    for column in ("host", "container", "state", "address"):
        table.add_column(column)
    for h in hosts:
        table.add_row(h.name, h.container, h.state, h.address)
    console.print(table)


# -- demo ------------------------------------------------------------------------------------------
@task
@exits_cleanly
def demo(c):
    """The main job on the local testbed: hosts up, converged twice, verified, smoke-tested, TLS client lines."""
    from berth.cli import reports
    from berth.pki.ca import CertificateAuthority
    from berth.transport.ssh import network_address

    console.rule("1. testbed: three runner hosts (systemd, sshd) on the local Docker engine")
    testbed_up(c, hosts=3)
    project = cli.load_project()
    if not CertificateAuthority.exists(project.settings.pki_dir):
        console.rule("2. berth's CA (on this controller only)")
        certs_init(c)
    console.rule("3. invoke setup-runner --limit runners: Docker Engine, daemon.json, TLS on 2376")
    _converge_or_exit(c, project)
    console.rule("4. the same again: nothing to change, one SSH command per host")
    _converge_or_exit(c, project)
    console.rule("5. invoke verify --limit runners: compliance checks (testinfra, CIS Docker Benchmark)")
    out = project.settings.root / "reports"
    verified = reports.verify(project, project.hosts("runners"), forks=0, junit=str(out / "compliance.xml"),
                              json_path=str(out / "compliance.json"))
    console.rule("6. invoke smoke --limit r1: a canary job per runner builds and pushes through its mode")
    import os

    from berth.gitlab import smoke as smoking
    from berth.testbed import Testbed

    bed = Testbed(project.settings.root, log=lambda m: console.print(f"[dim]{m}[/]"))
    console.print("[dim]testbed: docker:27.5-cli/-dind images on r1 (from its own file system), a registry[/]")
    bed.load_job_images(["r1"])
    registry = bed.registry_up()
    os.environ.update(registry)
    smoked = reports.smoke(project, project.hosts("r1"), smoking.Registry(
        registry["BERTH_REGISTRY"], registry["BERTH_REGISTRY_USER"], registry["BERTH_REGISTRY_PASSWORD"]),
        junit=str(out / "smoke.xml"), json_path=str(out / "smoke.json"))
    console.rule("7. reach r1's daemon from here with mutual TLS")
    folder = (project.settings.root / ".berth" / "clients" / "demo").resolve()
    certs_client(c, name="demo", days=30, out=str(folder))
    r1 = project.hosts("r1")[0]
    address = network_address(r1, project.ssh())
    console.print("[bold]Run these to use r1's Docker daemon from this machine:[/]")
    print(f"export DOCKER_HOST=tcp://{address}:{r1.vars['docker_tls_port']}")
    print("export DOCKER_TLS_VERIFY=1")
    print(f"export DOCKER_CERT_PATH={folder}")
    if verified or smoked:
        raise Exit(code=int(verified or smoked))


def _converge_or_exit(c, project):
    reports = cli.converge(project, project.hosts("runners"), RunOptions())
    cli.print_reports(reports, title="berth setup-runner --limit runners")
    code = cli.exit_code(reports)
    if code:
        raise Exit(code=int(code))


testbed_ns = Collection("testbed")
testbed_ns.add_task(testbed_up, name="up")
testbed_ns.add_task(testbed_down, name="down")
testbed_ns.add_task(testbed_status, name="status")

ns = collection()
ns.add_task(demo)
ns.add_collection(testbed_ns)
