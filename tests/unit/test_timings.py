"""Where a converge's time goes: the agent times its own phases, the controller its round trips (--json timings).

Only the presence and consistency of the figures is checked, never their size.
"""

from __future__ import annotations

import io
import json
from typing import Any

from berth.engine.converge import Converger, HostReport
from berth.engine.plan import make_plan
from berth.engine.protocol import Expectation
from berth.engine.resources import File
from berth.inventory.loader import Host
from berth.remote import agent
from berth.transport.ssh import SSHSettings

TIMEOUTS = {"berth_apply_lock_timeout": 600, "berth_apt_lock_timeout": 300}    # every host's (config/defaults.yml)


def test_the_agent_times_steps_and_each_handler(tmp_path) -> None:
    answer = agent.apply({"steps": [], "handlers": [
        {"name": "first", "cmd": "true", "unit": None, "health": None, "rollback": False},
        {"name": "second", "cmd": "true", "unit": None,
         "health": {"unix": None, "tcp": [], "timeout": 1}, "rollback": False},
    ]})
    assert answer["error"] is None
    timings = answer["timings"]
    assert {"steps", "validate", "handler:first", "handler:second", "health:second"} <= set(timings)
    assert "health:first" not in timings          # no health check, no wait
    assert all(value >= 0 for value in timings.values())


def test_the_agent_says_how_long_it_ran(capsys) -> None:
    agent.main(io.BytesIO(b'{"action": "apply", "steps": [], "handlers": []}\n'))
    assert json.loads(capsys.readouterr().out)["timings"]["agent"] >= 0


def test_the_report_carries_the_apply_split(monkeypatch) -> None:
    class Agent:
        def ask(self, request: Any, on_event: Any = None) -> dict[str, Any]:
            return {"handlers": ["restart docker"], "timings": {"agent": 2.0, "handler:restart docker": 1.5},
                    "protocol": 1}

    report = HostReport("h")
    plan = make_plan([File("/etc/x", b"x")], [], {"files": {}, "services": {}, "packages": {}})
    Converger(SSHSettings(), None)._apply(None, Agent(), plan, report, Expectation(), Host("h", [], TIMEOUTS, {}, []))
    timings = report.as_dict()["timings"]
    assert timings["apply:agent"] == 2.0 and timings["handler:restart docker"] == 1.5
    assert {"csr", "apply"} <= set(timings) and "heavy_wait" not in timings
