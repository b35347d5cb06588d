"""The role API (berth/role.py): contributions to shared documents, and a role's bug as its host's failure."""

from __future__ import annotations

import ast
import base64
import io
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.cli import app as cli
from berth.engine import converge as converging
from berth.engine.contributions import Contribution, Contributions
from berth.engine.options import RunOptions
from berth.engine.results import Status, exit_code
from berth.engine.roles import RoleContext, declare_roles
from berth.errors import ConfigError, ExitCode
from berth.inventory.loader import Host
from berth.transport.ssh import SSHSettings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = RoleContext(ROOT / "roles")


def defaults(*roles: str) -> dict[str, Any]:
    merged: dict[str, Any] = {"berth_testbed": False}
    for role in roles:
        merged.update(yaml.safe_load((ROOT / "roles" / role / "defaults.yml").read_text()) or {})
    return merged


def host(roles: list[str], name: str = "r1", **variables: Any) -> Host:
    return Host(name, ["all"], {**defaults(*[r for r in roles if (ROOT / "roles" / r).is_dir()]), **variables},
                {}, roles)


def write_role(roles_dir: Path, name: str, source: str) -> None:
    (roles_dir / name).mkdir(parents=True)
    (roles_dir / name / "role.py").write_text(textwrap.dedent(source))


OWNER = """
    from berth.role import Contribution, File, Handler, RoleState

    OWNS = {"demo.settings": "keys of /etc/demo.json"}

    def declare(host, ctx):
        merged = ctx.contributions(host).merge("demo.settings", host.vars.get("demo_settings", {}),
                                                where=lambda key: "group_vars/all.yml:3 (demo_settings)")
        state = RoleState("owner")
        state.resources.append(File("/etc/demo.json", repr(sorted(merged.items())).encode(), notify=("restart demo",)))
        state.handlers.append(Handler("restart demo", "true"))
        return state
"""


def contributor(name: str, key: str = "mirror", value: str = "https://m.example", optional: bool = False) -> str:
    return f"""
    from berth.role import Contribution, RoleState

    def contribute(host):
        return [Contribution("demo.settings", {key!r}, {value!r}, optional={optional})]

    def declare(host, ctx):
        return RoleState({name!r})
    """


# -- contributions ------------------------------------------------------------------------------------
def test_an_owner_merges_what_other_roles_contribute(tmp_path: Path) -> None:
    write_role(tmp_path, "owner", OWNER)
    write_role(tmp_path, "adds", contributor("adds"))
    ctx = RoleContext(tmp_path)
    (state, _) = declare_roles(host(["owner", "adds"]), ctx)
    assert state.resources[0].content == b"[('mirror', 'https://m.example')]"
    shared = ctx.contributions(host(["owner", "adds"]))
    assert shared.to("demo.settings")["mirror"].role == "adds" and shared.owners == {"demo.settings": "owner"}


def test_two_roles_contributing_one_key_is_an_error_naming_both(tmp_path: Path) -> None:
    write_role(tmp_path, "owner", OWNER)
    write_role(tmp_path, "first", contributor("first"))
    write_role(tmp_path, "second", contributor("second", value="https://other.example"))
    with pytest.raises(ConfigError, match="'mirror' is set by role first and by role second"):
        declare_roles(host(["owner", "first", "second"]), RoleContext(tmp_path))


def test_a_key_the_owners_variables_set_too_is_an_error_naming_the_file_and_the_role(tmp_path: Path) -> None:
    write_role(tmp_path, "owner", OWNER)
    write_role(tmp_path, "adds", contributor("adds"))
    with pytest.raises(ConfigError, match=r"group_vars/all.yml:3 \(demo_settings\) and by role adds"):
        declare_roles(host(["owner", "adds"], demo_settings={"mirror": "x"}), RoleContext(tmp_path))


