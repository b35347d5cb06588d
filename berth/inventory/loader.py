"""Load Ansible inventories (YAML or INI, files or directories, one or several) and compute each host's
variables, remembering where each value came from. tests/conformance/test_ansible_inventory.py checks the
result against ansible-core itself.

Sources (``-i``, in order; a later one adds to what earlier ones made, as Ansible's InventoryData):

- a file: ``.ini`` is INI (berth.inventory.ini); ``.yml``/``.yaml``/``.json`` is YAML; another name is YAML
  if it reads as a mapping of groups, else INI; a whole vault-encrypted file is decrypted first
  (berth.inventory.builder builds the groups and hosts, berth.inventory.files reads the files);
- a directory: its files in name order, sub-directories recursively, skipping what Ansible skips (hidden
  names, ``group_vars``, ``host_vars``, ``vars_plugins``, and the extensions of INVENTORY_IGNORE_EXTS).

``group_vars/`` and ``host_vars/`` are read beside each source (in a directory source, in the directory;
for a file, in its folder), each folder once, in source order. An entry there is a file ``<name>``,
``<name>.yml``, ``<name>.yaml`` or ``<name>.json`` (one of them: two is an error, Ansible reads only the
first), or a folder ``<name>/`` whose files (with one of these extensions or none) load in name order,
sub-folders recursively. Hidden entries and ``*~`` backups are skipped.

Variable precedence, lowest first; a later level replaces a variable's whole value (Ansible's default
``hash_behaviour=replace``, so dicts are not merged). Levels 3-8 are Ansible's VariableManager order with
the default VARIABLE_PRECEDENCE:

1. role defaults: ``<role>/defaults.yml`` (on the role path: the project's roles, then berth's) for each
   role in the host's ``berth_roles``, in the order listed (a later role wins over an earlier one);
2. the ``config_defaults`` file (berth's ``config/defaults.yml``);
3. the inventory's vars of ``all``;
4. the inventory's vars of every other group the host is in (directly or through a child group), sorted
   by ``(depth, ansible_group_priority, name)``: depth is the longest path from ``all``, so parents come
   before children; priority defaults to 1 and a higher one merges later;
5. ``group_vars/all``, source by source;
6. ``group_vars/<group>``, source by source, each in the group order of level 4;
7. the host's variables in the inventory (if the host is listed several times, later listings win);
8. ``host_vars/<host>``, source by source;
9. extra vars (``-e``), in the order given.

``ansible_group_priority`` set in an inventory source is the group's priority, not a variable (Ansible's
Group.set_variable); in a group_vars file it is an ordinary variable, as in Ansible. Hosts in no group but
``all`` are in ``ungrouped``, which is always the first child of ``all``.

Then ``{{ }}`` templates are rendered per host (berth.inventory.templating) and ``!vault`` values are decrypted
(berth.inventory.vault) when read; decrypted values are secrets (``berth.inventory.vault.revealed``).
``Host.templates`` keeps what a templated variable was written as.

``berth_roles`` is computed from levels 2-9; the defaults of those roles are then layered underneath.

Checks, each reported as ``file:line: ...`` (an :class:`~berth.errors.InventoryError`): every variable set
at levels 2-9 (in any file, whether or not it wins for some host) must have the type of the role default
of the same name (any role under ``roles_dir``; a null default accepts anything; if several roles define
it, fitting one of them is enough; a templated value is not checked); a variable that is not known (a role
default, a config default, ``ansible_*`` or ``berth_*``) but is close to a known name is treated as a typo;
``ansible_port`` and ``ansible_group_priority`` must be integers; ``berth_roles`` must be a list of existing
role names; a group_vars/host_vars entry must name a group or host of the inventory.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from berth.errors import InventoryError
from berth.inventory import vault
from berth.inventory.builder import GroupDef, SourceParser, parse_source
from berth.inventory.files import read_yaml, reveal_all, source_files
from berth.inventory.layers import Layer, Origin, kind, show, type_name
from berth.inventory.templating import HostData, Renderer, has_template
from berth.inventory.vault import Password
from berth.inventory.yamlfile import LineDict, parse_yaml
from berth.settings import RolePath

EXTRA_VARS_SOURCE = "-e (command line)"
VARS_SUFFIXES = (".yml", ".yaml", ".json")  # Ansible's YAML_FILENAME_EXTENSIONS
FREE_PREFIXES = ("ansible_", "berth_")  # never reported as typos: Ansible's and berth's own names
TYPO_CUTOFF = 0.85  # difflib ratio above which an unknown variable is taken for a misspelt known one
NEAREST_CUTOFF = 0.6  # difflib's default, for "nearest: ..." suggestions (see _nearest)

_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COLON_OUTSIDE_BRACKETS = re.compile(r":(?![^\[]*\])")


@dataclass
class Host:
    """A host with its merged variables; ``groups`` is in merge order (lowest first, ``all`` first)."""

    name: str
    groups: list[str]
    vars: dict[str, Any]
    origins: dict[str, Origin]
    roles: list[str]
    templates: dict[str, Any] = field(default_factory=dict)  # variable -> its value as written, if templated

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host") or self.name)

    @property
    def port(self) -> int | None:
        return self.vars.get("ansible_port")

    @property
    def user(self) -> str | None:
        return self.vars.get("ansible_user")

    @property
    def key_file(self) -> str | None:
        return self.vars.get("ansible_ssh_private_key_file")


@dataclass
class Group:
    """A group as written: direct children and hosts, and its own variables (inventory ``vars:`` then
    its group_vars file)."""

    name: str
    children: list[str]
    hosts: list[str]
    vars: dict[str, Any]
    priority: int = 1


@dataclass
class GroupNode:
    """One node of :meth:`Inventory.tree`. A group under several parents appears under each of them."""

    name: str
    hosts: list[str]
    children: list[GroupNode]


@dataclass
class Inventory:
    """A loaded inventory: hosts with their merged variables, the groups as written, and the file."""

    hosts: dict[str, Host]  # in inventory order
    groups: dict[str, Group]  # in inventory order, "all" first
    path: Path  # the first source
    sources: list[Path] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        path: Path | str | Sequence[Path | str],
        *,
        extra_vars: Sequence[str] = (),
        config_defaults: Path | None = None,
        roles_dir: RolePath | Path | None = None,
        base_dir: Path | None = None,
        vault_passwords: Sequence[Password] | None = None,
    ) -> Inventory:
        """Load one source or several (files or directories, as ``-i`` takes them) and compute every host's
        variables (see the module docstring for the order)."""
        paths = [Path(path)] if isinstance(path, str | Path) else [Path(item) for item in path]
        if not paths:
            raise InventoryError("no inventory given")
        label = _Labeler(Path(base_dir) if base_dir is not None else Path.cwd())
        passwords = vault.load_passwords() if vault_passwords is None else vault_passwords
        parser = SourceParser(passwords)
        for source in paths:
            for file in source_files(source, label):
                parser.label = label(file)
                parse_source(file, parser)
        parser.finish()
        all_groups, all_hosts = list(parser.groups), list(parser.hosts)
        # group_vars/ and host_vars/ beside each source: a directory's own, a file's folder (Ansible's
        # get_vars_from_inventory_sources); each folder once, in source order.
        basedirs = list(dict.fromkeys(Path(os.path.abspath(p if p.is_dir() else p.parent)) for p in paths))
        group_files = [
            _load_vars_dir(d / "group_vars", "group", all_groups, paths, label, passwords) for d in basedirs
        ]
        host_files = [
            _load_vars_dir(d / "host_vars", "host", all_hosts, paths, label, passwords) for d in basedirs
        ]
        config = _load_config_defaults(config_defaults, label, passwords) if config_defaults else Layer()
        role_path = RolePath.of(roles_dir) if roles_dir is not None else None
        roles = _load_roles(role_path, label) if role_path is not None else None
        extras = [_parse_extra_vars(arg, label, passwords) for arg in extra_vars]

        roles_label = ", ".join(f"{label(d)}/" for d in role_path.dirs) if role_path is not None else ""
        checker = _Checker(roles, config, roles_label)
        for layer in [
            config,
            *(group.vars for group in parser.groups.values()),
            *(layer for files in group_files for layer in files.values()),
            *parser.hosts.values(),
            *(layer for files in host_files for layer in files.values()),
            *extras,
        ]:
            checker.check(layer)
        if not parser.hosts:
            where = ", ".join(label(source) for source in paths)
            raise InventoryError(f"{where}: no hosts in the inventory (e.g. 'all:' then 'hosts:', or an INI "
                                 "host line)")

        order = _group_order(parser.groups)
        inventory = cls(hosts={}, groups={}, path=paths[0], sources=paths)
        for name, group in parser.groups.items():
            own = Layer.merged([group.vars, *(files.get(name, Layer()) for files in group_files)])
            inventory.groups[name] = Group(
                name, list(group.children), list(group.hosts), own.plain(), group.priority
            )

        for name, host_layer in parser.hosts.items():
            groups = sorted(_groups_of(name, parser.groups), key=order.__getitem__)
            others = [group for group in groups if group != "all"]
            # Ansible's VariableManager.get_vars with the default VARIABLE_PRECEDENCE: inventory vars of
            # "all", then of the other groups; then group_vars/all, then group_vars/<group>, source by source.
            layers = [config, parser.groups["all"].vars]
            layers += [parser.groups[group].vars for group in others]
            layers += [files.get("all", Layer()) for files in group_files]
            layers += [files.get(group, Layer()) for files in group_files for group in others]
            layers += [host_layer, *(files.get(name, Layer()) for files in host_files), *extras]
            above = Layer.merged(layers)
            host_roles = _roles_of(above)
            defaults = [roles[role].layer for role in host_roles] if roles is not None else []
            merged = Layer.merged([*defaults, above])
            inventory.hosts[name] = Host(name, groups, merged.plain(), dict(merged.origins), host_roles)
        _render_templates(inventory, parser.groups)
        return inventory

    def select(self, patterns: str | Sequence[str] | None) -> list[Host]:
        """Hosts matching Ansible-style patterns, in inventory order, without duplicates.

        ``None`` or ``"all"`` is every host. A string holds patterns separated by commas or colons; a list
        is the same as joining with commas. A pattern is a host name, a group name (its hosts, including
        those of child groups) or an fnmatch glob over host and group names; ``&pattern`` keeps only hosts
        also matched by it and ``!pattern`` drops hosts matched by it, whatever their position.
        """
        if patterns is None:
            return list(self.hosts.values())
        items = [patterns] if isinstance(patterns, str) else list(patterns)
        parts = [part.strip() for item in items for part in self._split_patterns(item)]
        parts = [part for part in parts if part]
        if not parts:
            raise InventoryError("empty host pattern (use 'all' for every host)")
        if parts[0][0] in "!&":  # as Ansible: only restrictions means "all hosts, restricted"
            parts.insert(0, "all")
        wanted: set[str] = set()
        excluded: set[str] = set()
        required: list[set[str]] = []
        for part in parts:
            if part.startswith("!"):
                excluded |= self._match(part[1:])
            elif part.startswith("&"):
                required.append(self._match(part[1:]))
            else:
                wanted |= self._match(part)
        return [
            host
            for name, host in self.hosts.items()
            if name in wanted and name not in excluded and all(name in hosts for hosts in required)
        ]

    def tree(self) -> GroupNode:
        """The group tree from ``all``, with each group's direct hosts; easy to render or ``asdict()``."""

        def node(name: str) -> GroupNode:
            group = self.groups[name]
            return GroupNode(name, list(group.hosts), [node(child) for child in group.children])

        return node("all")

    # -- pattern helpers ------------------------------------------------------------------------------

    def _split_patterns(self, text: str) -> list[str]:
        parts: list[str] = []
        for part in text.split(","):
            # A host name may itself hold colons (IPv6); otherwise colons separate patterns as in Ansible.
            name = part.strip().lstrip("!&")
            parts += [part] if name in self.hosts else _COLON_OUTSIDE_BRACKETS.split(part)
        return parts

    def _match(self, pattern: str) -> set[str]:
        if not pattern:
            raise InventoryError("empty host pattern after '!' or '&'")
        if pattern in ("all", "*"):
            return set(self.hosts)
        matched = False
        hosts: set[str] = set()
        if pattern in self.hosts:
            matched = True
            hosts.add(pattern)
        if pattern in self.groups:
            matched = True
            hosts |= self._hosts_under(pattern)
        if not matched and any(char in pattern for char in "*?["):
            for name in self.hosts:
                if fnmatch.fnmatchcase(name, pattern):
                    matched = True
                    hosts.add(name)
            for name in self.groups:
                if fnmatch.fnmatchcase(name, pattern):
                    matched = True
                    hosts |= self._hosts_under(name)
        if not matched:
            near = _nearest(pattern, [*self.hosts, *self.groups])
            hint = f"nearest: {', '.join(near)}" if near else f"known groups: {', '.join(self.groups)}"
            raise InventoryError(f"unknown host or group {pattern!r} ({hint})")
        return hosts

    def _hosts_under(self, group: str) -> set[str]:
        hosts = set(self.groups[group].hosts)
        for child in self.groups[group].children:
            hosts |= self._hosts_under(child)
        return hosts


