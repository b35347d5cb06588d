"""`invoke smoke`: a canary job per runner, started on the host's daemon the way the Docker executor would.

For each runner (settings from the host's own config.toml; a declared runner that is not registered
yet uses the settings berth would write), one SSH command runs a script on the host that does what
gitlab-runner's Docker executor does (executors/docker/docker.go, services.go, internal/networks):
the default bridge, or a per-job network only with FF_NETWORK_PER_BUILD; in dind mode the docker:dind
service with only what the executor gives a service (privileged per services_privileged and
allowed_privileged_services, services_security_opt, the job's public variables such as
``DOCKER_TLS_CERTDIR=/certs``), waited for on its TCP ports as the runner waits (a warning on timeout);
then the job container with the runner's image, privileges, capabilities, volumes, environment, and
the service's aliases as extra hosts. With ``berth_testbed: true`` (the testbed's inventories), where
--privileged cannot be granted, the capability form stands in, and the result says so. The job runs the
pipeline of the README: log in to the registry, build a FROM-scratch image, push it, pull it back by
digest, remove it. Everything the smoke creates carries the label ``berth.smoke`` and is removed at
the end (unless --keep), also after a failure; ``--clean`` removes leftovers.
"""

from __future__ import annotations

import itertools
import re
import secrets
import shlex
import time
import tomllib
from dataclasses import dataclass, field
from typing import Any

from berth.checks import junit
from berth.engine.converge import run_agent
from berth.engine.protocol import FileQuery, ProbeAnswer, ProbeRequest
from berth.engine.results import exit_code as results_exit_code
from berth.errors import BerthError, ExitCode, HostUnreachable
from berth.gitlab import doublestar
from berth.gitlab.runner_config import docker_settings, harden, parse_runners, runner_environment
from berth.inventory.loader import Host
from berth.redact import redact
from berth.transport.ssh import Session, SSHSettings, network_address

LABEL = "berth.smoke"
SOCKET = "/var/run/docker.sock"
STEPS = ("service", "connect", "login", "build", "push", "pull", "cleanup")


@dataclass
class Registry:
    address: str
    user: str
    password: str = field(repr=False)


@dataclass
class SmokeResult:
    host: str
    runner: str
    mode: str
    source: str                      # "config.toml" or "inventory (not registered)"
    status: str = "passed"           # passed, failed, unreachable
    steps: dict[str, float] = field(default_factory=dict)
    failed_step: str | None = None
    cause: str | None = None
    output: str = ""
    seconds: float = 0.0
    network: str = ""                # where job and service met: default bridge, per-job network, network_mode
    # Where the testbed gave a container what the executor would not (it cannot grant --privileged): a
    # pass then claims only what this says, and the table shows it on the row.
    deviation: str | None = None
    warnings: list[str] = field(default_factory=list)   # what the runner would warn about (service wait)
    service_state: str | None = None                    # the dind service's state after a failed job
    icc: str | None = None                              # the default bridge's enable_icc after a failed job

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "runner": self.runner, "mode": self.mode, "source": self.source,
                "status": self.status, "deviation": self.deviation, "network": self.network,
                "steps": {k: round(v, 2) for k, v in self.steps.items()}, "warnings": self.warnings,
                "failed_step": self.failed_step, "cause": self.cause, "seconds": round(self.seconds, 2),
                "output": self.output if self.status != "passed" else ""}

    def status_line(self) -> str:
        """The status as the table shows it: a testbed deviation is part of it."""
        return f"{self.status} ({self.deviation})" if self.deviation and self.status == "passed" else self.status


@dataclass
class Runner:
    name: str
    mode: str
    docker: dict[str, Any]
    environment: list[str]
    source: str
    feature_flags: dict[str, Any] = field(default_factory=dict)   # [runners] feature_flags


