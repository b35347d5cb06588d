"""Section 5 of the CIS Docker Benchmark for the containers a runner WILL start, judged from config.toml.

A runner host's containers that matter are its CI jobs, which come and go; what they look like is decided by
the runner's ``[runners.docker]`` table. gitlab-runner builds a job's HostConfig in executors/docker/docker.go
``createHostConfig`` and a service's in ``createHostConfigForService`` (gitlab-runner v19.3.0, keys from
common/config.go ``DockerConfig``); :func:`job_container` and :func:`service_container` follow them field by
field, so the evaluator of berth/checks/container_controls.py judges them like running containers.

What gitlab-runner cannot set is said so: it has no key for a read-only root file system (5.13), a PIDs limit
(5.29) or a health check of the job container (5.27), so those are accepted risks of every runner.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from berth.checks.container_controls import Container, problems

PASS, RISK, FAIL = "pass", "risk", "fail"
# docker/go-units RAMInBytes, which gitlab-runner's getMemoryBytes uses: binary multiples, optional "i"/"b".
_RAM = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_PROPAGATION = ("shared", "rshared", "slave", "rslave", "private", "rprivate")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
# Controls gitlab-runner offers no key for: every runner's jobs break them, whatever the inventory says.
NO_KEY = {
    "5.13": "gitlab-runner has no read-only root file system setting for jobs (common/config.go DockerConfig); "
            "build tools write to the container's file system",
    "5.27": "jobs are short-lived script runs; gitlab-runner gives the job container no health check",
    "5.29": "gitlab-runner has no pids_limit setting (common/config.go DockerConfig); limit processes with a "
            "cgroup_parent whose pids.max is set",
}
# Controls the fleet may harden through inventory variables (gitlab_runner role): control -> container -> variable.
HARDENING = {
    "5.11": {"job": "gitlab_runner_job_memory", "service": "gitlab_runner_service_memory"},
    "5.12": {"job": "gitlab_runner_job_cpus", "service": "gitlab_runner_service_cpus"},
    "5.26": {"job": "gitlab_runner_job_no_new_privileges"},
}


def ram_bytes(value: Any) -> int:
    """gitlab-runner's reading of ``memory``/``service_memory`` ("2g", "512m"); 0 when unset or unreadable."""
    match = _RAM.match(str(value or "").strip())
    if not match:
        return 0
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def nano_cpus(value: Any) -> int:
    """gitlab-runner's computeNanoCPUs: ``cpus`` as a rational number of CPUs, in billionths."""
    try:
        return int(Fraction(str(value)) * 1_000_000_000) if value not in (None, "") else 0
    except (ValueError, ZeroDivisionError):
        return 0


def _mounts(docker: Mapping[str, Any]) -> list[tuple[str, bool, str]]:
    """Host bind mounts of ``volumes`` ("src:dst[:opts]"); a bare "/cache" is a volume, not a host path."""
    found = []
    for volume in docker.get("volumes") or []:
        parts = str(volume).split(":")
        if len(parts) < 2 or not parts[0].startswith("/"):
            continue
        opts = parts[2].split(",") if len(parts) > 2 else []
        propagation = next((o for o in opts if o in _PROPAGATION), "")
        found.append((parts[0], "ro" not in opts, propagation))
    return found


def job_container(runner: str, docker: Mapping[str, Any]) -> Container:
    """The build container (docker.go createHostConfig)."""
    return Container(
        name=f"{runner} job", privileged=bool(docker.get("privileged")), cap_add=list(docker.get("cap_add") or []),
        security_opt=list(docker.get("security_opt") or []), mounts=_mounts(docker),
        network_mode=str(docker.get("network_mode") or ""), pid_mode=str(docker.get("pid_mode") or ""),
        ipc_mode=str(docker.get("ipcmode") or ""), userns_mode=str(docker.get("userns_mode") or ""),
        memory=ram_bytes(docker.get("memory")), cpu_shares=int(docker.get("cpu_shares") or 0),
        nano_cpus=nano_cpus(docker.get("cpus")), cgroup_parent=str(docker.get("cgroup_parent") or ""),
        devices=[str(d) for d in docker.get("devices") or []], apparmor_profile=None,
    )


