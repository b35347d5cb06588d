"""Jinja2 in inventory variables, evaluated per host as Ansible evaluates them when a play reads them.

Each host sees its own merged variables plus the names Ansible gives every host (``inventory_hostname``,
``inventory_hostname_short``, ``group_names``, ``groups``, ``hostvars``); a variable that refers to another
one gets that one rendered first, for the same host (or for another host, through ``hostvars``).

As in ansible-core 2.19: a value that is a single ``{{ expression }}`` keeps the expression's type
(``"{{ 5 }}"`` is the int 5, ``"{{ [a, b] }}"`` a list); anything else renders to a string. Strings in
lists and mappings are rendered too; ``!unsafe`` strings never are. An undefined variable or a variable
that needs itself is an :class:`~berth.errors.InventoryError` naming the variable, its file and line.

The filters are Jinja2's built-ins plus the common ones of Ansible's ``plugins/filter/core.py`` (``bool``,
``to_json``, ``to_yaml``, ``regex_replace``, ``ternary``, ``combine``...), reimplemented here.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import jinja2
import yaml
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from berth.errors import InventoryError

_MARKERS = ("{{", "{%", "{#")


class Unsafe(str):
    """A string tagged ``!unsafe``: never templated (Ansible's AnsibleUnsafeText)."""


def has_template(value: Any) -> bool:
    """Whether a value holds Jinja2 that would be rendered."""
    if isinstance(value, Unsafe):
        return False
    if isinstance(value, str):
        return any(marker in value for marker in _MARKERS)
    if isinstance(value, list):
        return any(has_template(item) for item in value)
    if isinstance(value, dict):
        return any(has_template(item) for item in value.values())
    return False


@dataclass(frozen=True)
class HostData:
    """What a host's templates can see: its merged (raw) variables, where each came from, its groups."""

    vars: Mapping[str, Any]
    origins: Mapping[str, Any]  # variable -> berth.inventory.loader.Origin (printed as file:line)
    groups: list[str]  # every group it is in, "all" included


class Renderer:
    """Renders every host's variables. ``groups`` maps each group to its hosts (Ansible's ``groups``)."""

    def __init__(
        self,
        hosts: Mapping[str, HostData],
        groups: Mapping[str, list[str]],
        is_secret: Callable[[Any], bool] = lambda value: False,
    ) -> None:
        self.hosts = hosts
        self.groups = {name: list(members) for name, members in groups.items()}
        self.env = _environment()
        self.is_secret = is_secret
        self.tainted: set[tuple[str, str]] = set()  # rendered from a secret: as secret as it is
        self._done: dict[tuple[str, str], Any] = {}
        self._stack: list[tuple[str, str]] = []

    def render_host(self, host: str) -> dict[str, Any]:
        """The host's variables with every template rendered."""
        return {key: self.variable(host, key) for key in self.hosts[host].vars}

    def variable(self, host: str, key: str) -> Any:
        """One variable of one host, rendered (and remembered)."""
        done = self._done.get((host, key), _MISSING)
        if done is not _MISSING:
            if (host, key) in self.tainted:
                self.tainted.update(self._stack)
            return done
        raw = self.hosts[host].vars[key]
        if not has_template(raw):
            value = _untag(raw)
            self._done[(host, key)] = value
            if self.is_secret(value):
                self.tainted.update([*self._stack, (host, key)])
            return value
        if (host, key) in self._stack:
            chain = " -> ".join(name for _, name in self._stack[self._stack.index((host, key)):])
            raise InventoryError(
                f"{self.hosts[host].origins.get(key, '?')}: {key}: template loop for host {host} "
                f"({chain} -> {key})"
            )
        self._stack.append((host, key))
        try:
            value = self._render(raw, host, key)
        finally:
            self._stack.pop()
        self._done[(host, key)] = value
        if (host, key) in self.tainted:
            self.tainted.update(self._stack)  # whatever uses it is derived from a secret too
        return value

    def magic(self, host: str) -> dict[str, Any]:
        """The names Ansible defines for every host (inventory/host.py get_magic_vars, vars/manager.py)."""
        name = host
        try:
            ipaddress.ip_address(name)
            short = name
        except ValueError:
            short = name.split(".")[0]
        return {
            "inventory_hostname": name,
            "inventory_hostname_short": short,
            "group_names": sorted(group for group in self.hosts[host].groups if group != "all"),
            "groups": self.groups,
            "hostvars": _HostVars(self),
        }

    def _render(self, value: Any, host: str, key: str) -> Any:
        if isinstance(value, Unsafe):
            return str(value)
        if isinstance(value, list):
            return [self._render(item, host, key) for item in value]
        if isinstance(value, dict):
            return {name: self._render(item, host, key) for name, item in value.items()}
        if not isinstance(value, str) or not has_template(value):
            return value
        try:
            return self._template(value, _HostScope(self, host))
        except InventoryError:
            raise
        except jinja2.UndefinedError as exc:
            raise self._error(host, key, value, f"{exc.message}") from None
        except jinja2.TemplateError as exc:
            raise self._error(host, key, value, f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # a filter's own error (bad regex, int('x')...)
            raise self._error(host, key, value, f"{type(exc).__name__}: {exc}") from None

    def _template(self, text: str, scope: Mapping[str, Any]) -> Any:
        expression = _single_expression(self.env, text)
        if expression is not None:
            # Native result for one whole expression: "{{ 5 }}" is 5, as ansible-core 2.19 renders it.
            template = self.env.from_string("{% set __berth_result = (" + expression + ") %}")
            # shared: names are looked up lazily in scope (jinja2 only reads it as a mapping; never copied)
            context = template.new_context(cast(dict[str, Any], scope), shared=True)
            for _ in template.root_render_func(context):
                pass
            result = context.vars["__berth_result"]
            if isinstance(result, jinja2.Undefined):
                result._fail_with_undefined_error()
            return result
        template = self.env.from_string(text)
        context = template.new_context(cast(dict[str, Any], scope), shared=True)
        return self.env.concat(template.root_render_func(context))

    def _error(self, host: str, key: str, raw: str, problem: str) -> InventoryError:
        origin = self.hosts[host].origins.get(key, "?")
        return InventoryError(f"{origin}: {key} (host {host}): {problem} in template {raw!r}")


_MISSING = object()


def _untag(value: Any) -> Any:
    """Plain strings for ``!unsafe`` ones (once rendering is done, the tag has no meaning)."""
    if isinstance(value, Unsafe):
        return str(value)
    if isinstance(value, list):
        return [_untag(item) for item in value]
    if isinstance(value, dict):
        return {key: _untag(item) for key, item in value.items()}
    return value


class _HostScope(Mapping[str, Any]):
    """A host's names for Jinja2, rendered on first use: magic names, its variables, Jinja2's globals."""

    def __init__(self, renderer: Renderer, host: str) -> None:
        self.renderer = renderer
        self.host = host
        self.magic = renderer.magic(host)

    def __getitem__(self, key: str) -> Any:
        if key in self.magic:
            return self.magic[key]
        if key in self.renderer.hosts[self.host].vars:
            return self.renderer.variable(self.host, key)
        return self.renderer.env.globals[key]

    def __contains__(self, key: object) -> bool:
        return (
            key in self.magic or key in self.renderer.hosts[self.host].vars or key in self.renderer.env.globals
        )

    def __iter__(self) -> Iterator[str]:
        yield from dict.fromkeys([*self.magic, *self.renderer.hosts[self.host].vars])

    def __len__(self) -> int:
        return len(list(iter(self)))


class _HostVars(Mapping[str, Any]):
    """``hostvars``: every host's scope, by name."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer

    def __getitem__(self, host: str) -> Any:
        if host not in self.renderer.hosts:
            raise KeyError(host)
        return _HostScope(self.renderer, host)

    def __iter__(self) -> Iterator[str]:
        return iter(self.renderer.hosts)

    def __len__(self) -> int:
        return len(self.renderer.hosts)


def _single_expression(env: jinja2.Environment, text: str) -> str | None:
    """The source of the expression if ``text`` is exactly one ``{{ ... }}``, else None."""
    try:
        body = env.parse(text).body
    except jinja2.TemplateSyntaxError:
        return None  # rendering reports it with the file and line
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    if isinstance(body[0].nodes[0], nodes.TemplateData):
        return None
    inner = text.strip()[2:-2]
    return inner.strip("-+").strip()


def _environment() -> jinja2.Environment:
    # Immutable sandbox: a template reads the inventory, it cannot change it (groups['web'].append(...)).
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                        autoescape=False)
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    return env


# -- Ansible's common filters (plugins/filter/core.py, 2.19), reimplemented -------------------------------

_BOOL_TRUE = {"yes", "on", "true", "1"}
_BOOL_FALSE = {"no", "off", "false", "0"}


def to_bool(value: Any) -> bool:
    check = str(value).lower() if isinstance(value, str | int) else value
    if check in _BOOL_TRUE:
        return True
    if check in _BOOL_FALSE:
        return False
    raise ValueError(f"the bool filter cannot read {value!r} as a boolean")


def to_yaml(value: Any, *_args: Any, default_flow_style: bool | None = None, **kwargs: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True, default_flow_style=default_flow_style, **kwargs)


def to_nice_yaml(value: Any, indent: int = 4, *_args: Any, **kwargs: Any) -> str:
    return to_yaml(value, indent=indent, default_flow_style=False, **kwargs)


def to_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, **kwargs)


def to_nice_json(value: Any, indent: int = 4, sort_keys: bool = True, **kwargs: Any) -> str:
    kwargs.pop("separators", None)
    return json.dumps(value, indent=indent, sort_keys=sort_keys, separators=(",", ": "), **kwargs)


def regex_replace(value: Any = "", pattern: str = "", replacement: str = "", ignorecase: bool = False,
                  multiline: bool = False, count: int = 0) -> str:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.compile(pattern, flags).sub(replacement, str(value), count=count)


def regex_search(value: Any, pattern: str, ignorecase: bool = False, multiline: bool = False) -> str | None:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    match = re.search(pattern, str(value), flags)
    return match.group(0) if match else None


def ternary(value: Any, true_val: Any, false_val: Any, none_val: Any = None) -> Any:
    if value is None and none_val is not None:
        return none_val
    return true_val if value else false_val


def combine(*dicts: Mapping[str, Any], recursive: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in dicts:
        for key, value in item.items():
            if recursive and isinstance(result.get(key), dict) and isinstance(value, Mapping):
                result[key] = combine(result[key], value, recursive=True)
            else:
                result[key] = value
    return result


def mandatory(value: Any, msg: str | None = None) -> Any:
    if isinstance(value, jinja2.Undefined):
        if msg is not None:
            raise ValueError(msg)
        value._fail_with_undefined_error()
    return value


FILTERS: dict[str, Callable[..., Any]] = {
    "bool": to_bool,
    "to_json": to_json,
    "to_nice_json": to_nice_json,
    "from_json": json.loads,
    "to_yaml": to_yaml,
    "to_nice_yaml": to_nice_yaml,
    "from_yaml": yaml.safe_load,
    "regex_replace": regex_replace,
    "regex_search": regex_search,
    "regex_escape": re.escape,
    "ternary": ternary,
    "combine": combine,
    "mandatory": mandatory,
    "quote": lambda value: shlex.quote("" if value is None else str(value)),
    "basename": os.path.basename,
    "dirname": os.path.dirname,
    "b64encode": lambda value: base64.b64encode(str(value).encode()).decode(),
    "b64decode": lambda value: base64.b64decode(str(value)).decode(),
    "dict2items": lambda value: [{"key": key, "value": item} for key, item in value.items()],
    "items2dict": lambda value, key_name="key", value_name="value": {
        item[key_name]: item[value_name] for item in value
    },
    "flatten": lambda value: [x for item in value for x in (item if isinstance(item, list) else [item])],
    "split": lambda value, sep=None, maxsplit=-1: str(value).split(sep, maxsplit),
}

TESTS: dict[str, Callable[..., bool]] = {
    "match": lambda value, pattern, ignorecase=False: re.match(pattern, str(value), re.I if ignorecase else 0)
    is not None,
    "search": lambda value, pattern, ignorecase=False: re.search(pattern, str(value), re.I if ignorecase else 0)
    is not None,
    "regex": lambda value, pattern: re.search(pattern, str(value)) is not None,
}
