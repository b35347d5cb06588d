"""The gitlab_runner role's config.toml resource (berth.gitlab.runners) against the GitLab STAND-IN over real HTTP.

The role is declared and planned as the engine does it (declare_roles, make_plan), from a probe answer
written here; "apply" is the plan's prepare (the registrations) plus the planned steps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.engine.plan import make_plan
from berth.engine.protocol import WriteStep, envelope
from berth.engine.roles import RoleContext, declare_roles
from berth.errors import HostFailed
from berth.gitlab.runners import RELOAD_RUNNER, RESTART_RUNNER, SYSTEM_ID_RE, runner_system_id
from berth.inventory.layers import Origin
from berth.inventory.loader import Host

try:
    from tests.standins.gitlab_api import GitLabStandIn
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.standins.gitlab_api import GitLabStandIn

ROOT = Path(__file__).resolve().parents[2]
CTX = RoleContext(ROOT / "roles")
# As the inventory merges them: role defaults, then config/defaults.yml.
DEFAULTS = {**yaml.safe_load((ROOT / "roles" / "gitlab_runner" / "defaults.yml").read_text()),
            **yaml.safe_load((ROOT / "config" / "defaults.yml").read_text())}
CONFIG = "/etc/gitlab-runner/config.toml"
SYSTEM_ID_FILE = "/etc/gitlab-runner/.runner_system_id"
MACHINE_ID = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99"
PAT = "glpat-MARKERaccess"
TOKEN = "glrt-MARKERshared-runner"


def expected_system_id(machine_id: str) -> str:
    # gitlab-runner commands/internal/configfile/system_id_state.go GenerateUniqueSystemID, written out again.
    return "s_" + hmac.new(machine_id.encode(), b"gitlab-runner", hashlib.sha256).hexdigest()[:12]


def make_host(tmp_path: Path, runners: list[dict[str, Any]], **variables: Any) -> Host:
    deb = tmp_path / "gitlab-runner.deb"
    deb.write_bytes(b"not really a package")
    merged = {**DEFAULTS, "gitlab_runner_install_method": "local-debs", "gitlab_runner_local_debs": [str(deb)],
              "gitlab_runners": runners,
              "gitlab_runner_insecure_http_urls": ["http://127.0.0.1"],   # the stand-in: plain http, random port
              **variables}
    return Host("r9", ["all"], merged, {k: Origin("test.yml") for k in merged}, ["gitlab_runner"])


def _file(text: str) -> dict[str, Any]:
    return {"exists": True, "is_dir": False, "mode": 0o600, "owner": "root", "group": "root",
            "sha256": hashlib.sha256(text.encode()).hexdigest(), "content": base64.b64encode(text.encode()).decode()}


def probe(*, config: str | None = None, system_id: str | None = None, machine_id: str | None = MACHINE_ID,
          installed: bool = True) -> dict[str, Any]:
    files = {CONFIG: _file(config) if config is not None else {"exists": False}}
    files[SYSTEM_ID_FILE] = _file(system_id) if system_id is not None else {"exists": False}
    if machine_id is not None:
        files["/etc/machine-id"] = _file(machine_id + "\n")
    return {"facts": {}, "files": files, "packages": {"gitlab-runner": "17.5.0-1" if installed else None},
            "services": {"gitlab-runner": {"active": installed, "enabled": installed, "loaded": installed}}}


@dataclass
class FakeSession:
    host: Host


def plan_for(host: Host, found: dict[str, Any]):
    """The plan, and what its apply prepares (the registrations)."""
    states = declare_roles(host, CTX)
    plan = make_plan([r for s in states for r in s.resources], [h for s in states for h in s.handlers], found,
                     derived=[d for s in states for d in s.derived], host=host, ctx=CTX)
    return plan, plan.prepare


def apply(host: Host, plan, prepare) -> str:
    """The registrations (prepare) and the config.toml text the apply would write."""
    for step in prepare:
        plan.steps += step(FakeSession(host))
    (write,) = [s for s in plan.steps if isinstance(s, WriteStep) and s.path == CONFIG]
    return write.content.decode()


def runner_block(text: str, name: str) -> dict[str, Any]:
    return next(r for r in tomllib.loads(text)["runners"] if r["name"] == name)


def registered_config(url: str, token: str = TOKEN, name: str = "build") -> str:
    return (f'concurrent = 4\ncheck_interval = 3\nshutdown_timeout = 3600\nlog_level = "info"\n\n'
            f'[[runners]]\n  name = "{name}"\n  url = "{url}"\n  id = 1\n  token = "{token}"\n'
            '  token_obtained_at = 2025-01-01T00:00:00Z\n  token_expires_at = 0001-01-01T00:00:00Z\n'
            '  executor = "docker"\n  [runners.docker]\n    image = "docker:27.5-cli"\n')


@pytest.fixture
def gl():
    with GitLabStandIn(access_token=PAT) as standin:
        yield standin


@pytest.fixture
def gl2():
    with GitLabStandIn(access_token=PAT) as standin:
        yield standin


# -- item 11a: one system ID, the runner's ---------------------------------------------------------


def test_system_id_is_the_runners_own_and_written_before_the_package_starts_the_runner(tmp_path, gl, monkeypatch):
    runner = gl.add_runner(token=TOKEN)
    monkeypatch.setenv("BUILD_TOKEN", TOKEN)
    host = make_host(tmp_path, [{"name": "build", "url": gl.url, "mode": "socket", "token_env": "BUILD_TOKEN"}])
    plan, derived = plan_for(host, probe(installed=False))
    steps = [s.wire() for s in plan.steps]
    ops = [(s["op"], s.get("path")) for s in steps]
    system_id = expected_system_id(MACHINE_ID)
    assert ops[:2] == [("directory", "/etc/gitlab-runner"), ("write", SYSTEM_ID_FILE)]
    assert base64.b64decode(steps[1]["content"]).decode() == system_id   # bare, as the runner writes it
    assert (steps[1]["mode"], steps[1]["owner"]) == (0o600, "root")
    assert ops.index(("write", SYSTEM_ID_FILE)) < ops.index(("packages", None))
    assert any(c.target == SYSTEM_ID_FILE and system_id in c.summary for c in plan.changes)
    apply(host, plan, derived)
    assert runner.managers == {system_id}           # GitLab knows one manager: the one the runner will be


def test_an_existing_system_id_is_used_and_left_alone(tmp_path, gl, monkeypatch):
    runner = gl.add_runner(token=TOKEN)
    monkeypatch.setenv("BUILD_TOKEN", TOKEN)
    host = make_host(tmp_path, [{"name": "build", "url": gl.url, "mode": "socket", "token_env": "BUILD_TOKEN"}])
    plan, derived = plan_for(host, probe(system_id="r_AbCdEf012345\n"))
    assert SYSTEM_ID_FILE not in [s.wire().get("path") for s in plan.steps]
    apply(host, plan, derived)
    assert runner.managers == {"r_AbCdEf012345"}


def test_a_malformed_system_id_is_replaced_as_the_runner_would(tmp_path, gl, monkeypatch):
    gl.add_runner(token=TOKEN)
    monkeypatch.setenv("BUILD_TOKEN", TOKEN)
    host = make_host(tmp_path, [{"name": "build", "url": gl.url, "mode": "socket", "token_env": "BUILD_TOKEN"}])
    plan, _ = plan_for(host, probe(system_id="s_tooshort"))
    assert plan.steps[1].path == SYSTEM_ID_FILE
    assert plan.steps[1].content.decode() == expected_system_id(MACHINE_ID)


def test_runner_system_id_without_a_machine_id_is_random_r_form():
    first, second = runner_system_id(None), runner_system_id("")
    assert first.startswith("r_") and len(first) == 14 and first[2:].isalnum() and first != second
    assert runner_system_id(MACHINE_ID) == expected_system_id(MACHINE_ID)


def test_no_system_id_is_written_when_nothing_is_registered(tmp_path):
    host = make_host(tmp_path, [])
    plan, _ = plan_for(host, probe(installed=False))
    assert SYSTEM_ID_FILE not in [s.wire().get("path") for s in plan.steps]


# -- item 6: which token goes where ----------------------------------------------------------------


def test_a_glrtr_token_is_verified_like_a_glrt_one(tmp_path, gl, monkeypatch):
    registered = gl.add_runner("instance_type", registered=True)       # glrtr-: registered with a registration token
    monkeypatch.setenv("OLD_RUNNER_TOKEN", registered.token)
    host = make_host(tmp_path, [{"name": "old", "url": gl.url, "mode": "socket", "token_env": "OLD_RUNNER_TOKEN"}])
    plan, derived = plan_for(host, probe(system_id="s_0123456789ab"))
    text = apply(host, plan, derived)
    assert [(r.method, r.path) for r in gl.requests] == [("POST", "/api/v4/runners/verify")]
    assert runner_block(text, "old")["token"] == registered.token
    assert registered.managers == {"s_0123456789ab"}


def test_a_registration_token_registers_through_the_legacy_endpoint(tmp_path, monkeypatch):
    with GitLabStandIn(registration_token="GR1348941MARKERreg", allow_registration=True) as gl:
        monkeypatch.setenv("REG", "GR1348941MARKERreg")
        host = make_host(tmp_path, [{"name": "legacy", "url": gl.url, "mode": "socket", "token_env": "REG"}])
        plan, derived = plan_for(host, probe(system_id="s_0123456789ab"))
        text = apply(host, plan, derived)
        assert [(r.method, r.path) for r in gl.requests] == [("POST", "/api/v4/runners")]
        assert runner_block(text, "legacy")["token"].startswith("glrtr-")


# -- item 10: a runner moved to another GitLab -----------------------------------------------------


def moved(tmp_path, old_url: str, new_url: str, **runner: Any):
    host = make_host(tmp_path, [{"name": "build", "url": new_url, "mode": "socket", **runner}])
    return host, *plan_for(host, probe(config=registered_config(old_url), system_id="s_0123456789ab"))


def test_check_shows_the_url_change_and_that_the_token_is_verified_there(tmp_path, gl, gl2):
    _, plan, _ = moved(tmp_path, gl.url, gl2.url)
    (change,) = [c for c in plan.changes if c.target == CONFIG]
    assert f"update build (url {gl.url} -> {gl2.url}: its token is verified at {gl2.url} first)" in change.summary
    assert f'-  url = "{gl.url}"' in change.diff and f'+  url = "{gl2.url}"' in change.diff
    assert any(f"url changes from {gl.url} to {gl2.url}" in n and "set GITLAB_TOKEN" in n for n in plan.notes)
    assert gl.requests == [] and gl2.requests == []           # planning asks no GitLab


def test_moved_runner_keeps_its_token_when_the_new_gitlab_accepts_it(tmp_path, gl, gl2):
    gl.add_runner(token=TOKEN)
    runner = gl2.add_runner(token=TOKEN)                        # the same GitLab under a new name
    host, plan, derived = moved(tmp_path, gl.url, gl2.url)
    block = runner_block(apply(host, plan, derived), "build")
    assert (block["url"], block["token"], block["id"]) == (gl2.url, TOKEN, 1)
    assert [(r.method, r.path) for r in gl2.requests] == [("POST", "/api/v4/runners/verify")]
    assert runner.managers == {"s_0123456789ab"} and gl.requests == []


def test_moved_runner_is_recreated_with_the_access_token_when_refused(tmp_path, gl, gl2, monkeypatch):
    gl.add_runner(token=TOKEN)
    monkeypatch.setenv("GITLAB_TOKEN", PAT)
    host, plan, derived = moved(tmp_path, gl.url, gl2.url, runner_type="instance_type")
    text = apply(host, plan, derived)
    block = runner_block(text, "build")
    (created,) = gl2.runners.values()
    assert (block["url"], block["token"], block["id"]) == (gl2.url, created.token, created.id)
    assert TOKEN not in text                                   # never the old token with the new url
    assert created.managers == {"s_0123456789ab"}


def test_moved_runner_takes_a_new_token_from_token_env(tmp_path, gl, gl2, monkeypatch):
    fresh = gl2.add_runner(token="glrt-MARKERfresh-at-new-gitlab")
    monkeypatch.setenv("BUILD_TOKEN", fresh.token)
    host, plan, derived = moved(tmp_path, gl.url, gl2.url, token_env="BUILD_TOKEN")
    block = runner_block(apply(host, plan, derived), "build")
    assert (block["url"], block["token"], block["id"]) == (gl2.url, fresh.token, fresh.id)


def test_moved_runner_refused_without_a_way_to_register_fails_and_writes_nothing(tmp_path, gl, gl2, monkeypatch):
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    host, plan, derived = moved(tmp_path, gl.url, gl2.url)
    with pytest.raises(HostFailed) as caught:
        apply(host, plan, derived)
    assert str(caught.value) == (
        f"r9: runner build: url changed from {gl.url} to {gl2.url} and {gl2.url} refuses its token; set "
        "GITLAB_TOKEN to re-create it, or give token_env/token_file; config.toml left as it was")
    assert "MARKER" not in str(caught.value)


def test_moved_runner_whose_token_env_gives_the_refused_token_says_what_to_give(tmp_path, gl, gl2, monkeypatch):
    monkeypatch.setenv("BUILD_TOKEN", TOKEN)
    monkeypatch.setenv("GITLAB_TOKEN", PAT)          # no help: a runner with a token source is never created
    host, plan, derived = moved(tmp_path, gl.url, gl2.url, token_env="BUILD_TOKEN")
    with pytest.raises(HostFailed, match=f"refuses its token; give token_env/token_file a token of a runner at "
                                         f"{gl2.url}, or remove them and set GITLAB_TOKEN to re-create it"):
        apply(host, plan, derived)
    assert gl2.runners == {}


def test_moved_runner_whose_new_gitlab_does_not_answer_fails(tmp_path, gl, monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN", PAT)
    host, plan, derived = moved(tmp_path, gl.url, "http://127.0.0.1:9", runner_type="instance_type")
    with pytest.raises(HostFailed, match=r"did not answer .*config.toml left as it was"):
        apply(host, plan, derived)
    assert gl.requests == []


# -- items 7 and 11b: reload or restart -------------------------------------------------------------


def runner_handlers(plan) -> list[tuple[str, str]]:
    return [(h.name, h.command) for h in plan.handlers if "gitlab-runner" in h.name]


def test_a_config_change_reloads_the_runners_main_process_only(tmp_path, gl):
    host = make_host(tmp_path, [], gitlab_runner_concurrent=9)
    plan, _ = plan_for(host, probe(config=registered_config(gl.url)))
    assert runner_handlers(plan) == [("reload gitlab-runner", RELOAD_RUNNER)]
    assert "systemctl kill --kill-who=main -s HUP gitlab-runner" in RELOAD_RUNNER


def test_a_listen_address_change_restarts_the_runner_instead(tmp_path, gl):
    host = make_host(tmp_path, [], gitlab_runner_listen_address="127.0.0.1:9252")
    plan, _ = plan_for(host, probe(config=registered_config(gl.url)))
    assert runner_handlers(plan) == [("restart gitlab-runner", RESTART_RUNNER)]
    (change,) = [c for c in plan.changes if c.target == CONFIG]
    assert "set listen_address (restarts gitlab-runner)" in change.summary
    # Unchanged the next time: a reload again for anything else.
    listening = 'log_level = "info"\nlisten_address = "127.0.0.1:9252"'
    again = registered_config(gl.url).replace('log_level = "info"', listening)
    host = make_host(tmp_path, [], gitlab_runner_listen_address="127.0.0.1:9252", gitlab_runner_concurrent=5)
    plan, _ = plan_for(host, probe(config=again))
    assert runner_handlers(plan) == [("reload gitlab-runner", RELOAD_RUNNER)]


# -- item 9: runner.remove -------------------------------------------------------------------------


class FakeAgent:
    """berth.engine.converge.AgentProcess for remove_from_host: the probe answer, the requests it got after it,
    and whether it was ended (one process, one SSH command, always ended)."""

    def __init__(self, config: str, system_id: str | None) -> None:
        self.found = probe(config=config, system_id=system_id)
        self.started: list[dict[str, Any]] = []
        self.applied: list[dict[str, Any]] = []
        self.ended = False

    def __call__(self, session, request):
        self.started.append(envelope(request))
        self.first = self.found
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.ended = True

    def ask(self, request):
        wire = envelope(request)
        self.applied.append(wire)
        return {"handlers": [h["name"] for h in wire["handlers"]]}


def remove(tmp_path, monkeypatch, config: str, system_id: str | None, *, delete: bool = False):
    from berth.engine import converge as engine
    from berth.gitlab.runners import remove_from_host

    agent = FakeAgent(config, system_id)
    monkeypatch.setattr(engine, "AgentProcess", agent)
    try:
        return remove_from_host(FakeSession(make_host(tmp_path, [])), "build", delete=delete), agent
    finally:
        assert [r["action"] for r in agent.started] == ["probe"] and agent.ended


def test_remove_glrt_runner_unregisters_only_this_hosts_manager(tmp_path, gl, monkeypatch):
    runner = gl.add_runner(token=TOKEN)
    runner.managers |= {"s_0123456789ab", "s_otherhost000"}
    outcome, agent = remove(tmp_path, monkeypatch, registered_config(gl.url), "s_0123456789ab")
    assert outcome == "unregistered this host's runner manager (s_0123456789ab)"
    assert runner.managers == {"s_otherhost000"} and gl.runner_by_token(TOKEN) is runner
    assert len(agent.applied) == 1


def test_remove_glrtr_runner_deletes_it_as_gitlab_runner_unregister_does(tmp_path, gl, monkeypatch):
    registered = gl.add_runner("instance_type", registered=True)
    registered.managers.add("s_0123456789ab")
    outcome, agent = remove(tmp_path, monkeypatch, registered_config(gl.url, registered.token), "s_0123456789ab")
    assert outcome.startswith("unregistered: deleted in GitLab")
    assert gl.runner_by_token(registered.token) is None
    assert [(r.method, r.path) for r in gl.requests] == [("DELETE", "/api/v4/runners")]
    assert len(agent.applied) == 1


def test_remove_when_gitlab_has_no_manager_for_this_host_says_so_and_keeps_the_file(tmp_path, gl, monkeypatch):
    gl.add_runner(token=TOKEN)
    with pytest.raises(HostFailed) as caught:
        remove(tmp_path, monkeypatch, registered_config(gl.url), "s_0123456789ab")
    assert "404 Runner manager not found" in str(caught.value)
    assert str(caught.value).endswith("config.toml left as it was")
    assert "MARKER" not in str(caught.value)


def test_remove_with_delete_deletes_the_runner_for_every_host(tmp_path, gl, monkeypatch):
    gl.add_runner(token=TOKEN)
    outcome, _ = remove(tmp_path, monkeypatch, registered_config(gl.url), "s_0123456789ab", delete=True)
    assert outcome == "deleted in GitLab" and gl.runners == {}


# -- notes -----------------------------------------------------------------------------------------


def test_inventory_warnings_reach_the_plan_notes(tmp_path, gl):
    host = make_host(tmp_path, [{"name": "build", "url": gl.url, "mode": "socket", "token": "glrt-MARKERclear"}])
    plan, _ = plan_for(host, probe(config=registered_config(gl.url)))
    assert any("written in clear" in note for note in plan.notes)


# -- the gitlab-runner stand-in (tests/standins/gitlab_runner/gitlab-runner), run here ----------------------

STANDIN_RUNNER = ROOT / "tests" / "standins" / "gitlab_runner" / "gitlab-runner"


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def metrics(port: int, wait: float = 10) -> str | None:
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as answer:
                return answer.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


@pytest.fixture
def standin_runner(tmp_path):
    started: list[subprocess.Popen] = []

    def start(config_text: str, *args: str) -> tuple[subprocess.Popen, Path]:
        config = tmp_path / "config.toml"
        config.write_text(config_text)
        process = subprocess.Popen([sys.executable, str(STANDIN_RUNNER), "run", "--config", str(config), *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(process)
        return process, config

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def machine_id_as_the_runner_reads_it() -> str | None:
    for path in ("/var/lib/dbus/machine-id", "/etc/machine-id"):
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return None


def test_standin_runner_makes_the_system_id_berth_expects_and_stops_gracefully_on_sigquit(standin_runner, tmp_path):
    port = free_port()
    process, _ = standin_runner(f'concurrent = 2\n[[runners]]\n  name = "a"\n  token = "{TOKEN}"\n',
                                "--listen-address", f"127.0.0.1:{port}")
    exported = metrics(port)
    assert exported is not None, process.stdout.read() if process.poll() is not None else "no metrics"
    written = (tmp_path / ".runner_system_id").read_text()
    mid = machine_id_as_the_runner_reads_it()
    if mid:
        assert written == runner_system_id(mid)        # berth's prediction is the runner's own ID
    assert SYSTEM_ID_RE.match(written) and (tmp_path / ".runner_system_id").stat().st_mode & 0o777 == 0o600
    assert f'gitlab_runner_limit{{runner="MARKERsha",runner_name="a",system_id="{written}"}} 0' in exported
    process.send_signal(signal.SIGQUIT)
    assert process.wait(timeout=10) == 0
    assert "graceful (SIGQUIT)" in process.stdout.read()


def test_standin_runner_keeps_a_system_id_it_finds_and_reads_listen_address_only_at_start(standin_runner,
                                                                                           tmp_path):
    (tmp_path / ".runner_system_id").write_text("r_AbCdEf012345\n")
    first, second = free_port(), free_port()
    process, config = standin_runner(f'concurrent = 2\nlisten_address = "127.0.0.1:{first}"\n')
    assert metrics(first) == "gitlab_runner_concurrent 2\n"
    config.write_text(f'concurrent = 7\nlisten_address = "127.0.0.1:{second}"\n')
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "gitlab_runner_concurrent 7" not in (metrics(first) or "") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "gitlab_runner_concurrent 7" in (metrics(first) or "")         # reloaded ...
    assert metrics(second, wait=0.5) is None                              # ... but still listening where it started
    assert (tmp_path / ".runner_system_id").read_text() == "r_AbCdEf012345\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert "Runner system ID in use system_id=r_AbCdEf012345" in process.stdout.read()
