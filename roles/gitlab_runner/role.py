"""Role gitlab_runner: the runner service and its config.toml for dind, socket and remote runners.

config.toml is merged as TOML (berth.gitlab.runner_config) and applied with the runner's own reload
(SIGHUP): a config change never restarts the runner, so no running job is cancelled. The exception is
listen_address, read only at start: its change restarts the runner, gracefully (SIGQUIT, see the drop-in).
"""

from __future__ import annotations

import re
from pathlib import Path

from berth.gitlab.runner_config import OWNED_GLOBAL_KEYS, harden, package_pins, parse_runners
from berth.gitlab.runners import RELOAD_HANDLER, RELOAD_RUNNER, RESTART_HANDLER, RESTART_RUNNER, RunnerConfigFile
from berth.gitlab.urls import VARIABLE, allowed_http
from berth.inventory.paths import check_runner_config
from berth.role import (
    ConfigError,
    Contribution,
    Directory,
    Drain,
    File,
    Handler,
    Host,
    HostCertificate,
    Packages,
    RoleContext,
    RoleState,
    Service,
    apt_source,
    controller_files,
    drop_in,
    host_zone,
)

# A systemd time span (systemd.time(7)): numbers with optional units; a bare number is seconds.
_TIME_SPAN = re.compile(
    r"^\s*(?:\d+(?:\.\d+)?\s*(?:usec|us|msec|ms|seconds?|sec|s|minutes?|min|m|hours?|hr|h|days?|d|weeks?|w)?\s*)+$"
)


def contribute(host: Host) -> list[Contribution]:
    """How this host's jobs use its Docker daemon, for role docker_engine's checks (CIS 5.5 privileged
    containers for dind, 5.32 docker.sock mounted for socket): mode -> "runners a, b". Optional: a host
    without docker_engine has no such checks."""
    runners = host.vars.get("gitlab_runners")
    by_mode: dict[str, list[str]] = {}
    for runner in runners if isinstance(runners, list) else []:
        if isinstance(runner, dict) and isinstance(runner.get("mode"), str):
            by_mode.setdefault(runner["mode"], []).append(str(runner.get("name", "?")))
    return [Contribution("docker.job_modes", mode, f"runners {', '.join(names)}", optional=True)
            for mode, names in by_mode.items()]


