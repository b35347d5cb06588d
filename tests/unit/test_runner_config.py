"""Runner definitions (gitlab_runners) and the config.toml merge, with real tomlkit/tomllib."""

from __future__ import annotations

import difflib
import re
import tomllib
from datetime import UTC, datetime

import pytest

from berth.errors import ConfigError
from berth.gitlab.runner_config import (
    MODE_OWNED_KEYS,
    RegisteredToken,
    RunnerSpec,
    docker_settings,
    merge_config,
    parse_runners,
    registration_params,
    remove_runner,
    runner_environment,
    runner_names,
)
from berth.inventory.yamlfile import parse_yaml

ORIGIN = "inventory/group_vars/runners.yml:12"
PATH = "/etc/gitlab-runner/config.toml"
NOW = datetime(2025, 6, 1, 12, 30, 45, 123456, tzinfo=UTC)
URL = "https://gitlab.example.com"

# A config.toml as gitlab-runner writes it, plus a runner and comments added by hand.
CONFIG = """\
# Managed by berth (globals and the runners it names); the rest is ours.
concurrent = 2 # at most two jobs
check_interval = 0
shutdown_timeout = 0
connection_max_age = "15m0s"

[session_server]
  session_timeout = 1800

# added by hand: keep
[[runners]]
  name = "hand-shell"
  url = "https://gitlab.example.com"
  id = 7
  token = "glrt-HANDMADEtoken"
  token_obtained_at = 2024-05-01T10:00:00Z
  token_expires_at = 0001-01-01T00:00:00Z
  executor = "shell"
  [runners.cache]
    MaxUploadedArchiveSize = 0

[[runners]]
  name = "build-dind"
  url = "https://gitlab.example.com"
  id = 12
  token = "glrt-ROTATEDbyTheRunner"
  token_obtained_at = 2025-02-01T08:00:00Z
  token_expires_at = 2025-03-01T08:00:00Z
  executor = "docker"
  [runners.custom_build_dir]
  [runners.cache]
    MaxUploadedArchiveSize = 0
  [runners.docker]
    tls_verify = false
    image = "docker:27.5-cli"
    privileged = true
    disable_cache = false
    volumes = ["/certs/client", "/cache"]
    shm_size = 300000 # hand-tuned for builds

# the socket runner
[[runners]]
  name = "build-socket"
  url = "https://gitlab.example.com"
  id = 13
  token = "glrt-SOCKETtoken"
  token_obtained_at = 2025-02-01T08:00:00Z
  token_expires_at = 0001-01-01T00:00:00Z
  executor = "docker"
  [runners.docker]
    tls_verify = false
    image = "docker:27.5-cli"
    privileged = false
    disable_cache = false
    volumes = ["/var/run/docker.sock:/var/run/docker.sock", "/cache"]
"""
GLOBALS = {"concurrent": 2, "check_interval": 0, "shutdown_timeout": 0}


def spec(name: str = "build-dind", mode: str = "dind", **kwargs) -> RunnerSpec:
    return RunnerSpec(name=name, url=URL, mode=mode, **kwargs)


def specs_in_config() -> list[RunnerSpec]:
    return [spec("build-dind", "dind"), spec("build-socket", "socket")]


def merge(text, runners=None, globals_=None, tokens=None):
    return merge_config(
        text,
        path=PATH,
        globals_=GLOBALS if globals_ is None else globals_,
        runners=specs_in_config() if runners is None else runners,
        tokens=tokens or {},
        now=NOW,
    )


def block(text: str, name: str) -> str:
    """The text of one [[runners]] block (from its header to the next [[runners]] or the end)."""
    start = text.index(f'[[runners]]\n  name = "{name}"')
    end = text.find("[[runners]]", start + 1)
    chunk = text[start : end if end != -1 else len(text)]
    return re.sub(r"(\n*#[^\n]*)*\n*$", "", chunk)  # without the next block's leading comment


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def runners_of(text: str) -> dict[str, dict]:
    return {r["name"]: r for r in tomllib.loads(text)["runners"]}


