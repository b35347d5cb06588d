"""The tasks of the `berth` command (berth/cli/main.py): `berth --list` shows them, `berth --help TASK` their
options. This repository's tasks.py adds its own testbed and demo to the same collection (`invoke ...`).

Tasks are thin: they parse options and call into the ``berth`` package. Exit codes: README.md.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from berth.cli import app as cli
from berth.cli.app import console, exits_cleanly
from berth.engine.options import RolloutOptions, RunOptions

COMMON_HELP = {
    "limit": "hosts: a host, group, glob, or patterns joined by ',' (':' too); '!x' excludes, '&x' intersects",
    "inventory": "inventory file or directory, YAML or INI; repeatable, read in order (default: berth.yml's "
                 "inventory, inventory/hosts.yml)",
    "vault_password_file": "file with the Ansible Vault password, or a script printing it; [id@]FILE, repeatable "
                           "(default: $ANSIBLE_VAULT_PASSWORD_FILE)",
    "extra": "extra variables, highest precedence: -e key=value, -e @file.yml (repeatable)",
    "json": "write the results as JSON to this file",
}


DRAIN_HELP = {
    "force": "dockerd restarts do not wait for running CI jobs (those jobs fail)",
    "drain_timeout": "seconds to wait for running CI jobs before such a restart (default: docker_drain_timeout)",
}


@task(
    iterable=["extra", "inventory", "vault_password_file"],
    help={**COMMON_HELP, "host": "the host (or pattern) to converge; same as --limit",
          "check": "plan only: change nothing, exit 6 when changes are pending",
          "diff": "show file diffs (secrets redacted)",
          "forks": "hosts converged at once (default: berth.yml)",
          "heavy_forks": "of those, hosts installing packages at once (default: package_concurrency in berth.yml, 10)",
          "accept_new_host_keys": "trust unknown host keys on first use (changed keys are still refused)",
          **DRAIN_HELP},
)
@exits_cleanly
def setup_runner(c, host="", limit="", check=False, diff=False, extra=None, inventory=None, forks=0,
                 vault_password_file=None, accept_new_host_keys=False, json="", force=False, drain_timeout=0,
                 heavy_forks=0):
    """Converge hosts with all their roles (Docker Engine, TLS, gitlab-runner)."""
    cli.require(not (host and limit), "give --host or --limit, not both")
    project = cli.load_project(inventory, extra or [], vault_password_file)
    hosts = project.hosts(host or limit)
    options = RunOptions(check=check, diff=diff, forks=forks, force=force, drain_timeout=drain_timeout or None,
                         accept_new_host_keys=accept_new_host_keys, heavy_forks=heavy_forks)
    reports = cli.converge(project, hosts, options)
    cli.print_reports(reports, title="berth setup-runner" + (" --check" if check else ""))
    cli.write_json(json, [r.as_dict() for r in reports])
    code = cli.exit_code(reports)
    if code:
        raise Exit(code=int(code))


@task(
    iterable=["extra", "inventory", "vault_password_file"],
    help={**COMMON_HELP,
          "batch": "hosts per batch: N, or P% of the hosts rolled out (at least 1; default 25%)",
          "parallel": "hosts converged at once within a batch (default: forks in berth.yml)",
          "heavy_forks": "of those, hosts installing packages at once (default: package_concurrency in berth.yml, 10)",
          "max_fail": "failed or unreachable hosts tolerated, N or P%; beyond it no further batch starts "
                      "(0: stop at the first). Default: stop when every host of a batch failed",
          "check": "plan only, batch by batch: change nothing, exit 6 when changes are pending",
          "shard": "roll out shard I of N only (1-based), e.g. 2/3. Default: CI_NODE_INDEX/CI_NODE_TOTAL of a "
                   "GitLab parallel: job",
          "accept_new_host_keys": "trust unknown host keys on first use (changed keys are still refused)",
          **DRAIN_HELP},
)
@exits_cleanly
def rollout(c, limit="", batch="25%", parallel=0, max_fail="", check=False, shard="", force=False, drain_timeout=0,
            extra=None, inventory=None, vault_password_file=None, accept_new_host_keys=False, json="", heavy_forks=0):
    """Rolling converge: batches, a failure budget, health checks, drained restarts; --shard for CI."""
    project = cli.load_project(inventory, extra or [], vault_password_file)
    run = RunOptions(check=check, force=force, drain_timeout=drain_timeout or None,
                     accept_new_host_keys=accept_new_host_keys, heavy_forks=heavy_forks)
    result = cli.rollout(project, project.hosts(limit),
                         RolloutOptions(run, batch=batch, parallel=parallel, max_fail=max_fail, shard=shard))
    cli.print_rollout(result, title="berth rollout" + (" --check" if check else ""))
    cli.write_json(json, result.as_dict())
    code = result.exit_code()
    if code:
        raise Exit(code=int(code))


@task(
    iterable=["extra", "inventory", "vault_password_file"],
    help={**COMMON_HELP, "junit": "write JUnit XML to this file (GitLab shows it in merge requests)",
          "forks": "hosts verified at once (default: berth.yml)"},
)
@exits_cleanly
def verify(c, limit="", junit="", json="", inventory=None, vault_password_file=None, extra=None, forks=0):
    """Compliance checks of every role of each host (testinfra, CIS Docker Benchmark IDs); exit 2 on a failure."""
    from berth.cli import reports  # here, not above: a converge does not need testinfra's or smoke's imports

    project = cli.load_project(inventory, extra or [], vault_password_file)
    code = reports.verify(project, project.hosts(limit), forks=forks, junit=junit, json_path=json)
    if code:
        raise Exit(code=int(code))


@task(
    iterable=["extra", "inventory", "vault_password_file"],
    help={**COMMON_HELP, "runner": "only the runner with this name", "keep": "keep the containers for inspection",
          "clean": "remove what earlier smokes left (after --keep or an interruption)",
          "junit": "write JUnit XML to this file",
          "registry": "registry host:port to push to (default: $BERTH_REGISTRY; the testbed starts one)"},
)
@exits_cleanly
def smoke(c, limit="", extra=None, runner="", keep=False, clean=False, registry="", junit="", json="", inventory=None,
          vault_password_file=None):
    """A canary job per runner, as the Docker executor runs it: reach a daemon, build, push, pull by digest."""
    import os

    from berth.cli import reports
    from berth.gitlab import smoke as smoking
    project = cli.load_project(inventory, extra or [], vault_password_file)
    hosts = project.hosts(limit)
    if clean:
        for host in hosts:
            console.print(f"{host.name}: removed {smoking.clean_host(host, project.ssh())} smoke object(s)")
        return
    target = registry or os.environ.get("BERTH_REGISTRY", "")
    cli.require(bool(target), "give --registry HOST:PORT or set BERTH_REGISTRY (the testbed's: .testbed/registry.env)")
    creds = smoking.Registry(target, os.environ.get("BERTH_REGISTRY_USER", ""),
                             os.environ.get("BERTH_REGISTRY_PASSWORD", ""))
    code = reports.smoke(project, hosts, creds, runner=runner, keep=keep, junit=junit, json_path=json)
    if code:
        raise Exit(code=int(code))


# -- inventory -------------------------------------------------------------------------------------
def _help(*names: str, **more: str) -> dict[str, str]:
    return {**{n: COMMON_HELP[n] for n in names}, "vault_password_file": COMMON_HELP["vault_password_file"], **more}


@task(iterable=["extra", "inventory", "vault_password_file"],
      help=_help("inventory", "extra", json="print ansible-inventory --list shaped JSON on stdout instead"))
@exits_cleanly
def inventory_list(c, inventory=None, vault_password_file=None, extra=None, json=False):
    """Print the group tree of the inventory (--json: as ansible-inventory --list)."""
    inv = cli.load_project(inventory, extra or [], vault_password_file).inventory
    if json:
        from berth.inventory.listing import list_json

        cli.print_json(list_json(inv, cli.secrets()))
    else:
        cli.print_tree(inv)


@task(iterable=["extra", "inventory", "vault_password_file"],
      help=_help("inventory", "extra", host="the host to show",
                 json="print the variables as JSON on stdout (as ansible-inventory --host)"))
@exits_cleanly
def inventory_show(c, host="", inventory=None, vault_password_file=None, extra=None, json=False):
    """Print a host's merged variables, each with the file (and line) it came from, templates and values."""
    from rich.table import Table

    cli.require(bool(host), "give --host NAME")
    project = cli.load_project(inventory, extra or [], vault_password_file)
    h = project.hosts(host)[0]     # an unknown host is an error naming the inventory, never an empty list
    if json:
        from berth.inventory.listing import host_json

        cli.print_json(host_json(h, cli.secrets()))
        return
    table = Table(title=f"{h.name}: roles {', '.join(h.roles) or '-'}; groups {', '.join(h.groups)}",
                  title_justify="left")
    table.add_column("variable")
    table.add_column("value", overflow="fold")
    table.add_column("from", overflow="fold", min_width=24)
    for name in sorted(h.vars):
        # A variable named like a secret is masked whole (berth/redact.py), whatever its value looks like.
        value = cli.safe(repr(cli.redact_data({name: h.vars[name]}, cli.secrets())[name]))
        if name in h.templates:
            value += f"\n[dim]template: {cli.safe(repr(h.templates[name]))}[/]"
        table.add_row(cli.safe(name), value, cli.safe(str(h.origins.get(name, ""))))
    console.print(table)


