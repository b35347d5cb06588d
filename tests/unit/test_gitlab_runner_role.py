"""Role gitlab_runner as declared data: packages and pins, the stop drop-in, the testbed-only capability form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.engine.plan import make_plan
from berth.engine.resources import File, Packages
from berth.engine.roles import RoleContext
from berth.errors import ConfigError
from berth.inventory.loader import Host

ROLES = Path(__file__).resolve().parents[2] / "roles"
# As the inventory merges them: role defaults, then config/defaults.yml.
DEFAULTS = {**yaml.safe_load((ROLES / "gitlab_runner" / "defaults.yml").read_text()),
            **yaml.safe_load((ROLES.parent / "config" / "defaults.yml").read_text())}
DROP_IN = "/etc/systemd/system/gitlab-runner.service.d/berth-kill.conf"
URL = "https://gitlab.example.com"


@pytest.fixture
def declare(tmp_path):
    keyring = tmp_path / "gitlab-runner.gpg"
    keyring.write_bytes(b"key")
    ctx = RoleContext(roles_dir=ROLES)

    def run(**overrides: Any):
        variables = {**DEFAULTS, "gitlab_runner_repo_keyring_file": str(keyring), **overrides}
        host = Host("r1", ["all"], variables, {k: f"inventory.yml ({k})" for k in variables}, ["gitlab_runner"])
        return ctx.module("gitlab_runner").declare(host, ctx)

    return run


def packages_of(state) -> Packages:
    (found,) = [r for r in state.resources if isinstance(r, Packages)]
    return found


def drop_in_of(state) -> str:
    (found,) = [r for r in state.resources if isinstance(r, File) and r.path == DROP_IN]
    return found.content.decode()


# -- item 1: versions and packages -----------------------------------------------------------------


def test_the_default_version_is_a_current_release():
    # gitlab-runner's newest tag in the mirror read for this (v19.3.0); 17.x is out of support.
    major = int(DEFAULTS["gitlab_runner_version"].split(".")[0])
    assert major >= 18, DEFAULTS["gitlab_runner_version"]


def test_the_default_install_pins_gitlab_runner_and_its_helper_images_together(declare):
    wanted = DEFAULTS["gitlab_runner_version"]
    found = packages_of(declare())
    assert found.names == ("gitlab-runner", "gitlab-runner-helper-images")
    assert found.versions == {"gitlab-runner": wanted, "gitlab-runner-helper-images": wanted}
    assert found.absent == ()


@pytest.mark.parametrize("version", ["17.7.0-1", "17.7.1-1", "18.6.1-1", "19.3.0-1", "20.0.0-2"])
def test_from_17_7_on_both_packages_are_pinned(declare, version):
    found = packages_of(declare(gitlab_runner_version=version))
    assert found.versions == {"gitlab-runner": version, "gitlab-runner-helper-images": version}
    assert found.absent == ()


@pytest.mark.parametrize("version", ["17.5.0-1", "17.6.1-1", "16.11.0-1"])
def test_before_17_7_only_gitlab_runner_exists_and_the_helper_images_package_must_go(declare, version):
    """gitlab-runner-helper-images first ships with 17.7.0; older packages carry the images themselves."""
    found = packages_of(declare(gitlab_runner_version=version))
    assert found.names == ("gitlab-runner",)
    assert found.versions == {"gitlab-runner": version}
    # A host coming down from 17.7+ still has it: it owns the image files the old package needs back.
    assert found.absent == ("gitlab-runner-helper-images",)


@pytest.mark.parametrize("version", ["17.5.0", "latest", "v19.3.0-1", "19.3-1", ""])
def test_a_version_apt_cannot_pin_is_refused(declare, version):
    with pytest.raises(ConfigError, match=r"gitlab_runner_version .*19\.3\.0-1"):
        declare(gitlab_runner_version=version)


# -- item 3: the stop drop-in ----------------------------------------------------------------------


def test_the_runner_is_never_killed_mid_job_by_default(declare):
    """After SIGQUIT gitlab-runner waits for its jobs with no limit (commands/multi.go)."""
    text = drop_in_of(declare())
    assert "KillSignal=SIGQUIT" in text
    assert "TimeoutStopSec=infinity" in text.splitlines()
    assert DEFAULTS["gitlab_runner_stop_timeout"] == "infinity"


def test_the_stop_timeout_does_not_follow_shutdown_timeout(declare):
    text = drop_in_of(declare(gitlab_runner_shutdown_timeout=60))
    assert "TimeoutStopSec=90" not in text and "TimeoutStopSec=infinity" in text.splitlines()


@pytest.mark.parametrize(("value", "line"), [("7200", "TimeoutStopSec=7200"), ("2h", "TimeoutStopSec=2h"),
                                             ("1h 30min", "TimeoutStopSec=1h 30min")])
def test_a_finite_stop_timeout_is_written_and_warned_about(declare, value, line):
    state = declare(gitlab_runner_stop_timeout=value)
    assert line in drop_in_of(state).splitlines()
    (config,) = state.derived
    assert any("gitlab_runner_stop_timeout" in note and "SIGKILL" in note for note in config.notes)


@pytest.mark.parametrize("value", ["forever", "-5", "10 parsecs", ""])
def test_a_stop_timeout_systemd_cannot_read_is_refused(declare, value):
    with pytest.raises(ConfigError, match="gitlab_runner_stop_timeout"):
        declare(gitlab_runner_stop_timeout=value)


# -- item 5: the capability form is a testbed device -----------------------------------------------

CAPS_RUNNER = {"name": "d", "url": URL, "mode": "dind", "privileged_form": "capabilities", "token_env": "T"}


def test_the_capability_form_is_refused_outside_the_testbed(declare):
    with pytest.raises(ConfigError) as failure:
        declare(gitlab_runners=[CAPS_RUNNER])
    message = str(failure.value)
    assert "'d'" in message and "capabilities" in message
    assert "services_security_opt" in message                # why: the service never gets cap_add
    assert "privileged" in message and "services_privileged" in message    # what to use instead
    assert "berth_testbed" in message


def test_the_testbed_may_use_the_capability_form(declare):
    state = declare(gitlab_runners=[CAPS_RUNNER], berth_testbed=True)
    (config,) = state.derived
    assert config.specs[0].privileged_form == "capabilities"


def test_the_other_forms_need_no_testbed(declare):
    for form in ("privileged", "services_privileged"):
        state = declare(gitlab_runners=[{**CAPS_RUNNER, "privileged_form": form}])
        assert state.derived[0].specs[0].privileged_form == form


# -- a package change drains the runner first --------------------------------------------------------


@pytest.mark.parametrize("method", ["repo", "local-debs"])
def test_a_package_change_drains_the_runner_first_within_its_own_timeout(declare, tmp_path, method):
    deb = tmp_path / "gitlab-runner.deb"
    deb.write_bytes(b"deb")
    state = declare(gitlab_runner_install_method=method, gitlab_runner_local_debs=[str(deb)],
                    gitlab_runner_drain_timeout=120)
    # The maintainer scripts stop the runner, which waits for its jobs with TimeoutStopSec=infinity:
    # the plan of a package change carries a drain, which the agent runs (bounded) before apt-get.
    found = {"files": {}, "packages": {}, "services": {}}
    plan = make_plan([packages_of(state)], state.handlers, found)
    assert [d.timeout for d in plan.drains] == [120]
    packages = packages_of(state)
    installed = {name: packages.versions.get(name, "19.3.0-1") for name in packages.names}
    assert make_plan([packages], state.handlers, {**found, "packages": installed}).drains == []   # nothing to do
