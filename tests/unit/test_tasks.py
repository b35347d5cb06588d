"""The command line's promises: `-e` means extra variables in every task that takes them."""

from __future__ import annotations

import tasks


def test_every_task_with_extra_vars_takes_them_as_dash_e():
    contexts = tasks.ns.to_contexts()
    with_extra = [ctx for ctx in contexts if "--extra" in ctx.flags]
    assert len(with_extra) >= 6
    for ctx in with_extra:
        assert ctx.flags["-e"].name == "extra", f"{ctx.name}: -e is {ctx.flags['-e'].name}"