# -- internals ----------------------------------------------------------------------------------------


class _Labeler:
    """Turns paths into labels for messages: relative to base_dir when under it, else as given."""

    def __init__(self, base_dir: Path) -> None:
        self.base = Path(os.path.abspath(base_dir))

    def __call__(self, path: Path) -> str:
        # abspath, not resolve(): a symlinked inventory should still be shown where the user put it.
        try:
            return Path(os.path.abspath(path)).relative_to(self.base).as_posix()
        except ValueError:
            return str(path)


def _load_vars_dir(
    directory: Path, kind: str, known: list[str], sources: list[Path], label: _Labeler,
    passwords: Sequence[Password] = (),
) -> dict[str, Layer]:
    """Load ``group_vars/`` or ``host_vars/``: entity name -> merged layer, as Ansible's host_group_vars
    plugin and DataLoader.find_vars_files read them. Unknown names, and one name written two ways
    (``all`` and ``all.yml``: Ansible would read only the first), are errors."""
    if not directory.is_dir():
        return {}
    entries: dict[str, list[Path]] = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        # Only the YAML extensions are stripped: host names often contain dots (runner-01.example.com).
        name = entry.name
        for suffix in VARS_SUFFIXES:
            if entry.name.endswith(suffix) and len(entry.name) > len(suffix):
                name = entry.name[: -len(suffix)]
        if name not in known:
            shown = label(entry) + ("/" if entry.is_dir() else "")
            near = _nearest(name, known)
            hint = f"nearest: {', '.join(near)}" if near else f"known {kind}s: {', '.join(known) or 'none'}"
            where = ", ".join(label(source) for source in sources)
            raise InventoryError(f"{shown}: there is no {kind} {name!r} in {where} ({hint})")
        entries.setdefault(name, []).append(entry)
    layers = {}
    for name, paths in entries.items():
        # Ansible takes the first of <name>, <name>.yml, <name>.yaml, <name>.json and ignores the others.
        paths.sort(key=lambda path: ["", *VARS_SUFFIXES].index(path.name[len(name):]))
        if len(paths) > 1:
            raise InventoryError(
                f"{label(paths[1])}: {kind} {name!r} also has {label(paths[0])}, and Ansible reads only that one "
                "(merge them, or make a folder of files)"
            )
        files = _vars_folder_files(paths[0]) if paths[0].is_dir() else [paths[0]]
        layer = Layer()
        for file in files:
            layer.add(_load_mapping(file, label(file), passwords), label(file), passwords)
        layers[name] = layer
    return layers


