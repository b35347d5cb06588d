"""Contributions: what a role adds to a document another role owns, declared instead of called.

A shared file has ONE owner role (daemon.json belongs to docker_engine). Other roles never call into the
owner, and the owner never looks for them by name: a role lists, in ``contribute(host)``, the keys it adds to
a named document (``docker.daemon_json``: daemon.json keys, ``docker.listeners``: dockerd's ``hosts``...), and
the owner merges what the host's roles contributed. The owner declares its documents in ``OWNS``.

Rules (checked for every host before any role declares its resources):
- a document is owned by exactly one role of the host; a contribution to a document no role of the host owns
  is an error naming the contributing role (unless the contribution is ``optional``: then it is dropped);
- one key of one document comes from one role: two roles contributing it is an error naming both;
- the owner merging a contributed key that its own variables set to another value reports it (``conflict``: the
  variable's file and line, and the role).

``contribute`` reads the host's variables only (no CA, no other host): the verify checks call it too, to know
what the host should hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from berth.errors import ConfigError


@dataclass(frozen=True)
class Contribution:
    """``value`` under ``key`` in ``document``; ``role`` is filled in by the engine."""

    document: str
    key: str
    value: Any
    optional: bool = False      # dropped when no role of the host owns the document
    role: str = ""


class Contributions:
    """Every contribution of one host's roles, by document; read by the owner roles and by the checks."""

    def __init__(self, items: Iterable[Contribution] = (), owners: Mapping[str, str] | None = None) -> None:
        self.owners = dict(owners or {})
        self._by_document: dict[str, dict[str, Contribution]] = {}
        for item in items:
            self._by_document.setdefault(item.document, {})[item.key] = item

    def to(self, document: str) -> dict[str, Contribution]:
        """The contributions to ``document``, key -> Contribution (who contributed it: ``.role``)."""
        return dict(self._by_document.get(document, {}))

    def values(self, document: str) -> dict[str, Any]:
        """key -> value of ``document``'s contributions, in the host's role order."""
        return {key: c.value for key, c in self._by_document.get(document, {}).items()}

    def merge(self, document: str, own: Mapping[str, Any], *, where: Callable[[str], str]) -> dict[str, Any]:
        """``own`` (the owner's keys) with the contributed keys added; a key in both is an error.

        ``where(key)`` names the owner's source of a key (the variable's file and line).
        """
        merged = dict(own)
        for key, item in self.to(document).items():
            if key in own and own[key] != item.value:
                raise conflict(document, key, where(key), f"role {item.role}")
            merged[key] = item.value
        return merged


def conflict(document: str, key: str, first: str, second: str) -> ConfigError:
    return ConfigError(f"{document}: key {key!r} is set by {first} and by {second}; keep one of them "
                       "(a key of a shared document has one source)")


def collect(host: Any, roles: Mapping[str, ModuleType]) -> Contributions:
    """Call every role's ``contribute(host)`` (roles in the host's order) and check the rules above.

    ``roles`` maps each of the host's role names to its loaded module, in the host's order.
    """
    owners: dict[str, str] = {}
    for name, module in roles.items():
        for document in getattr(module, "OWNS", None) or {}:
            if document in owners:
                raise ConfigError(f"{host.name}: roles {owners[document]} and {name} both own document {document!r}")
            owners[document] = name
    items: dict[tuple[str, str], Contribution] = {}
    for name, module in roles.items():
        contribute = getattr(module, "contribute", None)
        for raw in contribute(host) if contribute is not None else ():
            if not isinstance(raw, Contribution):
                raise TypeError(f"contribute() returned {raw!r}, not a Contribution")
            item = Contribution(raw.document, raw.key, raw.value, raw.optional, name)
            owner = owners.get(item.document)
            if owner is None:
                if item.optional:
                    continue
                raise ConfigError(
                    f"{host.name}: role {name} contributes {item.key!r} to {item.document!r}, which no role of this "
                    f"host owns (roles: {', '.join(roles)}); add the role that owns it to berth_roles")
            earlier = items.get((item.document, item.key))
            if earlier is not None:
                raise conflict(item.document, item.key, f"role {earlier.role}", f"role {name}")
            items[(item.document, item.key)] = item
    return Contributions(items.values(), owners)
