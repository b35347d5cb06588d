"""The wheel alone: built from this repository, installed into a fresh venv, and used from a directory outside
it as a user would (`berth init`, then converge, verify and smoke one testbed host).

The host is r4 with the session's CA (the hosts already trust it); the project adds role gitlab_runner with
one socket runner that is declared, not registered (no GitLab here): the smoke then uses the settings berth
would write, as `make demo` does. What the runner leaves on r4 is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

HOST = "r4"


def sh(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding berth from the wheel only (its dependencies from the configured index): its bin/."""
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what git tracks: a build/ folder left in the checkout could add stale files.
    tracked = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    assert tracked.returncode == 0, tracked.stderr
    source = work / "source"
    for name in filter(None, tracked.stdout.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work, source, cwd=work)
    assert built.returncode == 0, built.stderr
    (wheel,) = work.glob("berth-*.whl")
    venv = work / "venv"
    made = sh(sys.executable, "-m", "venv", venv, cwd=work)
    assert made.returncode == 0, made.stderr
    pip = sh(venv / "bin" / "pip", "install", "-q", wheel, cwd=work)
    assert pip.returncode == 0, pip.stderr
    return venv / "bin"


def test_the_wheel_holds_berths_files_and_nothing_of_this_repositorys_project(installed: Path) -> None:
    probe = sh(installed / "python", "-c", "import berth, json; from berth import shipped; "
               "print(json.dumps([berth.__file__, str(shipped.roles_dir()), str(shipped.config_defaults())]))",
               cwd=installed)
    assert probe.returncode == 0, probe.stderr
    package, roles, defaults = map(Path, json.loads(probe.stdout))
    site = installed.parent / "lib"
    assert site in package.parents and site in roles.parents, (package, roles)
    shipped = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "role.py").is_file())
    assert sorted(p.name for p in roles.iterdir() if (p / "role.py").is_file()) == shipped
    for role in shipped:
        assert list((roles / role / "verify").glob("test_*.py")), role
    assert (roles / "docker_engine" / "templates" / "docker-hosts.conf.j2").is_file()
    assert defaults.is_file() and not (defaults.parent / "berth.yml").exists()
    assert (package.parent / "testbed" / "images" / "dockerd-entrypoint.sh").is_file()
    version = sh(installed / "berth", "--version", cwd=installed)
    assert version.returncode == 0 and version.stdout.startswith("berth "), version.stderr


def test_a_user_project_outside_the_repository(installed: Path, first_converge, berth, testbed,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp("user")
    assert ROOT not in work.resolve().parents
    cli = installed / "berth"
    init = sh(cli, "init", "fleet", cwd=work)
    assert init.returncode == 0, init.stderr
    project = work / "fleet"
    # The project's inventory: the testbed host, with the integration inventory's testbed settings, plus a runner.
    (project / "inventory" / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"children": {"runners": {"hosts": {HOST: None}}}}}))
    group = yaml.safe_load((ROOT / "tests" / "integration" / "inventory" / "group_vars" / "runners.yml").read_text())
    group.update(
        berth_roles=["docker_engine", "docker_tls", "gitlab_runner"],
        berth_ssh_config=str(testbed.ssh_config),
        gitlab_runner_install_method="none",
        gitlab_runners=[{"name": "fleet-socket", "url": "https://gitlab.example.com", "mode": "socket",
                         "runner_type": "instance_type", "tag_list": ["docker"]}],
    )
    (project / "inventory" / "group_vars" / "runners.yml").write_text(yaml.safe_dump(group))
    env = {"BERTH_PKI_DIR": str(berth.pki_dir), "COLUMNS": "200", "BERTH_PROJECT": ""}
    inside = project / "inventory"      # any directory of the project: berth finds berth.yml upward
    reports = work / "reports"
    try:
        check = sh(cli, "setup-runner", "--check", "--json", reports / "check.json", cwd=inside, env=env)
        assert check.returncode == 6, check.stdout + check.stderr      # the runner's files are pending
        (planned,) = json.loads((reports / "check.json").read_text())
        assert planned["status"] == "pending"
        assert any("config.toml" in c["target"] for c in planned["changes"]), planned["changes"]
        assert testbed.exec(HOST, "test", "-e", "/etc/gitlab-runner/config.toml", check=False).returncode != 0

        converge = sh(cli, "setup-runner", "--json", reports / "converge.json", cwd=inside, env=env)
        assert converge.returncode == 0, converge.stdout + converge.stderr
        assert json.loads((reports / "converge.json").read_text())[0]["status"] == "changed"
        again = sh(cli, "setup-runner", "--check", cwd=project, env=env)
        assert again.returncode == 0, again.stdout + again.stderr

        verify = sh(cli, "verify", "--json", reports / "verify.json", cwd=inside, env=env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        (checked,) = json.loads((reports / "verify.json").read_text())
        assert checked["status"] == "passed"
        assert {c["id"].split("/")[0] for c in checked["checks"]} >= {"docker_engine", "docker_tls", "gitlab_runner"}

        testbed.load_job_images([HOST])
        registry = testbed.registry_up()
        smoke = sh(cli, "smoke", "--limit", HOST, "--json", reports / "smoke.json", cwd=work,
                   env={**env, **registry, "BERTH_PROJECT": str(project)})
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        (ran,) = json.loads((reports / "smoke.json").read_text())
        assert ran["runner"] == "fleet-socket" and ran["status"] == "passed", ran
        assert ran["source"] == "inventory (not registered)"
    finally:
        testbed.exec(HOST, "sh", "-c", "rm -rf /etc/gitlab-runner /etc/systemd/system/gitlab-runner.service.d "
                     "&& systemctl daemon-reload")