# -- merge: what berth must not touch --------------------------------------------------------------


def test_noop_merge_is_byte_identical():
    result = merge(CONFIG)
    assert result.text == CONFIG
    assert not result.changed
    assert (result.added, result.updated, result.globals_updated) == ([], [], [])


def test_second_merge_after_a_change_is_a_noop():
    first = merge(CONFIG, globals_={"concurrent": 8, "log_level": "info"})
    second = merge(first.text, globals_={"concurrent": 8, "log_level": "info"})
    assert first.changed and not second.changed
    assert second.text == first.text


def test_changing_concurrent_changes_only_that_line():
    result = merge(CONFIG, globals_={**GLOBALS, "concurrent": 6})
    assert changed_lines(CONFIG, result.text) == [
        "-concurrent = 2 # at most two jobs",
        "+concurrent = 6 # at most two jobs",
    ]
    assert result.changed and result.globals_updated == ["concurrent"]
    assert result.updated == []


def test_new_global_key_goes_with_the_globals():
    result = merge(CONFIG, globals_={**GLOBALS, "log_level": "warn", "listen_address": ":9252"})
    assert changed_lines(CONFIG, result.text) == ['+log_level = "warn"', '+listen_address = ":9252"']
    parsed = tomllib.loads(result.text)
    assert parsed["log_level"] == "warn" and "log_level" not in parsed["session_server"]
    assert result.globals_updated == ["log_level", "listen_address"]


def test_runner_added_by_hand_survives():
    result = merge(CONFIG, runners=[spec("build-dind", "socket")])
    assert block(result.text, "hand-shell") == block(CONFIG, "hand-shell")
    assert block(result.text, "build-socket") == block(CONFIG, "build-socket")  # berth has no spec for it now
    assert runners_of(result.text)["hand-shell"] == runners_of(CONFIG)["hand-shell"]


def test_token_changed_by_hand_or_rotated_survives():
    edited = CONFIG.replace('token = "glrt-ROTATEDbyTheRunner"', 'token = "glrt-NEWERbyHand"').replace(
        "token_obtained_at = 2025-02-01T08:00:00Z\n  token_expires_at = 2025-03-01T08:00:00Z",
        "token_obtained_at = 2025-02-20T09:00:00Z\n  token_expires_at = 2025-04-01T09:00:00Z",
    )
    # A mode change and a fresh registration in `tokens` must still not roll back the runner's credentials.
    result = merge(
        edited,
        runners=[spec("build-dind", "socket"), spec("build-socket", "socket")],
        tokens={"build-dind": RegisteredToken(99, "glrt-FRESHregistration", None)},
    )
    runner = runners_of(result.text)["build-dind"]
    assert runner["token"] == "glrt-NEWERbyHand"
    assert runner["id"] == 12
    assert runner["token_obtained_at"] == datetime(2025, 2, 20, 9, tzinfo=UTC)
    assert runner["token_expires_at"] == datetime(2025, 4, 1, 9, tzinfo=UTC)
    assert "FRESH" not in result.text
    assert result.updated == ["build-dind"]


def test_comments_and_unmanaged_keys_survive_a_change():
    result = merge(CONFIG, runners=[spec("build-dind", "dind", privileged_form="services_privileged")])
    for kept in (
        "# Managed by berth",
        "# added by hand: keep",
        "# the socket runner",
        "shm_size = 300000 # hand-tuned for builds",
        'connection_max_age = "15m0s"',
        "[session_server]\n  session_timeout = 1800",
        "  [runners.custom_build_dir]\n  [runners.cache]\n    MaxUploadedArchiveSize = 0\n  [runners.docker]",
    ):
        assert kept in result.text
    assert changed_lines(CONFIG, result.text) == [
        "-    privileged = true",
        "+    privileged = false",
        "+    services_privileged = true",
        '+    allowed_privileged_services = ["docker", "docker:*", "docker@*", "docker.io/library/docker", '
        '"docker.io/library/docker:*", "docker.io/library/docker@*"]',
    ]