def service_container(runner: str, docker: Mapping[str, Any]) -> Container:
    """A service container (docker.go createHostConfigForService): privileged from services_privileged when set,
    services_security_opt, service_* limits; never cap_add, pid_mode or ipcmode."""
    privileged = docker.get("services_privileged")
    return Container(
        name=f"{runner} service", privileged=bool(docker.get("privileged") if privileged is None else privileged),
        security_opt=list(docker.get("services_security_opt") or []), mounts=_mounts(docker),
        network_mode=str(docker.get("network_mode") or ""), userns_mode=str(docker.get("userns_mode") or ""),
        memory=ram_bytes(docker.get("service_memory")), cpu_shares=int(docker.get("service_cpu_shares") or 0),
        nano_cpus=nano_cpus(docker.get("service_cpus")), cgroup_parent=str(docker.get("service_cgroup_parent") or ""),
        devices=[str(d) for d in docker.get("services_devices") or []], apparmor_profile=None,
    )


@dataclass(frozen=True)
class Verdict:
    runner: str
    status: str          # pass, risk, fail
    message: str = ""


@dataclass(frozen=True)
class RunnerFacts:
    """One [[runners]] block as the host has it, and what berth knows of it."""

    name: str
    docker: Mapping[str, Any]
    mode: str | None = None              # dind, socket, remote when the inventory declares the runner
    privileged_form: str = "privileged"


def mode_accepts(cis_id: str, runner: RunnerFacts, userns_remap: bool) -> str | None:
    """The reason the runner's docker mode needs this deviation, or None."""
    if runner.mode == "dind":
        if cis_id in ("5.5", "5.2") and runner.privileged_form != "capabilities":
            return "mode dind: the docker:dind service runs privileged (and so without AppArmor)"
        if cis_id in ("5.4", "5.22", "5.2") and runner.privileged_form == "capabilities":
            return "mode dind, privileged_form capabilities (TESTBED ONLY): the privileged form by capabilities"
        if cis_id == "5.31" and userns_remap:
            return ('mode dind with userns-remap on the daemon: a privileged dind service needs userns_mode = "host" '
                    "(a remapped user cannot be privileged)")
    if runner.mode == "socket" and cis_id == "5.32":
        return "mode socket: jobs mount docker.sock by design, and any job is root on the host"
    return None


def _declared(host_vars: Mapping[str, Any], variable: str | None) -> bool:
    return bool(variable) and host_vars.get(variable or "") not in (None, "", [], False)


def _one(cis_id: str, text: str, kind: str, runner: RunnerFacts, host_vars: Mapping[str, Any],
         accepted: Mapping[str, str], userns_remap: bool) -> tuple[str, str]:
    """(status, message) of one container's problem."""
    if cis_id in NO_KEY:
        return RISK, f"{text}: {NO_KEY[cis_id]}"
    reason = mode_accepts(cis_id, runner, userns_remap)
    if reason:
        return RISK, f"{text}: {reason}"
    variable = HARDENING.get(cis_id, {}).get(kind)
    if _declared(host_vars, variable):
        return FAIL, f"{text}, but the inventory declares {variable}"
    if cis_id in accepted:
        return RISK, f"{text}; accepted: {accepted[cis_id]}"
    if cis_id in HARDENING:
        hint = (f"set {variable} to hold the runners to it" if variable
                else "services: a runner's own services_security_opt docker key can set it")
        return RISK, f"{text}: not declared ({hint})"
    if cis_id == "5.25":
        return RISK, f"{text}: a cgroup parent set on purpose (docker-bench asks to confirm it)"
    return FAIL, text


def judge(cis_id: str, runner: RunnerFacts, host_vars: Mapping[str, Any], accepted: Mapping[str, str],
          userns_remap: bool = False) -> Verdict:
    """Pass, accepted risk (by mode, by a key gitlab-runner lacks, by the inventory, by a hardening variable left
    unset) or failure of one runner, for its job container and its service containers."""
    found: list[tuple[str, str]] = []
    for kind, container in (("job", job_container(runner.name, runner.docker)),
                            ("service", service_container(runner.name, runner.docker))):
        for text in problems(cis_id, [container]):
            found.append(_one(cis_id, text, kind, runner, host_vars, accepted, userns_remap))
    if cis_id == "5.4" and _declared(host_vars, "gitlab_runner_job_cap_drop"):
        # Beyond docker-bench's 5.4 (which reads cap_add): the capabilities the inventory drops stay dropped.
        dropped = {str(c).upper().removeprefix("CAP_") for c in runner.docker.get("cap_drop") or []}
        wanted = host_vars["gitlab_runner_job_cap_drop"]
        missing = [c for c in wanted if str(c).upper().removeprefix("CAP_") not in dropped]
        if missing and not runner.docker.get("privileged"):
            found.append((FAIL, f"{runner.name} job: does not drop {', '.join(missing)} (gitlab_runner_job_cap_drop)"))
    for status in (FAIL, RISK):
        texts = [t for s, t in found if s == status]
        if texts:
            return Verdict(runner.name, status, "; ".join(texts))
    return Verdict(runner.name, PASS)
