"""The report-writing commands: verify and smoke, from their libraries (berth.checks.verify, berth.gitlab.smoke)
to the console, JUnit and JSON (redacted like the console: berth/redact.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from berth.checks import verify as verifying
from berth.cli.app import Project, ca_passphrase, console, safe, secrets, write_json, write_junit
from berth.engine.fleet import run_parallel
from berth.errors import ExitCode
from berth.gitlab import smoke as smoking
from berth.inventory.loader import Host
from berth.pki.ca import CertificateAuthority
from berth.pki.tls import controller_identity
from berth.redact import redact


def verify(project: Project, hosts: Sequence[Host], *, forks: int = 0, junit: str = "",
           json_path: str = "") -> ExitCode:
    """The `verify` command: check the hosts, print the table and the problems, write the reports."""
    identity = None
    if any("docker_tls" in h.roles for h in hosts):
        # The controller-side TLS checks present berth's own client certificate (renewed when due).
        # verify only reads: ca.pem suffices; berth's own certificate is renewed only when the CA key is at hand.
        ca = CertificateAuthority.load_for_reading(project.settings.pki_dir, passphrase=ca_passphrase())
        identity = controller_identity(ca, project.settings.pki_dir).path
    ssh = {"host_key_checking": project.settings.host_key_checking,
           "connect_timeout": project.settings.connect_timeout}
    began = time.monotonic()
    results = verifying.verify(hosts, root=project.settings.root, roles_dir=project.settings.role_path, ssh=ssh,
                               forks=forks or project.settings.forks, identity=identity)
    seconds = time.monotonic() - began
    console.print(verifying.table(results))
    for line in verifying.problem_lines(results):
        style = "yellow" if ": accepted risk: " in line else "bold red"
        console.print(f"[{style}]{escape(redact(line, secrets()))}[/]", soft_wrap=True)
    console.print(verifying.summary(results, seconds))
    write_junit(junit, verifying.junit_xml(results))
    write_json(json_path, [r.as_dict() for r in results])
    return verifying.exit_code(results)


def smoke(project: Project, hosts: list[Host], registry: smoking.Registry, *, runner: str = "", keep: bool = False,
          junit: str = "", json_path: str = "") -> ExitCode:
    """The `smoke` command: smoke every runner of the hosts in parallel, print and write the reports."""
    settings = project.ssh()
    by_name = project.inventory.hosts
    try:
        per_host = run_parallel(hosts, lambda h: smoking.smoke_host(h, settings, registry, hosts_by_name=by_name,
                                                                    only=runner, keep=keep),
                                forks=project.settings.forks, label="smoke jobs")
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]: removing what the smoke created")
        for host in hosts:
            smoking.clean_host(host, settings)
        raise
    results = [r for rs in per_host for r in rs]
    table = Table(title="berth smoke", title_justify="left")
    for column in ("host", "runner", "mode", "status", "steps (seconds)", "total"):
        table.add_column(column, justify="right" if column == "total" else "left", overflow="fold")
    for r in results:
        style = {"passed": "green", "failed": "bold red"}.get(r.status, "bold red")
        steps = " ".join(f"{name} {r.steps[name]:.1f}" for name in smoking.STEPS if name in r.steps)
        table.add_row(r.host, r.runner, r.mode, f"[{style}]{escape(r.status_line())}[/]", steps,
                      f"{r.seconds:.1f}s")
    console.print(table)
    for r in results:
        if r.status != "passed":
            where = f" at step {r.failed_step}" if r.failed_step else ""
            console.print(f"[bold red]{safe(f'{r.host} {r.runner} ({r.mode}) failed{where}')}[/]: "
                              f"{safe(r.cause or '')}", soft_wrap=True)
            if r.output:
                console.print(r.output, markup=False, highlight=False)
        elif r.source != "config.toml":
            console.print(f"[yellow]{r.host} {r.runner}[/]: settings from the {r.source}", soft_wrap=True)
        if r.deviation:
            notes = " ".join(smoking.DEVIATION_NOTES.get(d, "") for d in r.deviation.split("; "))
            console.print(f"[yellow]{r.host} {r.runner}[/]: {escape(r.deviation)}: {escape(notes)}",
                              soft_wrap=True)
        for warning in r.warnings:
            console.print(f"[yellow]{r.host} {r.runner} warning[/]: {escape(warning)}", soft_wrap=True)
    if keep:
        console.print("containers kept for inspection (label berth.smoke); remove them with `berth smoke --clean`")
    write_junit(junit, smoking.junit_xml(results))   # redacted like the console (berth/redact.py)
    write_json(json_path, [r.as_dict() for r in results])
    return smoking.exit_code(results)