def _vars_folder_files(folder: Path) -> list[Path]:
    """A group_vars/host_vars folder's files in name order: sub-folders (without a dot) recursively, files
    with a YAML extension or none; hidden names and ``~`` backups skipped (DataLoader._get_dir_vars_files)."""
    files = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir() and not entry.suffix:
            files += _vars_folder_files(entry)
        elif entry.is_file() and (not entry.suffix or entry.suffix in VARS_SUFFIXES):
            files.append(entry)
    return files


def _load_mapping(path: Path, source: str, passwords: Sequence[Password] = ()) -> LineDict:
    data = read_yaml(path, source, passwords)
    if data is None:
        return LineDict()
    if not isinstance(data, LineDict):
        raise InventoryError(
            f"{Origin(source, getattr(data, 'line', 1))}: expected a mapping of variables, got {kind(data)}"
        )
    return data


def _load_config_defaults(path: Path, label: _Labeler, passwords: Sequence[Password] = ()) -> Layer:
    layer = Layer()
    layer.add(_load_mapping(path, label(path), passwords), label(path), passwords)
    return layer


@dataclass
class _Role:
    name: str
    layer: Layer


def _load_roles(role_path: RolePath, label: _Labeler) -> dict[str, _Role]:
    """Every role on the role path (sub-folders, by name; the first of a name wins) with its defaults.yml
    (optional)."""
    roles = {}
    for name, entry in role_path.roles().items():
        layer = Layer()
        defaults = entry / "defaults.yml"
        if defaults.is_file():
            layer.add(_load_mapping(defaults, label(defaults)), label(defaults))
        roles[name] = _Role(name, layer)
    return roles


