"""`invoke smoke`: a canary job per runner, started on the host's daemon the way the Docker executor would.

For each runner (settings from the host's own config.toml; a declared runner that is not registered
yet uses the settings berth would write), one SSH command runs a script on the host that creates a
per-job network and volumes, starts the docker:dind service in dind mode (alias ``docker``,
``DOCKER_TLS_CERTDIR=/certs``) and waits for its TCP port as the runner does, then runs the job
container with the runner's image, privileges, volumes, environment and extra hosts. The job runs the
pipeline of the README: log in to the registry, build a FROM-scratch image, push it, pull it back by
digest, remove it. Everything the smoke creates carries the label ``berth.smoke`` and is removed at
the end (unless --keep), also after a failure; ``--clean`` removes leftovers.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import shlex
import time
import tomllib
from dataclasses import dataclass, field
from typing import Any

from berth.engine import run_agent
from berth.errors import BerthError, HostUnreachable
from berth.inventory import Host
from berth.redact import redact
from berth.runner_config import docker_settings, parse_runners, runner_environment
from berth.ssh import Session, SSHSettings, network_address

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

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "runner": self.runner, "mode": self.mode, "source": self.source,
                "status": self.status, "steps": {k: round(v, 2) for k, v in self.steps.items()},
                "failed_step": self.failed_step, "cause": self.cause, "seconds": round(self.seconds, 2),
                "output": self.output if self.status != "passed" else ""}


@dataclass
class Runner:
    name: str
    mode: str
    docker: dict[str, Any]
    environment: list[str]
    source: str


def runners_of(host: Host, found: dict[str, Any]) -> list[Runner]:
    """The host's runners: those in its config.toml, and declared ones not registered yet."""
    specs, _ = parse_runners(host.vars.get("gitlab_runners") or [], str(host.origins.get("gitlab_runners")))
    declared = {s.name: s for s in specs}
    state = found["files"].get(host.vars.get("gitlab_runner_config", ""), {})
    config = tomllib.loads(base64.b64decode(state["content"]).decode()) if state.get("content") else {}
    runners = []
    for block in config.get("runners", []):
        if block.get("executor") != "docker":
            continue
        docker = block.get("docker", {})
        spec = declared.get(block.get("name"))
        runners.append(Runner(block["name"], spec.mode if spec else infer_mode(docker, block.get("environment", [])),
                              docker, list(block.get("environment", [])), "config.toml"))
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


def _flags(docker: dict[str, Any], *, service: bool) -> list[str]:
    privileged = docker.get("services_privileged", docker.get("privileged")) if service else docker.get("privileged")
    flags = ["--privileged"] if privileged else []
    flags += [f"--cap-add={c}" for c in docker.get("cap_add", [])]
    flags += [f"--cap-drop={c}" for c in docker.get("cap_drop", [])]
    security = docker.get("services_security_opt" if service else "security_opt") or docker.get("security_opt", [])
    flags += [f"--security-opt={s}" for s in security]
    flags += [f"--add-host={h}" for h in docker.get("extra_hosts", [])]
    return flags


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