def runners_of(host: Host, found: ProbeAnswer) -> list[Runner]:
    """The host's runners: those in its config.toml, and declared ones not registered yet."""
    specs, _ = parse_runners(host.vars.get("gitlab_runners") or [], str(host.origins.get("gitlab_runners")))
    harden(specs, host.vars)
    declared = {s.name: s for s in specs}
    text = found.content(host.vars.get("gitlab_runner_config", ""))
    config = tomllib.loads(text.decode()) if text else {}
    runners = []
    for block in config.get("runners", []):
        if block.get("executor") != "docker":
            continue
        docker = block.get("docker", {})
        spec = declared.get(block.get("name"))
        runners.append(Runner(block["name"], spec.mode if spec else infer_mode(docker, block.get("environment", [])),
                              docker, list(block.get("environment", [])), "config.toml",
                              dict(block.get("feature_flags", {}))))
    for spec in specs:
        if spec.name not in {r.name for r in runners}:
            runners.append(Runner(spec.name, spec.mode, docker_settings(spec), runner_environment(spec),
                                  "inventory (not registered)"))
    return runners


def infer_mode(docker: dict[str, Any], environment: list[str]) -> str:
    if any(e.startswith("DOCKER_HOST=tcp://") for e in environment):
        return "remote"
    if any(v.split(":")[0] == SOCKET for v in docker.get("volumes", [])):
        return "socket"
    return "dind"


def service_image(job_image: str, override: str) -> str:
    """docker:27.5-cli -> docker:27.5-dind (the dind variant of the job's docker image)."""
    if override:
        return override
    name, _, tag = job_image.rpartition(":")
    return f"{name}:{tag.removesuffix('-cli')}-dind" if name else f"{job_image}:dind"


# --- what the Docker executor gives each container (gitlab-runner executors/docker/docker.go) ------

# "Everything --privileged gives" on machines that cannot grant it (README, "The testbed").
TESTBED_CAPABILITIES = ["--cap-add=ALL", "--cap-drop=SYS_RESOURCE",
                        "--security-opt=seccomp=unconfined", "--security-opt=apparmor=unconfined"]
DEVIATION_PRIVILEGED = "testbed: capabilities instead of --privileged"
DEVIATION_SERVICE_CAPS = "testbed: service given capabilities the executor would not give it"
# Printed under the table for each deviation shown.
DEVIATION_NOTES = {
    DEVIATION_PRIVILEGED: "this machine cannot grant --privileged; the capability form stood in for it",
    DEVIATION_SERVICE_CAPS: "the runner's cap_add/cap_drop/security_opt were given to the dind service, but "
                            "the executor gives them only to the job container: on a real host this runner's "
                            "dind service gets no privileges and its jobs fail (use privileged_form privileged "
                            "or services_privileged)",
}
DEFAULT_WAIT_FOR_SERVICES = 30   # gitlab-runner common/consts.go DefaultWaitForServicesTimeout
NETWORK_PER_BUILD = "FF_NETWORK_PER_BUILD"


def allowed_privileged(name: str, patterns: list[str]) -> bool:
    """gitlab-runner executors/docker/docker.go isInAllowedPrivilegedImages: an empty list allows all."""
    return not patterns or any(doublestar.match(p, name) for p in patterns)


def service_privileged(docker: dict[str, Any], service: str) -> bool:
    """createHostConfigForService: privileged, overridden by services_privileged when set, and only for a
    service whose name (as the job writes it) matches allowed_privileged_services."""
    privileged = docker.get("privileged", False)
    if docker.get("services_privileged") is not None:
        privileged = docker["services_privileged"]
    return bool(privileged) and allowed_privileged(service, list(docker.get("allowed_privileged_services") or []))


def job_privileged(docker: dict[str, Any], image: str) -> bool:
    """createHostConfig (build container): privileged, for an image matching allowed_privileged_images."""
    return bool(docker.get("privileged")) and allowed_privileged(image,
                                                                 list(docker.get("allowed_privileged_images") or []))


