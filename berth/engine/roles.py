"""Roles: folders with ``defaults.yml``, ``templates/``, ``role.py`` and ``verify/``, found on the role path
(the project's ``roles/``, then the roles berth ships; berth.settings.RolePath).

``role.py`` imports from ``berth.role`` (the role API, docs/WRITING_A_ROLE.md) and defines
``declare(host, ctx) -> RoleState``: the wanted state as data, computed from the host's merged variables;
optionally ``OWNS`` (the shared documents it merges) and ``contribute(host)`` (what it adds to documents
other roles own: berth/engine/contributions.py). Roles never talk to hosts; the engine does.

A role is code the operator may write: any exception it raises (a KeyError, a misspelt handler) becomes
that host's failure naming the role and the file and line (``RoleError``), never a traceback.
"""

from __future__ import annotations

import importlib.util
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import jinja2

from berth.engine.contributions import Contributions, collect
from berth.engine.resources import DAEMON_RELOAD, RoleState
from berth.errors import BerthError, ConfigError, ExitCode, InventoryError
from berth.inventory.loader import Host
from berth.settings import RolePath

# Handlers every host has, whatever its roles (berth.engine.plan.Plan.notify).
BUILTIN_HANDLERS = frozenset({DAEMON_RELOAD, "apt update"})


class CertificateSource(Protocol):
    """The CA as roles see it (berth.pki.ca.CertificateAuthority): injected, so the engine needs no PKI."""

    def daemon_trust_pem(self, host: str) -> bytes: ...

    def bundle_pem(self) -> bytes: ...


class RoleError(BerthError):
    """A role's own code failed (a bug in role.py, not in the inventory): that host fails, the others go on."""

    exit_code = ExitCode.HOST_FAILED


@dataclass
class RoleContext:
    """What roles may use besides the host: their templates, the contributions of the host's other roles, the
    inventory, and the CA when a role needs one.

    The engine knows no CA: ``ca_loader`` (berth.pki.ca.CertificateAuthority.load, given by the command line or
    berth.role.make_context) loads it from ``pki_dir`` the first time a role asks.
    """

    roles_dir: RolePath | Path                    # a RolePath, or one folder of roles
    pki_dir: Path | None = None
    ca_passphrase: bytes | None = None
    read_only: bool = False                       # --check: the CA is loaded from its certificates, no key
    inventory: Any = None                         # berth.inventory.loader.Inventory, to resolve another host's name
    warn: Callable[[str], None] | None = None     # told once, e.g. "the CA key is not encrypted"
    ca_loader: Callable[..., Any] | None = None   # (pki_dir, passphrase=, need_key=) -> the CA
    _modules: dict[str, ModuleType] = field(default_factory=dict)
    _envs: dict[str, jinja2.Environment] = field(default_factory=dict)
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
        # One environment per role for the whole run: it compiles each template once, not once per host.
        with self._lock:
            env = self._envs.get(role)
            if env is None:
                env = self._envs[role] = jinja2.Environment(
                    loader=jinja2.FileSystemLoader(self.folder(role) / "templates"),
                    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
                )
        try:
            return env.get_template(template).render(**variables).encode()
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"roles/{role}/templates/{template}: {exc.message}") from None

    def ca(self) -> Any:
        """The controller's CA (a CertificateSource), loaded once (it may need the passphrase)."""
        with self._lock:
            if self._ca is None:
                if self.pki_dir is None or self.ca_loader is None:
                    raise ConfigError("a role needs the CA but no pki_dir is configured")
                self._ca = self.ca_loader(self.pki_dir, passphrase=self.ca_passphrase, need_key=not self.read_only)
                if self.warn is not None:
                    for line in self._ca.warnings:
                        self.warn(line)
            return self._ca

    def contributions(self, host: Host) -> Contributions:
        """What the host's roles contribute to shared documents (berth/engine/contributions.py)."""
        return collect(host, {name: self.module(name) for name in host.roles})


def declare_roles(host: Host, ctx: RoleContext) -> list[RoleState]:
    """Every role's wanted state for ``host``; a role's bug is a RoleError naming it (``role_failure``)."""
    for name in host.roles:
        try:
            ctx.module(name)
        except ConfigError as exc:
            origin = host.origins.get("berth_roles")
            raise ConfigError(f"{origin}: {exc}" if origin else str(exc)) from None
        except Exception as exc:
            raise role_failure(exc, ctx.roles_dir, name) or RoleError(str(exc)) from None
    states = []
    with role_code(ctx.roles_dir):
        ctx.contributions(host)              # the rules are checked before any role declares
        for name in host.roles:
            state = ctx.module(name).declare(host, ctx)
            if not isinstance(state, RoleState):
                raise RoleError(f"{_role_file(ctx.roles_dir, name)}: declare() returned {type(state).__name__}, "
                                "not a RoleState")
            states.append(state)
    check_notify(states, ctx.roles_dir)
    return states


def check_notify(states: list[RoleState], roles_dir: RolePath | Path) -> None:
    """Every handler a role's resources notify exists on this host (a misspelt name fails the role, not a plan)."""
    known = BUILTIN_HANDLERS | {h.name for s in states for h in s.handlers}
    for state in states:
        for item in [*state.resources, *state.derived]:
            for name in getattr(item, "notify", ()) or ():
                if name not in known:
                    target = getattr(item, "path", None) or getattr(item, "names", None) or type(item).__name__
                    raise RoleError(
                        f"{_role_file(roles_dir, state.role)}: role {state.role}: {target} notifies handler "
                        f"{name!r}, which no role of this host defines (handlers: {', '.join(sorted(known))})")


class role_code:
    """``with role_code(roles_dir):`` turns an exception raised by a role's own code into a RoleError."""

    def __init__(self, roles_dir: RolePath | Path) -> None:
        self.roles_dir = roles_dir

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, BerthError) or not isinstance(exc, Exception):
            return
        failure = role_failure(exc, self.roles_dir)
        if failure is not None:
            raise failure from None


def role_failure(exc: BaseException, roles_dir: RolePath | Path, role: str | None = None) -> RoleError | None:
    """A RoleError naming the role file and line where ``exc`` was raised (its deepest frame in a folder of the
    role path), or None when no role's code is on the traceback (then it is berth's own bug and stays one)."""
    if isinstance(exc, ConfigError | InventoryError):
        return None
    roots = [d.resolve() for d in RolePath.of(roles_dir).dirs]
    frames = [(f, root) for f in traceback.extract_tb(exc.__traceback__) for root in roots
              if Path(f.filename).resolve().is_relative_to(root)]
    if not frames and role is None:
        return None
    if frames:
        frame, root = frames[-1]
        inside = Path(frame.filename).resolve().relative_to(root)
        where, name = f"{root.name}/{inside}:{frame.lineno}", role or inside.parts[0]
    else:
        where, name = _role_file(roles_dir, role or "?"), role or "?"
    return RoleError(f"{where}: role {name} failed: {exc.__class__.__name__}: {exc} (a bug in the role's code, "
                     "not in the inventory; the host was not changed)")


def _role_file(roles_dir: RolePath | Path, role: str) -> str:
    roles = RolePath.of(roles_dir)
    folder = roles.find(role)
    parent = folder.parent if folder is not None else (roles.dirs[0] if roles.dirs else Path("roles"))
    return f"{parent.name}/{role}/role.py"


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
