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
                runner["privileged_form"] = "capabilities"     # no --privileged here (README, "The testbed")
            if mode == "remote":
                runner["remote_host"] = "tcp://r2:2376"
            runners.append(runner)
        for host in ("r1", "r2"):     # only this module's runners: the smoke runs every runner of a host
            testbed.exec(host, "rm", "-f", CONFIG)
        vars_file = tmp_path_factory.mktemp("smoke") / "runners.yml"
        vars_file.write_text(yaml.safe_dump({"gitlab_runners": runners}))
        run = berth("setup-runner", "--limit", "r1,r2", "-e", f"@{vars_file}", env=env)
        assert run.code == 0, run.output
    yield vars_file
    # The modules after this one find r1 and r2 with the inventory's runners, not this module's.
    for host in ("r1", "r2"):
        testbed.exec(host, "rm", "-f", CONFIG)
    restored = berth("setup-runner", "--limit", "r1,r2")
    assert restored.code == 0, restored.output


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
    print(run.err)          # the table, with its figures, for the log of the test run
    results = {r["runner"]: r for r in run.report}
    for name, mode in (("smoke-dind", "dind"), ("smoke-socket", "socket"), ("smoke-remote", "remote")):
        assert results[name]["status"] == "passed", results[name]
        assert results[name]["mode"] == mode and results[name]["source"] == "config.toml"
        assert {"connect", "login", "build", "push", "pull"} <= set(results[name]["steps"])
    assert "service" in results["smoke-dind"]["steps"]
    # The testbed's dind runner uses the capability form, which the executor gives only the job: the pass
    # says so on its row (berth_testbed), and only there.
    assert results["smoke-dind"]["deviation"] == "testbed: service given capabilities the executor would not give it"
    assert results["smoke-socket"]["deviation"] is None and results["smoke-remote"]["deviation"] is None
    assert "passed (testbed: service given capabilities" in run.err      # the table
    assert "gives them only to the job container" in run.err                 # and the note under it
    assert {r["network"] for r in results.values()} == {"default bridge"}     # no FF_NETWORK_PER_BUILD
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


def test_outside_the_testbed_the_capability_form_fails_as_real_jobs_would(smoke_runners, berth, testbed, registry):
    """gitlab-runner never gives a service cap_add/security_opt: without berth_testbed the smoke gives the dind
    service only what the executor would (nothing here), and dind cannot start."""
    run = smoke(berth, registry, smoke_runners, "--runner", "smoke-dind", "-e", "berth_testbed=false")
    assert run.code == 2, run.output
    (result,) = run.report
    assert result["deviation"] is None
    assert result["failed_step"] == "connect", result
    assert "got no privileges" in result["cause"] and "createHostConfigForService" in result["cause"]
    assert leftovers(testbed) == ""


def test_service_gets_no_registry_password_and_the_job_not_in_its_environment(smoke_runners, berth, testbed,
                                                                              registry):
    run = smoke(berth, registry, smoke_runners, "--runner", "smoke-dind", "--keep")
    try:
        assert run.code == 0, run.output
        names = testbed.exec("r1", "docker", "ps", "-a", "--filter", "label=berth.smoke",
                             "--format", "{{.Names}}").stdout.split()
        assert {n.rsplit("-", 1)[1] for n in names} == {"service", "job"}
        for name in names:
            env = testbed.exec("r1", "docker", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}",
                               name).stdout
            assert "DOCKER_TLS_CERTDIR=/certs" in env
            assert "CI_REGISTRY_PASSWORD" not in env and registry["BERTH_REGISTRY_PASSWORD"] not in env
        job = next(n for n in names if n.endswith("-job"))
        hosts = testbed.exec("r1", "docker", "inspect", "-f", "{{.HostConfig.NetworkMode}} {{.HostConfig.ExtraHosts}}",
                             job).stdout
        assert hosts.startswith("default ") and "docker:" in hosts     # default bridge, alias by --add-host
    finally:
        assert berth("smoke", "--limit", "r1", "--clean").code == 0


def _turn_on_network_per_build(testbed, name: str) -> None:
    """[runners.feature_flags] FF_NETWORK_PER_BUILD = true in runner ``name``'s block of config.toml."""
    testbed.exec("r1", "python3", "-c", f"""
p = "{CONFIG}"
s = open(p).read()
start = s.index('name = "{name}"')
end = s.find("\\n[[runners]]", start)
end = len(s) if end < 0 else end
open(p, "w").write(s[:end] + "\\n[runners.feature_flags]\\nFF_NETWORK_PER_BUILD = true\\n" + s[end:])
""")


def _write(testbed, path: str, text: str) -> None:
    encoded = base64.b64encode(text.encode()).decode()
    testbed.exec("r1", "python3", "-c", f"import base64; open({path!r}, 'wb').write(base64.b64decode({encoded!r}))")


def test_icc_off_fails_dind_on_the_default_bridge_and_a_per_job_network_passes(smoke_runners, berth, testbed,
                                                                                registry):
    """As for real jobs: the runner links job and service on the default bridge (extra_hosts), which icc false
    closes; with FF_NETWORK_PER_BUILD they meet on a network of their own, where icc does not apply."""
    daemon, config = (testbed.exec("r1", "cat", path).stdout for path in ("/etc/docker/daemon.json", CONFIG))
    _write(testbed, "/etc/docker/daemon.json", json.dumps({**json.loads(daemon), "icc": False}))
    testbed.exec("r1", "systemctl", "restart", "docker")
    try:
        run = smoke(berth, registry, smoke_runners, "--runner", "smoke-dind")
        assert run.code == 2, run.output
        (result,) = run.report
        print("icc off:", result["steps"], result["seconds"])
        assert (result["network"], result["failed_step"]) == ("default bridge", "connect"), result
        assert '"icc": false in daemon.json' in result["cause"]
        _turn_on_network_per_build(testbed, "smoke-dind")
        run = smoke(berth, registry, smoke_runners, "--runner", "smoke-dind")
        assert run.code == 0, run.output
        (result,) = run.report
        print("per-job network:", result["steps"], result["seconds"])
        assert (result["network"], result["status"]) == ("per-job network", "passed"), result
        assert leftovers(testbed) == ""
    finally:        # the files as berth wrote them, byte for byte: quicker than a converge
        _write(testbed, "/etc/docker/daemon.json", daemon)
        _write(testbed, CONFIG, config)
        testbed.exec("r1", "systemctl", "restart", "docker")


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
