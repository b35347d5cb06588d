"""Project settings from ``config/berth.yml``, overridable by environment (BERTH_*)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from berth.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    root: Path
    inventory: Path
    roles_dir: Path
    pki_dir: Path
    forks: int = 10
    host_key_checking: str = "strict"
    connect_timeout: float = 10.0
    connect_attempts: int = 3

    @property
    def config_defaults(self) -> Path:
        return self.root / "config" / "defaults.yml"


def load_settings(root: Path | None = None) -> Settings:
    root = (root or Path.cwd()).resolve()
    path = root / "config" / "berth.yml"
    raw: dict = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    known = {"inventory", "roles_dir", "pki_dir", "forks", "host_key_checking", "connect_timeout",
             "connect_attempts"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path}: unknown settings {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    checking = raw.get("host_key_checking", "strict")
    if checking not in ("strict", "accept-new"):
        raise ConfigError(f"{path}: host_key_checking must be strict or accept-new, got {checking!r}")
    return Settings(
        root=root,
        inventory=root / raw.get("inventory", "inventory/hosts.yml"),
        roles_dir=root / raw.get("roles_dir", "roles"),
        pki_dir=Path(os.environ.get("BERTH_PKI_DIR") or root / raw.get("pki_dir", ".berth/pki")),
        forks=int(raw.get("forks", 10)),
        host_key_checking=checking,
        connect_timeout=float(raw.get("connect_timeout", 10)),
        connect_attempts=max(1, int(raw.get("connect_attempts", 3))),
    )
