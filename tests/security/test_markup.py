"""Host-provided and error text is printed as text, never as rich markup (#11): a `[` in a path must not
crash the run (before --json is written) nor restyle the output."""

from __future__ import annotations

import io

import pytest
from invoke.exceptions import Exit
from rich.console import Console

from berth.cli import app as cli
from berth.engine import rollout
from berth.engine.converge import HostReport, Status
from berth.errors import HostFailed

HOSTILE = "/srv/[/]weird/[bold red]x[/bold red]/config.toml"


@pytest.fixture
def output(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=300))
    return out


def test_host_errors_and_notes_print_verbatim(output: io.StringIO) -> None:
    report = HostReport("r[1]", Status.FAILED, error=f"r1: cannot write {HOSTILE}", notes=[f"note about {HOSTILE}"],
                        handlers=["restart [docker]"])
    cli.print_reports([report], title="t")
    text = output.getvalue()
    assert HOSTILE in text and "r[1]" in text


def test_an_error_message_with_markup_becomes_its_exit_code(output: io.StringIO) -> None:
    @cli.exits_cleanly
    def task() -> None:
        raise HostFailed(f"r1: {HOSTILE} is not a directory")

    with pytest.raises(Exit) as raised:
        task()
    assert raised.value.code == 2 and HOSTILE in output.getvalue()


def test_rollout_table_and_summary_with_markup_in_names(output: io.StringIO) -> None:
    result = rollout.RolloutResult(hosts=[rollout.RolloutHost("r[/]1", rollout.Outcome.FAILED, error=HOSTILE, batch=1)],
                                   batch_size=1,
                                   batches=1, batches_run=1, stopped=f"host r[/]1 failed: {HOSTILE}")
    cli.print_rollout(result, title="rollout")
    assert HOSTILE in output.getvalue()


def test_inventory_show_masks_by_name_and_prints_markup_verbatim() -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    extra = {"docker_daemon_options": {"labels": ["password=hunter2x", "path=/srv/[/]x"]},
             "gitlab_runners": [{"name": "a", "url": "https://u:pw12345x@gitlab.example.com", "mode": "socket",
                                 "token": "plainsecret1"}]}
    done = subprocess.run([sys.executable, "-m", "invoke", "inventory.show", "--host", "r1", "-e", json.dumps(extra)],
                          cwd=root, capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"}, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = done.stderr
    assert "/srv/[/]x" in shown and "password=***" in shown and "https://***@gitlab.example.com" in shown
    for secret in ("hunter2x", "pw12345x", "plainsecret1"):
        assert secret not in done.stderr + done.stdout
