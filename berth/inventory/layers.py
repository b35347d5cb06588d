"""Variables with provenance: where each value came from (file and line), and how to show values in
messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from berth.errors import InventoryError
from berth.inventory.files import decrypt_values
from berth.inventory.vault import Password
from berth.inventory.yamlfile import LineDict, plain


@dataclass(frozen=True)
class Origin:
    """Where a value came from: a file (relative to base_dir when under it) and line, or the command line."""

    source: str
    line: int | None = None

    def __str__(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"


@dataclass
class Layer:
    """Variables from one source (or several merged), each with its origin."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)

    def add(self, data: LineDict, source: str, passwords: Sequence[Password] = ()) -> None:
        for key, value in data.items():
            origin = Origin(source, data.lines.get(key))
            check_name(key, origin)
            self.set(key, decrypt_values(value, origin.source, origin.line, passwords), origin)

    def set(self, key: str, value: Any, origin: Origin) -> None:
        self.values[key] = value
        self.origins[key] = origin

    @classmethod
    def merged(cls, layers: Iterable[Layer]) -> Layer:
        result = cls()
        for layer in layers:
            result.values.update(layer.values)
            result.origins.update(layer.origins)
        return result

    def plain(self) -> dict[str, Any]:
        return {key: plain(value) for key, value in self.values.items()}


def check_name(key: Any, origin: Origin) -> None:
    if not isinstance(key, str):
        raise InventoryError(f"{origin}: variable names must be strings, got {key!r}")


def kind(value: Any) -> str:
    """The kind of value in words, for "must be ..." and "got ..." messages."""
    if value is None:
        return "null"
    kinds: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
    ]
    for known, words in kinds:
        if isinstance(value, known):
            return words
    return f"a {type(value).__name__}"


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    for container in (dict, list):  # not LineDict/LineList
        if isinstance(value, container):
            return container.__name__
    return type(value).__name__


def show(value: Any, limit: int = 60) -> str:
    text = repr(plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."
