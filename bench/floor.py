"""The restart floor of a first converge, measured on the fleet: the hosts do only the unavoidable work.

Every host restarts dockerd and waits for it to answer (its TLS port and its socket, as berth's health
check does), all N at once, with nothing else running: no SSH, no controller, no other step. The hosts
start together at a moment fixed in advance (a common deadline on the machine's clock, which every
container shares), so the time ``docker exec`` takes to reach them is not measured. The floor is the
slowest host's time from that moment: what any tool needs at least for the restarts a first converge
makes, on these hosts, at this load.

Two floors: the restart alone (what the issue calls the floor), and ``systemctl daemon-reload`` first, as
the first converge also needs (its drop-ins changed) and as every tool runs it.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from berth.testbed import Testbed

# Run inside each host: wait for the common start, do the restart, wait until dockerd answers.
# reset-failed first, as berth's handler does: the unit's start limit (3 in 60 s) would refuse the
# repeated restarts of a benchmark.
HOST_SCRIPT = r"""
import socket, subprocess, sys, time
start, reload = float(sys.argv[1]), sys.argv[2] == "reload"
late = time.time() - start
time.sleep(max(0.0, -late))
subprocess.run("systemctl reset-failed docker; " + ("systemctl daemon-reload; " if reload else "")
               + "systemctl restart docker", shell=True, check=True)
def answers():
    try:
        socket.create_connection(("127.0.0.1", 2376), 1).close()
        s = socket.socket(socket.AF_UNIX); s.settimeout(1); s.connect("/run/docker.sock")
        s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n"); ok = s.recv(64).startswith(b"HTTP/1.0 200"); s.close()
        return ok
    except OSError:
        return False
while not answers():
    if time.time() - start > 120:
        sys.exit("dockerd did not answer within 120 s")
    time.sleep(0.01)
print("%.4f %.4f" % (time.time() - start, late))
"""

LEAD_SECONDS = 1.0            # the common start is this far ahead, plus LEAD_PER_HOST per host: docker exec
LEAD_PER_HOST = 0.05          # reaches every host before it (checked: a host reached late makes the
ATTEMPTS = 3                  # measurement start again, with twice the lead)


class FloorError(Exception):
    """A host's restart failed, or a host was reached after the common start."""


@dataclass(frozen=True)
class Floor:
    """One measurement: per-host seconds from the common start until dockerd answered."""

    reload: bool
    seconds: list[float]

    @property
    def slowest(self) -> float:
        return max(self.seconds)

    def as_json(self, n: int, rep: int) -> dict[str, object]:
        return {"n": n, "rep": rep, "reload": self.reload, "max": round(self.slowest, 3),
                "median": round(statistics.median(self.seconds), 3)}


def measure_floor(bed: Testbed, hosts: list[str], *, reload: bool) -> Floor:
    lead = LEAD_SECONDS + LEAD_PER_HOST * len(hosts)
    for _ in range(ATTEMPTS):
        start = time.time() + lead
        argv = ("python3", "-c", HOST_SCRIPT, f"{start:.6f}", "reload" if reload else "restart")
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            done = list(pool.map(_restart, [bed] * len(hosts), hosts, [argv] * len(hosts)))
        if all(late <= 0 for _, late in done):
            return Floor(reload, [seconds for seconds, _ in done])
        lead *= 2
    raise FloorError(f"a host was reached after the common start {ATTEMPTS} times (lead {lead / 2:.1f} s at last)")


def _restart(bed: Testbed, host: str, argv: tuple[str, ...]) -> tuple[float, float]:
    """(seconds from the common start until dockerd answered, how late the host was reached)."""
    proc = bed.exec(host, *argv, check=False)
    if proc.returncode != 0:
        raise FloorError(f"{host}: the restart failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    seconds, late = (float(x) for x in proc.stdout.split())
    return seconds, late