def service_aliases(image: str) -> list[str]:
    """The link names the runner derives from a service image (gitlab-runner
    helpers/container/services/services.go SplitNameAndVersion): the name without tag, digest and registry
    port, "/" replaced by "__", plus the RFC 1123 variant with "-" when that differs."""
    name = image.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[:name.rfind(":")]
    match = re.fullmatch(r"(.*?)(|:[0-9]+)(|/.*)", name)
    service = match[1] + match[3] if match else name
    alias, alternative = service.replace("/", "__"), service.replace("/", "-")
    return [alias] if alias == alternative else [alias, alternative]


def parse_bool(value: str) -> bool | None:
    """Go's strconv.ParseBool, which gitlab-runner uses for feature flags; None when it is no bool."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def network_per_build(runner: Runner) -> bool:
    """FF_NETWORK_PER_BUILD as gitlab-runner resolves it (common/build_settings.go populateFeatureFlags):
    [runners] feature_flags wins when it names the flag; else the variables (the runner's environment
    here, the smoke job sets none); default off (helpers/featureflags/flags.go)."""
    if NETWORK_PER_BUILD in runner.feature_flags:
        return bool(runner.feature_flags[NETWORK_PER_BUILD])
    values = [e.split("=", 1)[1] for e in runner.environment if e.startswith(f"{NETWORK_PER_BUILD}=")]
    return bool(values) and parse_bool(values[-1]) is True


def _common_flags(docker: dict[str, Any]) -> list[str]:
    """Keys createHostConfig and createHostConfigForService both pass on."""
    flags = [f"--runtime={docker['runtime']}"] if docker.get("runtime") else []
    flags += [f"--dns={d}" for d in docker.get("dns", [])]
    flags += [f"--dns-search={d}" for d in docker.get("dns_search", [])]
    flags += [f"--userns={docker['userns_mode']}"] if docker.get("userns_mode") else []
    flags += [f"--add-host={h}" for h in docker.get("extra_hosts", [])]
    return flags


def service_flags(docker: dict[str, Any], service: str, *, testbed: bool) -> tuple[list[str], str | None]:
    """(flags, testbed deviation) for the service container: createHostConfigForService gives a service
    Privileged and services_security_opt only, never cap_add/cap_drop/security_opt."""
    flags: list[str] = []
    deviation = None
    if service_privileged(docker, service):
        flags, deviation = (TESTBED_CAPABILITIES, DEVIATION_PRIVILEGED) if testbed else (["--privileged"], None)
    elif testbed and docker.get("cap_add"):
        # The capability form (privileged_form: capabilities): the executor gives these to the job only.
        flags = [*_capability_flags(docker), *[f"--security-opt={s}" for s in docker.get("security_opt", [])]]
        deviation = DEVIATION_SERVICE_CAPS
    flags = [*flags, *[f"--security-opt={s}" for s in docker.get("services_security_opt", [])]]
    return [*flags, *_common_flags(docker)], deviation


def _capability_flags(docker: dict[str, Any]) -> list[str]:
    return [*[f"--cap-add={c}" for c in docker.get("cap_add", [])],
            *[f"--cap-drop={c}" for c in docker.get("cap_drop", [])]]


def job_flags(docker: dict[str, Any], *, testbed: bool) -> tuple[list[str], str | None]:
    """(flags, testbed deviation) for the job container, as createHostConfig sets the build container."""
    flags: list[str] = []
    deviation = None
    if job_privileged(docker, docker.get("image", "")):
        flags, deviation = (TESTBED_CAPABILITIES, DEVIATION_PRIVILEGED) if testbed else (["--privileged"], None)
    flags = [*flags, *_capability_flags(docker), *[f"--security-opt={s}" for s in docker.get("security_opt", [])]]
    return [*flags, *_common_flags(docker)], deviation


def _volumes(docker: dict[str, Any], run_id: str) -> tuple[list[str], list[str]]:
    """(volumes to create, -v flags): a path alone becomes a per-job volume, as the runner makes it."""
    create, flags = [], []
    for index, volume in enumerate(docker.get("volumes", [])):
        if ":" in volume:
            flags.append(f"--volume={volume}")
        else:
            name = f"{run_id}-v{index}"
            create.append(name)
            flags.append(f"--volume={name}:{volume}")
    return create, flags


# The job. The password arrives on stdin, as the runner hands a job its script (and its masked
# variables) through the container's attached stdin, never in the container's environment.
CANARY = r"""set -u
IFS= read -r CI_REGISTRY_PASSWORD
step() { echo "::step $1 $(date +%s.%N)"; }
fail() { echo "::fail $1"; exit 1; }
step connect
# Bounded: a dropped connection (icc off, a firewall) would otherwise hang the CLI for minutes.
timeout 30 docker version --format 'server {{.Server.Version}}' || fail connect
step login
printf '%s' "$CI_REGISTRY_PASSWORD" | docker login -u "$CI_REGISTRY_USER" --password-stdin "$CI_REGISTRY" || fail login
mkdir -p /tmp/berth-smoke-context
printf 'FROM scratch\nCOPY canary.txt /canary.txt\n' > /tmp/berth-smoke-context/Dockerfile
echo "$SMOKE_IMAGE" > /tmp/berth-smoke-context/canary.txt
step build
docker build -q -t "$SMOKE_IMAGE" /tmp/berth-smoke-context || fail build
step push
docker push "$SMOKE_IMAGE" || fail push
digest=$(docker inspect --format '{{index .RepoDigests 0}}' "$SMOKE_IMAGE")
docker rmi "$SMOKE_IMAGE" >/dev/null
step pull
docker pull "$digest" || fail pull
echo "::digest $digest"
step cleanup
docker rmi "$digest" >/dev/null; docker logout "$CI_REGISTRY" >/dev/null
step done
"""


@dataclass
class JobPlan:
    """The script for one runner's canary job and what it gives the containers."""

    script: str
    network: str                       # "default bridge", "per-job network", "network_mode <mode>"
    service_privileged: bool | None    # None: no service (socket, remote)
    deviations: list[str] = field(default_factory=list)