@task(iterable=["vault_password_file"],
      help={"name": "the variable's name (default: print the !vault value alone)",
            "vault_password_file": COMMON_HELP["vault_password_file"],
            "vault_id": "write format 1.2 with this vault id (default: 1.1, or the id of an id@FILE password)"})
@exits_cleanly
def vault_encrypt_string(c, name="", vault_password_file=None, vault_id=""):
    """Encrypt a value read from stdin (or prompted for) as an Ansible `!vault |` value, for the inventory."""
    import getpass
    import sys

    from berth.inventory import vault
    passwords = vault.load_passwords(vault_password_file or [])
    cli.require(bool(passwords), "give --vault-password-file FILE or set ANSIBLE_VAULT_PASSWORD_FILE")
    chosen = next((p for p in passwords if p.vault_id == vault_id), passwords[0]) if vault_id else passwords[0]
    value = getpass.getpass("value to encrypt: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\n")
    cli.require(bool(value), "nothing to encrypt (the value is empty)")
    label = vault_id or (chosen.vault_id if chosen.vault_id != vault.DEFAULT_ID else "")
    envelope = vault.encrypt(value, chosen.secret, vault_id=label)
    indent = "  " if name else ""
    print((f"{name}: " if name else "") + "!vault |")
    for line in envelope.splitlines():
        print(f"{indent}  {line}")