def _parse_extra_vars(arg: str, label: _Labeler, passwords: Sequence[Password] = ()) -> Layer:
    """One ``-e`` argument: ``@file.yml`` (relative to the working directory), a ``{...}`` YAML/JSON
    mapping, or space-separated ``key=value`` pairs (shell-style quoting, so ``msg='a b'`` works)."""
    text = arg.strip()
    layer = Layer()
    if text.startswith("@"):
        file = Path(text[1:])
        source = f"-e @{label(file)}"
        layer.add(_load_mapping(file, source, passwords), source, passwords)
        return layer
    if text.startswith("{"):
        data = parse_yaml(text, EXTRA_VARS_SOURCE)
        if not isinstance(data, LineDict):
            raise InventoryError(f"{EXTRA_VARS_SOURCE}: expected a mapping, got {kind(data)}: {text!r}")
        layer.add(data, EXTRA_VARS_SOURCE)
        layer.origins = {key: Origin(EXTRA_VARS_SOURCE) for key in layer.origins}  # lines of a literal: noise
        return layer
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise InventoryError(f"{EXTRA_VARS_SOURCE}: {exc} in {arg!r}") from None
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not _VAR_NAME.match(key):
            raise InventoryError(
                f"{EXTRA_VARS_SOURCE}: expected key=value, @file.yml or a {{...}} mapping, got {token!r}"
            )
        layer.values[key] = _scalar(raw)
        layer.origins[key] = Origin(EXTRA_VARS_SOURCE)
    return layer