def _user_defined(mode: str) -> bool:
    """moby's NetworkMode.IsUserDefined: not default, bridge, host, none or container:<id>."""
    return mode not in ("", "default", "bridge", "host", "none") and not mode.startswith("container:")


def _wait_lines(container: str, timeout: int) -> list[str]:
    """Wait for the service as gitlab-runner does (executors/docker/services.go waitForServices, the helper's
    commands/helpers/health_check.go): until ANY of its exposed TCP ports (or HEALTHCHECK_TCP_PORT) accepts
    a connection, for wait_for_services_timeout seconds (30 by default, none when negative); on timeout
    only a warning, and the job starts anyway. The runner dials from a helper container; this dials from
    the host, which differs only when icc is off, and then the job fails at connect all the same."""
    if timeout < 0:
        return ["echo '::warn wait_for_services_timeout is negative: the service is not waited for'"]
    return [
        f"ports=$(docker inspect -f '{{{{range .Config.Env}}}}{{{{println .}}}}{{{{end}}}}' {container} "
        "| sed -n 's/^[Hh][Ee][Aa][Ll][Tt][Hh][Cc][Hh][Ee][Cc][Kk]_[Tt][Cc][Pp]_[Pp][Oo][Rr][Tt]=//p' | head -1)",
        f"[ -n \"$ports\" ] || ports=$(docker inspect -f '{{{{range $p, $_ := .Config.ExposedPorts}}}}{{{{$p}}}} "
        f"{{{{end}}}}' {container} | tr ' ' '\\n' | sed -n 's#/tcp$##p' | sort -n | head -20)",
        "set -- $ips; up=; deadline=$((SECONDS + " + str(timeout) + "))",
        "while [ -n \"${1:-}\" ] && [ -n \"$ports\" ] && [ $SECONDS -lt $deadline ]; do",
        "  for p in $ports; do (exec 3<>/dev/tcp/$1/$p) 2>/dev/null && { up=$p; break 2; }; done",
        # Not in the runner (it waits the full timeout): a service that already exited cannot come up.
        f"  [ \"$(docker inspect -f '{{{{.State.Running}}}}' {container})\" = true ] || break",
        "  sleep 1",
        "done",
        f"[ -n \"$up\" ] || {{ echo \"::warn service {container} probably didn't start properly: no TCP "
        f"connection to port(s) $(echo $ports) within {timeout}s\"; docker logs --tail 5 {container} 2>&1 "
        "| sed 's/^/  service: /'; }",
    ]