# -- certificates ----------------------------------------------------------------------------------
def _ca(project, *, need_key=True):
    """The CA; read-only tasks (need_key=False) read its certificates only: no key file, no passphrase."""
    from rich.markup import escape

    from berth.pki.ca import CertificateAuthority

    ca = CertificateAuthority.load(project.settings.pki_dir, passphrase=cli.ca_passphrase(), need_key=need_key)
    for line in ca.warnings:
        console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
    return ca


@task(help={"key_type": "ec-p256 (default), ec-p384, ed25519, rsa-3072, rsa-4096", "days": "CA validity"})
@exits_cleanly
def certs_init(c, key_type="ec-p256", days=3650):
    """Create berth's CA in pki_dir (encrypted when BERTH_CA_PASSPHRASE is set); never overwrites one."""
    from berth.pki.ca import CertificateAuthority

    settings = cli.load_settings()
    ca = CertificateAuthority.init(settings.pki_dir, key_type=key_type, days=days, passphrase=cli.ca_passphrase())
    console.print(f"CA created in {settings.pki_dir} ({key_type}, sha256 {ca.fingerprint()[:16]}...)"
                  + ("; key encrypted (scrypt)" if cli.ca_passphrase() else ""))
    for line in ca.warnings:
        console.print(f"[yellow]warning:[/] {line}", soft_wrap=True)


@task(iterable=["extra", "inventory", "vault_password_file"], help=_help("limit", "inventory", "extra", "json",
                                     clients="list the issued client certificates instead of the hosts"))
