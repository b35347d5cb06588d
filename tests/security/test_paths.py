"""Confined paths (#11): every path variable berth writes or chmods as root is normalized and checked
against where it may point; traversal and dangerous targets are errors naming the variable, file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from berth.engine.roles import RoleContext, declare_roles
from berth.errors import ConfigError
from berth.inventory.layers import Origin
from berth.inventory.loader import Host
from tests.unit.test_runners import make_host as runner_host

ROOT = Path(__file__).resolve().parents[2]
CTX = RoleContext(ROOT / "roles")
ENGINE = {**yaml.safe_load((ROOT / "roles/docker_engine/defaults.yml").read_text()),
          **yaml.safe_load((ROOT / "roles/docker_tls/defaults.yml").read_text())}


def engine_host(**variables: object) -> Host:
    merged = {**ENGINE, **variables}
    origins = {k: Origin("host_vars/r1.yml", 4) for k in merged}
    return Host("r1", ["all"], merged, origins, ["docker_engine", "docker_tls"])


@pytest.mark.parametrize("variable, value", [
    ("docker_dropin_name", "../../../../etc/cron.d/x"),
    ("docker_dropin_name", "../x.conf"),
    ("docker_dropin_name", ".hidden.conf"),
    ("docker_dropin_name", "sub/dir.conf"),
    ("docker_dropin_name", "x"),
    ("docker_daemon_json", "/etc/docker/../cron.d/x.json"),
    ("docker_daemon_json", "/etc/cron.d/daemon.json"),
    ("docker_daemon_json", "etc/docker/daemon.json"),
    ("docker_daemon_json", "/etc/docker/daemon.sh"),
    ("docker_tls_dir", "/etc/docker/tls/../../ssh"),
    ("docker_tls_dir", "/etc"),
    ("docker_tls_dir", "/etc/docker"),
    ("docker_tls_dir", "/etc/docker//tls"),
    ("docker_tls_dir", "/etc/docker/tls/"),
])
def test_docker_path_variables_are_confined(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^host_vars/r1.yml:4: r1: {variable} '.*' must"):
        declare_roles(engine_host(**{variable: value}), CTX)


@pytest.fixture(scope="module")
def ctx_with_ca(tmp_path_factory: pytest.TempPathFactory) -> RoleContext:
    from berth.pki.ca import CertificateAuthority

    pki = tmp_path_factory.mktemp("pki")
    CertificateAuthority.init(pki)
    return RoleContext(ROOT / "roles", pki, ca_loader=CertificateAuthority.load)


def test_the_defaults_pass(ctx_with_ca: RoleContext) -> None:
    declare_roles(engine_host(), ctx_with_ca)


@pytest.mark.parametrize("value", [
    "/etc/config.toml",                          # would chmod /etc 0700
    "/config.toml", "/srv/config.toml", "/etc/gitlab-runner/../config.toml", "/etc/gitlab-runner/config.json",
    "/var/lib/docker/config.toml", "relative/config.toml",
])
def test_gitlab_runner_config_is_confined(tmp_path: Path, value: str) -> None:
    host = runner_host(tmp_path, [], gitlab_runner_config=value)
    host.origins["gitlab_runner_config"] = Origin("group_vars/gitlab.yml", 9)
    with pytest.raises(ConfigError, match=r"^group_vars/gitlab.yml:9: r9: gitlab_runner_config '.*' must"):
        declare_roles(host, CTX)


@pytest.mark.parametrize("value", ["/etc/gitlab-runner", "/etc", "/", "/etc/gitlab-runner/certs/../../gitlab-runner",
                                   "/srv/x", "/var/lib/docker/certs", "/etc/docker/tls"])
def test_remote_cert_dir_is_confined(tmp_path: Path, value: str) -> None:
    runner = {"name": "to-r2", "url": "https://gitlab.example.com", "mode": "remote", "remote_host": "tcp://r2:2376",
              "remote_cert_dir": value}
    host = runner_host(tmp_path, [runner])
    host.origins["gitlab_runners"] = Origin("host_vars/r9.yml", 20)
    with pytest.raises(ConfigError, match=r"^host_vars/r9.yml(:\d+)?: runner 'to-r2': remote_cert_dir '.*'"):
        declare_roles(host, CTX)


@pytest.mark.parametrize("value", ["", "/etc/gitlab-runner/certs/to-r2", "/srv/runner-certs/to-r2"])
def test_allowed_cert_dirs(tmp_path: Path, value: str, ctx_with_ca: RoleContext) -> None:
    runner = {"name": "to-r2", "url": "https://gitlab.example.com", "mode": "remote", "remote_host": "tcp://r2:2376"}
    if value:
        runner["remote_cert_dir"] = value
    declare_roles(runner_host(tmp_path, [runner]), ctx_with_ca)