@dataclass
class _Job:
    """What the job and its service share: the run's id, label, network, volumes and variables."""

    run_id: str
    image: str                     # the image the canary builds and pushes
    network: str                   # "" = the default bridge
    per_build: bool
    volume_flags: list[str]
    env_flags: list[str]

    @property
    def label(self) -> str:
        return f"--label={LABEL}={self.run_id}"

    @property
    def network_flags(self) -> list[str]:
        return [f"--network={self.network}"] if self.network else []

    @property
    def described_network(self) -> str:
        return "per-job network" if self.per_build else f"network_mode {self.network}" if self.network \
            else "default bridge"


def _job(runner: Runner, registry: Registry) -> tuple[_Job, list[str]]:
    """(the job's shared settings, the volumes to create)."""
    run_id = f"berth-smoke-{secrets.token_hex(4)}"
    image = f"{registry.address}/berth-smoke/{runner.name}:{run_id}"
    create, volume_flags = _volumes(runner.docker, run_id)
    # gitlab-runner executors/docker/internal/networks/manager.go Create: network_mode as given; else a
    # per-job network only with FF_NETWORK_PER_BUILD; else the daemon's default bridge.
    mode = runner.docker.get("network_mode") or ""
    per_build = not mode and network_per_build(runner)
    # Job variables; the public and internal ones also reach services (common/build.go GetServiceVariables):
    # the runner's environment (internal), DOCKER_TLS_CERTDIR, CI_REGISTRY(_USER). CI_REGISTRY_PASSWORD is
    # not public (GitLab app/models/ci/build.rb), so no service gets it; the job reads it from stdin.
    env = [*runner.environment, "DOCKER_TLS_CERTDIR=/certs", f"CI_REGISTRY={registry.address}",
           f"CI_REGISTRY_USER={registry.user}", f"SMOKE_IMAGE={image}"]
    if per_build:
        env.append(f"CI_BUILD_NETWORK_NAME={run_id}")    # common/build.go getBaseVariablesAfterJob
    job = _Job(run_id, image, run_id if per_build else mode, per_build, volume_flags, [f"--env={e}" for e in env])
    return job, create


def _preamble(job: _Job, create: list[str], keep: bool) -> list[str]:
    """Read the password, arrange the cleanup, make the per-job network and volumes."""
    repository = shlex.quote(job.image.rsplit(":", 1)[0])
    cleanup = ["  echo '::kept'"] if keep else [
        f"  docker rm -f -v $(docker ps -aq --filter label={LABEL}={job.run_id}) >/dev/null 2>&1",
        f"  docker volume rm $(docker volume ls -q --filter label={LABEL}={job.run_id}) >/dev/null 2>&1",
        f"  docker network rm {job.run_id} >/dev/null 2>&1",
        f"  docker rmi $(docker images -q {repository}) >/dev/null 2>&1",
    ]
    lines = ["set -u", "IFS= read -r CI_REGISTRY_PASSWORD", 'step() { echo "::step $1 $(date +%s.%N)"; }',
             "cleanup() {", *cleanup, "  true", "}", "trap cleanup EXIT", "trap 'exit 130' INT TERM HUP",
             "hosts=()"]
    if job.per_build:
        lines.append(shlex.join(["docker", "network", "create", job.label, job.run_id]) + " >/dev/null || exit 1")
    return lines + [shlex.join(["docker", "volume", "create", job.label, name]) + " >/dev/null || exit 1"
                    for name in create]