def test_a_contribution_nobody_owns_is_an_error_unless_optional(tmp_path: Path) -> None:
    write_role(tmp_path, "adds", contributor("adds"))
    write_role(tmp_path, "maybe", contributor("maybe", key="other", optional=True))
    with pytest.raises(ConfigError, match=r"role adds contributes 'mirror' to 'demo.settings', which no role"):
        declare_roles(host(["adds"]), RoleContext(tmp_path))
    assert RoleContext(tmp_path).contributions(host(["maybe"])).values("demo.settings") == {}


def test_shipped_roles_build_the_same_daemon_json_through_contributions() -> None:
    h = host(["docker_engine", "docker_tls"], ansible_host="10.0.0.1")
    options = SHIPPED.module("docker_engine").daemon_json(h, SHIPPED.contributions(h))
    assert options == {
        "live-restore": True, "userland-proxy": False, "log-level": "info", "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"}, "hosts": ["fd://", "tcp://0.0.0.0:2376"],
        "tls": True, "tlsverify": True, "tlscacert": "/etc/docker/tls/ca.pem", "tlscert": "/etc/docker/tls/cert.pem",
        "tlskey": "/etc/docker/tls/key.pem",
    }
    engine_only = host(["docker_engine"])
    assert "hosts" not in SHIPPED.module("docker_engine").daemon_json(engine_only, SHIPPED.contributions(engine_only))


def test_a_tls_key_in_docker_daemon_options_conflicts_with_role_docker_tls() -> None:
    h = host(["docker_engine", "docker_tls"], ansible_host="10.0.0.1",
             docker_daemon_options={"tlscert": "/elsewhere.pem"})
    with pytest.raises(ConfigError, match=r"'tlscert' is set by .*docker_daemon_options.* and by role docker_tls"):
        SHIPPED.module("docker_engine").daemon_json(h, SHIPPED.contributions(h))


def test_the_engine_checks_learn_job_modes_from_gitlab_runner_not_from_its_variables() -> None:
    runners = [{"name": "a", "mode": "dind"}, {"name": "b", "mode": "dind"}, {"name": "c", "mode": "socket"}]
    h = host(["docker_engine", "gitlab_runner"], gitlab_runners=runners)
    assert SHIPPED.contributions(h).values("docker.job_modes") == {"dind": "runners a, b", "socket": "runners c"}
    assert SHIPPED.contributions(host(["gitlab_runner"], gitlab_runners=runners)).values("docker.job_modes") == {}


def test_no_shipped_role_imports_another_or_anything_but_the_api_and_domain_libraries() -> None:
    allowed = ("berth.role", "berth.docker", "berth.gitlab", "berth.inventory.paths", "__future__")
    for path in sorted((ROOT / "roles").glob("*/role.py")):
        tree = ast.parse(path.read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                     if a.name.startswith("berth")]
        assert all(m.startswith(allowed) or not m.startswith("berth") for m in imported), (path, imported)
        assert "ctx.module(" not in path.read_text(), f"{path} calls into another role"


# -- a role's bug is its host's failure -----------------------------------------------------------------
GOOD = """
    from berth.role import File, RoleState

    def declare(host, ctx):
        return RoleState("good", resources=[File("/etc/good", b"ok\\n")])
"""
BROKEN = """
    from berth.role import RoleState

    def declare(host, ctx):
        settings = {}
        return RoleState("broken", resources=[settings["missing"]])
"""
MISSPELT = """
    from berth.role import File, Handler, RoleState

    def declare(host, ctx):
        return RoleState("misspelt", resources=[File("/etc/x", b"x", notify=("restart dokcer",))],
                         handlers=[Handler("restart docker", "true")])
"""
EMPTY_PROBE = {"files": {}, "packages": {}, "services": {}, "facts": {}}


