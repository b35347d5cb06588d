"""Structural redaction (#11): secrets are masked by what they are, in the --diff text and in every report.

The config.toml diff is planned by the real gitlab_runner role from a probe answer, and printed by the
real ``--diff`` printer; the reports go through the real writers (JSON, JUnit).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from berth import redact as R
from berth.checks.verify import CheckResult, HostChecks, junit_xml
from berth.cli import app as cli
from berth.engine.converge import HostReport, Status
from berth.redact import redact
from tests.unit.test_runners import make_host, plan_for, probe

URL_PASSWORD = "urlPassw0rdX"
DEPLOY_PASSWORD = "deployPassw0rdX"
ACCESS_KEY = "AKIAEXAMPLEKEYX"
SECRET_KEY = "wJalrXUtnFEMIexampleX"
SESSION_TOKEN = "sessionTokenValueX"
VALUES = (URL_PASSWORD, DEPLOY_PASSWORD, ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)

# A hand-made runner block berth keeps (with an S3 cache), and berth's own runner, both already on the host.
HOST_CONFIG = f'''concurrent = 4
check_interval = 3

[[runners]]
  name = "by-hand"
  url = "https://gitlab.example.com"
  token = "glrt-handmadeTOKEN"
  executor = "docker"
  [runners.cache]
    Type = "s3"
    [runners.cache.s3]
      AccessKey = "{ACCESS_KEY}"
      SecretKey = "{SECRET_KEY}"
      SessionToken = "{SESSION_TOKEN}"
'''


def diff_text(tmp_path: Path, host_config: str | None) -> str:
    runner = {"name": "build", "url": f"https://deploy:{URL_PASSWORD}@gitlab.example.com", "mode": "socket",
              "environment": [f"DEPLOY_PASSWORD={DEPLOY_PASSWORD}", "LANG=C.UTF-8"], "token": "glrt-x" * 5}
    host = make_host(tmp_path, [runner])
    plan, _ = plan_for(host, probe(config=host_config))
    out = io.StringIO()
    saved, cli.console = cli.console, Console(file=out, width=200)
    try:
        cli.print_plan(host.name, plan)
    finally:
        cli.console = saved
    return out.getvalue()


@pytest.mark.parametrize("host_config", [None, HOST_CONFIG], ids=["new-file", "existing-file"])
def test_diff_shows_no_secret_of_any_kind(tmp_path: Path, host_config: str | None) -> None:
    text = diff_text(tmp_path, host_config)
    assert "config.toml" in text and "DEPLOY_PASSWORD=***" in text and "https://***@gitlab.example.com" in text
    for value in VALUES:
        assert value not in text


def test_diff_of_a_file_whose_hand_made_block_holds_s3_keys(tmp_path: Path) -> None:
    # The hand-made block is re-emitted when the file is rewritten; each value stays hidden.
    old = HOST_CONFIG.replace("concurrent = 4", "concurrent = 1")
    text = redact(cli_diff(old, HOST_CONFIG))
    for value in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN):
        assert value not in text
    assert 'AccessKey = "***"' in text and 'SecretKey = "***"' in text


def cli_diff(old: str, new: str) -> str:
    import difflib

    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), n=20))


def test_json_report_is_redacted_like_the_console(tmp_path: Path) -> None:
    note = (f'config.toml keeps environment = ["DEPLOY_PASSWORD={DEPLOY_PASSWORD}"], url '
            f'https://u:{URL_PASSWORD}@gitlab.example.com, SecretKey = "{SECRET_KEY}"')
    report = HostReport("r1", Status.FAILED, notes=[note], error=f"token glptt-{SESSION_TOKEN} refused",
                        facts={"AccessKey": ACCESS_KEY})
    path = tmp_path / "report.json"
    cli.write_json(str(path), [{**report.as_dict(), "credentials": {"AccessKey": ACCESS_KEY}}])
    text = path.read_text()
    for value in VALUES:
        assert value not in text
    data = json.loads(text)
    assert data[0]["credentials"] == {"AccessKey": "***"} and data[0]["host"] == "r1"


def test_junit_report_is_redacted(tmp_path: Path) -> None:
    check = CheckResult("gitlab_runner/config", "gitlab_runner", "config", "failed",
                        message=f"environment DEPLOY_PASSWORD={DEPLOY_PASSWORD} in [[runners]]",
                        detail=f'AccessKey = "{ACCESS_KEY}"\nurl = "https://x:{URL_PASSWORD}@h"')
    path = tmp_path / "junit.xml"
    cli.write_junit(str(path), junit_xml([HostChecks("r1", "failed", checks=[check])]))
    text = path.read_text()
    for value in (DEPLOY_PASSWORD, ACCESS_KEY, URL_PASSWORD):
        assert value not in text
    assert "<testcase" in text


@pytest.mark.parametrize("name, secret", [
    ("token", True), ("AccessKey", True), ("SecretKey", True), ("password", True), ("DEPLOY_PASSWORD", True),
    ("api_key", True), ("credentials", True), ("DOCKER_AUTH_CONFIG", True), ("SessionToken", True),
    ("key_file", False), ("tls_key_file", False), ("token_file", False), ("token_env", False),
    ("CredentialsFile", False), ("token_expires_at", False), ("monkey", False), ("DOCKER_CERT_PATH", False),
])
def test_which_names_are_secret(name: str, secret: bool) -> None:
    assert R.secret_name(name) is secret


def test_structured_data_masks_whole_values_under_secret_keys() -> None:
    data = {"runner": {"token": "plain-looking", "key_file": "/etc/k.pem", "environment": ["A_TOKEN=abcd", "B=c"]}}
    assert R.redact_data(data) == {"runner": {"token": "***", "key_file": "/etc/k.pem",
                                            "environment": ["A_TOKEN=***", "B=c"]}}


@pytest.mark.parametrize("line, secret", [
    ('credentials = ["user1234", "pass5678"]', "pass5678"),
    ('AccessKey = { id = "AKIA1234567" }', "AKIA1234567"),
    ("password = hunter2x  # comment", "hunter2x"),
    ("'SecretKey': 'abcd1234'", "abcd1234"),
    ('"api_key": "k-1234567"', "k-1234567"),
    ("token=abcd1234&x=1", "abcd1234"),
])
def test_secret_values_in_every_textual_form(line: str, secret: str) -> None:
    assert secret not in redact(line)


def test_the_shells_working_directory_is_not_a_secret() -> None:
    """PWD is "print working directory": masking it hid every path under the project in berth's output."""
    from berth.redact import environment_secrets

    env = {"PWD": "/srv/berth", "OLDPWD": "/home/ops", "DB_PWD": "hunter22", "GITLAB_TOKEN": "glpat-x1y2z3"}
    assert sorted(environment_secrets(env)) == ["glpat-x1y2z3", "hunter22"]
