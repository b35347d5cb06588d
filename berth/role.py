"""The role API: the one module a role (``roles/<name>/role.py``) and its checks (``verify/``) import from.

docs/WRITING_A_ROLE.md walks through it with roles/registry_mirror, the example to copy. A role module
defines:

- ``declare(host, ctx) -> RoleState``: the resources it wants on the host (``File``, ``Directory``, ``Absent``,
  ``Packages``, ``Service``; ``Attributes`` for the owner and mode of a file it does not write), the
  ``Handler``s they notify, and ``derived`` resources that need the probe
  (``HostCertificate``; a role's own derived resource has ``probe_files() -> list[FileQuery]`` and
  ``plan(host, found: ProbeAnswer, ctx, plan) -> Planned``, its share of the plan, reading the plan so far).
  Roles never talk to hosts: the engine probes, plans and applies.
- ``OWNS`` (optional): the shared documents it owns and merges, name -> what they hold.
- ``contribute(host) -> list[Contribution]`` (optional): what it adds to documents other roles own, instead of
  calling into them. It reads the host's variables only, so the checks can call it too.

Shared documents and handlers the shipped roles publish:

| document / handler | owner | holds |
|---|---|---|
| ``docker.daemon_json`` | docker_engine | daemon.json keys (a key set in ``docker_daemon_options`` too is an error) |
| ``docker.listeners`` | docker_engine | dockerd ``hosts`` entries; value ``{"health": [address, port]}`` |
| ``docker.job_modes`` | docker_engine | job modes using this daemon (dind, socket, remote) -> why (accepted risks) |
| handler ``restart docker`` / ``reload docker`` | docker_engine | notify it by name from a resource |
| handler ``reload gitlab-runner`` / ``restart gitlab-runner`` | gitlab_runner | |

``ctx`` (RoleContext) gives a role: ``ctx.render(role, template, variables)`` (its ``templates/``, Jinja2, strict),
``ctx.contributions(host)`` (for an owner: ``.merge(document, own, where=...)``, ``.values(document)``),
``ctx.ca()`` (the CA: ``daemon_trust_pem(host)``, ``bundle_pem()``; loaded by the caller, with or without its
key) and ``ctx.inventory`` (other hosts). Host variables: ``host.vars[name]`` (role defaults from
``defaults.yml`` are always there) and ``host_var_error(host, name, problem)`` for an error naming the
variable's file and line. Checks get the host's facts through ``FactsRequest``/``Facts`` (one SSH command)
and the fixtures of berth.checks.plugin (``facts``, ``host_vars``, ``contributions``, ``deviation``...).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from berth.checks.facts import CommandFacts, Facts, FactsRequest, FileFacts
from berth.engine.contributions import Contribution, Contributions
from berth.engine.plan import Change, Planned
from berth.engine.protocol import FileQuery, ProbeAnswer
from berth.engine.resources import (
    DAEMON_RELOAD,
    Absent,
    Attributes,
    Directory,
    Drain,
    File,
    Handler,
    Health,
    Packages,
    RoleState,
    Service,
    apt_source,
    drop_in,
)
from berth.engine.roles import RoleContext, controller_files
from berth.errors import ConfigError, HostUnreachable
from berth.inventory.loader import Host
from berth.inventory.paths import check_file_name, check_path
from berth.pki.ca import KEY_TYPES, host_zone
from berth.pki.certificates import HostCertificate
from berth.settings import RolePath
from berth.transport.ssh import SSHSettings, network_address

__all__ = [
    "DAEMON_RELOAD", "KEY_TYPES", "Absent", "Attributes", "Change", "CommandFacts", "ConfigError", "Contribution",
    "Contributions", "Directory", "Drain", "Facts", "FactsRequest", "File", "FileFacts", "FileQuery", "Handler",
    "Health", "Host", "HostCertificate", "Packages", "Planned", "ProbeAnswer", "RoleContext", "RoleState", "Service",
    "apt_source", "check_file_name",
    "check_path", "controller_files", "drop_in", "host_address", "host_var_error", "host_zone", "load_role",
    "make_context",
]


def host_var_error(host: Host, name: str, problem: str) -> ConfigError:
    """An error about variable ``name`` of ``host``, naming the file and line it came from."""
    return ConfigError(f"{host.origins.get(name, name)}: {host.name}: {name} {problem}")


def host_address(host: Host) -> str | None:
    """The address berth reaches ``host`` at (ansible_host, else its ssh_config HostName); None when its
    ssh_config cannot say yet (the converge itself then reports the host unreachable)."""
    try:
        return network_address(host, SSHSettings())
    except HostUnreachable:
        return None


def make_context(roles_dir: RolePath | Path, pki_dir: Path | None = None, passphrase: bytes | None = None, *,
                 read_only: bool = False, inventory: Any = None,
                 warn: Callable[[str], None] | None = None) -> RoleContext:
    """A RoleContext whose CA is berth's in ``pki_dir``, loaded on first use (``read_only``: certificates only,
    no key, as ``--check`` and verify need)."""
    from berth.pki.ca import CertificateAuthority

    return RoleContext(roles_dir, pki_dir, passphrase, read_only=read_only, inventory=inventory, warn=warn,
                       ca_loader=CertificateAuthority.load)


def load_role(roles_dir: RolePath | Path, name: str) -> Any:
    """A role's module, for its checks (``load_role(roles_dir, "docker_engine").daemon_json(...)``)."""
    return RoleContext(roles_dir).module(name)