def _service_lines(job: _Job, docker: dict[str, Any], service_img: str, service_command: list[str],
                   flags: list[str]) -> list[str]:
    """Start the service (executors/docker/docker.go createService), collect its links, wait for it."""
    aliases = service_aliases(service_img)
    # Aliases on the network only where Docker's DNS serves them (docker.go networkConfig).
    alias_flags = [f"--network-alias={a}" for a in aliases] if _user_defined(job.network) else []
    service = f"{job.run_id}-service"
    run = shlex.join(["docker", "run", "-d", f"--name={service}", job.label, *job.network_flags, *alias_flags,
                      *flags, *job.volume_flags, *job.env_flags, service_img, *service_command])
    return [
        "step service",
        f"sid=$({run}) || {{ echo '::fail service'; exit 1; }}",
        f"ips=$(docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}} "
        f"{{{{.GlobalIPv6Address}}}} {{{{end}}}}' {service})",
        # executors/docker/services.go createServices (from 18.7, replacing legacy links): every alias and
        # the 12-character container id become extra_hosts of the job, one per service address.
        "for ip in $ips; do for name in " + " ".join(shlex.quote(a) for a in aliases)
        + ' "${sid:0:12}"; do hosts+=("--add-host=$name:$ip"); done; done',
        *_wait_lines(service, _wait_timeout(docker)),
    ]


def _after_failure(job: _Job) -> list[str]:
    """After a failed dind job: the service's state and last lines, and whether icc is off."""
    service = f"{job.run_id}-service"
    return [
        "if [ $code -ne 0 ]; then",
        f"  echo \"::service-state $(docker inspect -f '{{{{.State.Status}}}}' {service})\"",
        f"  docker logs --tail 5 {service} 2>&1 | sed 's/^/  service: /'",
        "  echo \"::icc $(docker network inspect bridge -f "
        "'{{index .Options \"com.docker.network.bridge.enable_icc\"}}')\"",
        "fi",
    ]


def job_script(runner: Runner, registry: Registry, *, service_img: str, service_command: list[str],
               extra_hosts: list[str], keep: bool, testbed: bool = False) -> JobPlan:
    """The shell script (bash, as root on the host) for one runner's canary job, as the executor runs it."""
    docker = runner.docker
    job, create = _job(runner, registry)
    lines = _preamble(job, create, keep)
    deviations: list[str] = []
    privileged = None
    if runner.mode == "dind":
        privileged = service_privileged(docker, service_img)
        flags, deviation = service_flags(docker, service_img, testbed=testbed)
        deviations += [deviation] if deviation else []
        lines += _service_lines(job, docker, service_img, service_command, flags)
    job_extra, deviation = job_flags({**docker, "extra_hosts": [*docker.get("extra_hosts", []), *extra_hosts]},
                                     testbed=testbed)
    deviations += [deviation] if deviation and deviation not in deviations else []
    run = shlex.join(["docker", "run", "-i", f"--name={job.run_id}-job", job.label, *job.network_flags,
                      *job_extra, *job.volume_flags, *job.env_flags])
    image_and_command = shlex.join([docker["image"], "sh", "-c", CANARY])
    lines += [f"printf '%s\\n' \"$CI_REGISTRY_PASSWORD\" | {run} ${{hosts[@]+\"${{hosts[@]}}\"}} "
              f"{image_and_command} 2>&1", "code=$?"]
    if runner.mode == "dind":
        lines += _after_failure(job)
    lines.append("exit $code")
    return JobPlan("\n".join(lines) + "\n", job.described_network, privileged, deviations)


def _wait_timeout(docker: dict[str, Any]) -> int:
    value = int(docker.get("wait_for_services_timeout") or 0)
    return value or DEFAULT_WAIT_FOR_SERVICES


