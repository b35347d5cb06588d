"""config.toml backups are pruned (#11): each one holds the tokens of runners removed since. The newest
gitlab_runner_config_backups (default 3) are kept."""

from __future__ import annotations

import base64
from pathlib import Path

from berth.remote import agent
from tests.unit.test_runners import CONFIG, FakeSession, make_host, plan_for, probe, registered_config


def write_step(path: Path, text: str, **extra: object) -> dict:
    return {"op": "write", "path": str(path), "content": base64.b64encode(text.encode()).decode(), "mode": 0o600,
            "owner": "root", "group": "root", "backup": True, **extra}


def test_only_the_newest_backups_are_kept(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("current")
    old = [tmp_path / f"config.toml.2024010{d}T000000.bak" for d in range(1, 6)]
    for path in old:
        path.write_text('token = "glrt-of-a-removed-runner"')
    (tmp_path / "other.toml.20240101T000000.bak").write_text("not ours")
    answer = agent.apply({"steps": [write_step(config, "new", backup_keep=3)], "handlers": []})
    assert answer["error"] is None
    backups = sorted(p.name for p in tmp_path.glob("config.toml.*.bak"))
    assert len(backups) == 3 and backups[:2] == [old[3].name, old[4].name]     # and the one just made
    assert (tmp_path / "other.toml.20240101T000000.bak").exists()


def test_the_role_passes_gitlab_runner_config_backups(tmp_path: Path) -> None:
    host = make_host(tmp_path, [{"name": "build", "url": "https://gitlab.example.com", "mode": "socket",
                                 "token_env": "X"}], gitlab_runner_config_backups=5, gitlab_runner_concurrent=9)
    _, prepare = plan_for(host, probe(config=registered_config("https://gitlab.example.com")))
    steps = [step.wire() for call in prepare for step in call(FakeSession(host))]
    (write,) = [s for s in steps if s["op"] == "write" and s["path"] == CONFIG]
    assert write["backup"] is True and write["backup_keep"] == 5
