"""make_plan without a host: the resource kinds, handler order, apt update folding, drains, derived resources."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

import pytest

from berth.engine.plan import KINDS, Change, Plan, Planned, make_plan, probe_request
from berth.engine.protocol import (
    STEP_OPS,
    DirectoryStep,
    FileQuery,
    PackagesStep,
    ProbeAnswer,
    RemoveStep,
    Request,
    ServiceStep,
    WriteStep,
)
from berth.engine.resources import (
    DAEMON_RELOAD,
    Absent,
    Attributes,
    Directory,
    Drain,
    File,
    Handler,
    Packages,
    Service,
    apt_source,
    drop_in,
)
from berth.remote import agent

NOTHING = ProbeAnswer()
RELOAD = Handler("reload d", "systemctl reload d")
RESTART = Handler("restart d", "systemctl restart d", disruptive=True, drain=Drain(timeout=42),
                  supersedes=("reload d",))


def present(content: bytes, mode: int = 0o644, owner: str = "root", group: str = "root") -> dict:
    return {"exists": True, "mode": mode, "owner": owner, "group": group, "is_dir": False,
            "sha256": hashlib.sha256(content).hexdigest()}


def test_every_resource_class_is_declared_once_and_every_step_is_one_the_agent_knows():
    assert set(KINDS) == {File, Directory, Attributes, Absent, Packages, Service}
    assert set(agent.STEPS) == STEP_OPS
    assert set(agent.ACTIONS) == {request.action for request in get_args(Request)}
    assert agent.PROTOCOL == 1


def test_the_probe_asks_for_each_kind_what_its_plan_reads():
    request = probe_request([File("/f", b"x"), Directory("/d"), Absent("/gone"), Packages(("p",), absent=("q",)),
                             Service("s")])
    assert request.files == (FileQuery("/f", content=True), FileQuery("/d"), FileQuery("/gone"))
    assert (request.packages, request.services) == (("p", "q"), ("s",))


def test_an_unknown_resource_is_a_type_error_naming_the_kinds():
    @dataclass(frozen=True)
    class Symlink:
        path: str

    with pytest.raises(TypeError, match=r"unknown resource .*Symlink.*not one of File, Directory"):
        make_plan([Symlink("/x")], [], NOTHING)


def test_a_missing_file_is_written_and_notifies():
    plan = make_plan([File("/etc/d.conf", b"a\n", notify=("reload d",))], [RELOAD], NOTHING)
    assert plan.steps == [WriteStep("/etc/d.conf", b"a\n", 0o644)]
    assert [(c.kind, c.summary) for c in plan.changes] == [("file", "create")]
    assert [h.name for h in plan.handlers] == ["reload d"]


def test_a_file_with_the_wanted_content_and_attributes_is_no_change():
    found = ProbeAnswer(files={"/etc/d.conf": present(b"a\n")})
    assert make_plan([File("/etc/d.conf", b"a\n", notify=("reload d",))], [RELOAD], found).changed is False


def test_attribute_drift_is_an_attributes_only_write_that_notifies_nothing():
    found = ProbeAnswer(files={"/k": present(b"a", mode=0o644, group="adm")})
    plan = make_plan([File("/k", b"a", mode=0o600, notify=("reload d",))], [RELOAD], found)
    assert plan.steps == [WriteStep("/k", None, 0o600)] and plan.handlers == []
    assert plan.changes[0].summary == "mode 0644 -> 0600, owner root:adm -> root:root"
    assert plan.steps[0].wire()["content"] is None


def test_directory_absent_and_service_steps():
    found = ProbeAnswer(files={"/gone": {"exists": True}}, services={"s": {"active": False, "enabled": True}})
    plan = make_plan([Directory("/d", mode=0o700), Absent("/gone"), Service("s")], [], found)
    assert plan.steps == [DirectoryStep("/d", 0o700), RemoveStep("/gone"), ServiceStep("s", None, True)]
    assert [c.summary for c in plan.changes] == ["missing", "remove", "start"]


def test_a_stopped_unit_that_a_notified_handler_restarts_is_started_by_the_handler_alone():
    # The steps run before the staged daemon.json is committed and before the daemon-reload: a start there
    # would run dockerd with the configuration this apply replaces (or fail on it).
    restart = Handler("restart s", "systemctl restart s", unit="s", starts=True)
    stopped = ProbeAnswer(services={"s": {"active": False, "enabled": True}})
    plan = make_plan([File("/c", b"new", notify=("restart s",)), Service("s")], [restart], stopped)
    assert [s.op for s in plan.steps] == ["write"] and [h.name for h in plan.handlers] == ["restart s"]
    assert [c.summary for c in plan.changes][-1] == "start"          # still told: the handler starts it
    disabled = ProbeAnswer(services={"s": {"active": False, "enabled": False}})
    plan = make_plan([File("/c", b"new", notify=("restart s",)), Service("s")], [restart], disabled)
    assert plan.steps[-1] == ServiceStep("s", True, None)            # enabled by the step, started by the handler
    # Nothing notified: the step starts it (the configuration on the host is the one it starts with anyway).
    assert make_plan([Service("s")], [restart], stopped).steps == [ServiceStep("s", None, True)]
    # A reload of a stopped unit would find nothing to reload: the handler that starts it runs instead.
    reload = Handler("reload s", "systemctl reload s", unit="s")
    both = [reload, replace(restart, supersedes=("reload s",))]
    plan = make_plan([File("/c", b"new", notify=("reload s",)), Service("s")], both, stopped)
    assert [s.op for s in plan.steps] == ["write"] and [h.name for h in plan.handlers] == ["restart s"]
    running = ProbeAnswer(services={"s": {"active": True, "enabled": True}})
    plan = make_plan([File("/c", b"new", notify=("reload s",)), Service("s")], both, running)
    assert [h.name for h in plan.handlers] == ["reload s"]
    # A unit without a handler that starts it: the step starts it, the reload follows.
    plan = make_plan([File("/c", b"new", notify=("reload s",)), Service("s")], [reload], stopped)
    assert plan.steps[-1] == ServiceStep("s", None, True) and [h.name for h in plan.handlers] == ["reload s"]


def test_handlers_run_daemon_reload_first_then_in_declared_order_and_a_restart_drops_the_reload():
    resources = [File("/a", b"1", notify=("reload d",)), drop_in("d.service", "x.conf", b"[Service]\n",
                                                                 notify=("restart d",))]
    plan = make_plan(resources, [RELOAD, RESTART], NOTHING)
    assert [h.name for h in plan.handlers] == [DAEMON_RELOAD, "restart d"]
    assert plan.drains == [RESTART.drain]              # a disruptive handler: the host is drained first


HUP_RUNNER = Handler("reload runner", "systemctl kill -s HUP runner || true", signals="runner")
DRAINING = Handler("restart d", "systemctl restart d", disruptive=True, drain=Drain(runner_unit="runner"))


def test_the_probe_asks_for_the_units_that_handlers_signal_or_drain_on_the_same_systemctl():
    request = probe_request([Service("runner")], handlers=[HUP_RUNNER, DRAINING, RELOAD])
    assert request.services == ("runner",)          # asked once, with the resources' units
    assert probe_request([], handlers=[DRAINING]).services == ("runner",)
    assert probe_request([], handlers=[RELOAD]).services == ()


@pytest.mark.parametrize(("runner", "kept"), [
    ({"loaded": False, "active": False, "enabled": False}, False),   # not installed: nothing to signal or stop
    ({"loaded": True, "active": False, "enabled": True}, True),      # installed, stopped: told all the same
    ({"loaded": True, "active": True, "enabled": True}, True),
    ({"loaded": False, "active": True, "enabled": False}, True),     # its unit file gone, its process running
    (None, True),                                                    # not probed: nothing known
])
def test_a_runner_the_host_does_not_have_is_neither_signalled_nor_stopped_by_the_drain(runner, kept):
    found = ProbeAnswer(services={"runner": runner} if runner else {})
    resources = [File("/etc/runner.toml", b"new", notify=("reload runner",)), File("/d.conf", b"1", notify=(
        "restart d",))]
    plan = make_plan(resources, [HUP_RUNNER, DRAINING], found)
    assert [h.name for h in plan.handlers] == ["reload runner", "restart d"] if kept else ["restart d"]
    assert [d.runner_unit for d in plan.drains] == ["runner" if kept else ""]


def test_a_runner_that_this_apply_may_install_or_start_is_signalled_and_drained():
    absent = ProbeAnswer(services={"runner": {"loaded": False, "active": False, "enabled": False}},
                         packages={"runner": None})
    resources = [Packages(("runner",)), File("/etc/runner.toml", b"new", notify=("reload runner",)),
                 File("/d.conf", b"1", notify=("restart d",))]
    plan = make_plan(resources, [HUP_RUNNER, DRAINING], absent)
    assert [h.name for h in plan.handlers] == ["reload runner", "restart d"]
    assert [d.runner_unit for d in plan.drains] == ["runner"]
    plan = make_plan([Service("runner"), *resources[1:]], [HUP_RUNNER, DRAINING], absent)
    assert [h.name for h in plan.handlers] == ["reload runner", "restart d"]


def test_an_undefined_handler_is_an_error_naming_it():
    with pytest.raises(ValueError, match="undefined handlers: restrat d"):
        make_plan([File("/a", b"1", notify=("restrat d",))], [RESTART], NOTHING)


def test_a_new_apt_source_is_read_by_the_package_step_itself():
    resources = [*apt_source("vendor", "https://example.com/debian bookworm main", b"KEY"), Packages(("tool",))]
    plan = make_plan(resources, [], NOTHING)
    (packages,) = [s for s in plan.steps if isinstance(s, PackagesStep)]
    assert packages.update is True and packages.wire()["update"] is True
    assert [h.name for h in plan.handlers] == []         # folded: no separate apt-get update


def test_a_new_apt_source_without_packages_to_install_runs_the_update_handler():
    plan = make_plan(apt_source("vendor", "https://example.com/debian bookworm main", b"KEY"), [], NOTHING)
    assert [h.name for h in plan.handlers] == ["apt update"]


def test_an_uploaded_package_used_by_two_roles_is_sent_once(tmp_path: Path):
    deb = tmp_path / "tool.deb"
    deb.write_bytes(b"!<arch>\n")
    plan = make_plan([Packages(("tool",), debs=(deb,)), Packages(("tool",), debs=(deb,))], [], NOTHING)
    assert len(plan.uploads) == 1
    assert all(s.debs == (plan.uploads[0][1],) and s.install == () for s in plan.steps)


# -- derived resources return their share ----------------------------------------------------------
@dataclass
class Issued:
    """A derived resource for the test: a file only the apply can make (as a certificate)."""

    path: str
    notify: tuple[str, ...] = ()
    first: bool = False

    def probe_files(self) -> list[FileQuery]:
        return [FileQuery(self.path, content=True)]

    def plan(self, host, found: ProbeAnswer, ctx, plan: Plan) -> Planned:
        if found.file(self.path).get("exists"):
            return Planned(notes=(f"{self.path} is there",))
        first = (DirectoryStep("/var/lib/issued", 0o700),) if self.first else ()
        return Planned((Change("certificate", self.path, "issue"),), first=first, notify=self.notify,
                       prepare=lambda ask: [WriteStep(self.path, b"made during the apply", 0o444)])


def test_a_derived_resource_adds_its_changes_and_its_prepare_and_is_left_unchanged():
    issued = Issued("/c.pem", notify=("restart d",), first=True)
    before = repr(issued)
    plan = make_plan([File("/a", b"1")], [RESTART], NOTHING, derived=[issued])
    assert [c.target for c in plan.changes] == ["/a", "/c.pem"]
    assert plan.steps == [DirectoryStep("/var/lib/issued", 0o700), WriteStep("/a", b"1", 0o644)]
    (prepare,) = plan.prepare
    assert prepare(None) == [WriteStep("/c.pem", b"made during the apply", 0o444)]
    assert repr(issued) == before                     # no state kept between plan and apply


def test_a_derived_resource_that_notifies_a_disruptive_handler_drains_the_host():
    plan = make_plan([], [RESTART], NOTHING, derived=[Issued("/c.pem", notify=("restart d",))])
    assert [h.name for h in plan.handlers] == ["restart d"] and plan.drains == [RESTART.drain]


def test_a_derived_resource_with_nothing_to_do_only_adds_its_notes():
    found = ProbeAnswer(files={"/c.pem": present(b"x")})
    plan = make_plan([], [RESTART], found, derived=[Issued("/c.pem", notify=("restart d",))])
    assert (plan.changes, plan.steps, plan.handlers, plan.prepare) == ([], [], [], [])
    assert plan.notes == ["/c.pem is there"]


def test_the_probe_answer_reads_the_wire_form_and_refuses_another_protocol():
    assert ProbeAnswer.of({"facts": {"arch": "arm64"}, "files": {}, "packages": {}, "services": {}}).facts == {
        "arch": "arm64"}
    with pytest.raises(Exception, match="protocol 2"):
        ProbeAnswer.of({"protocol": 2, "facts": {}})
