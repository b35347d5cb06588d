"""The project directory is the user's: found from --project, $BERTH_PROJECT or the nearest berth.yml upward;
its relative paths are its own; its roles/ adds roles and overrides shipped ones; `berth init` starts one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from berth import shipped
from berth.cli.init import FILES, write_project
from berth.engine.roles import RoleContext
from berth.errors import BerthError, ConfigError, ExitCode, OptionError
from berth.inventory.loader import Inventory
from berth.settings import RolePath, find_project, load_settings


def project_at(folder: Path, settings: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "berth.yml").write_text(settings)
    return folder


def berth(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `berth` command as installed (python -m berth runs the same Program)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("BERTH_PROJECT", "BERTH_PKI_DIR")}
    return subprocess.run([sys.executable, "-m", "berth", *args], cwd=cwd, capture_output=True, text=True,
                          env={**environ, "COLUMNS": "200", **(env or {})}, timeout=120)


# -- discovery -------------------------------------------------------------------------------------
def test_the_nearest_berth_yml_upward_is_the_project(tmp_path: Path) -> None:
    outer = project_at(tmp_path / "outer")
    inner = project_at(outer / "team" / "fleet")
    deep = inner / "inventory" / "group_vars"
    deep.mkdir(parents=True)
    assert find_project(env={}, cwd=deep) == inner.resolve()
    assert find_project(env={}, cwd=outer / "team") == outer.resolve()


def test_env_beats_the_upward_search_and_the_flag_beats_both(tmp_path: Path) -> None:
    here, by_env, by_flag = (project_at(tmp_path / n) for n in ("here", "env", "flag"))
    assert find_project(env={"BERTH_PROJECT": str(by_env)}, cwd=here) == by_env.resolve()
    assert find_project(str(by_flag), env={"BERTH_PROJECT": str(by_env)}, cwd=here) == by_flag.resolve()
    # a relative --project is taken from the working directory, as any path on a command line
    assert find_project("../flag", env={}, cwd=here) == by_flag.resolve()


def test_no_project_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        find_project(env={}, cwd=tmp_path)
    message = str(info.value)
    assert f"no berth.yml in {tmp_path.resolve()} or any directory above it" in message
    assert "berth init DIR" in message and "--project DIR" in message and "BERTH_PROJECT" in message


def test_a_flag_or_env_naming_no_project_is_refused_not_searched_past(tmp_path: Path) -> None:
    project_at(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OptionError, match=r"--project empty: no berth.yml in .*empty"):
        find_project("empty", env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"BERTH_PROJECT .*empty: no berth.yml"):
        find_project(env={"BERTH_PROJECT": str(empty)}, cwd=tmp_path)


def test_the_command_exits_4_outside_a_project_and_5_for_a_wrong_flag(tmp_path: Path) -> None:
    outside = berth("inventory.list", cwd=tmp_path)
    assert outside.returncode == int(ExitCode.BAD_INVENTORY), outside.stderr
    assert "berth init DIR" in outside.stderr and "Traceback" not in outside.stderr
    wrong = berth("--project", str(tmp_path), "inventory.list", cwd=tmp_path)
    assert wrong.returncode == int(ExitCode.BAD_OPTIONS), wrong.stderr
    assert "--project" in wrong.stderr and "Traceback" not in wrong.stderr


# -- paths are the project's -----------------------------------------------------------------------
def test_relative_settings_are_resolved_against_the_project_not_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project_at(tmp_path / "fleet", "inventory: hosts/prod.ini\npki_dir: keys/pki\nroles_dir: ours\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("BERTH_PKI_DIR", raising=False)
    settings = load_settings(root)
    assert settings.inventory == root.resolve() / "hosts/prod.ini"
    assert settings.pki_dir == root.resolve() / "keys/pki"
    assert settings.roles_dir == root.resolve() / "ours"
    monkeypatch.setenv("BERTH_PROJECT", str(root))
    assert load_settings().root == root.resolve()


def test_the_inventorys_ssh_config_is_the_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from berth.cli.app import load_project

    root = tmp_path / "fleet"
    write_project(root)
    (root / "inventory" / "group_vars" / "all.yml").write_text("berth_ssh_config: .ssh/config\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("BERTH_PROJECT", str(root))
    (host,) = load_project().hosts("all")
    assert host.vars["berth_ssh_config"] == str(root.resolve() / ".ssh/config")


def test_the_command_works_from_a_subdirectory_of_the_project(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    write_project(root)
    run = berth("inventory.list", "--json", cwd=root / "inventory" / "group_vars")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["runners"] == {"hosts": ["runner-1.example.com"]}
    flagged = berth("--project", "fleet", "inventory.list", "--json", cwd=tmp_path)     # from outside it
    assert flagged.returncode == 0, flagged.stderr
    assert json.loads(flagged.stdout) == json.loads(run.stdout)


# -- roles: the project's, then berth's --------------------------------------------------------------
def test_a_project_role_overrides_a_shipped_one_by_name_and_adds_new_ones(tmp_path: Path) -> None:
    ours = tmp_path / "roles"
    (ours / "docker_tls").mkdir(parents=True)
    (ours / "docker_tls" / "role.py").write_text("WHO = 'project'\n")
    (ours / "docker_tls" / "defaults.yml").write_text("docker_tls_port: 2376\n")
    (ours / "mirror").mkdir()
    (ours / "mirror" / "role.py").write_text("WHO = 'mirror'\n")
    (ours / "mirror" / "defaults.yml").write_text("mirror_url: ''\n")
    path = RolePath.of([ours, shipped.roles_dir()])
    roles = path.roles()
    assert roles["docker_tls"] == ours / "docker_tls"
    assert roles["docker_engine"] == shipped.roles_dir() / "docker_engine"
    assert roles["mirror"] == ours / "mirror"
    ctx = RoleContext(path)
    assert ctx.module("docker_tls").WHO == "project"
    assert ctx.module("mirror").WHO == "mirror"
    assert hasattr(ctx.module("docker_engine"), "declare")
    # the inventory takes role defaults from the same path: the project's docker_tls defaults replace berth's
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    h1:\n"
                                        "      berth_roles: [docker_engine, docker_tls, mirror]\n")
    inv = Inventory.load(tmp_path / "hosts.yml", roles_dir=path, config_defaults=shipped.config_defaults(),
                         base_dir=tmp_path)
    h1 = inv.hosts["h1"]
    assert h1.vars["mirror_url"] == "" and "docker_tls_renew_days" not in h1.vars
    assert "docker_daemon_options" in h1.vars          # docker_engine's defaults, shipped


def test_an_unknown_role_names_every_folder_searched(tmp_path: Path) -> None:
    ctx = RoleContext(RolePath.of([tmp_path / "roles", shipped.roles_dir()]))
    with pytest.raises(ConfigError) as info:
        ctx.module("docker_engin")
    assert str(tmp_path / "roles") in str(info.value) and str(shipped.roles_dir()) in str(info.value)


def test_shipped_files_are_found_without_the_working_directory(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for role in ("docker_engine", "docker_tls", "gitlab_runner"):
        assert (shipped.roles_dir() / role / "role.py").is_file()
        assert (shipped.roles_dir() / role / "verify").is_dir()
    assert "berth_roles" in shipped.config_defaults().read_text()


# -- berth init ------------------------------------------------------------------------------------
def test_init_writes_a_project_that_loads(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        written = write_project(tmp_path / "fleet")
    finally:
        os.umask(old)
    root = tmp_path / "fleet"
    assert sorted(p.relative_to(root).as_posix() for p in written) == sorted(FILES)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    ignored = (root / ".gitignore").read_text().splitlines()
    assert ".berth/" in ignored and "*.pem" in ignored
    settings = load_settings(root)
    assert settings.inventory == root.resolve() / "inventory/hosts.yml"
    inv = Inventory.load(settings.inventory, roles_dir=settings.role_path, config_defaults=settings.config_defaults,
                         base_dir=root)
    host = inv.hosts["runner-1.example.com"]
    assert host.roles == ["docker_engine", "docker_tls", "gitlab_runner"]
    assert host.vars["gitlab_runners"][0]["name"] == "runner-1-dind"


def test_init_never_overwrites_and_writes_nothing_when_a_file_exists(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    (root / "inventory").mkdir(parents=True)
    (root / "inventory" / "hosts.yml").write_text("mine: {}\n")
    with pytest.raises(BerthError, match=r"inventory/hosts.yml already exist.*never overwrites"):
        write_project(root)
    assert (root / "inventory" / "hosts.yml").read_text() == "mine: {}\n"
    assert sorted(p.name for p in root.rglob("*")) == ["hosts.yml", "inventory"]


def test_init_refusal_through_the_command_exits_1(tmp_path: Path) -> None:
    first = berth("init", "fleet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "fleet" / "berth.yml").is_file()
    again = berth("init", "fleet", cwd=tmp_path)
    assert again.returncode == int(ExitCode.ERROR)
    assert "never overwrites" in again.stderr and "Traceback" not in again.stderr


def test_version_comes_from_one_place() -> None:
    from importlib.metadata import version

    import berth as package

    run = berth("--version", cwd=Path.cwd())
    assert run.stdout.strip() == f"berth {package.__version__}"
    assert version("berth") == package.__version__
