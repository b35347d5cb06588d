"""`invoke smoke` without a host: what the generated job script gives the service and the job container
(against gitlab-runner's executors/docker/docker.go and services.go), its networking, its service wait,
the testbed deviations, the reports, and the testbed's job-image entrypoints run against fake binaries."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from berth.gitlab import doublestar
from berth.gitlab.runner_config import RunnerSpec, docker_settings, runner_environment
from berth.gitlab.smoke import (
    DEVIATION_PRIVILEGED,
    DEVIATION_SERVICE_CAPS,
    ICC_OFF,
    UNPRIVILEGED,
    Registry,
    Runner,
    SmokeResult,
    job_script,
    junit_xml,
    parse_output,
    service_aliases,
)

SCHEMA = xmlschema.XMLSchema(Path(__file__).parents[1] / "schemas" / "junit.xsd")
IMAGES = Path(__file__).parents[2] / "berth" / "testbed" / "images"
REGISTRY = Registry("registry:5000", "berth", "s3cret-pw")
SERVICE = "docker:27.5-dind"


def runner(mode: str = "dind", privileged_form: str = "privileged", *, environment: tuple[str, ...] = (),
           feature_flags: dict[str, Any] | None = None, **docker: Any) -> Runner:
    """A runner with the [runners.docker] keys berth writes for this mode and form, plus ``docker``."""
    spec = RunnerSpec("r", "https://gitlab.example.com", mode, privileged_form=privileged_form,
                      remote_host="tcp://r2:2376" if mode == "remote" else None)
    return Runner("r", mode, {**docker_settings(spec), **docker}, [*runner_environment(spec), *environment],
                  "config.toml", feature_flags or {})


def script(run: Runner, *, testbed: bool = False, extra_hosts: tuple[str, ...] = ()) -> str:
    return job_script(run, REGISTRY, service_img=SERVICE, service_command=["--storage-driver=vfs"],
                      extra_hosts=list(extra_hosts), keep=False, testbed=testbed).script


def docker_run(text: str, which: str) -> list[str]:
    """The arguments of the `docker run` that starts the service or the job container."""
    line = next(line for line in text.splitlines() if "--name=berth-smoke-" in line and f"-{which} " in line)
    line = line.split("docker run", 1)[1].replace('${hosts[@]+"${hosts[@]}"}', "HOSTS")
    line = line.split(") || {", 1)[0] if which == "service" else line
    return shlex.split(line.split(" sh -c ", 1)[0])


# --- what each container gets (executors/docker/docker.go) ------------------------------------------

def test_the_service_never_gets_cap_add_cap_drop_or_security_opt():
    run = runner(privileged_form="capabilities", services_security_opt=["label=disable"])
    service, job = docker_run(script(run), "service"), docker_run(script(run), "job")
    assert not [a for a in service if a.startswith(("--cap-add", "--cap-drop", "--privileged"))]
    assert [a for a in service if a.startswith("--security-opt")] == ["--security-opt=label=disable"]
    assert {"--cap-add=ALL", "--cap-drop=SYS_RESOURCE", "--security-opt=seccomp=unconfined"} <= set(job)
    assert "--security-opt=label=disable" not in job


def test_services_privileged_is_matched_against_the_service_name_as_written():
    form = runner(privileged_form="services_privileged")            # berth's list: docker, docker:*, docker@*, ...
    assert "--privileged" in docker_run(script(form), "service")
    assert "--privileged" not in docker_run(script(form), "job")
    dind = job_script(form, REGISTRY, service_img="docker:dind", service_command=[], extra_hosts=[],
                      keep=False).script
    assert "--privileged" in docker_run(dind, "service")            # as jobs write it
    narrow = runner(privileged_form="services_privileged", allowed_privileged_services=["docker:*-dind"])
    text = job_script(narrow, REGISTRY, service_img="docker:dind", service_command=[], extra_hosts=[],
                      keep=False).script
    assert "--privileged" not in docker_run(text, "service")        # docker:dind does not match docker:*-dind


def test_allowed_privileged_services_also_limits_privileged():
    run = runner(allowed_privileged_services=["postgres:*"])
    assert "--privileged" not in docker_run(script(run), "service")
    assert "--privileged" in docker_run(script(run), "job")
    assert "--privileged" in docker_run(script(runner()), "service")      # an empty list allows every service


def test_services_privileged_false_overrides_privileged():
    run = runner(services_privileged=False)
    assert "--privileged" not in docker_run(script(run), "service")
    assert "--privileged" in docker_run(script(run), "job")


@pytest.mark.parametrize(("pattern", "name", "matches"), [
    ("docker:*-dind", "docker:27.5-dind", True),
    ("docker:*-dind", "docker:dind", False),
    ("docker:*", "docker:dind", True),
    ("docker:*", "registry/docker:dind", False),
    ("**/docker:*", "registry.example.com/library/docker:dind", True),
    ("docker:{dind,*-dind}", "docker:dind", True),
    ("docker:2?-dind", "docker:27-dind", True),
    ("docker:[0-9]*", "docker:dind", False),
    ("docker:[!0-9]*", "docker:dind", True),
    ("docker:[0-9", "docker:[0-9", False),                  # malformed: Match's error, ignored by the runner
])
def test_doublestar_match(pattern, name, matches):
    assert doublestar.match(pattern, name) is matches


def test_the_registry_password_is_in_no_containers_environment():
    text = script(runner())
    for which in ("service", "job"):
        assert not [a for a in docker_run(text, which) if "CI_REGISTRY_PASSWORD" in a or "s3cret" in a]
        assert "--env=DOCKER_TLS_CERTDIR=/certs" in docker_run(text, which)
    assert "s3cret" not in text
    assert "docker run -i" in text and 'printf \'%s\\n\' "$CI_REGISTRY_PASSWORD" |' in text


def test_the_runners_environment_reaches_the_service_as_internal_variables():
    assert "--env=FOO=bar" in docker_run(script(runner(environment=("FOO=bar",))), "service")


# --- networking (executors/docker/internal/networks/manager.go, services.go) -------------------------

def test_default_bridge_with_the_service_aliases_as_extra_hosts():
    text = script(runner())
    assert "docker network create" not in text
    for which in ("service", "job"):
        assert not [a for a in docker_run(text, which) if a.startswith(("--network", "--link"))]
    assert "HOSTS" in docker_run(text, "job")
    assert 'for name in docker "${sid:0:12}"; do hosts+=("--add-host=$name:$ip")' in text


@pytest.mark.parametrize("where", ["environment", "feature_flags"])
def test_feature_flag_network_per_build_makes_a_per_job_network_with_aliases(where):
    run = runner(environment=("FF_NETWORK_PER_BUILD=true",)) if where == "environment" else \
        runner(feature_flags={"FF_NETWORK_PER_BUILD": True})
    plan = job_script(run, REGISTRY, service_img=SERVICE, service_command=[], extra_hosts=[], keep=False)
    network = re.search(r"docker network create --label=\S+ (berth-smoke-\w+)", plan.script)[1]
    assert plan.network == "per-job network"
    assert f"--network={network}" in docker_run(plan.script, "job")
    assert {f"--network={network}", "--network-alias=docker"} <= set(docker_run(plan.script, "service"))
    assert f"--env=CI_BUILD_NETWORK_NAME={network}" in docker_run(plan.script, "job")


def test_runner_feature_flags_win_over_the_environment():
    run = runner(environment=("FF_NETWORK_PER_BUILD=1",), feature_flags={"FF_NETWORK_PER_BUILD": False})
    assert "docker network create" not in script(run)
    assert "docker network create" not in script(runner(environment=("FF_NETWORK_PER_BUILD=yes",)))  # no Go bool


def test_network_mode_is_used_as_given_with_aliases_only_on_user_defined_networks():
    text = script(runner(network_mode="ci-net"))
    assert {"--network=ci-net", "--network-alias=docker"} <= set(docker_run(text, "service"))
    bridge = script(runner(network_mode="bridge"))
    assert "--network-alias=docker" not in docker_run(bridge, "service")
    assert "docker network create" not in text + bridge


@pytest.mark.parametrize(("image", "aliases"), [
    ("docker:27.5-dind", ["docker"]),
    ("docker@sha256:" + "a" * 64, ["docker"]),
    ("registry.example.com:5000/group/docker:dind", ["registry.example.com__group__docker",
                                                     "registry.example.com-group-docker"]),
])
def test_service_aliases_as_the_runner_derives_them(image, aliases):
    assert service_aliases(image) == aliases


def test_icc_off_on_the_default_bridge_is_named_as_the_cause():
    result = SmokeResult("r1", "r", "dind", "config.toml", network="default bridge")
    output = "::step service 1.0\n::step connect 2.0\ncannot connect\n::service-state running\n::icc false\n"
    parse_output(result, output, 1, runner(), service_privileged=True)
    assert (result.status, result.failed_step, result.cause) == ("failed", "connect", ICC_OFF)


# --- the service wait (executors/docker/services.go waitForServices, common/consts.go) --------------

def test_the_service_wait_is_the_runners_and_only_warns():
    text = script(runner())
    assert "deadline=$((SECONDS + 30))" in text
    assert "for p in $ports; do" in text and "ExposedPorts" in text        # any exposed TCP port, not just 2376
    wait = text[text.index("ports=$("):text.index('printf \'%s\\n\'')]
    assert "exit" not in wait and "::warn service" in wait
    assert "deadline=$((SECONDS + 90))" in script(runner(wait_for_services_timeout=90))
    assert "deadline" not in script(runner(wait_for_services_timeout=-1))


def test_a_warning_is_reported_and_an_exited_unprivileged_service_is_the_cause():
    result = SmokeResult("r1", "r", "dind", "config.toml", network="default bridge")
    output = ("::step service 1.0\n::warn service x probably didn't start properly\n::step connect 2.0\n"
              "::service-state exited\n::icc \n")
    parse_output(result, output, 1, runner(privileged_form="capabilities"), service_privileged=False)
    assert result.warnings == ["service x probably didn't start properly"]
    assert result.cause == UNPRIVILEGED and result.icc == "true"


# --- the testbed (berth_testbed) ----------------------------------------------------------------------

def test_outside_the_testbed_nothing_stands_in_for_privileges():
    for form in ("privileged", "capabilities"):
        assert job_script(runner(privileged_form=form), REGISTRY, service_img=SERVICE, service_command=[],
                          extra_hosts=[], keep=False).deviations == []


def test_testbed_capability_form_for_the_service_is_a_reported_deviation():
    plan = job_script(runner(privileged_form="capabilities"), REGISTRY, service_img=SERVICE, service_command=[],
                      extra_hosts=[], keep=False, testbed=True)
    assert plan.deviations == [DEVIATION_SERVICE_CAPS] and plan.service_privileged is False
    assert {"--cap-add=ALL", "--cap-drop=SYS_RESOURCE"} <= set(docker_run(plan.script, "service"))


def test_testbed_replaces_privileged_by_the_capability_form_and_says_so():
    plan = job_script(runner(), REGISTRY, service_img=SERVICE, service_command=[], extra_hosts=[], keep=False,
                      testbed=True)
    assert plan.deviations == [DEVIATION_PRIVILEGED]
    for which in ("service", "job"):
        flags = docker_run(plan.script, which)
        assert "--privileged" not in flags and "--cap-add=ALL" in flags


def test_socket_runner_has_no_deviation_on_the_testbed():
    plan = job_script(runner("socket"), REGISTRY, service_img=SERVICE, service_command=[], extra_hosts=[],
                      keep=False, testbed=True)
    assert plan.deviations == [] and plan.service_privileged is None and "step service" not in plan.script


def test_reports_carry_the_deviation():
    passed = SmokeResult("r1", "r", "dind", "config.toml", deviation=DEVIATION_SERVICE_CAPS, network="default bridge")
    assert passed.status_line() == f"passed ({DEVIATION_SERVICE_CAPS})"
    assert passed.as_dict()["deviation"] == DEVIATION_SERVICE_CAPS and passed.as_dict()["status"] == "passed"
    xml = junit_xml([passed, SmokeResult("r1", "s", "socket", "config.toml")])
    SCHEMA.validate(xml.decode())
    props = ET.fromstring(xml).findall(".//testcase/properties/property")
    assert [(p.get("name"), p.get("value")) for p in props] == [("deviation", DEVIATION_SERVICE_CAPS)]


# --- the testbed's job images (docker-library/docker 29/dind/dockerd-entrypoint.sh, 29/cli/...) -------

FAKES = {
    # dockerd: print the arguments it was started with.
    "dockerd": 'printf "%s\\n" "$@" > "$FAKE_OUT/dockerd.args"',
    "docker-init": 'shift; exec "$@"',
    "iptables": 'exit 0',
    # docker: no subcommand is known; print the connection settings it would use.
    "docker": '[ "$1" = help ] && exit 1; env | grep -E "^DOCKER_(HOST|TLS_VERIFY|CERT_PATH)=" | sort',
}


def _needs_tools() -> None:
    """The entrypoints' own tools and a private mount namespace: missing ones fail the test, never skip it
    (scripts/ensure-docker.sh, run by `make test`, installs the tools)."""
    missing = [tool for tool in ("unshare", "openssl", "ip", "hostname") if not shutil.which(tool)]
    assert not missing, f"{', '.join(missing)} not installed: run scripts/ensure-docker.sh (make setup)"
    assert os.geteuid() == 0, "run the tests as root: the entrypoints need a mount namespace for /run"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, f"unshare -m failed: {probe.stderr.strip()}"


def entrypoint(name: str, tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a testbed entrypoint with fake dockerd/docker, in a mount namespace whose /run is empty (the
    dind entrypoint deletes docker*.pid there, and the cli one looks for /var/run/docker.sock)."""
    _needs_tools()
    fakes = tmp / "bin"
    fakes.mkdir(exist_ok=True)
    for fake, body in FAKES.items():
        (fakes / fake).write_text(f"#!/bin/sh\n{body}\n")
        (fakes / fake).chmod(0o755)
    shutil.copy(IMAGES / "docker-entrypoint.sh", fakes)
    command = f"mount -t tmpfs none /run && exec {shlex.quote(str(IMAGES / name))} " + shlex.join(args)
    return subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=120,
                          env={"PATH": f"{fakes}:/usr/sbin:/usr/bin:/sbin:/bin", "FAKE_OUT": str(tmp), **env})