CAUSES = {
    ("dind", "service"): "docker could not start the docker:dind service container (see the output)",
    ("socket", "connect"): "the job could not use the host's Docker socket",
    ("remote", "connect"): "the job cannot reach DOCKER_HOST with the client certificate mounted at /certs/client "
                           "(check remote_host, the TLS port, and that the certificate comes from berth's CA)",
    ("*", "login"): "the registry refused the credentials or cannot be reached",
    ("*", "build"): "the daemon could not build a FROM-scratch image",
    ("*", "push"): "the daemon cannot push to the registry (an HTTP registry must be in insecure-registries)",
    ("*", "pull"): "the image could not be pulled back by its digest",
}
UNPRIVILEGED = ("the docker:dind service got no privileges and exited: gitlab-runner gives a service only "
                "privileged (or services_privileged, for names matching allowed_privileged_services) and "
                "services_security_opt, never cap_add/cap_drop/security_opt (executors/docker/docker.go "
                "createHostConfigForService); use privileged_form privileged or services_privileged")
ICC_OFF = ("the job cannot reach the docker:dind service on the default bridge: the runner links them with "
           "extra_hosts (container to container traffic), and \"icc\": false in daemon.json forbids that there; "
           "set FF_NETWORK_PER_BUILD (a per-job network, where icc does not apply) or leave icc on")


def likely_cause(result: SmokeResult, runner: Runner, step: str, *, service_privileged: bool | None) -> str:
    volumes = runner.docker.get("volumes", [])
    if runner.mode == "dind" and step == "connect":
        if result.service_state not in (None, "running"):
            return UNPRIVILEGED if not service_privileged else (
                "the docker:dind service exited (see its last log lines): it needs a storage driver that works "
                "here, and its command must be valid")
        if "/certs/client" not in volumes:
            return ("the job cannot reach docker:2376 because /certs/client is not shared between job and service "
                    "(add \"/certs/client\" to the runner's volumes)")
        if result.icc == "false" and result.network == "default bridge":
            return ICC_OFF
        return "the job cannot reach the docker:dind service at docker:2376 with the client certificate it shares"
    if runner.mode == "socket" and step == "connect" and not any(v.split(":")[0] == SOCKET for v in volumes):
        return "the host's /var/run/docker.sock is not bound into the job (add it to the runner's volumes)"
    return CAUSES.get((runner.mode, step)) or CAUSES.get(("*", step)) or "see the job's output"


def parse_output(result: SmokeResult, output: str, exit_code: int, runner: Runner, *,
                 service_privileged: bool | None = None) -> None:
    marks: list[tuple[str, float]] = []
    for line in output.splitlines():
        if line.startswith("::step "):
            _, name, stamp = line.split()
            marks.append((name, float(stamp)))
        elif line.startswith("::fail "):
            result.failed_step = line.split()[1]
        elif line.startswith("::warn "):
            result.warnings.append(line.removeprefix("::warn "))
        elif line.startswith("::service-state"):
            result.service_state = line.removeprefix("::service-state").strip() or "removed"
        elif line.startswith("::icc"):
            result.icc = line.removeprefix("::icc").strip() or "true"   # unset: Docker's default, on
    for (name, start), (_, end) in itertools.pairwise(marks):
        result.steps[name] = end - start
    if exit_code != 0 or result.failed_step:
        result.status = "failed"
        result.failed_step = result.failed_step or (marks[-1][0] if marks else "start")
        result.cause = likely_cause(result, runner, result.failed_step, service_privileged=service_privileged)
        result.output = "\n".join(output.splitlines()[-20:])


def smoke_host(host: Host, settings: SSHSettings, registry: Registry, *, hosts_by_name: dict[str, Host],
               only: str = "", keep: bool = False) -> list[SmokeResult]:
    config = host.vars.get("gitlab_runner_config", "/etc/gitlab-runner/config.toml")
    try:
        with Session(host, settings) as session:
            found = ProbeAnswer.from_wire(run_agent(session, ProbeRequest(files=(FileQuery(config, content=True),))))
            results = []
            for runner in runners_of(host, found):
                if only and runner.name != only:
                    continue
                results.append(_smoke_runner(session, host, runner, registry, settings, hosts_by_name, keep))
            return results
    except HostUnreachable as exc:
        return [SmokeResult(host.name, only or "-", "-", "-", status="unreachable", cause=str(exc))]
    except BerthError as exc:
        return [SmokeResult(host.name, only or "-", "-", "-", status="failed", cause=str(exc))]