@exits_cleanly
def certs_status(c, limit="", clients=False, inventory=None, vault_password_file=None, extra=None, json=""):
    """The certificate each daemon serves on its TLS port: subject, SANs, expiry, issuer."""
    from berth.pki.ca import CertificateAuthority

    project = cli.load_project(inventory, extra or [], vault_password_file)
    # Reads only: ca.pem and a client certificate ($DOCKER_CERT_PATH, or berth's own, renewed if the key is at hand).
    ca = CertificateAuthority.load_for_reading(project.settings.pki_dir, passphrase=cli.ca_passphrase())
    from berth.cli import certs_view

    if clients:
        rows = cli.client_rows(ca)
        certs_view.print_clients(rows, title="berth certs.status --clients")
    else:
        rows = cli.served_rows(project, ca, project.hosts(limit))
        certs_view.print_served(rows, title="berth certs.status")
    cli.write_json(json, rows)
    if any(r.get("error") for r in rows):
        raise Exit(code=2)


@task(iterable=["extra", "inventory", "vault_password_file"], help=_help(
    "inventory", "extra", name="the client's name (certificate CN)",
    days="validity in days (default 7: dockerd checks no revocation list, expiry is the sure end)",
    out="output folder (default: .berth/clients/NAME)",
    limit="the daemons it opens: a host pattern, e.g. 'runners:&eu' (default: every daemon, the fleet zone)"))
@exits_cleanly
def certs_client(c, name="", days=7, out="", limit="", inventory=None, vault_password_file=None, extra=None):
    """Issue a client certificate for every daemon or a group: ca.pem, cert.pem, key.pem for DOCKER_CERT_PATH."""
    from berth.pki.ca import FLEET_ZONE
    from berth.pki.tls import write_client

    cli.require(bool(name), "give --name NAME")
    project = cli.load_project(inventory, extra or [], vault_password_file)
    ca = _ca(project)
    zone = FLEET_ZONE
    if limit:
        daemons = [h.name for h in project.hosts(limit) if "docker_tls" in h.roles]
        zone = ca.group_zone(limit, daemons)
    folder = Path(out) if out else project.settings.root / ".berth" / "clients" / name
    identity = write_client(ca, name, folder, days=days, zone=zone)
    reach = "every daemon" if zone == FLEET_ZONE else ", ".join(ca.zone_members(zone) or [])
    console.print(cli.safe(f"client certificate for {name} in {identity.path}, zone {zone}, valid {days} day(s), "
                           f"opens: {reach} (key 0600: it is root there; guard it like a root password)"))
    if zone != FLEET_ZONE:
        console.print(cli.safe("  converge those hosts so that their daemons trust the zone: "
                               f"berth setup-runner --limit '{limit}'"))
    console.print(cli.safe(f"  export DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={identity.path.resolve()}"))


@task(iterable=["extra", "inventory", "vault_password_file"], help=_help("limit", "inventory", "extra"))
@exits_cleanly
def certs_zones(c, limit="", inventory=None, vault_password_file=None, extra=None):
    """Create the zones of the selected daemons (fleet, host-NAME) now, and list every zone with what it opens.

    A converge creates a missing zone itself; run this where pki_dir is kept (e.g. before updating a CI
    variable that holds it), so that a CI job never creates a zone that dies with the job.
    """
    project = cli.load_project(inventory, extra or [], vault_password_file)
    ca = _ca(project)
    for host in project.hosts(limit):
        if "docker_tls" in host.roles:
            ca.daemon_trust_pem(host.name)
    rows = []
    for zone in ca.zones():
        members = ca.zone_members(zone)
        opens = "every daemon" if zone == "fleet" else ", ".join(members) if members is not None else zone[5:]
        issued = [r for r in ca.clients() if r.zone == zone]
        rows.append({"zone": zone, "opens": opens, "valid certificates": sum(1 for r in issued if not r.revoked
                                                                              and r.days_left > 0)})
    cli.print_rows(rows, title="berth certs.zones")


@task(help={"zone": "the zone whose CA is replaced (fleet, host-NAME, group-...: see certs.status --clients)",
            "name": "revoke the zone(s) of the client certificates with this name instead"})
