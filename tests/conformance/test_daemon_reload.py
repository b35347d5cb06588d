"""berth's reload-or-restart decision for daemon.json against moby's reload code, version by version.

A SIGHUP makes dockerd re-apply only some keys (daemon/reload.go, daemon/reload_unix.go; the
authorization plugins in the SIGHUP handler). berth reloads only when every changed key is one of them in
every dockerd it supports (20.10.24, Debian 12's, to 28.5.2), and restarts otherwise. A reload also applies
only keys present in the new file where the code tests ``IsValueSet``: removing such a key needs a restart.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from berth.engine.roles import RoleContext
from tests.conformance.upstream import load, reloaded_keys

ROLE = RoleContext(roles_dir=Path(__file__).resolve().parents[2] / "roles").module("docker_engine")
FACTS = load("moby_reload.json")


def _in_every_version(table: dict[str, list[str]]) -> set[str]:
    return functools.reduce(set.__and__, (set(keys) for keys in table.values()))


def _handlers(old: dict, new: dict) -> tuple[str, ...]:
    return ROLE._daemon_json_handlers(json.dumps(old).encode(), json.dumps(new).encode())


def test_berth_reloads_exactly_the_keys_every_supported_dockerd_reloads() -> None:
    assert set(ROLE.RELOADABLE) == _in_every_version(reloaded_keys())


def test_builder_is_not_reloadable() -> None:
    assert "builder" not in ROLE.RELOADABLE
    assert _handlers({"builder": {"gc": {"enabled": True}}}, {"builder": {"gc": {"enabled": False}}}) == (
        ROLE.RESTART,)


@pytest.mark.parametrize("key", sorted(_in_every_version(reloaded_keys())))
def test_a_reloadable_key_that_changes_reloads(key: str) -> None:
    assert _handlers({key: "a", "log-level": "info"}, {key: "b", "log-level": "info"}) == (ROLE.RELOAD,)


# IsValueSet-tested keys the reload code does not first reset to a default when absent (the max-* keys and the
# diagnostic port are reset; see RELOAD_RESETS_WHEN_ABSENT in the role).
KEPT_WHEN_ABSENT = sorted(_in_every_version(FACTS["tested_with_is_value_set"]) - ROLE.RELOAD_RESETS_WHEN_ABSENT)


@pytest.mark.parametrize("key", KEPT_WHEN_ABSENT)
def test_removing_a_key_the_reload_would_keep_restarts(key: str) -> None:
    assert _handlers({key: "x", "log-level": "info"}, {"log-level": "info"}) == (ROLE.RESTART,)


def test_the_facts_cover_the_keys_the_issue_names() -> None:
    """The extraction is not empty or stale: it finds the keys whose removal the first version got wrong."""
    assert {"insecure-registries", "registry-mirrors", "labels", "live-restore"} <= set(KEPT_WHEN_ABSENT)
