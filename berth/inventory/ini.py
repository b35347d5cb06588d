"""INI inventories, parsed as ansible-core's ``plugins/inventory/ini.py`` (2.19) parses them.

- Lines before any section are hosts of ``ungrouped``; ``#`` and ``;`` start comment lines.
- ``[g]`` (hosts), ``[g:vars]`` (``key=value``, split at the first ``=``) and ``[g:children]`` (group names).
- A host line is split as a shell would (``shlex``, ``#`` starts a comment): a host pattern (ranges, an
  optional ``:port``) and ``key=value`` pairs.
- Every value, in host lines and in ``:vars`` alike, goes through Python's ``ast.literal_eval``: ``22`` is an
  int, ``True`` a bool, ``[1, 2]`` a list, ``'x'`` the string x; anything else (``true``, ``a b``) stays a
  string. Tuples and sets become lists, as Ansible's ``_parse_recursive_coerce_types_and_tag`` does.
- ``[g:vars]`` for a group no section defines, and ``[g:children]`` naming a group no section defines, are
  errors (reported at the line that declared them), as in Ansible.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

from berth.errors import InventoryError

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:\#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:\#.*)?$")
_COMMENT_MARKERS = ("#", ";")


class InventoryBuilder(Protocol):
    """What a source parser fills (berth.inventory.loader's parser implements it)."""

    groups: dict[str, Any]

    def add_group(self, name: str) -> None: ...

    def link(self, parent: str, child: str, line: int) -> None: ...

    def add_hosts(self, group: str, pattern: str, line: int) -> list[str]: ...

    def set_host_var(self, host: str, key: str, value: Any, line: int) -> None: ...

    def set_group_var(self, group: str, key: str, value: Any, line: int) -> None: ...


@dataclass
class _Pending:
    """A group named by ``[g:vars]`` or ``[g:children]`` before any section defines it."""

    line: int
    state: str
    parents: list[str] = field(default_factory=list)


def parse_ini(text: str, label: str, builder: InventoryBuilder) -> None:
    """Parse an INI inventory into ``builder``; errors read ``label:line: problem``."""
    pending: dict[str, _Pending] = {}
    group, state = "ungrouped", "hosts"

    def fail(number: int, message: str) -> InventoryError:
        return InventoryError(f"{label}:{number}: {message}")

    def add_pending_children(name: str) -> None:
        for parent in pending[name].parents:
            builder.link(parent, name, pending[name].line)
            if parent in pending and pending[parent].state == "children":
                add_pending_children(parent)
        del pending[name]

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in _COMMENT_MARKERS:
            continue
        section = _SECTION.match(line)
        if section:
            group, state = section[1], section[2] or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise fail(number, f"section [{group}:{state}] has unknown type {state!r} "
                                   "(expected hosts, vars or children)")
            if group not in builder.groups:
                if state == "vars" and group not in pending:
                    pending[group] = _Pending(number, state)
                builder.add_group(group)
            if group in pending and state != "vars":
                if pending[group].state == "children":
                    add_pending_children(group)
                else:
                    del pending[group]
            continue
        if line.startswith("[") and line.endswith("]"):
            raise fail(number, f"invalid section {line!r}: no spaces or other characters allowed in a section name")

        if state == "hosts":
            _host_line(line, number, group, builder, fail)
        elif state == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise fail(number, f"expected key=value in [{group}:vars], got {line!r}")
            builder.set_group_var(group, key.strip(), parse_value(value.strip()), number)
        else:
            match = _GROUP_NAME.match(line)
            if match is None:
                raise fail(number, f"expected a group name in [{group}:children], got {line!r}")
            child = match[1]
            if child in builder.groups:
                builder.link(group, child, number)
            elif child in pending:
                pending[child].parents.append(group)
            else:
                pending[child] = _Pending(number, "children", [group])

    for name, decl in pending.items():
        if decl.state == "vars":
            raise fail(decl.line, f"section [{name}:vars] is for group {name!r}, which no section defines")
        raise fail(decl.line, f"section [{decl.parents[-1]}:children] names group {name!r}, "
                              "which no section defines (add a [" + name + "] section, even an empty one)")


def _host_line(line: str, number: int, group: str, builder: InventoryBuilder, fail: Any) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise fail(number, f"cannot split host line {line!r}: {exc}") from None
    if not tokens:
        return
    pattern = tokens[0]
    if pattern.strip() == "---":
        raise fail(number, "host '---' is not allowed: this looks like a YAML file (name it .yml)")
    if pattern.endswith(":") and not pattern.endswith("]:"):
        raise fail(number, f"invalid host pattern {pattern!r}: ':' at the end is reserved for a port number")
    variables = []
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep:
            raise fail(number, f"expected key=value after the host name, got {token!r}")
        variables.append((key, parse_value(value)))
    for host in builder.add_hosts(group, pattern, number):
        for key, value in variables:
            builder.set_host_var(host, key, value, number)


def parse_value(text: str) -> Any:
    """An INI value as Ansible reads it: a Python literal if it is one, else the string itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _coerce(value)


def _coerce(value: Any) -> Any:
    """literal_eval's types that are no variable types, turned into ones (as Ansible's ini plugin does)."""
    if isinstance(value, list | tuple | set | frozenset):
        return [_coerce(item) for item in value]
    if isinstance(value, dict):
        return {_coerce(key): _coerce(item) for key, item in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
