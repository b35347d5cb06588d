"""Roles: folders under ``roles/`` with ``defaults.yml``, ``templates/``, ``role.py`` and ``verify/``.

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


@dataclass
class RoleContext:
    """What roles may use besides the host: their templates, and the CA when a role needs one.

    The engine knows no CA: ``ca_loader`` (berth.pki.ca.CertificateAuthority.load, given by the command line)
    loads it from ``pki_dir`` the first time a role asks.
    """

    roles_dir: Path
    pki_dir: Path | None = None
    ca_passphrase: bytes | None = None
    read_only: bool = False                       # --check: the CA is loaded from its certificates, no key
    inventory: Any = None                         # berth.inventory.loader.Inventory, to resolve another host's name
    warn: Callable[[str], None] | None = None     # told once, e.g. "the CA key is not encrypted"
    ca_loader: Callable[..., Any] | None = None   # (pki_dir, passphrase=, need_key=) -> the CA
    _modules: dict[str, ModuleType] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ca: Any = None

    def module(self, name: str) -> ModuleType:
        with self._lock:
            if name not in self._modules:
                path = self.roles_dir / name / "role.py"
                if not path.exists():
                    known = sorted(p.name for p in self.roles_dir.iterdir() if (p / "role.py").exists())
                    raise ConfigError(f"unknown role '{name}' (roles in {self.roles_dir}: {', '.join(known)})")
                spec = importlib.util.spec_from_file_location(f"berth_role_{name}", path)
                assert spec and spec.loader
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                self._modules[name] = module
            return self._modules[name]

    def render(self, role: str, template: str, variables: dict[str, Any]) -> bytes:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.roles_dir / role / "templates"),
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
        )
        try:
            return env.get_template(template).render(**variables).encode()
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"roles/{role}/templates/{template}: {exc.message}") from None

    def ca(self) -> Any:
        """The controller's CA, loaded once (it may need the passphrase)."""
        with self._lock:
            if self._ca is None:
                if self.pki_dir is None or self.ca_loader is None:
                    raise ConfigError("a role needs the CA but no pki_dir is configured")
                self._ca = self.ca_loader(self.pki_dir, passphrase=self.ca_passphrase, need_key=not self.read_only)
                if self.warn is not None:
                    for line in self._ca.warnings:
                        self.warn(line)
            return self._ca


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