def _scalar(raw: str) -> Any:
    """A ``-e key=value`` value as a YAML scalar (2377 -> int, true -> bool); anything else stays a string."""
    if raw == "":
        return ""
    try:
        value = parse_yaml(raw, EXTRA_VARS_SOURCE)
    except InventoryError:
        return raw
    return value if value is None or isinstance(value, str | int | float | bool) else raw


class _Checker:
    """Checks each layer's values against role defaults (type) and known names (typos)."""

    def __init__(self, roles: dict[str, _Role] | None, config: Layer, roles_label: str) -> None:
        self.roles = roles
        self.roles_label = roles_label
        # variable -> [(role, default)], roles by name: a value passes if it fits any of them
        self.expected: dict[str, list[tuple[str, Any]]] = {}
        for role in (roles or {}).values():
            for key, default in role.layer.values.items():
                self.expected.setdefault(key, []).append((role.name, default))
        self.known = sorted(set(self.expected) | set(config.values))

    def check(self, layer: Layer) -> None:
        for key, value in layer.values.items():
            origin = layer.origins[key]
            if has_template(value):
                if key == "berth_roles":  # roles pick role defaults, which templates may read: no cycle
                    raise InventoryError(f"{origin}: berth_roles cannot be a template, got {show(value)}")
                continue  # its type is known once rendered, per host
            if key in ("ansible_port", "ansible_group_priority") and not _is_int(value):
                raise InventoryError(
                    f"{origin}: {key} must be an integer, got {show(value)} ({type_name(value)})"
                )
            if key == "berth_roles":
                self._check_roles(value, origin)
            if key in self.expected:
                entries = self.expected[key]
                if not any(_fits(default, value) for _, default in entries):
                    role, default = entries[0]
                    raise InventoryError(
                        f"{origin}: {key} must be {kind(default)} (role {role} default: {show(default)}), "
                        f"got {show(value)} ({type_name(value)})"
                    )
            elif key not in self.known and not key.startswith(FREE_PREFIXES):
                close = difflib.get_close_matches(key, self.known, n=1, cutoff=TYPO_CUTOFF)
                if close:
                    raise InventoryError(f"{origin}: unknown variable {key!r} (did you mean {close[0]!r}?)")

    def _check_roles(self, value: Any, origin: Origin) -> None:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise InventoryError(f"{origin}: berth_roles must be a list of role names, got {show(value)}")
        if self.roles is None:
            return
        for role in value:
            if role not in self.roles:
                near = _nearest(role, list(self.roles))
                hint = f"nearest: {', '.join(near)}" if near else f"roles: {', '.join(self.roles) or 'none'}"
                raise InventoryError(
                    f"{origin}: berth_roles names unknown role {role!r}, not in {self.roles_label} ({hint})"
                )