CANARY = r"""set -u
step() { echo "::step $1 $(date +%s.%N)"; }
fail() { echo "::fail $1"; exit 1; }
step connect
docker version --format 'server {{.Server.Version}}' || fail connect
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


def job_script(runner: Runner, registry: Registry, *, service_img: str, service_command: list[str],
               service_timeout: int, extra_hosts: list[str], keep: bool) -> str:
    """The shell script run on the host (as root) for one runner's canary job."""
    run_id = f"berth-smoke-{secrets.token_hex(4)}"
    image = f"{registry.address}/berth-smoke/{runner.name}:{run_id}"
    docker = {**runner.docker, "extra_hosts": [*runner.docker.get("extra_hosts", []), *extra_hosts]}
    create, volume_flags = _volumes(docker, run_id)
    label = f"--label={LABEL}={run_id}"
    network = docker.get("network_mode") or run_id
    env = [*runner.environment, "DOCKER_TLS_CERTDIR=/certs", f"CI_REGISTRY={registry.address}",
           f"CI_REGISTRY_USER={registry.user}", f"SMOKE_IMAGE={image}"]
    env_flags = [f"--env={e}" for e in env] + ["--env=CI_REGISTRY_PASSWORD"]   # value from this script's env
    q = shlex.join
    lines = [
        "set -u", "IFS= read -r CI_REGISTRY_PASSWORD; export CI_REGISTRY_PASSWORD",
        'step() { echo "::step $1 $(date +%s.%N)"; }',
        "cleanup() {",
        "  echo '::kept'" if keep else
        f"  docker rm -f -v $(docker ps -aq --filter label={LABEL}={run_id}) >/dev/null 2>&1\n"
        f"  docker volume rm $(docker volume ls -q --filter label={LABEL}={run_id}) >/dev/null 2>&1\n"
        f"  docker network rm {run_id} >/dev/null 2>&1\n"
        f"  docker rmi $(docker images -q {shlex.quote(image.rsplit(':', 1)[0])}) >/dev/null 2>&1",
        "  true", "}",
        "trap cleanup EXIT", "trap 'exit 130' INT TERM HUP",
    ]
    if not docker.get("network_mode"):
        lines.append(q(["docker", "network", "create", label, run_id]) + " >/dev/null || exit 1")
    lines += [q(["docker", "volume", "create", label, name]) + " >/dev/null || exit 1" for name in create]
    if runner.mode == "dind":
        lines += [
            "step service",
            q(["docker", "run", "-d", f"--name={run_id}-service", label, f"--network={network}",
               "--network-alias=docker", *_flags(docker, service=True), *volume_flags, *env_flags, service_img,
               *service_command]) + " >/dev/null || { echo '::fail service'; exit 1; }",
            # As the runner does: wait until the service's port accepts TCP connections.
            f"ip=$(docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}' "
            f"{run_id}-service)",
            f"for i in $(seq {service_timeout}); do (exec 3<>/dev/tcp/$ip/2376) 2>/dev/null && break; sleep 1; done",
            f"(exec 3<>/dev/tcp/$ip/2376) 2>/dev/null || {{ echo '::fail service'; "
            f"docker logs --tail 5 {run_id}-service 2>&1; exit 1; }}",
        ]
    lines.append(q(["docker", "run", f"--name={run_id}-job", label, f"--network={network}",
                    *_flags(docker, service=False), *volume_flags, *env_flags, runner.docker["image"],
                    "sh", "-c", CANARY]) + " 2>&1")
    return "\n".join(lines) + "\n"


CAUSES = {
    ("dind", "service"): "the docker:dind service did not open 2376: it needs privileged mode (or the capability "
                         "form) and a storage driver that works here; see its last log lines",
    ("socket", "connect"): "the job could not use the host's Docker socket",
    ("remote", "connect"): "the job cannot reach DOCKER_HOST with the client certificate mounted at /certs/client "
                           "(check remote_host, the TLS port, and that the certificate comes from berth's CA)",
    ("*", "login"): "the registry refused the credentials or cannot be reached",
    ("*", "build"): "the daemon could not build a FROM-scratch image",
    ("*", "push"): "the daemon cannot push to the registry (an HTTP registry must be in insecure-registries)",
    ("*", "pull"): "the image could not be pulled back by its digest",
}


def likely_cause(runner: Runner, step: str) -> str:
    volumes = runner.docker.get("volumes", [])
    if runner.mode == "dind" and step == "connect":
        if "/certs/client" not in volumes:
            return ("the job cannot reach docker:2376 because /certs/client is not shared between job and service "
                    "(add \"/certs/client\" to the runner's volumes)")
        return "the job cannot reach the docker:dind service at docker:2376 with the client certificate it shares"
    if runner.mode == "socket" and step == "connect" and not any(v.split(":")[0] == SOCKET for v in volumes):
        return "the host's /var/run/docker.sock is not bound into the job (add it to the runner's volumes)"
    return CAUSES.get((runner.mode, step)) or CAUSES.get(("*", step)) or "see the job's output"


def parse_output(result: SmokeResult, output: str, exit_code: int, runner: Runner) -> None:
    marks: list[tuple[str, float]] = []
    for line in output.splitlines():
        if line.startswith("::step "):
            _, name, stamp = line.split()
            marks.append((name, float(stamp)))
        elif line.startswith("::fail "):
            result.failed_step = line.split()[1]
    for (name, start), (_, end) in itertools.pairwise(marks):
        result.steps[name] = end - start
    if exit_code != 0 or result.failed_step:
        result.status = "failed"
        result.failed_step = result.failed_step or (marks[-1][0] if marks else "start")
        result.cause = likely_cause(runner, result.failed_step)
        result.output = "\n".join(output.splitlines()[-15:])