# -- merge: what berth sets ------------------------------------------------------------------------

DIND = {
    "tls_verify": False,
    "image": "docker:27.5-cli",
    "disable_cache": False,
    "volumes": ["/certs/client", "/cache"],
}
EXPECTED_DOCKER = {
    ("dind", "privileged"): {**DIND, "privileged": True},
    ("dind", "services_privileged"): {
        **DIND,
        "privileged": False,
        "services_privileged": True,
        "allowed_privileged_services": [
            "docker",
            "docker:*",
            "docker@*",
            "docker.io/library/docker",
            "docker.io/library/docker:*",
            "docker.io/library/docker@*",
        ],
    },
    ("dind", "capabilities"): {
        **DIND,
        "privileged": False,
        "cap_add": ["ALL"],
        "cap_drop": ["SYS_RESOURCE"],
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    },
    ("socket", "privileged"): {
        "tls_verify": False,
        "image": "docker:27.5-cli",
        "privileged": False,
        "disable_cache": False,
        "volumes": ["/var/run/docker.sock:/var/run/docker.sock", "/cache"],
    },
    ("remote", "privileged"): {
        "tls_verify": False,
        "image": "docker:27.5-cli",
        "privileged": False,
        "disable_cache": False,
        "volumes": ["/etc/gitlab-runner/certs/r1:/certs/client:ro", "/cache"],
    },
}


@pytest.mark.parametrize(("mode", "form"), list(EXPECTED_DOCKER))
def test_each_mode_writes_its_exact_docker_table(mode, form):
    runner = spec(
        "r1", mode, privileged_form=form, remote_host="tcp://builder:2376" if mode == "remote" else None
    )
    assert docker_settings(runner) == EXPECTED_DOCKER[mode, form]
    assert set(docker_settings(runner)) <= MODE_OWNED_KEYS
    result = merge(
        None, runners=[runner], globals_={}, tokens={"r1": RegisteredToken(5, "glrt-r1token", None)}
    )
    assert tomllib.loads(result.text)["runners"][0]["docker"] == EXPECTED_DOCKER[mode, form]


def test_remote_mode_points_the_jobs_at_the_remote_daemon():
    runner = spec("r1", "remote", remote_host="tcp://builder:2376", environment=["FOO=bar"])
    assert runner_environment(runner) == [
        "DOCKER_HOST=tcp://builder:2376",
        "DOCKER_TLS_VERIFY=1",
        "DOCKER_CERT_PATH=/certs/client",
        "FOO=bar",
    ]
    custom = spec("r2", "remote", remote_host="tcp://b:2376", remote_cert_dir="/srv/certs/b")
    assert docker_settings(custom)["volumes"] == ["/srv/certs/b:/certs/client:ro", "/cache"]


def test_extra_volumes_docker_keys_and_image_pass_through():
    runner = spec(
        "x", "socket", docker_version="28.1", volumes=["/srv/cache:/srv/cache"], docker={"shm_size": 300000,
        "cap_drop": ["NET_RAW"]}, services=["redis:7"],
    )  # fmt: skip
    settings = docker_settings(runner)
    assert settings["image"] == "docker:28.1-cli"
    assert settings["volumes"] == [
        "/var/run/docker.sock:/var/run/docker.sock",
        "/cache",
        "/srv/cache:/srv/cache",
    ]
    assert settings["shm_size"] == 300000 and settings["cap_drop"] == ["NET_RAW"]
    assert settings["services"] == [{"name": "redis:7"}]


