"""Groups and hosts from inventory sources, as Ansible's InventoryData builds them: YAML here, INI through
berth.inventory.ini; several sources add to the same groups and hosts.
"""

from __future__ import annotations

import difflib
import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from berth.errors import InventoryError
from berth.inventory.files import YAML_EXTS, decrypt_values, read_source, reveal_all
from berth.inventory.files import parse as parse_yaml_inventory
from berth.inventory.ini import parse_ini
from berth.inventory.layers import Layer, Origin, check_name, kind, show, type_name
from berth.inventory.vault import Password
from berth.inventory.yamlfile import LineDict

GROUP_KEYS = ("hosts", "vars", "children")
_HOST_RANGE = re.compile(r"^(?P<head>[^\[\]]*)\[(?P<body>[^\[\]]*)\](?P<tail>.*)$")


@dataclass
class GroupDef:
    name: str
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    vars: Layer = field(default_factory=Layer)
    priority: int = 1  # ansible_group_priority, set in the inventory source only (as Ansible)
    priority_origin: Origin | None = None


# Ansible's parse_address patterns (parsing/utils/addresses.py): "host:port" and "[host]:port".
_HOST_PORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_BRACKETED_HOST_PORT = re.compile(r"^\[(.+)\]:([0-9]+)$")


def _split_port(pattern: str) -> tuple[str, int | None]:
    """``web[1:3]:2222`` -> (``web[1:3]``, 2222); IPv6 addresses without brackets keep their colons."""
    for regex in (_BRACKETED_HOST_PORT, _HOST_PORT):
        match = regex.match(pattern)
        if match:
            return match[1], int(match[2])
    return pattern, None