@exits_cleanly
def certs_revoke(c, zone="", name=""):
    """Revoke client certificates as dockerd allows: replace their zone's CA (every certificate of that zone)."""
    cli.require(bool(zone) != bool(name), "give --zone ZONE or --name NAME")
    project = cli.load_project()
    ca = _ca(project)
    zones = [zone] if zone else sorted({r.zone for r in ca.clients() if r.name == name and r.zone and not r.revoked})
    cli.require(bool(zones), f"no valid client certificate named {name!r} (see berth certs.status --clients)")
    for z in zones:
        gone = ca.revoke_zone(z)
        console.print(f"zone {z}: new CA; revoked: {', '.join(sorted(set(gone))) or 'no recorded certificate'}")
    console.print("converge the daemons of these zones (their tlscacert changes; remote runners' certificates are "
                  "re-issued by the same converge), then re-issue the operator certificates you still need")


@task(help={"key_type": "key type of the new CA (default: the current one's)"})
@exits_cleanly
def certs_rotate_ca(c, key_type=""):
    """Start a CA rotation: a new CA signs from now on; hosts trust both until certs.drop-old-ca."""
    project = cli.load_project()
    ca = _ca(project)
    ca.rotate(key_type=key_type or None)     # zone CAs are re-certified: client certificates stay valid
    console.print("new CA created; converge the hosts (they get certificates from the new CA, and clients trust "
                  "both CAs), then run `berth certs.drop-old-ca` and converge again; client certificates stay "
                  "valid (their zone CAs are re-certified)")


@task()
@exits_cleanly
def certs_drop_old_ca(c):
    """End a CA rotation: the previous CA is deleted; the next converge removes it from the hosts."""
    project = cli.load_project()
    _ca(project).drop_previous()
    console.print("previous CA dropped; converge the hosts so that they stop trusting it")


# -- runners ---------------------------------------------------------------------------------------
@task(iterable=["extra", "inventory", "vault_password_file"],
      help=_help("inventory", "extra", host="the host", name="the runner's name in config.toml",
                                     delete="delete the runner in GitLab (default: as gitlab-runner unregister: "
                                            "this host's manager for a glrt- token, the runner for others)"))
@exits_cleanly
def runner_remove(c, host="", name="", delete=False, inventory=None, vault_password_file=None, extra=None):
    """Remove a runner from a host's config.toml and unregister it; other runners stay byte-identical."""
    from berth.gitlab.runners import remove_from_host
    from berth.transport.ssh import Session

    cli.require(bool(host) and bool(name), "give --host HOST and --name RUNNER")
    project = cli.load_project(inventory, extra or [], vault_password_file)
    (target,) = project.hosts(host)[:1]
    with Session(target, project.ssh()) as session:
        outcome = remove_from_host(session, name, delete=delete)
    console.print(cli.safe(f"{target.name}: runner {name} removed from config.toml; {outcome}"))




# -- a new project ---------------------------------------------------------------------------------
@task(positional=["directory"], help={"directory": "where to write the project (created if missing; . for here)"})
@exits_cleanly
def init(c, directory=None):
    """Start a project: berth.yml, an inventory with an example group, group_vars, .gitignore, README.md."""
    from berth.cli.init import write_project

    folder = Path(directory)
    written = write_project(folder)
    for path in written:
        console.print(f"wrote {cli.safe(str(path))}")
    console.print(cli.safe(f"next: edit {folder / 'inventory' / 'hosts.yml'} (your hosts), then `cd {folder}` and "
                           "`berth certs.init`, `berth setup-runner --check --diff`"), soft_wrap=True)


inventory_ns = Collection("inventory")
inventory_ns.add_task(inventory_list, name="list")
inventory_ns.add_task(inventory_show, name="show")

certs_ns = Collection("certs")
certs_ns.add_task(certs_init, name="init")
certs_ns.add_task(certs_status, name="status")
certs_ns.add_task(certs_client, name="client")
certs_ns.add_task(certs_revoke, name="revoke")
certs_ns.add_task(certs_zones, name="zones")
certs_ns.add_task(certs_rotate_ca, name="rotate-ca")
certs_ns.add_task(certs_drop_old_ca, name="drop-old-ca")

vault_ns = Collection("vault")
vault_ns.add_task(vault_encrypt_string, name="encrypt-string")

runner_ns = Collection("runner")
runner_ns.add_task(runner_remove, name="remove")


def collection() -> Collection:
    """The user-facing tasks, a new Collection each time (this repository's tasks.py adds its own to it)."""
    return Collection(init, setup_runner, rollout, verify, smoke, inventory_ns, vault_ns, certs_ns, runner_ns)


ns = collection()