def test_new_runner_block_has_registration_and_docker_table():
    runner = spec("new-one", "dind", limit=4, request_concurrency=2, environment=["FF_NETWORK_PER_BUILD=1"])
    token = RegisteredToken(31, "glrt-NEWtoken", "2025-07-01T00:00:00.000Z")
    result = merge(CONFIG, runners=[*specs_in_config(), runner], tokens={"new-one": token})
    assert result.changed and result.added == ["new-one"] and result.updated == []
    assert result.text.startswith(CONFIG)  # appended: every existing byte kept
    assert result.text[len(CONFIG) :] == (
        "\n"
        "[[runners]]\n"
        '  name = "new-one"\n'
        f'  url = "{URL}"\n'
        "  id = 31\n"
        '  token = "glrt-NEWtoken"\n'
        "  token_obtained_at = 2025-06-01T12:30:45Z\n"
        "  token_expires_at = 2025-07-01T00:00:00Z\n"
        '  executor = "docker"\n'
        "  limit = 4\n"
        "  request_concurrency = 2\n"
        '  environment = ["FF_NETWORK_PER_BUILD=1"]\n'
        "  [runners.docker]\n"
        "    tls_verify = false\n"
        '    image = "docker:27.5-cli"\n'
        "    privileged = true\n"
        "    disable_cache = false\n"
        '    volumes = ["/certs/client", "/cache"]\n'
    )


def test_token_without_expiry_gets_the_zero_time():
    result = merge(
        None, runners=[spec("a")], globals_={"concurrent": 1}, tokens={"a": RegisteredToken(1, "glrt-a1b2")}
    )
    assert "  token_expires_at = 0001-01-01T00:00:00Z\n" in result.text
    assert result.text.startswith("concurrent = 1\n\n[[runners]]\n")
    assert result.changed


def test_new_runner_without_registration_is_refused():
    with pytest.raises(ConfigError, match=r"runner 'ghost' is not in config.toml yet and has no token"):
        merge(CONFIG, runners=[*specs_in_config(), spec("ghost")])


def test_switching_mode_removes_the_old_modes_keys():
    with_caps = merge(CONFIG, runners=[spec("build-dind", "dind", privileged_form="capabilities")]).text
    assert runners_of(with_caps)["build-dind"]["docker"]["cap_add"] == ["ALL"]
    result = merge(with_caps, runners=[spec("build-dind", "socket")])
    docker = runners_of(result.text)["build-dind"]["docker"]
    assert docker == {
        **EXPECTED_DOCKER["socket", "privileged"],
        "shm_size": 300000,
    }  # shm_size is not berth's
    assert "[runners.cache]" in block(result.text, "build-dind")
    assert block(result.text, "hand-shell") == block(CONFIG, "hand-shell")

    remote = merge(result.text, runners=[spec("build-dind", "remote", remote_host="tcp://b1:2376")]).text
    runner = runners_of(remote)["build-dind"]
    assert runner["docker"]["volumes"] == ["/etc/gitlab-runner/certs/build-dind:/certs/client:ro", "/cache"]
    assert runner["environment"][0] == "DOCKER_HOST=tcp://b1:2376"
    back = runners_of(merge(remote, runners=[spec("build-dind", "dind")]).text)["build-dind"]
    assert "environment" not in back  # berth owns environment: the remote variables go with the mode
    assert back["docker"] == {**EXPECTED_DOCKER["dind", "privileged"], "shm_size": 300000}


def test_dind_service_in_the_file_is_removed_when_switching_to_socket():
    text = CONFIG.replace(
        "    shm_size = 300000 # hand-tuned for builds\n",
        "    shm_size = 300000 # hand-tuned for builds\n"
        "    [[runners.docker.services]]\n"
        '      name = "docker:27.5-dind"\n',
    )
    assert runners_of(text)["build-dind"]["docker"]["services"] == [{"name": "docker:27.5-dind"}]
    result = merge(text, runners=[spec("build-dind", "socket")])
    assert "services" not in runners_of(result.text)["build-dind"]["docker"]