def smoke_host(host: Host, settings: SSHSettings, registry: Registry, *, hosts_by_name: dict[str, Host],
               only: str = "", keep: bool = False) -> list[SmokeResult]:
    config = host.vars.get("gitlab_runner_config", "/etc/gitlab-runner/config.toml")
    try:
        with Session(host, settings) as session:
            found = run_agent(session, {"action": "probe", "files": [{"path": config, "content": True}],
                                        "packages": [], "services": []})
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
    script = job_script(
        runner, registry, service_img=service_image(runner.docker.get("image", ""), host.vars["smoke_service_image"]),
        service_command=list(host.vars["smoke_service_command"]),
        service_timeout=int(host.vars["smoke_service_timeout"]), extra_hosts=extra_hosts, keep=keep,
    )
    started = time.monotonic()
    answer = session.run(f"bash -c {shlex.quote(script)}", stdin=(registry.password + "\n").encode(), timeout=900)
    result.seconds = time.monotonic() - started
    parse_output(result, redact(answer.stdout + answer.stderr, [registry.password]), answer.exit_code, runner)
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
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="berth smoke", tests=str(len(results)),
                      failures=str(sum(r.status == "failed" for r in results)),
                      errors=str(sum(r.status == "unreachable" for r in results)))
    for host in dict.fromkeys(r.host for r in results):
        mine = [r for r in results if r.host == host]
        suite = ET.SubElement(root, "testsuite", name=host, tests=str(len(mine)), skipped="0",
                              failures=str(sum(r.status == "failed" for r in mine)),
                              errors=str(sum(r.status == "unreachable" for r in mine)),
                              time=f"{sum(r.seconds for r in mine):.3f}")
        for r in mine:
            case = ET.SubElement(suite, "testcase", name=f"{r.runner} ({r.mode})", classname=f"{host}.smoke",
                                 time=f"{r.seconds:.3f}")
            if r.status == "failed":
                ET.SubElement(case, "failure", message=f"{r.failed_step}: {r.cause}", type="smoke failed").text = \
                    r.output
            elif r.status == "unreachable":
                ET.SubElement(case, "error", message=r.cause or "unreachable", type="unreachable")
            else:
                ET.SubElement(case, "system-out").text = " ".join(f"{k}={v:.1f}s" for k, v in r.steps.items())
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def run(project: Any, hosts: list[Host], registry: Registry, *, runner: str = "", keep: bool = False,
        junit: str = "", json_path: str = "") -> int:
    """The `invoke smoke` task: smoke every runner of the hosts in parallel, print and write the reports."""

    from rich.table import Table

    from berth import cli
    from berth.errors import ExitCode
    from berth.fleet import run_parallel

    settings = project.ssh()
    by_name = project.inventory.hosts
    try:
        per_host = run_parallel(hosts, lambda h: smoke_host(h, settings, registry, hosts_by_name=by_name,
                                                            only=runner, keep=keep),
                                forks=project.settings.forks, label="smoke jobs")
    except KeyboardInterrupt:
        cli.console.print("[bold red]interrupted[/]: removing what the smoke created")
        for host in hosts:
            clean_host(host, settings)
        raise
    results = [r for rs in per_host for r in rs]
    table = Table(title="berth smoke", title_justify="left")
    for column in ("host", "runner", "mode", "status", "steps (seconds)", "total"):
        table.add_column(column, justify="right" if column == "total" else "left", overflow="fold")
    for r in results:
        style = {"passed": "green", "failed": "bold red"}.get(r.status, "bold red")
        steps = " ".join(f"{name} {r.steps[name]:.1f}" for name in STEPS if name in r.steps)
        table.add_row(r.host, r.runner, r.mode, f"[{style}]{r.status}[/]", steps, f"{r.seconds:.1f}s")
    cli.console.print(table)
    for r in results:
        if r.status != "passed":
            where = f" at step {r.failed_step}" if r.failed_step else ""
            cli.console.print(f"[bold red]{cli.safe(f'{r.host} {r.runner} ({r.mode}) failed{where}')}[/]: "
                              f"{cli.safe(r.cause)}", soft_wrap=True)
            if r.output:
                cli.console.print(r.output, markup=False, highlight=False)
        elif r.source != "config.toml":
            cli.console.print(f"[yellow]{r.host} {r.runner}[/]: settings from the {r.source}", soft_wrap=True)
    if keep:
        cli.console.print("containers kept for inspection (label berth.smoke); remove them with `invoke smoke --clean`")
    cli.write_junit(junit, junit_xml(results))   # redacted like the console (berth/redact.py)
    cli.write_json(json_path, [r.as_dict() for r in results])
    if any(r.status == "unreachable" for r in results):
        return ExitCode.HOST_UNREACHABLE if not any(r.status == "failed" for r in results) else ExitCode.HOST_FAILED
    return ExitCode.HOST_FAILED if any(r.status == "failed" for r in results) else ExitCode.OK