def _smoke_runner(session: Session, host: Host, runner: Runner, registry: Registry, settings: SSHSettings,
                  hosts_by_name: dict[str, Host], keep: bool) -> SmokeResult:
    result = SmokeResult(host.name, runner.name, runner.mode, runner.source)
    extra_hosts = []
    for entry in runner.environment:
        # What DNS gives jobs on a real network: the remote daemon's name resolves to its address.
        if entry.startswith("DOCKER_HOST=tcp://"):
            name = entry.split("//", 1)[1].rsplit(":", 1)[0]
            if name in hosts_by_name:
                extra_hosts.append(f"{name}:{network_address(hosts_by_name[name], settings)}")
    plan = job_script(
        runner, registry, service_img=service_image(runner.docker.get("image", ""), host.vars["smoke_service_image"]),
        service_command=list(host.vars["smoke_service_command"]), extra_hosts=extra_hosts, keep=keep,
        testbed=host.vars.get("berth_testbed") is True,
    )
    result.network = plan.network
    result.deviation = "; ".join(plan.deviations) or None
    started = time.monotonic()
    answer = session.run(f"bash -c {shlex.quote(plan.script)}", stdin=(registry.password + "\n").encode(),
                         timeout=900)
    result.seconds = time.monotonic() - started
    parse_output(result, redact(answer.stdout + answer.stderr, [registry.password]), answer.exit_code, runner,
                 service_privileged=plan.service_privileged)
    return result


def clean_host(host: Host, settings: SSHSettings) -> int:
    """Remove every container, volume, network and image a smoke left on the host (--keep, Ctrl-C)."""
    with Session(host, settings) as session:
        answer = session.run(
            f"c=$(docker ps -aq --filter label={LABEL}); [ -n \"$c\" ] && docker rm -f -v $c >/dev/null; "
            f"v=$(docker volume ls -q --filter label={LABEL}); [ -n \"$v\" ] && docker volume rm $v >/dev/null; "
            f"n=$(docker network ls -q --filter label={LABEL}); [ -n \"$n\" ] && docker network rm $n >/dev/null; "
            "i=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep /berth-smoke/); "
            "[ -n \"$i\" ] && docker rmi $i >/dev/null; echo $c $v $n | wc -w"
        )
    return int(answer.stdout.strip() or 0)


def junit_xml(results: list[SmokeResult]) -> bytes:
    """One <testsuite> per host, one <testcase> per runner; a failure names the step and the likely cause."""
    suites = []
    for host in dict.fromkeys(r.host for r in results):
        cases = []
        for r in (r for r in results if r.host == host):
            case = junit.Case(f"{r.runner} ({r.mode})", f"{host}.smoke", r.seconds,
                              properties=[("deviation", r.deviation)] if r.deviation else [])
            if r.status == "failed":
                case.outcome, case.message, case.kind, case.text = (junit.FAILURE, f"{r.failed_step}: {r.cause}",
                                                                    "smoke failed", r.output)
            elif r.status == "unreachable":
                case.outcome, case.message, case.kind = junit.ERROR, r.cause or "unreachable", "unreachable"
            else:
                steps = " ".join(f"{k}={v:.1f}s" for k, v in r.steps.items())
                case.system_out = f"{steps}\n{r.deviation}" if r.deviation else steps
            cases.append(case)
        suites.append(junit.Suite(host, cases))
    return junit.junit_xml("berth smoke", suites)


def exit_code(results: list[SmokeResult]) -> ExitCode:
    """The worst runner decides (berth.engine.results.exit_code): a failure, then an unreachable host."""
    return results_exit_code(r.status for r in results)