def test_existing_block_gets_url_executor_and_limits():
    edited = CONFIG.replace('executor = "shell"', 'executor = "shell"\n  environment = ["MINE=1"]')
    result = merge(edited, runners=[spec("hand-shell", "socket", limit=3)])
    runner = runners_of(result.text)["hand-shell"]
    assert runner["executor"] == "docker" and runner["limit"] == 3
    assert "environment" not in runner  # berth owns environment for its runners
    assert runner["token"] == "glrt-HANDMADEtoken"
    assert runner["docker"] == EXPECTED_DOCKER["socket", "privileged"]
    assert runner["cache"] == {"MaxUploadedArchiveSize": 0}
    assert result.updated == ["hand-shell"]


def test_block_written_by_hand_without_token_gets_the_registration():
    text = 'concurrent = 1\n\n[[runners]]\n  name = "a"\n  url = "https://old.example.com"\n'
    token = RegisteredToken(8, "glrt-A8token", "2025-07-01T00:00:00+02:00")
    result = merge(text, runners=[spec("a", "socket")], globals_={}, tokens={"a": token})
    runner = runners_of(result.text)["a"]
    assert (runner["id"], runner["token"], runner["url"]) == (8, "glrt-A8token", URL)
    assert runner["token_obtained_at"] == datetime(2025, 6, 1, 12, 30, 45, tzinfo=UTC)
    assert runner["token_expires_at"] == datetime(2025, 6, 30, 22, tzinfo=UTC)
    assert runner["docker"] == EXPECTED_DOCKER["socket", "privileged"]
    assert result.updated == ["a"] and result.added == []


def test_invalid_toml_names_the_path_and_line():
    broken = CONFIG.replace("check_interval = 0", "check_interval = = 0")
    with pytest.raises(ConfigError) as caught:
        merge(broken)
    assert str(caught.value).startswith(f"{PATH}:3: invalid TOML")
    assert "did not change it" in str(caught.value)


def test_duplicate_keys_are_invalid_toml_too():
    with pytest.raises(ConfigError, match=rf"^{PATH}:2: invalid TOML"):
        merge("concurrent = 1\nconcurrent = 2\n")


def test_two_blocks_with_one_name_are_refused():
    doubled = CONFIG + CONFIG[CONFIG.index('[[runners]]\n  name = "build-dind"') :].split("# the socket")[0]
    with pytest.raises(ConfigError, match="two \\[\\[runners\\]\\] blocks are named 'build-dind'"):
        merge(doubled)


@pytest.mark.parametrize(
    ("globals_", "problem"),
    [
        ({"concurrent": 0}, "gitlab-runner exit"),
        ({"log_level": "verbose"}, "log_level"),
        ({"sentry_dsn": "x"}, "does not manage the global key 'sentry_dsn'"),
    ],
)
def test_bad_globals_are_refused(globals_, problem):
    with pytest.raises(ConfigError, match=problem):
        merge(CONFIG, globals_=globals_)


# -- remove / names --------------------------------------------------------------------------------


def test_remove_runner_leaves_the_others_byte_identical():
    text, removed = remove_runner(CONFIG, "build-dind", path=PATH)
    assert removed is not None
    assert (removed.name, removed.url, removed.id, removed.token) == (
        "build-dind",
        URL,
        12,
        "glrt-ROTATEDbyTheRunner",
    )
    assert "glrt-" not in repr(removed)
    head = CONFIG[: CONFIG.index('[[runners]]\n  name = "build-dind"')]
    tail = CONFIG[CONFIG.index("# the socket runner") :]
    assert text == head + tail
    assert runner_names(text) == ["hand-shell", "build-socket"]


def test_remove_first_and_last_runner():
    text, _ = remove_runner(CONFIG, "hand-shell")
    assert "# added by hand: keep" not in text  # its own leading comment goes with it
    assert text == CONFIG.replace(
        CONFIG[CONFIG.index("# added by hand") : CONFIG.index('[[runners]]\n  name = "build-d')], ""
    )
    text, _ = remove_runner(CONFIG, "build-socket")
    assert text == CONFIG[: CONFIG.index("\n# the socket runner")]
    assert runner_names(text) == ["hand-shell", "build-dind"]


def test_remove_missing_runner_changes_nothing():
    assert remove_runner(CONFIG, "nope") == (CONFIG, None)