def declare(host: Host, ctx: RoleContext) -> RoleState:
    v = host.vars
    insecure_http = allowed_http(v["gitlab_runner_insecure_http_urls"],
                                 host.origins.get(VARIABLE, VARIABLE))
    config_dir = str(Path(check_runner_config(host)).parent)     # made 0700: berth's own directory only
    specs, warnings = parse_runners(
        v["gitlab_runners"], str(host.origins.get("gitlab_runners", "gitlab_runners")),
        # privileged_form capabilities is a testbed device (see berth.gitlab.runner_config); berth_testbed allows it.
        allow_capabilities=v["berth_testbed"] is True, insecure_http=insecure_http, config_dir=config_dir,
    )
    harden(specs, v, host.origins.get("gitlab_runner_job_memory", "gitlab_runner_job_*"))
    stop_timeout, stop_warnings = _stop_timeout(host)
    state = RoleState("gitlab_runner")
    state.resources += _install(host)
    state.resources += [
        Directory(config_dir, mode=0o700),
        Directory("/etc/systemd/system/gitlab-runner.service.d", mode=0o755),
        drop_in("gitlab-runner.service", "berth-kill.conf",
                ctx.render("gitlab_runner", "kill.conf.j2", {"stop_timeout": stop_timeout})),
    ]
    if v["gitlab_runner_install_method"] != "none":
        state.resources.append(Service("gitlab-runner", enabled=True, running=True))
    config = RunnerConfigFile(
        path=v["gitlab_runner_config"],
        globals_={key: v[f"gitlab_runner_{key}"] for key in OWNED_GLOBAL_KEYS if v[f"gitlab_runner_{key}"] is not None},
        specs=specs, api_token_env=v["gitlab_runner_api_token_env"], api_timeout=float(v["gitlab_runner_api_timeout"]),
        insecure_http=insecure_http, backups=_backups(host),
        notify=(RELOAD_HANDLER,), notify_restart=(RESTART_HANDLER,),
    )
    config.notes += warnings + stop_warnings
    state.derived.append(config)
    for spec in (s for s in specs if s.mode == "remote"):
        state.resources += [
            Directory(spec.remote_cert_dir, mode=0o700),
            File(f"{spec.remote_cert_dir}/ca.pem", ctx.ca().bundle_pem(), mode=0o444),
        ]
        # The jobs' client key is made on this host, like the daemons' server keys. Its certificate comes
        # from the zone of remote_host's daemon: that daemon accepts it, no other does (berth.pki.ca).
        state.derived.append(HostCertificate(
            cert_path=f"{spec.remote_cert_dir}/cert.pem", key_path=f"{spec.remote_cert_dir}/key.pem",
            common_name=f"{host.name}-{spec.name}", sans=[], purpose="client",
            zone=host_zone(remote_daemon(host, spec.remote_host or "", ctx)),
            days=v["gitlab_runner_client_cert_days"], renew_days=max(1, v["gitlab_runner_client_cert_days"] // 3),
        ))
    state.handlers.append(Handler(RELOAD_HANDLER, RELOAD_RUNNER, signals="gitlab-runner"))
    # listen_address changed: the runner reads it only at start. The restart stops it with SIGQUIT (the
    # drop-in above), so running jobs finish first; it makes the reload redundant.
    state.handlers.append(Handler(RESTART_HANDLER, RESTART_RUNNER, unit="gitlab-runner",
                                  supersedes=(RELOAD_HANDLER,), starts=True))
    return state


def remote_daemon(host: Host, remote_host: str, ctx: RoleContext) -> str:
    """The inventory name of the daemon a remote runner reaches: the host whose name, ansible_host or
    docker_tls_extra_sans is remote_host's host part (the names its server certificate holds)."""
    target = re.sub(r"^tcp://|:\d+$", "", remote_host).strip("[]")
    if ctx.inventory is None:
        return target
    for other in ctx.inventory.hosts.values():
        names = {other.name, str(other.vars.get("ansible_host") or ""), *map(str, other.vars.get(
            "docker_tls_extra_sans") or [])}
        if "docker_tls" in other.roles and target.lower() in {n.lower() for n in names if n}:
            return other.name
    raise ConfigError(
        f"{host.origins.get('gitlab_runners')}: {host.name}: remote_host {remote_host!r} is not a host with role "
        "docker_tls in the inventory (by name, ansible_host or docker_tls_extra_sans). A remote runner's "
        "certificate is issued in the zone of the daemon it reaches, so that daemon must be in the inventory.")


def _install(host: Host) -> list:
    v = host.vars
    method = v["gitlab_runner_install_method"]
    origin = host.origins.get("gitlab_runner_install_method")
    if method == "none":
        return []
    if method == "repo":
        (keyring,) = controller_files(host, "gitlab_runner_repo_keyring_file",
                                      "the dearmored key of https://packages.gitlab.com/runner/gitlab-runner/gpgkey")
        line = f"{v['gitlab_runner_repo_url']} {v['gitlab_runner_repo_suite']} main"
        return [
            *apt_source("runner_gitlab-runner", line, keyring.read_bytes()),
            runner_packages(v["gitlab_runner_version"], str(host.origins.get("gitlab_runner_version")),
                            drain=_package_drain(host)),
        ]
    if method == "local-debs":
        debs = controller_files(host, "gitlab_runner_local_debs", ".deb files for hosts without internet")
        return [Packages(("gitlab-runner",), debs=debs, drain=_package_drain(host))]
    raise ConfigError(f"{origin}: gitlab_runner_install_method must be repo, local-debs or none, got {method!r}")


def runner_packages(version: str, origin: str, *, drain: Drain | None = None) -> Packages:
    """The pinned packages of one gitlab-runner release (see berth.gitlab.runner_config.package_pins)."""
    pins, absent = package_pins(version, origin)
    return Packages(tuple(pins), versions=pins, absent=absent, drain=drain)


def _package_drain(host: Host) -> Drain:
    """A package install, upgrade or downgrade stops the runner (the maintainer scripts run `gitlab-runner
    stop`, gitlab-runner packaging/root/usr/share/gitlab-runner/pre-remove), which with TimeoutStopSec=infinity
    waits for every running job inside apt-get. Draining first bounds that wait (gitlab_runner_drain_timeout)
    and, when it runs out, fails the host with nothing changed instead of leaving dpkg half-way."""
    return Drain(timeout=float(host.vars["gitlab_runner_drain_timeout"]))


def _backups(host: Host) -> int:
    keep = host.vars["gitlab_runner_config_backups"]
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"{host.origins.get('gitlab_runner_config_backups')}: {host.name}: "
                          f"gitlab_runner_config_backups must be a whole number of at least 1, not {keep!r}")
    return keep


def _stop_timeout(host: Host) -> tuple[str, list[str]]:
    """TimeoutStopSec for the drop-in, and a warning when it is finite (systemd then kills long jobs)."""
    value = host.vars["gitlab_runner_stop_timeout"]
    origin = host.origins.get("gitlab_runner_stop_timeout")
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if text == "infinity":
        return text, []
    if not _TIME_SPAN.match(text):
        raise ConfigError(
            f"{origin}: gitlab_runner_stop_timeout {value!r} is not a systemd time span: use infinity (GitLab's "
            "recommendation: jobs always finish) or a duration such as 7200 or 2h"
        )
    return text, [
        f"{origin}: gitlab_runner_stop_timeout is {text}: a stop of gitlab-runner (package upgrade, "
        "reboot, systemctl stop) that waits longer for running jobs ends with systemd's SIGKILL, and those "
        "jobs fail; infinity lets them finish"
    ]