def _cert(path: Path) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(path)], capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture(scope="module")
def dind_certs(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One start of the dind entrypoint with DOCKER_TLS_CERTDIR (RSA 4096 keys take a few seconds)."""
    tmp = tmp_path_factory.mktemp("dind")
    done = entrypoint("dockerd-entrypoint.sh", tmp, {"DOCKER_TLS_CERTDIR": str(tmp / "certs"),
                                                     "DOCKER_TLS_SAN": "DNS:extra.example,IP:10.9.8.7"},
                      "--storage-driver=vfs")
    assert done.returncode == 0, done.stderr
    return tmp, done


def test_dind_entrypoint_makes_4096_bit_keys_and_every_san(dind_certs):
    tmp, _ = dind_certs
    certs = tmp / "certs"
    for who in ("ca", "server", "client"):
        assert "Public-Key: (4096 bit)" in _cert(certs / who / "cert.pem")
    sans = _cert(certs / "server" / "cert.pem").split("Subject Alternative Name:", 1)[1].split("\n")[1]
    addresses = re.findall(r"inet6? (\S+)/", subprocess.run(["ip", "-oneline", "address"], capture_output=True,
                                                             text=True).stdout)
    assert addresses and all(f"IP Address:{a}" in sans or (":" in a and "IP Address:" in sans) for a in addresses)
    for name in ("docker", "localhost", subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout
                 .strip(), "extra.example"):
        assert f"DNS:{name}" in sans
    assert "IP Address:10.9.8.7" in sans
    assert oct((certs / "client" / "key.pem").stat().st_mode & 0o777) == "0o644"


def test_dind_entrypoint_runs_dockerd_with_tls_on_2376(dind_certs):
    tmp, _ = dind_certs
    args = (tmp / "dockerd.args").read_text().split()
    assert args[:4] == ["--host=unix:///var/run/docker.sock", "--host=tcp://0.0.0.0:2376", "--tlsverify",
                        "--tlscacert"]
    assert args[-1] == "--storage-driver=vfs"


def test_dind_entrypoint_keeps_user_supplied_server_certificates(dind_certs, tmp_path):
    given, _ = dind_certs
    certs = tmp_path / "certs"
    (certs / "server").mkdir(parents=True)
    for name, source in (("ca.pem", "ca/cert.pem"), ("cert.pem", "server/cert.pem"), ("key.pem", "server/key.pem")):
        shutil.copy(given / "certs" / source, certs / "server" / name)
    before = {p.name: p.read_bytes() for p in (certs / "server").iterdir()}
    done = entrypoint("dockerd-entrypoint.sh", tmp_path, {"DOCKER_TLS_CERTDIR": str(certs)})
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_bytes() for p in (certs / "server").iterdir()} == before
    assert not (certs / "ca").exists() and not (certs / "client").exists()
    assert "--host=tcp://0.0.0.0:2376" in (tmp_path / "dockerd.args").read_text()


def test_dind_entrypoint_without_certdir_listens_on_2375(tmp_path):
    done = entrypoint("dockerd-entrypoint.sh", tmp_path, {"DOCKER_TLS_CERTDIR": ""})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dockerd.args").read_text().split() == ["--host=unix:///var/run/docker.sock",
                                                               "--host=tcp://0.0.0.0:2375"]


def _client_env(tmp: Path, files: tuple[str, ...], **env: str) -> dict[str, str]:
    client = tmp / "certs" / "client"
    client.mkdir(parents=True, exist_ok=True)
    for name in files:
        (client / name).write_text("x")
    done = entrypoint("docker-entrypoint.sh", tmp, {"DOCKER_TLS_CERTDIR": str(tmp / "certs"), **env}, "docker")
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.split())


def test_cli_entrypoint_uses_tls_only_with_ca_cert_and_key(tmp_path):
    assert _client_env(tmp_path, ("ca.pem",)) == {"DOCKER_HOST": "tcp://docker:2375"}
    assert _client_env(tmp_path, ("ca.pem", "cert.pem", "key.pem")) == {
        "DOCKER_HOST": "tcp://docker:2376", "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(tmp_path / "certs" / "client")}


def test_cli_entrypoint_docker_tls_verify_alone_picks_2376(tmp_path):
    env = _client_env(tmp_path, (), DOCKER_TLS_VERIFY="1")
    assert env == {"DOCKER_HOST": "tcp://docker:2376", "DOCKER_TLS_VERIFY": "1"}


def test_job_images_label_changes_with_the_entrypoints(monkeypatch, tmp_path):
    from berth import testbed
    before = testbed.job_images_label()
    for script in ("docker-entrypoint.sh", "dockerd-entrypoint.sh"):
        shutil.copy(IMAGES / script, tmp_path / script)
    (tmp_path / "dockerd-entrypoint.sh").write_text((IMAGES / "dockerd-entrypoint.sh").read_text() + "# changed\n")
    monkeypatch.setattr(testbed.shipped, "testbed_images", lambda: tmp_path)
    assert testbed.job_images_label() != before
    assert json.dumps(before)
