"""``ansible-inventory --list`` and ``--host`` shaped JSON of a loaded inventory, for scripts and ``jq``.

Same shape as ansible-core 2.19's ``cli/inventory.py`` (``json_inventory``, ``_get_host_variables``):
``{"_meta": {"hostvars": {host: vars}}, "all": {"children": [...]}, group: {"hosts": [...], "children":
[...]}}``, with empty keys and empty groups left out, and ``--host`` as the host's variables alone.

Where it differs on purpose: the variables are the ones berth uses, so templates are rendered, role and
config defaults are included, and every secret (vault-decrypted values, secret-looking environment
variables) is replaced by ``***`` (Ansible prints vault values still encrypted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from berth.inventory.loader import Host, Inventory
from berth.redact import redact


def host_json(host: Host, secrets: Sequence[str]) -> dict[str, Any]:
    """``ansible-inventory --host H``: the host's merged variables."""
    return {key: _masked(value, secrets) for key, value in host.vars.items()}


def list_json(inventory: Inventory, secrets: Sequence[str]) -> dict[str, Any]:
    """``ansible-inventory --list``: groups (hosts, children) and ``_meta.hostvars``."""
    result: dict[str, Any] = {}
    seen: set[str] = set()

    def walk(name: str) -> None:
        group = inventory.groups[name]
        entry: dict[str, Any] = {}
        if name != "all" and group.hosts:
            entry["hosts"] = list(group.hosts)
        if group.children:
            entry["children"] = list(group.children)
        if entry:
            result[name] = entry
        for child in group.children:
            if child not in seen:
                seen.add(child)
                walk(child)

    walk("all")
    hostvars = {name: host_json(host, secrets) for name, host in inventory.hosts.items() if host.vars}
    return {"_meta": {"hostvars": hostvars, "profile": "inventory_legacy"}, **result}


def _masked(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_masked(item, secrets) for item in value]
    if isinstance(value, dict):
        return {key: _masked(item, secrets) for key, item in value.items()}
    return value
