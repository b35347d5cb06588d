"""GitLab over https only (#11): an http:// runner url is refused, naming the runner, file and line,
unless gitlab_runner_insecure_http_urls lists it; and then no token goes anywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.errors import ConfigError
from berth.inventory.layers import Origin
from tests.security.conftest import LocalSession
from tests.standins.gitlab_api import GitLabStandIn
from tests.unit.test_runners import PAT, apply, make_host, plan_for, probe, registered_config


@pytest.fixture
def gl():
    with GitLabStandIn(access_token=PAT) as standin:
        yield standin


def host_with(tmp_path: Path, url: str, allowed: object):
    host = make_host(tmp_path, [{"name": "build", "url": url, "mode": "socket", "runner_type": "instance_type"}],
                     gitlab_runner_insecure_http_urls=allowed)
    host.origins["gitlab_runners"] = Origin("host_vars/r9.yml", 12)
    host.origins["gitlab_runner_insecure_http_urls"] = Origin("group_vars/all.yml", 3)
    return host


@pytest.mark.parametrize("url", ["http://gitlab.example.com", "http://127.0.0.1:8080"])
def test_an_http_url_is_refused_with_runner_file_and_line(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match=r"^host_vars/r9.yml:12: runner 'build': url .* is plain http.*https://"):
        plan_for(host_with(tmp_path, url, []), probe())


def test_the_variable_allows_exactly_what_it_names(tmp_path: Path, gl: GitLabStandIn, monkeypatch) -> None:
    port = int(gl.url.rsplit(":", 1)[1])
    with pytest.raises(ConfigError, match="plain http"):       # another port of the same host
        plan_for(host_with(tmp_path, gl.url, [f"http://127.0.0.1:{port + 1}"]), probe())
    with pytest.raises(ConfigError, match="plain http"):       # another host
        plan_for(host_with(tmp_path, gl.url, ["http://localhost"]), probe())
    monkeypatch.setenv("GITLAB_TOKEN", PAT)
    host = host_with(tmp_path, gl.url, [f"http://127.0.0.1:{port}"])
    plan, derived = plan_for(host, probe())
    assert "glrt-" in apply(host, plan, derived)               # registered through the allowed stand-in


@pytest.mark.parametrize("entry", ["https://127.0.0.1", "http://u:p@127.0.0.1", "http://127.0.0.1/api", "127.0.0.1"])
def test_a_bad_allow_entry_names_the_variable(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError, match=r"^group_vars/all.yml:3: gitlab_runner_insecure_http_urls: .*http://host"):
        plan_for(host_with(tmp_path, "https://gitlab.example.com", [entry]), probe())


def test_a_moved_runner_token_never_goes_to_an_http_url(tmp_path: Path, gl: GitLabStandIn) -> None:
    # The token in config.toml is verified at the NEW url before it is written there: not over http.
    with pytest.raises(ConfigError, match="plain http"):
        plan_for(host_with(tmp_path, gl.url, []), probe(config=registered_config("https://gitlab.example.com")))
    assert gl.requests == []


def test_runner_remove_refuses_an_http_url_from_the_hosts_config(tmp_path: Path, gl: GitLabStandIn) -> None:
    from berth.gitlab.runners import remove_from_host

    config = tmp_path / "config.toml"
    config.write_text(registered_config(gl.url))       # the host's config.toml points the token at http://
    host = host_with(tmp_path, "https://gitlab.example.com", [])
    host.vars["gitlab_runner_config"] = str(config)
    with pytest.raises(ConfigError, match=rf"r9: runner build in {config}: url http://127.0.0.1:\d+ is plain http"):
        remove_from_host(LocalSession(host), "build", delete=False)
    assert gl.requests == [] and config.read_text() == registered_config(gl.url)