@pytest.fixture
def converge_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Converge (check mode) hosts with roles from a temporary roles dir; the agent answers an empty probe."""
    calls: list[str] = []

    class FakeAgent:
        def __init__(self, session: Any, request: Any) -> None:
            calls.append(session.host.name)
            self.first = EMPTY_PROBE

        def end(self) -> None:
            pass

    monkeypatch.setattr(converging, "AgentProcess", FakeAgent)
    for name, source in (("good", GOOD), ("broken", BROKEN), ("misspelt", MISSPELT)):
        write_role(tmp_path / "roles", name, source)

    def run(*hosts: Host) -> list[converging.HostReport]:
        converger = converging.Converger(SSHSettings(), RoleContext(tmp_path / "roles"), RunOptions(check=True))
        return [converger.converge(h) for h in hosts]

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_a_key_error_in_a_role_fails_that_host_naming_the_file_and_the_other_host_is_reported(converge_roles):
    good, broken = converge_roles(Host("a", ["all"], {}, {}, ["good"]), Host("b", ["all"], {}, {}, ["broken"]))
    assert good.status == Status.PENDING and [c.target for c in good.changes] == ["/etc/good"]
    assert broken.status == Status.FAILED
    assert "roles/broken/role.py:6: role broken failed: KeyError: 'missing'" in broken.error
    assert converge_roles.calls == ["a"]            # the broken host was never contacted
    assert exit_code(r.status for r in (good, broken)) == ExitCode.HOST_FAILED


def test_a_misspelt_handler_fails_the_host_naming_the_role_and_the_handler(converge_roles):
    (report,) = converge_roles(Host("a", ["all"], {}, {}, ["misspelt"]))
    assert report.status == Status.FAILED
    assert "roles/misspelt/role.py: role misspelt: /etc/x notifies handler 'restart dokcer'" in report.error


def test_the_cli_converge_reports_every_host_when_one_role_is_broken(converge_roles, tmp_path, monkeypatch):
    class Project:
        settings = type("S", (), {"forks": 2, "package_concurrency": 10, "roles_dir": tmp_path / "roles",
                                  "host_key_checking": "yes",
                                  "connect_timeout": 5.0})()

        def ssh(self, policy: str | None = None) -> SSHSettings:
            return SSHSettings()

        def role_context(self, *, read_only: bool = False) -> RoleContext:
            return RoleContext(tmp_path / "roles")

    hosts = [Host("a", ["all"], {}, {}, ["good"]), Host("b", ["all"], {}, {}, ["broken"])]
    reports = cli.converge(Project(), hosts, RunOptions(check=True))  # type: ignore[arg-type]
    assert [(r.host, r.status) for r in reports] == [("a", Status.PENDING), ("b", Status.FAILED)]


# -- one mechanism each -----------------------------------------------------------------------------------
@pytest.mark.parametrize("statuses, code", [
    (["ok", "changed", "passed", "unchanged", "converged"], ExitCode.OK),
    (["ok", "pending"], ExitCode.CHANGES_PENDING),
    (["pending", "unreachable"], ExitCode.HOST_UNREACHABLE),
    (["unreachable", "failed"], ExitCode.HOST_FAILED),
    (["failed", "invalid"], ExitCode.BAD_INVENTORY),
    (["not started", "risk"], ExitCode.OK),
])
def test_one_status_to_exit_code_mapping(statuses: list[str], code: ExitCode) -> None:
    assert exit_code(statuses) == code


def test_verify_and_smoke_do_not_import_the_command_line() -> None:
    for module in ("berth/checks/verify.py", "berth/gitlab/smoke.py", "berth/checks/plugin.py"):
        tree = ast.parse((ROOT / module).read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [n for n in names if n.startswith("berth.cli")], module


def test_the_runner_global_keys_are_one_list() -> None:
    from berth.gitlab.runner_config import OWNED_GLOBAL_KEYS

    for path in ("roles/gitlab_runner/role.py", "roles/gitlab_runner/verify/test_gitlab_runner.py"):
        text = (ROOT / path).read_text()
        assert "OWNED_GLOBAL_KEYS" in text and '"check_interval", "shutdown_timeout"' not in text, path
    assert set(defaults("gitlab_runner")) >= {f"gitlab_runner_{k}" for k in OWNED_GLOBAL_KEYS}


def test_one_stdin_bootstrap_for_the_agent_and_the_facts_command() -> None:
    from berth.checks import plugin
    from berth.transport.bootstrap import HostScript

    assert isinstance(converging.AGENT, HostScript) and isinstance(plugin.FACTS, HostScript)
    payload = plugin.FACTS.payload('{"files": []}')
    size, _, rest = payload.partition(b"\n")
    loader, rest = rest[:int(size)], rest[int(size):]
    size, _, rest = rest.partition(b"\n")
    source, request = rest[:int(size)], rest[int(size):]
    assert loader.decode() == (ROOT / "berth/remote/loader.py").read_text()
    assert source.decode() == (ROOT / "berth/remote/facts.py").read_text() and request == b'{"files": []}\n'
    for text in (ROOT / "berth/engine/converge.py").read_text(), (ROOT / "berth/checks/plugin.py").read_text():
        assert "sys.stdin.read()" not in text


def test_the_bootstrap_runs_the_script_on_requests_line_by_line(tmp_path) -> None:
    # The real bootstrap command under sh, with a script that echoes each request: the source is read by its
    # length, then each line of stdin is a request (as the agent answers a probe, then an apply).
    import subprocess

    from berth.transport.bootstrap import HostScript

    script = tmp_path / "echo.py"
    script.write_text("import sys\n\ndef main(stream):\n    for raw in iter(stream.readline, b''):\n"
                      "        sys.stdout.write('got ' + raw.decode())\n        sys.stdout.flush()\n")
    echo = HostScript(script, "berth_echo")
    done = subprocess.run(["sh", "-c", echo.command], input=echo.payload('{"a": 1}') + b'{"b": 2}\n',
                          capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'got {"a": 1}\ngot {"b": 2}\n'



def test_the_bootstrap_imports_nothing_from_the_working_directory_or_the_environment(tmp_path) -> None:
    # sudo keeps the SSH user's directory: a json.py there must not run as root, nor a PYTHONPATH's module.
    import subprocess

    from berth.transport.bootstrap import HostScript

    planted = tmp_path / "home"
    planted.mkdir()
    for name in ("json", "sitecustomize"):
        (planted / f"{name}.py").write_text(f"open({str(tmp_path / name)!r}, 'w').close()\n")
    script = tmp_path / "uses_json.py"
    script.write_text("import json\n\ndef main(stream):\n    print(json.dumps(json.loads(stream.readline())))\n")
    uses_json = HostScript(script, "berth_uses_json")
    done = subprocess.run(["sh", "-c", uses_json.command], input=uses_json.payload('{"a": 1}'), cwd=planted,
                          capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(planted)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"a": 1}\n'
    assert not (tmp_path / "json").exists() and not (tmp_path / "sitecustomize").exists()

def test_contributions_keep_role_order() -> None:
    shared = Contributions([Contribution("d", "b", 1, role="x"), Contribution("d", "a", 2, role="y")], {"d": "o"})
    assert list(shared.values("d")) == ["b", "a"]


def test_a_file_requested_with_content_keeps_it_when_a_glob_matches_it_too(tmp_path, capsys) -> None:
    # docker_engine's checks glob /etc/docker/certs.d/**; registry_mirror's read its ca.crt there.
    from berth.remote import facts

    (tmp_path / "certs.d" / "m:5000").mkdir(parents=True)
    (tmp_path / "certs.d" / "m:5000" / "ca.crt").write_text("PEM")
    path = str(tmp_path / "certs.d" / "m:5000" / "ca.crt")
    request = json.dumps({"files": [{"path": path, "content": True}], "globs": [f"{tmp_path}/certs.d/**"]})
    facts.main(io.BytesIO(request.encode() + b"\n"))
    answer = json.loads(capsys.readouterr().out)
    assert base64.b64decode(answer["files"][path]["content"]) == b"PEM"
