"""Rollout without hosts: option parsing, sharding, batching, the failure budget, the stop rule."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from berth.engine.converge import HostReport, Status
from berth.engine.rollout import (
    Outcome,
    Rollout,
    Shard,
    batch_size,
    batches,
    failure_budget,
    parse_amount,
    parse_shard,
    resolve_shard,
    should_stop,
)
from berth.errors import ExitCode, OptionError
from berth.inventory.loader import Host


def hosts(*names: str) -> list[Host]:
    return [Host(n, ["all"], {}, {}, []) for n in names]


# -- amounts ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "total", "size"), [
    ("2", 10, 2), ("25%", 4, 1), ("25%", 10, 2), ("100%", 7, 7), ("1%", 4, 1), ("0", 5, 1), (" 50 % ", 4, 2),
    ("30", 4, 30),
])
def test_batch_is_a_count_or_a_percentage_rounded_down_and_at_least_one(text, total, size):
    assert batch_size(text, total) == size


@pytest.mark.parametrize("text", ["abc", "-1", "1.5", "2/3", "150%", "%"])
def test_bad_amounts_are_option_errors(text):
    with pytest.raises(OptionError) as err:
        parse_amount(text, 10, option="--batch")
    assert err.value.exit_code == ExitCode.BAD_OPTIONS
    assert "--batch" in str(err.value)


@pytest.mark.parametrize(("text", "total", "budget"), [
    ("", 10, None), ("0", 10, 0), ("3", 10, 3), ("10%", 20, 2), ("10%", 4, 0), ("50%", 3, 1),
])
def test_failure_budget(text, total, budget):
    assert failure_budget(text, total) == budget


def test_batches_are_consecutive_slices_in_inventory_order():
    names = [[h.name for h in b] for b in batches(hosts("a", "b", "c", "d", "e"), 2)]
    assert names == [["a", "b"], ["c", "d"], ["e"]]


# -- the stop rule ------------------------------------------------------------------------------
def test_max_fail_zero_stops_after_any_failure():
    assert should_stop(1, 0, [Outcome.CONVERGED, Outcome.UNREACHABLE])
    assert should_stop(0, 0, [Outcome.CONVERGED, Outcome.UNCHANGED]) is None


def test_max_fail_counts_failures_so_far_against_the_budget():
    assert should_stop(2, 2, [Outcome.FAILED]) is None
    reason = should_stop(3, 2, [Outcome.CONVERGED])    # earlier batches' failures count too
    assert reason and "3 host(s)" in reason and "(2)" in reason


def test_without_max_fail_only_a_wholly_failed_batch_stops():
    assert should_stop(1, None, [Outcome.CONVERGED, Outcome.UNREACHABLE]) is None
    assert should_stop(2, None, [Outcome.FAILED, Outcome.INVALID])
    assert should_stop(5, None, [Outcome.UNCHANGED]) is None


# -- shards -------------------------------------------------------------------------------------
def test_shard_parsing_is_one_based_like_ci_node_index():
    assert parse_shard("2/3") == Shard(2, 3)
    assert str(parse_shard(" 1 / 1 ")) == "1/1"
    for bad in ("0/3", "4/3", "1/0", "a/b", "3", "-1/2"):
        with pytest.raises(OptionError):
            parse_shard(bad)


def test_shard_comes_from_gitlab_parallel_variables_unless_given():
    env = {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3"}
    assert resolve_shard("", env) == Shard(2, 3)
    assert resolve_shard("1/4", env) == Shard(1, 4)
    # GitLab sets CI_NODE_TOTAL=1 in every job without parallel: (and no CI_NODE_INDEX): no sharding.
    assert resolve_shard("", {"CI_NODE_TOTAL": "1"}) is None
    assert resolve_shard("", {}) is None
    with pytest.raises(OptionError, match="CI_NODE_TOTAL"):
        resolve_shard("", {"CI_NODE_INDEX": "1"})
    with pytest.raises(OptionError, match="CI_NODE_INDEX/CI_NODE_TOTAL"):
        resolve_shard("", {"CI_NODE_INDEX": "4", "CI_NODE_TOTAL": "3"})


@pytest.mark.parametrize("total", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("count", [1, 4, 17, 100])
def test_shards_cover_every_host_exactly_once_and_are_balanced(total, count):
    fleet = hosts(*[f"runner-{i:03d}" for i in range(count)])
    shards = [Shard(i, total).select(fleet) for i in range(1, total + 1)]
    names = [h.name for shard in shards for h in shard]
    assert sorted(names) == sorted(h.name for h in fleet)            # all of them, none twice
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for shard in shards:                                              # inventory order inside a shard
        assert [h.name for h in shard] == [h.name for h in fleet if h in shard]


def test_a_hosts_shard_does_not_depend_on_inventory_order():
    fleet = hosts(*[f"h{i}" for i in range(30)])
    shuffled = fleet[:]
    random.Random(7).shuffle(shuffled)
    for i in (1, 2, 3):
        assert {h.name for h in Shard(i, 3).select(fleet)} == {h.name for h in Shard(i, 3).select(shuffled)}


# -- the rollout loop, with a converger that needs no hosts ------------------------------------
@dataclass
class FakeConverger:
    statuses: dict[str, Status]
    unhealthy: set[str] = field(default_factory=set)
    check: bool = False
    force: bool = False
    converged: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def converge(self, host: Host) -> HostReport:
        self.converged.append(host.name)
        status = self.statuses.get(host.name, Status.CHANGED)
        return HostReport(host.name, status, error=None if status in (Status.OK, Status.CHANGED) else "boom")

    def check_health(self, host: Host) -> tuple[str | None, int]:
        self.checked.append(host.name)
        return ("/var/run/docker.sock does not answer" if host.name in self.unhealthy else None), 1


def roll(converger: FakeConverger, size: int, budget: int | None, names=("r1", "r2", "r3", "r4")):
    return Rollout(converger, size, parallel=2, budget=budget, log=lambda _: None).run(hosts(*names))  # type: ignore[arg-type]


def test_an_unreachable_host_does_not_stop_the_others_by_default():
    fake = FakeConverger({"r2": Status.UNREACHABLE, "r3": Status.OK})
    result = roll(fake, 2, None)
    assert [h.outcome for h in result.hosts] == [Outcome.CONVERGED, Outcome.UNREACHABLE, Outcome.UNCHANGED,
                                                 Outcome.CONVERGED]
    assert result.stopped is None and result.batches_run == 2
    assert result.exit_code() == ExitCode.HOST_UNREACHABLE
    assert sorted(fake.checked) == ["r1", "r3", "r4"]                 # no health check on a failed host


def test_max_fail_zero_leaves_the_next_batches_not_started():
    fake = FakeConverger({"r2": Status.UNREACHABLE})
    result = roll(fake, 2, 0)
    assert sorted(fake.converged) == ["r1", "r2"]
    assert [h.outcome for h in result.hosts][2:] == [Outcome.NOT_STARTED, Outcome.NOT_STARTED]
    assert [h.batch for h in result.hosts] == [1, 1, None, None]
    assert result.stopped and result.batches_run == 1 and result.batches == 2
    data = result.as_dict()
    assert data["summary"]["counts"] == {"converged": 1, "unreachable": 1, "not started": 2}
    assert data["hosts"][3] == {"host": "r4", "batch": None, "status": "not started", "health": None, "error": None}


def test_a_failed_health_check_fails_the_host_and_counts_against_the_budget():
    fake = FakeConverger({}, unhealthy={"r1"})
    result = roll(fake, 1, 0)
    assert result.hosts[0].outcome == Outcome.FAILED
    assert "health check after the batch" in (result.hosts[0].error or "")
    assert result.exit_code() == ExitCode.HOST_FAILED
    assert fake.converged == ["r1"]


def test_check_mode_runs_no_health_checks_and_reports_pending_changes():
    fake = FakeConverger({"r1": Status.PENDING, "r2": Status.OK}, check=True)
    result = roll(fake, 1, None, names=("r1", "r2"))
    assert fake.checked == []
    assert result.exit_code() == ExitCode.CHANGES_PENDING
    assert result.as_dict()["summary"]["check"] is True


def test_invalid_outranks_failed_in_the_exit_code():
    result = roll(FakeConverger({"r1": Status.FAILED, "r2": Status.INVALID}), 4, None)
    assert result.exit_code() == ExitCode.BAD_INVENTORY
