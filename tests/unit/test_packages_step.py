"""Pinned packages converge both ways: the plan's packages step and the apt-get runs the agent makes of it.

What apt and dpkg do was tried on Debian 12 with stand-in packages related as gitlab-runner's are
(gitlab-runner 19.x Depends gitlab-runner-helper-images (= its version), which Replaces gitlab-runner;
17.5 carries the images itself): apt-get -y refuses a downgrade without --allow-downgrades, and coming
down below 17.7 leaves gitlab-runner without its image files until it is reinstalled.
"""

from __future__ import annotations

from typing import Any

import pytest

from berth.engine.plan import make_plan, probe_request
from berth.engine.protocol import PackagesStep
from berth.engine.resources import Packages
from berth.remote import agent

RUNNER, HELPER = "gitlab-runner", "gitlab-runner-helper-images"


def pinned(version: str) -> Packages:
    return Packages((RUNNER, HELPER), versions={RUNNER: version, HELPER: version})


def old_runner(version: str) -> Packages:
    return Packages((RUNNER,), versions={RUNNER: version}, absent=(HELPER,))


def step_for(resource: Packages, installed: dict[str, str | None]) -> dict[str, Any] | None:
    found = {"files": {}, "services": {}, "packages": installed}
    steps = [s.wire() for s in make_plan([resource], [], found).steps if isinstance(s, PackagesStep)]
    return steps[0] if steps else None


def all_runs(monkeypatch, step: dict[str, Any]) -> list[list[str]]:
    """Every command the agent's packages step runs (apt lists fresh), none of them for real."""
    ran: list[list[str]] = []
    monkeypatch.setattr(agent, "_apt_lists_age", lambda: 0.0)
    monkeypatch.setattr(agent, "sh", lambda argv, check=False, **kw: ran.append(argv) or (0, ""))
    agent.Applier().packages(step)
    return ran


def apt_runs(monkeypatch, step: dict[str, Any]) -> list[list[str]]:
    """The apt-get install runs of the step."""
    return [run for run in all_runs(monkeypatch, step) if run[:2] == ["apt-get", "install"]]


def test_the_probe_asks_about_packages_that_must_be_absent():
    assert probe_request([old_runner("17.5.0-1")]).packages == (RUNNER, HELPER)


def test_an_upgrade_installs_both_pins(monkeypatch):
    step = step_for(pinned("19.3.0-1"), {RUNNER: "18.6.1-1", HELPER: "18.6.1-1"})
    (run,) = apt_runs(monkeypatch, step)
    assert run[:2] == ["apt-get", "install"]
    assert run[-2:] == [f"{RUNNER}=19.3.0-1", f"{HELPER}=19.3.0-1"]


def test_a_downgrade_between_pinned_versions_is_allowed(monkeypatch):
    """apt-get -y: "Packages were downgraded and -y was used without --allow-downgrades"."""
    step = step_for(pinned("18.6.1-1"), {RUNNER: "19.3.0-1", HELPER: "19.3.0-1"})
    (run,) = apt_runs(monkeypatch, step)
    assert "--allow-downgrades" in run
    assert run[-2:] == [f"{RUNNER}=18.6.1-1", f"{HELPER}=18.6.1-1"]


def test_unpinned_installs_do_not_allow_downgrades(monkeypatch):
    (run,) = apt_runs(monkeypatch, step_for(Packages(("curl",)), {"curl": None}))
    assert "--allow-downgrades" not in run and run[-1] == "curl"


def test_nothing_to_do_when_the_pins_are_installed_and_the_helper_package_is_gone():
    assert step_for(pinned("19.3.0-1"), {RUNNER: "19.3.0-1", HELPER: "19.3.0-1"}) is None
    assert step_for(old_runner("17.5.0-1"), {RUNNER: "17.5.0-1", HELPER: None}) is None


def test_coming_down_below_17_7_removes_the_helper_package_then_reinstalls_the_runner(monkeypatch):
    step = step_for(old_runner("17.5.0-1"), {RUNNER: "19.3.0-1", HELPER: "19.3.0-1"})
    first, second = apt_runs(monkeypatch, step)
    assert "--allow-downgrades" in first and first[-2:] == [f"{RUNNER}=17.5.0-1", f"{HELPER}-"]
    assert second[-2:] == ["--reinstall", f"{RUNNER}=17.5.0-1"]


@pytest.mark.parametrize("runner", ["17.5.0-1", "19.3.0-1"])
def test_a_left_over_helper_package_is_removed_even_when_the_runner_is_right(monkeypatch, runner):
    step = step_for(old_runner("17.5.0-1"), {RUNNER: runner, HELPER: "19.3.0-1"})
    assert step is not None
    runs = apt_runs(monkeypatch, step)
    assert runs[0][-1] == f"{HELPER}-" and runs[-1][-2:] == ["--reinstall", f"{RUNNER}=17.5.0-1"]


def test_the_plan_says_what_it_installs_and_removes():
    found = {"files": {}, "services": {}, "packages": {RUNNER: "17.5.0-1", HELPER: "19.3.0-1"}}
    (change,) = make_plan([old_runner("17.5.0-1")], [], found).changes
    assert (change.target, change.summary) == (f"{HELPER}-", "remove")
    found["packages"][RUNNER] = "19.3.0-1"
    (change,) = make_plan([old_runner("17.5.0-1")], [], found).changes
    assert (change.target, change.summary) == (f"{RUNNER}=17.5.0-1 {HELPER}-", "install and remove")


def test_a_new_pin_reads_the_repository_first_even_with_fresh_lists(monkeypatch):
    """Lists younger than cache_valid_time may predate the pinned release: apt would say "not found"."""
    step = step_for(pinned("19.3.0-1"), {RUNNER: "18.6.1-1", HELPER: "18.6.1-1"})
    runs = all_runs(monkeypatch, step)
    assert runs[0] == ["apt-get", "update", "-qq"] and runs[1][:2] == ["apt-get", "install"]


def test_unpinned_installs_keep_fresh_lists(monkeypatch):
    runs = all_runs(monkeypatch, step_for(Packages(("curl",)), {"curl": None}))
    assert [run[:2] for run in runs] == [["apt-get", "install"]]
