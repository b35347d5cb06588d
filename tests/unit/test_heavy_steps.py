"""Heavy steps (package installs) have their own concurrency bound, apart from forks.

The applies are counted as they enter and leave the agent call (no SSH: the agent process is replaced by a
counter); nothing here measures time. An apply waits inside the counter until it sees more applies than the
bound at once (a breach) or a short while passes, so that a gate that lets too many through is caught.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from berth.engine.converge import Converger, HostReport
from berth.engine.fleet import HeavySteps
from berth.engine.plan import make_plan
from berth.engine.protocol import Expectation
from berth.engine.resources import File, Packages
from berth.errors import ConfigError
from berth.inventory.loader import Host
from berth.settings import load_settings
from berth.transport.ssh import SSHSettings

NOTHING_FOUND: dict[str, Any] = {"files": {}, "services": {}, "packages": {}}


# The apply's timeouts are every host's (config/defaults.yml).
HOST = Host("h", [], {"berth_apply_lock_timeout": 600, "berth_apt_lock_timeout": 300}, {}, [])

def package_plan():
    return make_plan([Packages(("docker.io",))], [], NOTHING_FOUND)


def file_plan():
    return make_plan([File("/etc/docker/daemon.json", b"{}\n")], [], NOTHING_FOUND)


class Counter:
    """Stands in for the agent process: counts the applies inside it at once, per kind."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.lock = threading.Condition()
        self.inside = {"heavy": 0, "light": 0}
        self.most = {"heavy": 0, "light": 0}

    def ask(self, request: Any, on_event: Any = None) -> dict[str, Any]:
        steps = [s if isinstance(s, dict) else s.wire() for s in request.steps]
        kind = "heavy" if any(s["op"] == "packages" for s in steps) else "light"
        with self.lock:
            self.inside[kind] += 1
            self.most[kind] = max(self.most[kind], self.inside[kind])
            self.lock.notify_all()
            # Stay until a breach shows (more heavy applies than the bound) or others had their chance.
            self.lock.wait_for(lambda: self.inside["heavy"] > self.bound, timeout=0.2)
            self.inside[kind] -= 1
        return {"handlers": [], "timings": {}}


def apply_all(monkeypatch, converger: Converger, plans: list) -> Counter:
    counter = Counter(converger.heavy.limit if converger.heavy else 0)
    with ThreadPoolExecutor(max_workers=len(plans)) as pool:     # forks = every host at once
        list(pool.map(lambda plan: converger._apply(None, counter, plan, HostReport("h"), Expectation(), HOST),
                      plans))
    return counter


def test_package_installs_never_exceed_the_heavy_bound(monkeypatch) -> None:
    converger = Converger(SSHSettings(), None, heavy=HeavySteps(3))
    counter = apply_all(monkeypatch, converger, [package_plan() for _ in range(12)])
    assert counter.most["heavy"] == 3


def test_light_applies_are_not_held_by_heavy_ones(monkeypatch) -> None:
    converger = Converger(SSHSettings(), None, heavy=HeavySteps(2))
    counter = apply_all(monkeypatch, converger, [package_plan() for _ in range(6)] + [file_plan() for _ in range(6)])
    assert counter.most["heavy"] == 2
    assert counter.most["light"] > 2


def test_a_full_gate_lets_a_light_apply_through() -> None:
    gate = HeavySteps(1)
    with gate.hold(True):
        done = threading.Event()

        def light() -> None:
            with gate.hold(False):
                done.set()

        thread = threading.Thread(target=light)
        thread.start()
        thread.join(10)
        assert done.is_set()
        assert not gate._slots.acquire(blocking=False)    # the one heavy slot is still taken


def test_which_plans_are_heavy() -> None:
    assert HeavySteps.is_heavy(package_plan().steps)
    assert not HeavySteps.is_heavy(file_plan().steps)
    assert HeavySteps.is_heavy([], uploads=[(b"deb", "/var/tmp/berth-x/a.deb")])


@pytest.mark.parametrize("value", [0, -1, "ten", True])
def test_package_concurrency_must_be_a_positive_number(tmp_path: Path, value: object) -> None:
    (tmp_path / "berth.yml").write_text(f"package_concurrency: {value}\n")
    with pytest.raises(ConfigError, match="package_concurrency must be a whole number"):
        load_settings(tmp_path)


def test_package_concurrency_defaults_to_ten(tmp_path: Path) -> None:
    assert load_settings(tmp_path).package_concurrency == 10
