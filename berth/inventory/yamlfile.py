"""YAML loading that remembers line numbers, so that every value can say which file and line it came from.

Mappings load as :class:`LineDict` (a dict with ``.line`` and ``.lines[key]``) and sequences as
:class:`LineList` (a list with ``.line``). Use :func:`plain` before handing values to code that dumps or
mutates them. YAML problems become a :class:`~berth.errors.BerthError` reading ``file:line:column: problem``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from berth.errors import BerthError, InventoryError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class LineDict(dict):
    """A YAML mapping that remembers its own line and the line of each key (1-based)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line: int | None = None
        self.lines: dict[Any, int] = {}


class LineList(list):
    """A YAML sequence that remembers the line it starts on (1-based)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line: int | None = None


class LineLoader(yaml.SafeLoader):
    """A SafeLoader that builds LineDict/LineList and rejects duplicate keys.

    Duplicate keys are an error rather than "last one wins" because in an inventory a repeated host or
    variable silently drops the first definition.
    """

    def fill_mapping(self, data: LineDict, node: yaml.MappingNode) -> None:
        self._reject_duplicates(node)
        self.flatten_mapping(node)  # resolves `<<: *anchor`; merged keys come first so explicit keys win
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=False)
            try:
                hash(key)
            except TypeError:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found an unhashable key",
                    key_node.start_mark,
                ) from None
            data[key] = self.construct_object(value_node, deep=False)
            data.lines[key] = key_node.start_mark.line + 1

    def _reject_duplicates(self, node: yaml.MappingNode) -> None:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first at line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1


def _construct_map(loader: LineLoader, node: yaml.MappingNode) -> Iterator[LineDict]:
    data = LineDict()
    data.line = node.start_mark.line + 1
    yield data  # yield first so that recursive anchors work, as SafeConstructor does
    loader.fill_mapping(data, node)


def _construct_seq(loader: LineLoader, node: yaml.SequenceNode) -> Iterator[LineList]:
    data = LineList()
    data.line = node.start_mark.line + 1
    yield data
    data.extend(loader.construct_sequence(node))


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def parse_yaml(
    text: str, label: str, error: type[BerthError] = InventoryError, loader: type[LineLoader] = LineLoader
) -> Any:
    """Parse one YAML document; syntax errors become ``error("label:line:column: problem")``."""
    try:
        return yaml.load(text, Loader=loader)  # a LineLoader is a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            raise error(f"{label}: {problem}") from exc
        raise error(f"{label}:{mark.line + 1}:{mark.column + 1}: {problem}") from exc
    except yaml.YAMLError as exc:  # e.g. ReaderError for control characters
        raise error(f"{label}: {exc}") from exc


def read_text(path: Path, label: str, error: type[BerthError] = InventoryError) -> str:
    """Read a UTF-8 text file; problems become ``error("label: problem")``."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{label}: file not found") from None
    except UnicodeDecodeError:
        raise error(f"{label}: not UTF-8 text") from None
    except OSError as exc:
        raise error(f"{label}: cannot read ({exc.strerror})") from None


def load_yaml(path: Path, label: str, error: type[BerthError] = InventoryError) -> Any:
    """Read and parse a YAML file; ``label`` is how messages name it. An empty file gives None."""
    return parse_yaml(read_text(path, label, error), label, error)


def plain(value: Any) -> Any:
    """A deep copy with LineDict/LineList turned into dict/list (safe to dump, mutate or share)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
