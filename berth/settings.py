"""The project: the directory berth works on (the user's inventory repository), its settings (``berth.yml``)
and where roles are found.

The project directory is ``--project DIR``, else ``$BERTH_PROJECT``, else the nearest directory holding a
``berth.yml`` upward from the working directory (as ansible.cfg is found). Every relative path in
``berth.yml`` is relative to that directory, never to the working directory. ``BERTH_PKI_DIR`` overrides
``pki_dir`` (a relative value is taken from the working directory, as any path given on a command line).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from berth import shipped
from berth.errors import ConfigError, OptionError

MARKER = "berth.yml"
PROJECT_ENV = "BERTH_PROJECT"
NO_PROJECT_HINT = (f"run `berth init DIR` to start a project, or give --project DIR or {PROJECT_ENV}=DIR "
                   f"(a directory with a {MARKER})")


def find_project(given: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> Path:
    """The project directory: ``given`` (``--project``), else $BERTH_PROJECT, else the nearest berth.yml upward."""
    env = os.environ if env is None else env
    cwd = (cwd or Path.cwd()).resolve()
    for value, source, error in ((given, "--project", OptionError), (env.get(PROJECT_ENV), PROJECT_ENV, ConfigError)):
        if value:
            folder = (cwd / Path(value).expanduser()).resolve()
            if not (folder / MARKER).is_file():
                raise error(f"{source} {value}: no {MARKER} in {folder} ({NO_PROJECT_HINT})")
            return folder
    for folder in (cwd, *cwd.parents):
        if (folder / MARKER).is_file():
            return folder
    raise ConfigError(f"no berth project here: no {MARKER} in {cwd} or any directory above it; {NO_PROJECT_HINT}")


@dataclass(frozen=True)
class RolePath:
    """Where roles are found, first match by name wins: the project's roles/, then the roles berth ships."""

    dirs: tuple[Path, ...]

    @classmethod
    def of(cls, roles: RolePath | Path | str | Iterable[Path | str]) -> RolePath:
        if isinstance(roles, RolePath):
            return roles
        items = [roles] if isinstance(roles, str | Path) else list(roles)
        unique = dict.fromkeys(Path(item).resolve() for item in items)   # this repository: both are roles/
        return cls(tuple(unique))

    def find(self, name: str) -> Path | None:
        return next((d / name for d in self.dirs if (d / name).is_dir()), None)

    def roles(self) -> dict[str, Path]:
        """Every role by name (a project's role hides a shipped one of the same name), sorted by name."""
        found: dict[str, Path] = {}
        for folder in self.dirs:
            for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
                if entry.is_dir() and not entry.name.startswith((".", "_")):   # skip __pycache__ and the like
                    found.setdefault(entry.name, entry)
        return dict(sorted(found.items()))

    def __str__(self) -> str:
        return ", ".join(map(str, self.dirs))


@dataclass(frozen=True)
class Settings:
    root: Path
    inventory: Path
    roles_dir: Path                      # the project's own roles (may not exist)
    pki_dir: Path
    forks: int = 10
    package_concurrency: int = 10     # hosts installing packages at once, whatever forks is
    host_key_checking: str = "strict"
    connect_timeout: float = 10.0
    connect_attempts: int = 3

    @property
    def config_defaults(self) -> Path:
        return shipped.config_defaults()

    @property
    def role_path(self) -> RolePath:
        return RolePath.of([self.roles_dir, shipped.roles_dir()])


KNOWN = {"inventory", "roles_dir", "pki_dir", "forks", "package_concurrency", "host_key_checking", "connect_timeout",
         "connect_attempts"}


def load_settings(root: Path | None = None) -> Settings:
    """The settings of the project in ``root`` (default: the project found by find_project)."""
    root = (root or find_project()).resolve()
    path = root / MARKER
    raw: dict = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings ({', '.join(sorted(KNOWN))})")
    unknown = set(raw) - KNOWN
    if unknown:
        raise ConfigError(f"{path}: unknown settings {', '.join(sorted(unknown))} (known: {', '.join(sorted(KNOWN))})")
    checking = raw.get("host_key_checking", "strict")
    if checking not in ("strict", "accept-new"):
        raise ConfigError(f"{path}: host_key_checking must be strict or accept-new, got {checking!r}")
    pki_env = os.environ.get("BERTH_PKI_DIR")
    return Settings(
        root=root,
        inventory=root / str(raw.get("inventory", "inventory/hosts.yml")),
        roles_dir=root / str(raw.get("roles_dir", "roles")),
        pki_dir=Path(pki_env).resolve() if pki_env else root / str(raw.get("pki_dir", ".berth/pki")),
        forks=int(raw.get("forks", 10)),
        package_concurrency=_positive(path, raw, "package_concurrency", 10),
        host_key_checking=checking,
        connect_timeout=float(raw.get("connect_timeout", 10)),
        connect_attempts=max(1, int(raw.get("connect_attempts", 3))),
    )


def _positive(path: Path, raw: dict, key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: {key} must be a whole number of at least 1, got {value!r}")
    return value
