"""Role gitlab_runner: the runner service and its config.toml for dind, socket and remote runners.

config.toml is merged as TOML (berth.runner_config) and applied with the runner's own reload
(SIGHUP): a config change never restarts the runner, so no running job is cancelled. The exception is
listen_address, read only at start: its change restarts the runner, gracefully (SIGQUIT, see the drop-in).
"""

from __future__ import annotations

from pathlib import Path

from berth.certificates import HostCertificate
from berth.errors import ConfigError
from berth.inventory import Host
from berth.resources import Directory, File, Handler, Packages, RoleState, Service, apt_source, drop_in
from berth.roles import RoleContext, controller_files
from berth.runner_config import parse_runners
from berth.runners import RELOAD_HANDLER, RELOAD_RUNNER, RESTART_HANDLER, RESTART_RUNNER, RunnerConfigFile

GLOBALS = ("concurrent", "check_interval", "shutdown_timeout", "log_level", "log_format", "listen_address")


def declare(host: Host, ctx: RoleContext) -> RoleState:
    v = host.vars
    specs, warnings = parse_runners(v["gitlab_runners"], str(host.origins.get("gitlab_runners", "gitlab_runners")))
    state = RoleState("gitlab_runner")
    state.resources += _install(host)
    config_dir = str(Path(v["gitlab_runner_config"]).parent)
    state.resources += [
        Directory(config_dir, mode=0o700),
        Directory("/etc/systemd/system/gitlab-runner.service.d", mode=0o755),
        drop_in("gitlab-runner.service", "berth-kill.conf",
                ctx.render("gitlab_runner", "kill.conf.j2",
                           {"stop_timeout": int(v["gitlab_runner_shutdown_timeout"]) + 30})),
    ]
    if v["gitlab_runner_install_method"] != "none":
        state.resources.append(Service("gitlab-runner", enabled=True, running=True))
    config = RunnerConfigFile(
        path=v["gitlab_runner_config"],
        globals_={key: v[f"gitlab_runner_{key}"] for key in GLOBALS if v[f"gitlab_runner_{key}"] is not None},
        specs=specs, api_token_env=v["gitlab_runner_api_token_env"], api_timeout=float(v["gitlab_runner_api_timeout"]),
        notify=(RELOAD_HANDLER,), notify_restart=(RESTART_HANDLER,),
    )
    config.notes += warnings
    state.derived.append(config)
    for spec in (s for s in specs if s.mode == "remote"):
        state.resources += [
            Directory(spec.remote_cert_dir, mode=0o700),
            File(f"{spec.remote_cert_dir}/ca.pem", ctx.ca().bundle_pem(), mode=0o444),
        ]
        # The jobs' client key is made on this host, like the daemons' server keys.
        state.derived.append(HostCertificate(
            cert_path=f"{spec.remote_cert_dir}/cert.pem", key_path=f"{spec.remote_cert_dir}/key.pem",
            common_name=f"{host.name}-{spec.name}", sans=[], purpose="client",
            days=v["gitlab_runner_client_cert_days"], renew_days=max(1, v["gitlab_runner_client_cert_days"] // 3),
        ))
    state.handlers.append(Handler(RELOAD_HANDLER, RELOAD_RUNNER))
    # listen_address changed: the runner reads it only at start. The restart stops it with SIGQUIT (the
    # drop-in above), so running jobs finish first; it makes the reload redundant.
    state.handlers.append(Handler(RESTART_HANDLER, RESTART_RUNNER, unit="gitlab-runner", supersedes=(RELOAD_HANDLER,)))
    return state


def _install(host: Host) -> list:
    v = host.vars
    method = v["gitlab_runner_install_method"]
    origin = host.origins.get("gitlab_runner_install_method")
    if method == "none":
        return []
    if method == "repo":
        (keyring,) = controller_files(host, "gitlab_runner_repo_keyring_file",
                                      "the dearmored key of https://packages.gitlab.com/runner/gitlab-runner/gpgkey")
        version = v["gitlab_runner_version"]
        line = f"{v['gitlab_runner_repo_url']} {v['gitlab_runner_repo_suite']} main"
        return [
            *apt_source("runner_gitlab-runner", line, keyring.read_bytes()),
            # The package depends on the helper images of exactly its own version: pin both.
            Packages(("gitlab-runner", "gitlab-runner-helper-images"),
                     versions={"gitlab-runner": version, "gitlab-runner-helper-images": version}),
        ]
    if method == "local-debs":
        debs = controller_files(host, "gitlab_runner_local_debs", ".deb files for hosts without internet")
        return [Packages(("gitlab-runner",), debs=debs)]
    raise ConfigError(f"{origin}: gitlab_runner_install_method must be repo, local-debs or none, got {method!r}")
