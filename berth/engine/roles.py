"""Roles: folders with ``defaults.yml``, ``templates/``, ``role.py`` and ``verify/``, found on the role path
(the project's ``roles/``, then the roles berth ships; berth.settings.RolePath).

``role.py`` defines ``declare(host, ctx) -> RoleState``: the wanted state as data, computed from
the host's merged variables. Roles never talk to hosts; the engine does.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jinja2

from berth.engine.resources import RoleState
from berth.errors import ConfigError
from berth.inventory.loader import Host
from berth.settings import RolePath


@dataclass
class RoleContext:
    """What roles may use besides the host: their templates, and the CA when a role needs one."""

    roles_dir: RolePath | Path                    # a RolePath, or one folder of roles
    pki_dir: Path | None = None
    ca_passphrase: bytes | None = None
    read_only: bool = False                       # --check: the CA is loaded from its certificates, no key
    inventory: Any = None                         # berth.inventory.loader.Inventory, to resolve another host's name
    warn: Callable[[str], None] | None = None     # told once, e.g. "the CA key is not encrypted"
    _modules: dict[str, ModuleType] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ca: Any = None

    def folder(self, name: str) -> Path:
        """The role's folder: the first on the role path (a project's role overrides a shipped one)."""
        roles = RolePath.of(self.roles_dir)
        found = roles.find(name)
        if found is None or not (found / "role.py").is_file():
            known = [n for n, p in roles.roles().items() if (p / "role.py").is_file()]
            raise ConfigError(f"unknown role '{name}' (roles in {roles}: {', '.join(known)})")
        return found

    def module(self, name: str) -> ModuleType:
        with self._lock:
            if name not in self._modules:
                path = self.folder(name) / "role.py"
                spec = importlib.util.spec_from_file_location(f"berth_role_{name}", path)
                assert spec and spec.loader
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                self._modules[name] = module
            return self._modules[name]

    def render(self, role: str, template: str, variables: dict[str, Any]) -> bytes:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.folder(role) / "templates"),
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
        )
        try:
            return env.get_template(template).render(**variables).encode()
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"roles/{role}/templates/{template}: {exc.message}") from None

    def ca(self) -> Any:
        """The controller's CA, loaded once (it may need the passphrase)."""
        from berth.pki.ca import CertificateAuthority

        with self._lock:
            if self._ca is None:
                if self.pki_dir is None:
                    raise ConfigError("a role needs the CA but no pki_dir is configured")
                self._ca = CertificateAuthority.load(self.pki_dir, passphrase=self.ca_passphrase,
                                                     need_key=not self.read_only)
                for line in self._ca.warnings if self.warn else ():
                    self.warn(line)
            return self._ca

    def plan_derived(self, host: Host, states: list[RoleState], found: dict[str, Any], plan: Any) -> list[Any]:
        """Plan the resources that need the probe; returns those to prepare during apply."""
        handlers = [h for s in states for h in s.handlers]
        derived = [d for s in states for d in s.derived]
        for resource in derived:
            if resource.plan(host, found, self, plan):
                plan.notify(resource.notify, handlers)
        return [d for d in derived if d.due]


def declare_roles(host: Host, ctx: RoleContext) -> list[RoleState]:
    states = []
    for name in host.roles:
        try:
            module = ctx.module(name)
        except ConfigError as exc:
            origin = host.origins.get("berth_roles")
            raise ConfigError(f"{origin}: {exc}" if origin else str(exc)) from None
        states.append(module.declare(host, ctx))
    return states


def controller_files(host: Host, variable: str, purpose: str) -> tuple[Path, ...]:
    """The files a variable names on the controller (a keyring, .deb files), or an error saying which are missing."""
    value = host.vars[variable]
    paths = tuple(Path(p) for p in ([value] if isinstance(value, str) else value) if p)
    missing = [str(p) for p in paths if not p.exists()]
    if not paths or missing:
        absent = f"; missing: {', '.join(missing)}" if missing else ""
        raise ConfigError(f"{host.origins.get(variable)}: {host.name}: {variable} must name {purpose} on the "
                          f"controller{absent}")
    return paths
