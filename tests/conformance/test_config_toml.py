"""The config.toml berth writes, key by key, against the structs gitlab-runner decodes it into.

gitlab-runner reads config.toml with BurntSushi/toml into ``common.Config`` (common/config.go): a key with
no struct field is ignored without a word, and a value of the wrong TOML type makes the runner refuse the
whole file. So every key berth writes, in every mode and privilege form, must be a field of the struct for
its table, with a value of that field's type.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from typing import Any

import pytest

from berth.gitlab.runner_config import PRIVILEGED_FORMS, RegisteredToken, merge_config, parse_runners
from tests.conformance.upstream import runner_tables

URL = "https://gitlab.example.com"
GLOBALS = {"concurrent": 4, "check_interval": 3, "shutdown_timeout": 3600, "log_level": "info",
           "log_format": "json", "listen_address": "127.0.0.1:9252"}


def _runner(mode: str, form: str | None) -> dict[str, Any]:
    runner: dict[str, Any] = {"name": f"c-{mode}", "url": URL, "mode": mode, "token": "glrt-conformance0000000",
                              "limit": 2, "request_concurrency": 1, "environment": ["FOO=bar"],
                              "volumes": ["/srv/cache:/srv/cache:ro"],
                              "services": [{"name": "postgres:16", "alias": "db"}]}
    if form:
        runner["privileged_form"] = form
    if mode == "remote":
        runner["remote_host"] = "tcp://r2.example.com:2376"
    return runner


CASES = [("dind", form) for form in PRIVILEGED_FORMS] + [("socket", None), ("remote", None)]


def _written(mode: str, form: str | None) -> dict[str, Any]:
    declared = _runner(mode, form)
    specs, _ = parse_runners([declared], "conformance.yml:1")
    tokens = {specs[0].name: RegisteredToken(7, "glrt-conformance0000000", None)}
    merged = merge_config(None, path="config.toml", globals_=GLOBALS, runners=specs, tokens=tokens,
                          now=datetime(2026, 12, 1, tzinfo=UTC))
    return tomllib.loads(merged.text)


def _matches(go_type: str, value: Any) -> bool:
    """Whether a TOML value decodes into a Go field of this type (BurntSushi/toml's rules)."""
    go_type = go_type.lstrip("*")
    if go_type == "string":
        return isinstance(value, str)
    if go_type in ("int", "int64"):
        return isinstance(value, int) and not isinstance(value, bool)
    if go_type == "bool":
        return isinstance(value, bool)
    if go_type == "time.Time":
        return isinstance(value, datetime | str)
    if go_type in ("[]string", "[]DockerPullPolicy"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if go_type == "StringOrArray":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if go_type in ("map[string]string", "DockerSysCtls", "Labels"):
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if go_type == "map[string]bool":
        return isinstance(value, dict) and all(isinstance(v, bool) for v in value.values())
    if go_type.startswith("[]"):
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    return isinstance(value, dict)  # a struct: a TOML table


def _mismatches(table: str, values: dict[str, Any]) -> list[str]:
    fields = runner_tables()[table]
    problems = []
    for key, value in values.items():
        if key not in fields:
            problems.append(f"[{table}] {key}: no such field in gitlab-runner (it would be ignored)")
        elif not _matches(fields[key], value):
            problems.append(f"[{table}] {key} = {value!r}: gitlab-runner's field is {fields[key]}")
    return problems


@pytest.mark.parametrize(("mode", "form"), CASES, ids=[f"{m}-{f}" if f else m for m, f in CASES])
def test_every_key_is_a_gitlab_runner_field_of_the_right_type(mode: str, form: str | None) -> None:
    config = _written(mode, form)
    problems = _mismatches("global", {k: v for k, v in config.items() if k != "runners"})
    for runner in config["runners"]:
        problems += _mismatches("runners", runner)
        docker = runner["docker"]
        problems += _mismatches("runners.docker", docker)
        for service in docker.get("services", []):
            problems += _mismatches("runners.docker.services", service)
    assert problems == []


def test_the_checker_refuses_what_gitlab_runner_would_not_read() -> None:
    """The check above can fail: a misspelt key and a wrong type are both reported."""
    assert _mismatches("runners.docker", {"privilege": True, "volumes": "/cache", "shm_size": 0}) == [
        "[runners.docker] privilege: no such field in gitlab-runner (it would be ignored)",
        "[runners.docker] volumes = '/cache': gitlab-runner's field is []string",
    ]


def test_facts_come_from_gitlab_runner_source() -> None:
    """The struct facts were extracted from gitlab-runner's own config.go (extract.py), not written by hand."""
    facts = runner_tables()
    assert {"privileged", "services_privileged", "allowed_privileged_services", "services_security_opt"} <= set(
        facts["runners.docker"])
    assert facts["global"]["shutdown_timeout"] == "int"
