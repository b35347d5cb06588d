"""What a run is asked to do, as one typed object handed from the command line down to the engine.

The tasks build a ``RunOptions`` from their flags; ``berth.cli.app``, ``Converger`` and ``Rollout`` read it.
A new option is a field here, not one more parameter through every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunOptions:
    check: bool = False                 # plan only: change nothing (the CA is read without its key)
    diff: bool = False                  # print each change's diff (secrets redacted)
    forks: int = 0                      # hosts at once; 0: berth.yml's forks
    force: bool = False                 # dockerd restarts do not wait for running CI jobs
    drain_timeout: float | None = None  # seconds to wait for running jobs; None: each handler's own
    accept_new_host_keys: bool = False  # OpenSSH accept-new: trust unknown keys on first use, never changed ones
    heavy_forks: int = 0                # hosts installing packages at once; 0: berth.yml's package_concurrency

    @property
    def label(self) -> str:
        return "checking" if self.check else "converging"


@dataclass(frozen=True)
class RolloutOptions:
    """A rollout's own choices, beside the run's (``run``)."""

    run: RunOptions = field(default_factory=RunOptions)
    batch: str = "25%"                  # N or P% of the hosts
    parallel: int = 0                   # hosts at once within a batch; 0: forks
    max_fail: str = ""                  # N or P%; "": stop only when a whole batch failed
    shard: str = ""                     # I/N; "": CI_NODE_INDEX/CI_NODE_TOTAL, else every host
