"""Finding and reading inventory files as Ansible does: the files of a directory source, YAML with
``!vault`` and ``!unsafe``, whole vault-encrypted files, and which values are secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from berth.errors import InventoryError
from berth.inventory import vault
from berth.inventory.templating import Unsafe
from berth.inventory.vault import Password, VaultText
from berth.inventory.yamlfile import LineLoader, parse_yaml, read_text

# What Ansible's InventoryManager skips in a directory source (inventory/manager.py IGNORED: hidden names,
# group_vars, host_vars, vars_plugins; constants.py REJECT_EXTS plus config base.yml INVENTORY_IGNORE_EXTS).
_IGNORED_NAMES = re.compile(r"^\.|^host_vars$|^group_vars$|^vars_plugins$")
IGNORED_EXTS = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
YAML_EXTS = (".yml", ".yaml", ".json")  # Ansible's yaml plugin's extensions (.json: YAML is a superset)


def source_files(source: Path, label: Callable[[Path], str]) -> list[Path]:
    """The inventory files of one ``-i`` source: the file itself, or a directory's files in Ansible's order
    (names sorted, sub-directories recursively, ignored names and extensions skipped)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise InventoryError(f"inventory {label(source)} does not exist (use --inventory to pick another)")
    files = []
    for name in sorted(os.listdir(source)):
        if _IGNORED_NAMES.search(name) or name.endswith(IGNORED_EXTS):
            continue
        entry = source / name
        files += source_files(entry, label) if entry.is_dir() else [entry]
    return files


class InventoryLoader(LineLoader):
    """YAML as Ansible reads inventory and vars files: ``!vault |`` values and ``!unsafe`` strings."""


def _construct_vault(loader: LineLoader, node: yaml.ScalarNode) -> VaultText:
    return VaultText(str(loader.construct_scalar(node)), node.start_mark.line + 1)


def _construct_unsafe(loader: LineLoader, node: yaml.ScalarNode) -> Unsafe:
    return Unsafe(loader.construct_scalar(node))


InventoryLoader.add_constructor("!vault", _construct_vault)
InventoryLoader.add_constructor("!unsafe", _construct_unsafe)


def parse(text: str, label: str) -> Any:
    return parse_yaml(text, label, loader=InventoryLoader)


def read_yaml(path: Path, label: str, passwords: Sequence[Password]) -> Any:
    """A YAML file's data; if the whole file was vault-encrypted, every string in it is a secret."""
    text, encrypted = read_source(path, label, passwords)
    data = parse(text, label)
    if encrypted:
        reveal_all(data)
    return data


def read_source(path: Path, label: str, passwords: Sequence[Password]) -> tuple[str, bool]:
    """A file's text and whether it was a whole vault-encrypted file (then decrypted)."""
    text = read_text(path, label)
    if vault.is_encrypted(text):
        return vault.decrypt(text, passwords, label), True
    return text, False


def reveal_all(data: Any) -> None:
    """Mark every string in data as a secret."""
    if isinstance(data, dict):
        for item in data.values():
            reveal_all(item)
    elif isinstance(data, list):
        for item in data:
            reveal_all(item)
    elif isinstance(data, str):
        vault.reveal(data)


def decrypt_values(value: Any, source: str, line: int | None, passwords: Sequence[Password]) -> Any:
    """``value`` with every ``!vault`` in it decrypted (a secret from then on); errors name source:line."""
    if isinstance(value, VaultText):
        where = source if (value.line or line) is None else f"{source}:{value.line or line}"
        return vault.decrypt(value.envelope, passwords, where)
    if isinstance(value, list):
        return [decrypt_values(item, source, line, passwords) for item in value]
    if isinstance(value, dict):
        return {key: decrypt_values(item, source, line, passwords) for key, item in value.items()}
    return value
