"""invoke smoke: a canary job per runner on r1 (dind, socket, remote to r2), pushing to the testbed's registry."""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest
import yaml

from tests.integration.test_gitlab_runner import CONFIG, MARKER
from tests.standins.gitlab_api import GitLabStandIn


@pytest.fixture(scope="module")
def registry(testbed) -> dict[str, str]:
    testbed.load_job_images(["r1"])          # docker:27.5-cli/-dind equivalents (no registry can be pulled from)
    return testbed.registry_up()


@pytest.fixture(scope="module")
def smoke_runners(first_converge, berth, testbed, registry, tmp_path_factory):
    """r1 with a dind, a socket and a remote runner (to r2's TLS port), registered through the API stand-in."""
    with GitLabStandIn() as gitlab:
        names = {"smoke-dind": "dind", "smoke-socket": "socket", "smoke-remote": "remote"}
        env, runners = {}, []
        for name, mode in names.items():
            variable = name.upper().replace("-", "_")
            env[variable] = gitlab.add_runner(token=f"glrt-{MARKER}-{name}").token
            runner = {"name": name, "url": gitlab.url, "mode": mode, "token_env": variable}
            if mode == "dind":
                runner["privileged_form"] = "capabilities"     # --privileged cannot be granted here (TESTBED.md)
            if mode == "remote":
                runner["remote_host"] = "tcp://r2:2376"
            runners.append(runner)
        for host in ("r1", "r2"):     # only this module's runners: the smoke runs every runner of a host
            testbed.exec(host, "rm", "-f", CONFIG)
        vars_file = tmp_path_factory.mktemp("smoke") / "runners.yml"
        vars_file.write_text(yaml.safe_dump({"gitlab_runners": runners}))
        run = berth("setup-runner", "--limit", "r1,r2", "-e", f"@{vars_file}", env=env)
        assert run.code == 0, run.output
    return vars_file


def smoke(berth, registry, vars_file, *args: str):
    return berth("smoke", "--limit", "r1", "-e", f"@{vars_file}", *args, env=registry)


def leftovers(testbed) -> str:
    return testbed.exec("r1", "sh", "-c", "docker ps -aq --filter label=berth.smoke; "
                        "docker volume ls -q --filter label=berth.smoke; "
                        "docker network ls -q --filter label=berth.smoke"
                        ).stdout.strip()


def catalog(registry: dict[str, str]) -> list[str]:
    request = urllib.request.Request(f"http://{registry['BERTH_REGISTRY']}/v2/_catalog")
    auth = f"{registry['BERTH_REGISTRY_USER']}:{registry['BERTH_REGISTRY_PASSWORD']}".encode()
    request.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["repositories"]


def test_smoke_passes_for_dind_socket_and_remote_runners(smoke_runners, berth, testbed, registry):
    run = smoke(berth, registry, smoke_runners, "--junit", str(berth.tmp / "smoke.xml"))
    assert run.code == 0, run.output
    results = {r["runner"]: r for r in run.report}
    for name, mode in (("smoke-dind", "dind"), ("smoke-socket", "socket"), ("smoke-remote", "remote")):
        assert results[name]["status"] == "passed", results[name]
        assert results[name]["mode"] == mode and results[name]["source"] == "config.toml"
        assert {"connect", "login", "build", "push", "pull"} <= set(results[name]["steps"])
    assert "service" in results["smoke-dind"]["steps"]
    assert {f"berth-smoke/{name}" for name in results} <= set(catalog(registry))
    assert leftovers(testbed) == ""
    assert testbed.exec("r1", "sh", "-c", "docker images | grep -c berth-smoke || true").stdout.strip() == "0"
    assert (berth.tmp / "smoke.xml").read_text().count("<testcase") == len(results)


def _break_runner(testbed, name: str, old: str, new: str) -> None:
    testbed.exec("r1", "python3", "-c", f"""
p = "{CONFIG}"
s = open(p).read()
head, sep, rest = s.partition('name = "{name}"')
open(p, "w").write(head + sep + rest.replace({old!r}, {new!r}, 1))
""")


def test_dind_without_shared_certs_fails_where_the_daemon_is_needed(smoke_runners, berth, testbed, registry):
    _break_runner(testbed, "smoke-dind", '"/certs/client", ', "")
    try:
        run = smoke(berth, registry, smoke_runners, "--runner", "smoke-dind")
        assert run.code == 2, run.output
        (result,) = run.report
        assert result["failed_step"] == "connect"
        assert "/certs/client is not shared between job and service" in result["cause"]
        assert leftovers(testbed) == ""
    finally:
        assert berth("setup-runner", "--host", "r1", "-e", f"@{smoke_runners}").code == 0


def test_socket_runner_without_the_socket_fails_at_connect(smoke_runners, berth, testbed, registry):
    _break_runner(testbed, "smoke-socket", '"/var/run/docker.sock:/var/run/docker.sock", ', "")
    try:
        run = smoke(berth, registry, smoke_runners, "--runner", "smoke-socket")
        assert run.code == 2, run.output
        (result,) = run.report
        assert result["failed_step"] == "connect"
        assert "/var/run/docker.sock is not bound into the job" in result["cause"]
    finally:
        assert berth("setup-runner", "--host", "r1", "-e", f"@{smoke_runners}").code == 0


def test_keep_leaves_the_containers_and_clean_removes_them(smoke_runners, berth, testbed, registry):
    run = smoke(berth, registry, smoke_runners, "--runner", "smoke-socket", "--keep")
    assert run.code == 0, run.output
    assert "smoke --clean" in run.err
    kept = leftovers(testbed)
    assert kept
    assert testbed.exec("r1", "docker", "inspect", "-f", "{{.State.Status}}", kept.split()[0]).stdout.strip() == \
        "exited"
    cleaned = berth("smoke", "--limit", "r1", "--clean")
    assert cleaned.code == 0, cleaned.output
    assert leftovers(testbed) == ""