def test_remove_the_only_runner():
    text, removed = remove_runner('concurrent = 1\n\n[[runners]]\n  name = "a"\n  token = "glrt-x1y2"\n', "a")
    assert text == "concurrent = 1\n"
    assert removed is not None and removed.id is None


def test_remove_is_not_fooled_by_a_header_inside_a_multiline_string():
    text = (
        '[[runners]]\n  name = "a"\n  pre_build_script = """\necho\n[[runners]]\n"""\n\n'
        '[[runners]]\n  name = "b"\n'
    )
    out, _ = remove_runner(text, "b")
    assert runner_names(out) == ["a"]
    assert tomllib.loads(out)["runners"][0]["pre_build_script"] == "echo\n[[runners]]\n"


def test_remove_falls_back_to_tomlkit_when_the_line_scan_fails(monkeypatch):
    monkeypatch.setattr("berth.gitlab.runner_config._cut_block", lambda text, position: None)
    text, removed = remove_runner(CONFIG, "build-dind")
    assert removed is not None and runner_names(text) == ["hand-shell", "build-socket"]
    assert runners_of(text)["build-socket"] == runners_of(CONFIG)["build-socket"]


def test_runner_names():
    assert runner_names(CONFIG) == ["hand-shell", "build-dind", "build-socket"]
    assert runner_names("") == []
    with pytest.raises(ConfigError, match=r"^x.toml:1: invalid TOML"):
        runner_names("[[runners", path="x.toml")


# -- parse_runners ---------------------------------------------------------------------------------


def test_parse_valid_runners_with_defaults():
    specs, warnings = parse_runners(
        [
            {
                "name": "d",
                "url": URL,
                "mode": "dind",
                "runner_type": "group_type",
                "group_id": 4,
                "tag_list": ["x"],
            },
            {"name": "s", "url": URL, "mode": "socket", "token_env": "S_TOKEN", "limit": 2},
            {
                "name": "r",
                "url": URL,
                "mode": "remote",
                "remote_host": "tcp://b:2376",
                "token_file": "/run/r.tok",
            },
        ],
        ORIGIN,
    )
    assert warnings == []
    assert [s.image for s in specs] == ["docker:27.5-cli"] * 3
    assert specs[2].remote_cert_dir == "/etc/gitlab-runner/certs/r"
    assert registration_params(specs[0]) == {"runner_type": "group_type", "group_id": 4, "tag_list": ["x"]}
    assert parse_runners(None, ORIGIN) == ([], [])