def _render_templates(inventory: Inventory, groups: dict[str, GroupDef]) -> None:
    """Render every host's ``{{ }}`` (berth.inventory.templating), keeping what was written in ``Host.templates``."""
    revealed = set(vault.revealed())
    renderer = Renderer(
        {name: HostData(host.vars, host.origins, host.groups) for name, host in inventory.hosts.items()},
        _groups_dict(groups),
        is_secret=lambda value: _holds_secret(value, revealed),
    )
    rendered = {name: renderer.render_host(name) for name in inventory.hosts}
    for tainted_host, key in renderer.tainted:
        # e.g. "{{ token | b64encode }}" no longer holds the secret's own text: it becomes a secret itself.
        # ("https://u:{{ token }}@x" does, and redaction already masks that part.)
        value = rendered[tainted_host][key]
        if not any(secret in json.dumps(value) for secret in revealed if len(secret) >= 4):
            reveal_all(value)
    for name, host in inventory.hosts.items():
        host.templates = {key: value for key, value in host.vars.items() if has_template(value)}
        host.vars = rendered[name]


def _holds_secret(value: Any, secrets: set[str]) -> bool:
    if isinstance(value, str):
        return value in secrets
    if isinstance(value, list):
        return any(_holds_secret(item, secrets) for item in value)
    if isinstance(value, dict):
        return any(_holds_secret(item, secrets) for item in value.values())
    return False


def _groups_dict(groups: dict[str, GroupDef]) -> dict[str, list[str]]:
    """Ansible's ``groups``: each group's hosts, its own first, then its descendants' level by level
    (inventory/group.py _get_hosts over get_descendants(include_self=True, preserve_ordering=True))."""
    result = {}
    for name in groups:
        ordered, level, seen = [name], [name], {name}
        while level:
            level = [child for parent in level for child in groups[parent].children if child not in seen]
            level = list(dict.fromkeys(level))
            seen.update(level)
            ordered += level
        result[name] = list(dict.fromkeys(host for group in ordered for host in groups[group].hosts))
    return result


def _roles_of(layer: Layer) -> list[str]:
    roles = layer.values.get("berth_roles") or []
    return list(dict.fromkeys(roles))  # listed twice = once, first place


def _groups_of(host: str, groups: dict[str, GroupDef]) -> set[str]:
    """The groups ``host`` is in: its direct groups, their ancestors, and "all"."""
    found = {"all"}
    todo = [name for name, group in groups.items() if host in group.hosts]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += groups[name].parents
    return found


def _group_order(groups: dict[str, GroupDef]) -> dict[str, tuple[int, int, str]]:
    """Sort key per group: (depth, ansible_group_priority, name), as Ansible's sort_groups."""
    depth: dict[str, int] = {}

    def depth_of(name: str) -> int:
        if name not in depth:
            depth[name] = max((depth_of(parent) + 1 for parent in groups[name].parents), default=0)
        return depth[name]

    return {
        name: (depth_of(name), groups[name].priority, name) for name in groups
    }


def _nearest(word: str, candidates: Sequence[str], n: int = 3) -> list[str]:
    """Up to n close names, best first; ties keep the candidates' order (so r1, r2, r3, not r3, r2, r1).

    Close means a difflib ratio of at least 0.6, or one wrong character in a short name ('r9' -> 'r1' is
    only 0.5), or containing the word (3+ characters: 'shell' -> 'shell_runners').
    """
    cutoff = min(NEAREST_CUTOFF, (len(word) - 1) / len(word)) if word else NEAREST_CUTOFF
    scored = []
    for index, candidate in enumerate(candidates):
        ratio = difflib.SequenceMatcher(None, word, candidate).ratio()
        if ratio >= cutoff or (len(word) >= 3 and word in candidate):
            scored.append((-ratio, index, candidate))
    return [candidate for _, _, candidate in sorted(scored)[:n]]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(default: Any, value: Any) -> bool:
    """Whether value has the type the role default implies (bool is not an int; int is a float)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, int | float)
    for container in (str, list, dict):
        if isinstance(default, container):
            return isinstance(value, container)
    return isinstance(value, type(default))