class SourceParser:
    """Builds groups and hosts from one or more sources (YAML or INI), as Ansible's InventoryData does: a
    later source adds hosts, groups and variables to what earlier ones made. ``label`` names the source
    being read, for origins and errors."""

    def __init__(self, passwords: Sequence[Password] = ()) -> None:
        self.label = ""
        self.passwords = passwords
        self.encrypted = False  # the source being read was a vault-encrypted file: its values are secrets
        # As Ansible's InventoryData: "all" and "ungrouped" always exist, "ungrouped" first under "all".
        self.groups: dict[str, GroupDef] = {
            "all": GroupDef("all", children=["ungrouped"]), "ungrouped": GroupDef("ungrouped", parents=["all"])
        }
        self.hosts: dict[str, Layer] = {}  # host -> its inventory variables, in inventory order

    # -- the builder interface (berth.inventory.ini.InventoryBuilder) ----------------------------------

    def add_group(self, name: str) -> None:
        self._group(name)

    def link(self, parent: str, child: str, line: int) -> None:
        if child == parent or child in self._ancestors(parent):
            raise self._error(line, f"group {child!r} cannot be a child of {parent!r}: that makes a loop")
        self._group(parent)
        self._group(child)
        if child not in self.groups[parent].children:
            self.groups[parent].children.append(child)
            self.groups[child].parents.append(parent)

    def add_hosts(self, group: str, pattern: str, line: int) -> list[str]:
        """Add the hosts of ``pattern`` (ranges, an optional ``:port``) to ``group``; returns their names."""
        pattern, port = _split_port(pattern)
        names = self._expand(pattern, line)
        target = self._group(group)
        for name in names:
            self.hosts.setdefault(name, Layer())
            if name not in target.hosts:
                target.hosts.append(name)
            if port is not None:  # as Ansible's InventoryData.add_host(port=...)
                self.set_host_var(name, "ansible_port", port, line)
        return names

    def set_host_var(self, host: str, key: str, value: Any, line: int) -> None:
        origin = Origin(self.label, line)
        value = decrypt_values(value, origin.source, origin.line, self.passwords)
        if self.encrypted:
            reveal_all(value)
        self.hosts[host].set(key, value, origin)

    def set_group_var(self, group: str, key: str, value: Any, line: int) -> None:
        origin = Origin(self.label, line)
        value = decrypt_values(value, origin.source, origin.line, self.passwords)
        if self.encrypted:
            reveal_all(value)
        target = self._group(group)
        if key == "ansible_group_priority":  # a group property in Ansible (Group.set_variable), not a variable
            try:
                target.priority = int(value)
            except (TypeError, ValueError):
                raise InventoryError(
                    f"{origin}: ansible_group_priority must be an integer, got {show(value)} ({type_name(value)})"
                ) from None
            target.priority_origin = origin
            return
        target.vars.set(key, value, origin)

    # -- YAML ----------------------------------------------------------------------------------------

    def parse_yaml(self, data: Any) -> None:
        if data is None:
            return  # an empty source adds nothing (Ansible warns and goes on)
        if not isinstance(data, LineDict):
            raise self._error(
                getattr(data, "line", 1),
                f"the inventory must be a mapping of groups (e.g. 'all:'), got {kind(data)}",
            )
        for key, body in data.items():
            # Other top-level groups are implicit children of "all", as in Ansible.
            if str(key) != "all":
                self._group(str(key))
            self._parse_group(str(key), body, data.lines[key])

    def finish(self) -> None:
        """Ansible's InventoryData.reconcile_inventory: parentless groups go under ``all``; hosts in no
        group but ``all`` go into ``ungrouped``, and hosts in another group leave it."""
        for name, group in list(self.groups.items()):
            if name != "all" and not group.parents:
                self.link("all", name, 0)
        for host in self.hosts:
            direct = [name for name, group in self.groups.items() if host in group.hosts and name != "all"]
            if "ungrouped" in direct and len(direct) > 1:
                self.groups["ungrouped"].hosts.remove(host)
            elif not direct:
                self.groups["ungrouped"].hosts.append(host)

    def _error(self, line: int | None, message: str) -> InventoryError:
        return InventoryError(f"{Origin(self.label, line)}: {message}")

    def _group(self, name: str) -> GroupDef:
        return self.groups.setdefault(name, GroupDef(name))

    def _parse_group(self, name: str, body: Any, line: int) -> None:
        self._group(name)
        if body is None:
            return
        if not isinstance(body, LineDict):
            raise self._error(
                line, f"group {name!r} must be a mapping with hosts, vars or children, got {kind(body)}"
            )
        for key, value in body.items():
            key_line = body.lines[key]
            if key == "hosts":
                self._parse_hosts(name, value, key_line)
            elif key == "vars":
                if value is not None and not isinstance(value, LineDict):
                    raise self._error(
                        key_line, f"'vars' of group {name!r} must be a mapping, got {kind(value)}"
                    )
                group_vars = value or LineDict()
                for var, item in group_vars.items():
                    check_name(var, Origin(self.label, group_vars.lines.get(var)))
                    self.set_group_var(name, var, item, group_vars.lines[var])
            elif key == "children":
                self._parse_children(name, value, key_line)
            else:
                close = difflib.get_close_matches(str(key), GROUP_KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self._error(
                    key_line,
                    f"group {name!r} has unknown key {key!r} (expected hosts, vars or children{hint})",
                )

    def _parse_hosts(self, group: str, hosts: Any, line: int) -> None:
        if hosts is None:
            return
        if not isinstance(hosts, LineDict):
            raise self._error(
                line,
                f"'hosts' of group {group!r} must be a mapping of host names (each followed by ':'), "
                f"got {kind(hosts)}",
            )
        for pattern, host_vars in hosts.items():
            host_line = hosts.lines[pattern]
            if host_vars is not None and not isinstance(host_vars, LineDict):
                raise self._error(
                    host_line,
                    f"host {pattern!r} must be followed by a mapping of variables or nothing, got "
                    f"{kind(host_vars)} {show(host_vars)} (e.g. '{pattern}: {{ansible_host: ...}}')",
                )
            for name in self.add_hosts(group, str(pattern), host_line):
                given = host_vars or LineDict()
                for var, item in given.items():
                    check_name(var, Origin(self.label, given.lines.get(var)))
                    self.set_host_var(name, var, item, given.lines[var])

    def _parse_children(self, parent: str, children: Any, line: int) -> None:
        if children is None:
            return
        if not isinstance(children, LineDict):
            raise self._error(
                line,
                f"'children' of group {parent!r} must be a mapping of group names "
                f"(each followed by ':'), got {kind(children)}",
            )
        for key, body in children.items():
            self.link(parent, str(key), children.lines[key])
            self._parse_group(str(key), body, children.lines[key])

    def _ancestors(self, name: str) -> set[str]:
        found: set[str] = set()
        todo = list(self._group(name).parents)
        while todo:
            parent = todo.pop()
            if parent not in found:
                found.add(parent)
                todo += self.groups[parent].parents
        return found

    def _expand(self, pattern: str, line: int) -> list[str]:
        """Expand Ansible host ranges: ``web[01:03]``, ``node[a:c]``, ``r[1:9:2]``; several may combine."""
        match = _HOST_RANGE.match(pattern)
        if match is None:
            if "[" in pattern or "]" in pattern:
                raise self._error(line, f"bad host range in {pattern!r}: unbalanced brackets")
            return [pattern]
        head, body, tail = match["head"], match["body"], match["tail"]
        bounds = body.split(":")
        if len(bounds) not in (2, 3) or not bounds[1]:
            raise self._error(line, f"bad host range {pattern!r}: expected [start:end] or [start:end:stride]")
        start, end = bounds[0] or "0", bounds[1]
        stride_text = bounds[2] if len(bounds) == 3 else "1"
        if not stride_text.isdigit() or int(stride_text) < 1:
            raise self._error(line, f"bad host range {pattern!r}: the stride must be a positive integer")
        stride = int(stride_text)
        if start.isdigit() and end.isdigit():
            if int(start) > int(end):
                raise self._error(line, f"bad host range {pattern!r}: {start} is after {end}")
            width = len(start) if start.startswith("0") and len(start) > 1 else 0
            if width and len(end) != width:
                raise self._error(
                    line, f"bad host range {pattern!r}: zero-padded bounds must have the same width"
                )
            items = [str(number).zfill(width) for number in range(int(start), int(end) + 1, stride)]
        elif any(
            len(start) == len(end) == 1 and start in letters and end in letters
            for letters in (string.ascii_lowercase, string.ascii_uppercase)
        ):
            if start > end:
                raise self._error(line, f"bad host range {pattern!r}: {start} is after {end}")
            items = [chr(code) for code in range(ord(start), ord(end) + 1, stride)]
        else:
            raise self._error(
                line,
                f"bad host range {pattern!r}: bounds must be two numbers or two letters of the same case",
            )
        return [head + item + rest for item in items for rest in self._expand(tail, line)]


def parse_source(file: Path, parser: SourceParser) -> None:
    """Parse one inventory file as Ansible's plugins would pick it: ``.ini`` is INI; ``.yml``/``.yaml``/
    ``.json`` is YAML; another name is YAML if it reads as a YAML mapping, else INI (the yaml plugin fails
    and the ini plugin takes it). Inventory scripts (executable files) are not run."""
    label = parser.label
    if os.access(file, os.X_OK) and file.suffix not in (*YAML_EXTS, ".ini"):
        raise InventoryError(f"{label}: executable inventory scripts are not supported (remove its x bit "
                             "if it is a plain inventory file)")
    text, parser.encrypted = read_source(file, label, parser.passwords)
    if file.suffix == ".ini":
        parse_ini(text, label, parser)
        return
    if file.suffix in YAML_EXTS:
        parser.parse_yaml(parse_yaml_inventory(text, label))
        return
    try:
        data = parse_yaml_inventory(text, label)
    except InventoryError:
        data = None
    if isinstance(data, LineDict) and all(isinstance(v, LineDict | None) for v in data.values()):
        parser.parse_yaml(data)
    else:
        parse_ini(text, label, parser)


