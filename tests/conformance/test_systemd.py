"""The gitlab-runner drop-in berth writes by default is the one GitLab documents for a graceful stop.

gitlab-runner's docs (docs/commands/_index.md, "`gitlab-runner stop` doesn't shut down gracefully") give
``KillSignal=SIGQUIT`` and ``TimeoutStopSec=infinity``: SIGQUIT makes the runner finish its jobs
(commands/multi.go), and any finite stop timeout lets systemd SIGKILL it in the middle of a long job.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

from berth.engine.resources import File
from berth.engine.roles import RoleContext
from berth.inventory.loader import Host
from tests.conformance.upstream import load

ROLES = Path(__file__).resolve().parents[2] / "roles"
DROP_IN = "/etc/systemd/system/gitlab-runner.service.d/berth-kill.conf"


def _default_drop_in(tmp_path: Path) -> dict[str, str]:
    defaults = {**yaml.safe_load((ROLES / "gitlab_runner" / "defaults.yml").read_text()),
                **yaml.safe_load((ROLES.parent / "config" / "defaults.yml").read_text())}
    keyring = tmp_path / "gitlab-runner.gpg"
    keyring.write_bytes(b"key")
    variables = {**defaults, "gitlab_runner_repo_keyring_file": str(keyring)}
    host = Host("r1", ["all"], variables, {k: "defaults.yml" for k in variables}, ["gitlab_runner"])
    ctx = RoleContext(roles_dir=ROLES)
    state = ctx.module("gitlab_runner").declare(host, ctx)
    (drop_in,) = [r for r in state.resources if isinstance(r, File) and r.path == DROP_IN]
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(drop_in.content.decode())
    return dict(parser["Service"])


def test_the_default_drop_in_is_the_documented_graceful_stop(tmp_path):
    upstream = load("gitlab_runner_systemd.json")["kill_conf"]
    written = _default_drop_in(tmp_path)
    assert {key: written.get(key) for key in upstream} == upstream