BASE = {"name": "r1", "url": URL}
CONTRADICTIONS = [
    ({"url": URL, "mode": "dind"}, "runner #1: missing name"),
    ({"name": "r1", "mode": "dind"}, "missing url"),
    ({**BASE}, "missing mode"),
    ({**BASE, "mode": "dnd"}, "unknown mode 'dnd' (did you mean 'dind'?)"),
    (
        {**BASE, "mode": "dind", "privileged_frm": "capabilities"},
        "unknown key 'privileged_frm' (did you mean 'privileged_form'?)",
    ),
    (
        {**BASE, "mode": "dind", "volumes": ["/var/run/docker.sock:/var/run/docker.sock"]},
        "mounts the host's Docker socket",
    ),
    ({**BASE, "mode": "dind", "volumes": ["/certs/client"]}, "mounts /certs/client a second time"),
    (
        {**BASE, "mode": "socket", "services": ["docker:27.5-dind"]},
        "a dind service (docker:27.5-dind) on a socket runner",
    ),
    (
        {**BASE, "mode": "socket", "services": [{"name": "docker:27"}]},
        "a dind service (docker:27) on a socket runner",
    ),
    ({**BASE, "mode": "remote"}, "mode remote needs remote_host"),
    ({**BASE, "mode": "remote", "remote_host": "builder:2376"}, "must look like tcp://host:2376"),
    ({**BASE, "mode": "socket", "privileged": True}, "privileged on a socket runner"),
    ({**BASE, "mode": "socket", "privileged_form": "privileged"}, "privileged on a socket runner"),
    ({**BASE, "mode": "socket", "docker": {"privileged": True}}, "privileged on a socket runner"),
    ({**BASE, "mode": "socket", "remote_host": "tcp://b:2376"}, "remote_host applies to remote runners only"),
    (
        {**BASE, "mode": "remote", "remote_host": "tcp://b:2376", "environment": ["DOCKER_HOST=tcp://x:1"]},
        "sets DOCKER_HOST",
    ),
    ({**BASE, "mode": "dind", "docker_version": 27.10}, "docker_version must be quoted"),
    (
        {**BASE, "mode": "dind", "token_env": "T", "tag_list": ["a"]},
        "tag_list are set in GitLab when berth creates",
    ),
    ({**BASE, "mode": "dind", "tag_list": ["a"]}, "tag_list need runner_type"),
    ({**BASE, "mode": "dind", "runner_type": "group_type"}, "runner_type group_type needs group_id"),
    (
        {**BASE, "mode": "dind", "token_env": "T", "token_file": "/t"},
        "give only one of token_env, token_file",
    ),
    ({**BASE, "mode": "dind", "token": "GR1348941secretREG"}, "token must be a runner authentication token"),
    ({**BASE, "mode": "dind", "executor": "shell"}, "executor must be docker"),
    ({**BASE, "mode": "dind", "limit": "2"}, "limit must be a whole number"),
    ({**BASE, "mode": "dind", "docker": {"volumes": ["/x"]}}, "docker.volumes: use the runner's volumes key"),
    ({**BASE, "mode": "dind", "docker": {"tls_verify": True}}, "docker.tls_verify is set by mode dind"),
    ({**BASE, "mode": "dind", "url": "gitlab.example.com"}, "must start with https://"),
]


@pytest.mark.parametrize(("definition", "problem"), CONTRADICTIONS, ids=[c[1][:40] for c in CONTRADICTIONS])
def test_contradictory_definitions_name_the_runner_and_origin(definition, problem):
    with pytest.raises(ConfigError) as caught:
        parse_runners([definition], ORIGIN)
    message = str(caught.value)
    assert message.startswith(f"{ORIGIN}: runner ")
    assert "runner #1" in message if "name" not in definition else "runner 'r1'" in message
    assert problem in message
    assert "secretREG" not in message


def test_duplicate_names():
    with pytest.raises(ConfigError, match=r"runner 'r1': defined twice \(first as runner #1\)"):
        parse_runners([{**BASE, "mode": "dind"}, {**BASE, "mode": "socket"}], ORIGIN)


def test_not_a_list():
    with pytest.raises(ConfigError, match=f"^{ORIGIN}: gitlab_runners must be a list"):
        parse_runners({"name": "r1"}, ORIGIN)


def test_clear_text_token_in_the_inventory_gives_a_warning_without_the_token():
    specs, warnings = parse_runners([{**BASE, "mode": "socket", "token": "glrt-CLEARtext99"}], ORIGIN)
    assert specs[0].token == "glrt-CLEARtext99"
    assert "glrt-CLEARtext99" not in repr(specs[0])
    [warning] = warnings
    assert warning.startswith(f"{ORIGIN}: runner 'r1': a runner token is written in clear in the inventory")
    assert "token_env" in warning and "CLEARtext" not in warning


def test_messages_use_the_yaml_line_of_the_runner():
    text = """\
gitlab_runners:
  - name: ok
    url: https://gitlab.example.com
    mode: dind
  - name: bad
    url: https://gitlab.example.com
    mode: socket
    services: [docker:27.5-dind]
"""
    value = parse_yaml(text, "inventory/group_vars/runners.yml")["gitlab_runners"]
    with pytest.raises(ConfigError) as caught:
        parse_runners(value, "inventory/group_vars/runners.yml:1")
    assert str(caught.value).startswith("inventory/group_vars/runners.yml:8: runner 'bad': a dind service")
