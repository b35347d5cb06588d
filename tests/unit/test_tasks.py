"""The command line's promises: `-e` means extra variables in every task that takes them."""

from __future__ import annotations

import tasks


def test_every_task_with_extra_vars_takes_them_as_dash_e():
    contexts = tasks.ns.to_contexts()
    with_extra = [ctx for ctx in contexts if "--extra" in ctx.flags]
    assert len(with_extra) >= 6
    for ctx in with_extra:
        assert ctx.flags["-e"].name == "extra", f"{ctx.name}: -e is {ctx.flags['-e'].name}"


def test_invoke_in_this_repository_has_every_berth_task_and_its_own():
    from berth.cli import tasks as berth_tasks

    mine = set(tasks.ns.task_names)
    assert set(berth_tasks.ns.task_names) <= mine
    assert {"testbed.up", "testbed.down", "testbed.status", "demo"} <= mine
    assert not {"testbed.up", "demo"} & set(berth_tasks.ns.task_names)     # this repository's own
