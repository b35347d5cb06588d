"""What happened on each host, whatever the command, and the one mapping from that to an exit code.

Every command reports per host with a ``HostResult`` (converge: ``HostReport``, rollout: ``RolloutHost``,
verify: ``HostChecks``), and its exit code is ``exit_code`` of their statuses: the worst host decides
(README "Exit codes"). The smoke's per-runner results use the same status names and the same mapping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from berth.errors import ExitCode


class Status(StrEnum):
    OK = "ok"
    CHANGED = "changed"
    PENDING = "pending"          # check mode found changes
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    INVALID = "invalid"          # the host's variables or roles are wrong; nothing was changed
    PASSED = "passed"            # verify, smoke: every check passed


# Worst first: the first status present decides. Any other status (ok, changed, passed, unchanged...) is 0.
EXIT_CODES: tuple[tuple[str, ExitCode], ...] = (
    (Status.INVALID, ExitCode.BAD_INVENTORY),
    (Status.FAILED, ExitCode.HOST_FAILED),
    (Status.UNREACHABLE, ExitCode.HOST_UNREACHABLE),
    (Status.PENDING, ExitCode.CHANGES_PENDING),
)


def exit_code(statuses: Iterable[str]) -> ExitCode:
    """The exit code of a command from its hosts' (or runners') statuses."""
    present = {str(s) for s in statuses}
    return next((code for status, code in EXIT_CODES if status in present), ExitCode.OK)


@dataclass
class HostResult:
    """One host's outcome: the fields every command reports (and ``exit_code`` reads)."""

    host: str
    status: str = Status.OK
    error: str | None = None
    commands: int = 0            # SSH commands sent to the host
    seconds: float = 0.0
