"""The runners berth manages (inventory variable ``gitlab_runners``) and their merge into config.toml.

config.toml is shared with gitlab-runner itself, which rewrites it (token rotation, ``register``), and with
people who edit it by hand. So berth parses and merges it as TOML (never re-templates it) and owns only:

- the global keys it is given: ``concurrent``, ``check_interval``, ``shutdown_timeout``, ``log_level``,
  ``log_format``, ``listen_address``; every other global key, table and comment is kept as it is;
- the ``[[runners]]`` blocks whose ``name`` matches a runner in the inventory. In those it sets ``url``,
  ``executor``, ``environment`` (fully owned: entries added by hand are removed), ``limit`` and
  ``request_concurrency`` (when given), and in ``[runners.docker]`` the keys of :data:`MODE_OWNED_KEYS`
  plus the runner's extra ``docker`` keys. It never changes ``id``, ``token``, ``token_obtained_at`` or
  ``token_expires_at`` once there (unless told to: ``replace``, for a runner registered again at a new url):
  the runner rotates its token and rewrites them, and rolling them back would break the runner. Other
  runners in the file are left untouched.

The ``[runners.docker]`` keys each mode sets (docs/UPSTREAM.md; "27.5" is the default docker_version):

- ``dind`` (Docker-in-Docker service, TLS between job and service through the shared ``/certs/client``
  volume): ``tls_verify=false``, ``image="docker:27.5-cli"``, ``disable_cache=false``,
  ``volumes=["/certs/client", "/cache", ...]`` and one privilege form:
  ``privileged`` -> ``privileged=true``;
  ``services_privileged`` -> ``privileged=false, services_privileged=true,
  allowed_privileged_services=`` :data:`DIND_PRIVILEGED_SERVICES` (the official docker image under any tag:
  docker:dind, docker:27, docker:latest..., with or without docker.io/library/; the job container stays
  unprivileged);
  ``capabilities`` -> ``privileged=false, cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
  security_opt=["seccomp=unconfined", "apparmor=unconfined"]`` (TESTBED ONLY, for kernels that cannot grant
  --privileged: gitlab-runner never gives these keys to services, so a real dind service gets none of them;
  the role refuses it unless ``berth_testbed`` is true).
- ``socket`` (the host daemon's socket is mounted into the job): ``tls_verify=false``, ``image``,
  ``privileged=false``, ``disable_cache=false``,
  ``volumes=["/var/run/docker.sock:/var/run/docker.sock", "/cache", ...]``.
- ``remote`` (jobs run on this host's daemon; their docker CLI talks to ``remote_host`` over mutual TLS):
  ``tls_verify=false``, ``image``, ``privileged=false``, ``disable_cache=false``,
  ``volumes=["<remote_cert_dir>:/certs/client:ro", "/cache", ...]``; and the runner's ``environment`` gets
  ``DOCKER_HOST=<remote_host>``, ``DOCKER_TLS_VERIFY=1``, ``DOCKER_CERT_PATH=/certs/client``.

``tls_verify`` here is about the runner talking to this host's own daemon over its unix socket; it has
nothing to do with dind's or the remote daemon's TLS. A runner's ``services`` (``[runners.docker]
services``) are owned by berth too. When a runner changes mode, the keys of :data:`MODE_OWNED_KEYS` that the
new mode does not set are removed (unless the runner's extra ``docker`` keys set them); extra ``docker`` keys
are set but never removed, because berth cannot tell them from keys added by hand.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError, TOMLKitError
from tomlkit.items import AoT, Item, Table

from berth.errors import BerthError, ConfigError
from berth.gitlab.urls import http_problem
from berth.inventory.paths import cert_dir_problem

MODES = ("dind", "socket", "remote")
PRIVILEGED_FORMS = ("privileged", "services_privileged", "capabilities")
DEFAULT_DOCKER_VERSION = "27.5"
RUNNER_TYPES = ("instance_type", "group_type", "project_type")
ACCESS_LEVELS = ("not_protected", "ref_protected")

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal", "panic")
LOG_FORMATS = ("runner", "text", "json")


def _below(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, bool) or not isinstance(v, int) or v < minimum


# The global keys berth owns in config.toml (the one list: role gitlab_runner sets them from
# gitlab_runner_<key>, its checks compare them), each with what makes a value invalid.
GLOBAL_KEYS: dict[str, Callable[[Any], bool]] = {
    "concurrent": _below(1),
    "check_interval": _below(0),
    "shutdown_timeout": _below(0),
    "log_level": lambda v: v not in LOG_LEVELS,
    "log_format": lambda v: v not in LOG_FORMATS,
    "listen_address": lambda v: not isinstance(v, str),
}
OWNED_GLOBAL_KEYS = tuple(GLOBAL_KEYS)

# Every [runners.docker] key that some mode may set; the merge removes those the runner's mode does not set.
MODE_OWNED_KEYS = frozenset(
    {
        "tls_verify",
        "image",
        "privileged",
        "services_privileged",
        "allowed_privileged_services",
        "cap_add",
        "cap_drop",
        "security_opt",
        "disable_cache",
        "volumes",
        "services",
    }
)

# Written by gitlab-runner (register, token rotation); berth never changes them once present.
RUNNER_WRITTEN_KEYS = ("id", "token", "token_obtained_at", "token_expires_at")

# Set in GitLab when berth creates the runner (POST /user/runners); gitlab-runner refuses them with --token.
REGISTRATION_KEYS = (
    "runner_type",
    "group_id",
    "project_id",
    "description",
    "tag_list",
    "run_untagged",
    "locked",
    "access_level",
    "paused",
    "maximum_timeout",
    "maintenance_note",
)

CERTS_IN_JOB = "/certs/client"
SOCKET_VOLUME = "/var/run/docker.sock:/var/run/docker.sock"
# allowed_privileged_services: gitlab-runner matches each pattern with doublestar against the service name
# exactly as the job wrote it (executors/docker/docker.go isInAllowedPrivilegedImages), so "docker:*-dind"
# misses docker:dind, docker:27 and docker:latest. The official image gives its dind variant the tags dind,
# <v>-dind, latest and the bare <v> (docker-library/docker generate-stackbrew-library.sh), and "docker"
# alone means latest. So the patterns name the repository, any tag or digest: a tag is no security line
# anyway, since a job may set a service's command and entrypoint (docker.go createServiceContainerConfig).
# doublestar's "*" never crosses "/", so other registries and namespaces stay unprivileged.
DIND_PRIVILEGED_SERVICES = [
    "docker",
    "docker:*",
    "docker@*",
    "docker.io/library/docker",
    "docker.io/library/docker:*",
    "docker.io/library/docker@*",
]
NO_EXPIRY = "0001-01-01T00:00:00Z"  # gitlab-runner's zero time: the token does not expire

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REMOTE_ENV = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")


@dataclass
class RunnerSpec:
    """One runner as the inventory describes it (see the module docstring for what each mode writes)."""

    name: str
    url: str
    mode: str
    executor: str = "docker"
    docker_version: str = DEFAULT_DOCKER_VERSION
    image: str = ""  # "" = docker:<docker_version>-cli
    privileged_form: str = "privileged"  # dind only
    volumes: list[str] = field(default_factory=list)  # added after the mode's own volumes
    environment: list[str] = field(default_factory=list)  # "K=V"
    services: list[dict[str, Any]] = field(default_factory=list)  # [runners.docker] services; "img" = {name}
    docker: dict[str, Any] = field(default_factory=dict)  # extra [runners.docker] keys, passed through
    limit: int | None = None
    request_concurrency: int | None = None
    # Where an existing glrt- token comes from (else berth creates the runner with the keys below).
    token_env: str | None = None
    token_file: str | None = None
    token: str | None = field(default=None, repr=False)  # in clear in the inventory: allowed, with a warning
    # Registration (POST /api/v4/user/runners).
    runner_type: str | None = None
    group_id: int | None = None
    project_id: int | None = None
    description: str | None = None
    tag_list: list[str] | None = None
    run_untagged: bool | None = None
    locked: bool | None = None
    access_level: str | None = None
    paused: bool | None = None
    maximum_timeout: int | None = None
    maintenance_note: str | None = None
    # remote mode
    remote_host: str | None = None  # e.g. tcp://r1:2376
    remote_cert_dir: str = ""  # "" = /etc/gitlab-runner/certs/<name>; host path with ca.pem cert.pem key.pem
    # The fleet's job hardening (gitlab_runner_job_* variables, :func:`job_settings`), on top of the mode's keys.
    hardening: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.image:
            self.image = f"docker:{self.docker_version}-cli"
        self.services = [{"name": s} if isinstance(s, str) else dict(s) for s in self.services]
        if self.mode == "remote" and not self.remote_cert_dir:
            self.remote_cert_dir = f"/etc/gitlab-runner/certs/{self.name}"

    @property
    def has_token_source(self) -> bool:
        return bool(self.token_env or self.token_file or self.token)


@dataclass(frozen=True)
class RegisteredToken:
    """A runner's credentials from GitLab (POST /user/runners or /runners/verify), for a new block."""

    id: int
    token: str = field(repr=False)
    token_expires_at: str | None = None


@dataclass
class MergeResult:
    text: str
    changed: bool
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    globals_updated: list[str] = field(default_factory=list)  # listen_address here means: restart needed


@dataclass(frozen=True)
class RemovedRunner:
    """What a removed [[runners]] block held: enough to unregister this host's runner manager."""

    name: str
    url: str | None
    id: int | None
    token: str | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------------
# Inventory


_FIELD_NAMES = tuple(f.name for f in fields(RunnerSpec))
_STR_KEYS = {
    "url", "mode", "executor", "image", "privileged_form", "description", "runner_type", "access_level",
    "token_env", "token_file", "token", "remote_host", "remote_cert_dir", "maintenance_note",
}  # fmt: skip
_STR_LIST_KEYS = {"volumes", "environment", "tag_list"}
_BOOL_KEYS = {"run_untagged", "locked", "paused"}
_INT_KEYS = {"group_id": 1, "project_id": 1, "limit": 0, "request_concurrency": 1, "maximum_timeout": 1}


class _Where:
    """Builds "file:line: runner 'x': problem" messages from the origin and YAML line numbers when known."""

    def __init__(self, origin: str, item: Any, label: str) -> None:
        self.origin = origin
        self.item = item
        self.label = label

    def at(self, key: str | None = None) -> str:
        lines = getattr(self.item, "lines", None) or {}
        line = lines.get(key) if key is not None else None
        line = line or getattr(self.item, "line", None)
        if not line:
            return self.origin
        match = re.match(r"^(.*):(\d+)$", self.origin)
        return f"{match.group(1) if match else self.origin}:{line}"

    def error(self, problem: str, key: str | None = None) -> ConfigError:
        return ConfigError(f"{self.at(key)}: runner {self.label}: {problem}")


def parse_runners(
    value: Any, origin: str, *, allow_capabilities: bool = True, insecure_http: Sequence[str] | None = None,
    config_dir: str | None = None,
) -> tuple[list[RunnerSpec], list[str]]:
    """Validate ``gitlab_runners`` and return (specs, warnings). ``origin`` is "file:line" of the variable.

    ``allow_capabilities=False`` refuses dind runners with the testbed-only capability form (see
    :func:`_check_testbed_form`); the role passes ``berth_testbed``, readers of an
    inventory the role has accepted (verify, smoke) leave it on.

    ``insecure_http`` (the role passes ``gitlab_runner_insecure_http_urls``) makes an ``http://`` url an error
    unless listed there (berth/gitlab/urls.py); readers that send no token pass None (not checked).
    ``config_dir`` (the role passes config.toml's directory) confines each ``remote_cert_dir``
    (berth/inventory/paths.py).
    """
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise ConfigError(
            f"{origin}: gitlab_runners must be a list of runners (mappings with name, url, mode)"
        )
    specs: list[RunnerSpec] = []
    warnings: list[str] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value, start=1):
        where = _Where(origin, item, f"#{index}")
        if not isinstance(item, Mapping):
            raise where.error("must be a mapping with name, url and mode")
        name = item.get("name")
        if name is None or name == "":
            raise where.error("missing name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise where.error(
                f"name {name!r} must be letters, digits, '.', '_' or '-' (it is also a directory name)",
                "name",
            )
        where.label = repr(name)
        if name in seen:
            raise where.error(f"defined twice (first as runner #{seen[name]}): names must be unique", "name")
        seen[name] = index
        spec, spec_warnings = _parse_one(item, where)
        if insecure_http is not None and (problem := http_problem(spec.url, insecure_http)):
            raise where.error(problem, "url")
        if config_dir and spec.mode == "remote" and (problem := cert_dir_problem(spec.remote_cert_dir, config_dir)):
            raise where.error(f"remote_cert_dir {spec.remote_cert_dir!r} {problem}", "remote_cert_dir")
        if not allow_capabilities:
            _check_testbed_form(spec, where)
        specs.append(spec)
        warnings.extend(spec_warnings)
    return specs, warnings


def _parse_one(item: Mapping[str, Any], where: _Where) -> tuple[RunnerSpec, list[str]]:
    _check_keys(item, where)
    for key in ("url", "mode"):
        if item.get(key) in (None, ""):
            raise where.error(f"missing {key}" + (" (dind, socket or remote)" if key == "mode" else ""))
    values = {key: _typed(key, item[key], where) for key in item if key != "name"}
    mode = values["mode"]
    if mode not in MODES:
        raise where.error(
            f"unknown mode {mode!r}{_did_you_mean(mode, MODES)}: use dind, socket or remote", "mode"
        )
    if not re.match(r"^https?://[^/\s]+", values["url"]):
        raise where.error(f"url {values['url']!r} must start with https:// (http:// only where "
                          "gitlab_runner_insecure_http_urls allows it)", "url")
    if values.get("executor", "docker") != "docker":
        raise where.error("executor must be docker: berth sets up the Docker executor only", "executor")
    spec = RunnerSpec(name=item["name"], **values)
    warnings = _check_token(spec, item, where)
    _check_registration(spec, item, where)
    _check_mode(spec, item, where)
    return spec, warnings


def _check_keys(item: Mapping[str, Any], where: _Where) -> None:
    for key in item:
        if key in _FIELD_NAMES:
            continue
        if key == "privileged" and item.get("mode") == "socket":
            raise where.error(
                "privileged on a socket runner: socket binding needs no privileges, and a privileged job "
                "sharing the host daemon is root on the host; remove privileged",
                key,
            )
        if key == "privileged":
            raise where.error("unknown key 'privileged': use privileged_form (dind runners only)", key)
        raise where.error(f"unknown key {key!r}{_did_you_mean(str(key), _FIELD_NAMES)}", key)


def _typed(key: str, value: Any, where: _Where) -> Any:
    """Check one value's type; return it in the form RunnerSpec holds."""
    if key == "docker_version":
        if isinstance(value, float):  # YAML reads 27.10 as 27.1
            raise where.error(
                f"docker_version must be quoted, e.g. '{value}': YAML reads it as a number", key
            )
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value):
            raise where.error("docker_version must be a string such as '27.5'", key)
        return str(value)
    if key in _STR_KEYS:
        if not isinstance(value, str):
            raise where.error(f"{key} must be a string", key)
        return value
    if key in _STR_LIST_KEYS:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise where.error(f"{key} must be a list of strings", key)
        return list(value)
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise where.error(f"{key} must be true or false", key)
        return value
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int) or value < _INT_KEYS[key]:
            raise where.error(f"{key} must be a whole number of at least {_INT_KEYS[key]}", key)
        return value
    if key == "services":
        return _typed_services(value, where)
    if key == "docker":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise where.error("docker must be a mapping of [runners.docker] keys", key)
        return _plain(value)
    raise AssertionError(f"no type for {key}")  # every RunnerSpec field is listed above


def _typed_services(value: Any, where: _Where) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise where.error("services must be a list of images or mappings with name", "services")
    services = []
    for entry in value:
        if isinstance(entry, str) and entry:
            services.append({"name": entry})
        elif isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and entry["name"]:
            services.append(_plain(entry))
        else:
            raise where.error("each service must be an image name or a mapping with name", "services")
    return services


def _check_token(spec: RunnerSpec, item: Mapping[str, Any], where: _Where) -> list[str]:
    given = [key for key in ("token_env", "token_file", "token") if item.get(key)]
    if len(given) > 1:
        raise where.error(
            f"give only one of {', '.join(given)}: they all say where the runner token comes from"
        )
    if spec.token_env is not None and not _ENV_NAME_RE.match(spec.token_env):
        raise where.error("token_env must be the name of an environment variable", "token_env")
    if spec.token_file is not None and not spec.token_file.strip():
        raise where.error("token_file must be a path", "token_file")
    if "token" not in item:
        return []
    if not spec.token or not spec.token.startswith("glrt-"):
        # The value is not shown: it may be a secret of another kind.
        raise where.error(
            "token must be a runner authentication token (glrt-...); legacy registration tokens are disabled "
            "on GitLab 17.0+. Better: put it in token_env or token_file",
            "token",
        )
    return [
        f"{where.at('token')}: runner {where.label}: a runner token is written in clear in the inventory; "
        "move it to token_env or token_file (or an encrypted vars file) and revoke it if it was shared"
    ]


def _check_registration(spec: RunnerSpec, item: Mapping[str, Any], where: _Where) -> None:
    given = [key for key in REGISTRATION_KEYS if item.get(key) is not None]
    if given and spec.has_token_source:
        raise where.error(
            f"{', '.join(given)} are set in GitLab when berth creates the runner, but this runner uses an "
            "existing token (token_env/token_file/token), so they would be ignored: set them on the runner "
            "in GitLab and remove them here, or remove the token to let berth create the runner",
            given[0],
        )
    if given and spec.runner_type is None:
        raise where.error(
            f"{', '.join(given)} need runner_type (instance_type, group_type or project_type)", given[0]
        )
    if spec.runner_type is None:
        return
    if spec.runner_type not in RUNNER_TYPES:
        raise where.error(
            f"runner_type {spec.runner_type!r}{_did_you_mean(spec.runner_type, RUNNER_TYPES)} must be one of "
            f"{', '.join(RUNNER_TYPES)}",
            "runner_type",
        )
    needs = {"group_type": "group_id", "project_type": "project_id"}.get(spec.runner_type)
    if needs and getattr(spec, needs) is None:
        raise where.error(f"runner_type {spec.runner_type} needs {needs}", "runner_type")
    for other in ("group_id", "project_id"):
        if other != needs and getattr(spec, other) is not None:
            raise where.error(f"{other} does not go with runner_type {spec.runner_type}", other)
    if spec.access_level is not None and spec.access_level not in ACCESS_LEVELS:
        raise where.error(f"access_level must be one of {', '.join(ACCESS_LEVELS)}", "access_level")


def _check_mode(spec: RunnerSpec, item: Mapping[str, Any], where: _Where) -> None:
    """Refuse definitions whose parts contradict the runner's mode."""
    if spec.privileged_form not in PRIVILEGED_FORMS:
        raise where.error(
            f"privileged_form {spec.privileged_form!r}{_did_you_mean(spec.privileged_form, PRIVILEGED_FORMS)}"
            f" must be one of {', '.join(PRIVILEGED_FORMS)}",
            "privileged_form",
        )
    if "privileged_form" in item and spec.mode == "socket":
        raise where.error(
            "privileged on a socket runner (privileged_form): socket binding needs no privileges, and a "
            "privileged job sharing the host daemon is root on the host; remove privileged_form",
            "privileged_form",
        )
    if "privileged_form" in item and spec.mode == "remote":
        raise where.error("privileged_form applies to dind runners only: remote runners build elsewhere")
    for key in ("remote_host", "remote_cert_dir"):
        if key in item and spec.mode != "remote":
            raise where.error(f"{key} applies to remote runners only, not to mode {spec.mode}", key)
    for entry in spec.environment:
        if "=" not in entry or not entry.split("=", 1)[0]:
            raise where.error(
                f"environment entry {entry.split('=', 1)[0]!r} must be KEY=VALUE", "environment"
            )
    _check_services(spec, where)
    _check_volumes(spec, where)
    _check_docker_extras(spec, where)
    if spec.mode == "remote":
        _check_remote(spec, where)


def _check_testbed_form(spec: RunnerSpec, where: _Where) -> None:
    """The capability form reaches the job container only, never the dind service: a testbed device.

    gitlab-runner gives a service container Privileged and services_security_opt, never cap_add, cap_drop
    or security_opt (executors/docker/docker.go createHostConfigForService), so dockerd in docker:dind
    cannot start on a real runner with this form.
    """
    if spec.mode == "dind" and spec.privileged_form == "capabilities":
        raise where.error(
            "privileged_form capabilities cannot run a docker:dind service: gitlab-runner gives services "
            "only privileged and services_security_opt, never cap_add/cap_drop/security_opt. Use "
            "privileged_form privileged (the default) or services_privileged. It is only for machines that "
            "cannot grant --privileged, like berth's testbed: there set berth_testbed: "
            "true",
            "privileged_form",
        )


def _check_services(spec: RunnerSpec, where: _Where) -> None:
    if spec.mode != "socket":
        return
    for service in spec.services:
        if _is_dind_image(service["name"]):
            raise where.error(
                f"a dind service ({service['name']}) on a socket runner: the runner mounts its volumes into "
                "services too, so the host socket and dind would be mixed; use mode dind or drop the service",
                "services",
            )


def _check_volumes(spec: RunnerSpec, where: _Where) -> None:
    own = {_container_path(v): v for v in _mode_volumes(spec)}
    for volume in spec.volumes:
        if spec.mode in ("dind", "remote") and "docker.sock" in volume.split(":")[0]:
            raise where.error(
                f"mounts the host's Docker socket ({volume}) on a {spec.mode} runner: mixing the socket with "
                f"{'dind' if spec.mode == 'dind' else 'the remote daemon'} is contradictory; use mode socket",
                "volumes",
            )
        if _container_path(volume) in own:
            raise where.error(
                f"volume {volume} mounts {_container_path(volume)} a second time: mode {spec.mode} already "
                f"mounts {own[_container_path(volume)]}",
                "volumes",
            )


def _check_docker_extras(spec: RunnerSpec, where: _Where) -> None:
    mode_keys = _mode_docker_settings(spec)
    for key, value in spec.docker.items():
        if spec.mode == "socket" and key in ("privileged", "services_privileged") and value:
            raise where.error(
                f"privileged on a socket runner (docker.{key}): a privileged job sharing the host daemon "
                "is root on the host; remove it",
                "docker",
            )
        if key == "services":
            raise where.error("docker.services: use the runner's services key", "docker")
        if key in ("volumes", "image"):
            raise where.error(f"docker.{key}: use the runner's {key} key", "docker")
        if key in mode_keys:
            raise where.error(
                f"docker.{key} is set by mode {spec.mode} (to {mode_keys[key]!r}); remove it", "docker"
            )
        if key == "host" and spec.mode == "remote":
            raise where.error(
                "docker.host on a remote runner: jobs run on this host's daemon and reach remote_host "
                "through DOCKER_HOST; remove docker.host",
                "docker",
            )


def _check_remote(spec: RunnerSpec, where: _Where) -> None:
    if not spec.remote_host:
        raise where.error("mode remote needs remote_host (e.g. tcp://builder.example.com:2376)")
    if not re.match(r"^tcp://[^/\s:]+(:\d+)?$", spec.remote_host):
        raise where.error(f"remote_host {spec.remote_host!r} must look like tcp://host:2376", "remote_host")
    if not spec.remote_cert_dir.startswith("/"):
        raise where.error("remote_cert_dir must be an absolute path on the runner host", "remote_cert_dir")
    for entry in spec.environment:
        name = entry.split("=", 1)[0]
        if name in _REMOTE_ENV:
            raise where.error(f"environment sets {name}, which berth sets from remote_host", "environment")


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_dind_image(image: str) -> bool:
    """docker:*-dind, and the bare docker:<version>/latest tags, which are the dind variant too."""
    if fnmatchcase(image, "*dind*"):
        return True
    repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
    repo = repo.removeprefix("docker.io/").removeprefix("library/")
    return repo == "docker" and "cli" not in tag


def _container_path(volume: str) -> str:
    parts = volume.split(":")
    return (parts[1] if len(parts) > 1 else parts[0]).rstrip("/") or "/"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def registration_params(spec: RunnerSpec) -> dict[str, Any]:
    """Keyword arguments for GitLabAPI.create_runner (only those given)."""
    return {key: getattr(spec, key) for key in REGISTRATION_KEYS if getattr(spec, key) is not None}


# ---------------------------------------------------------------------------------------------------
# The packages of a release

RUNNER_PACKAGE = "gitlab-runner"
HELPER_PACKAGE = "gitlab-runner-helper-images"
# gitlab-runner-helper-images first ships with 17.7.0 (gitlab-runner CHANGELOG.md v17.7.0; its
# magefiles/packages/create.go gains HelperImagesPackage at that tag).
HELPER_PACKAGE_SINCE = (17, 7)
# <release>-<iteration>, as fpm builds them (gitlab-runner magefiles/packages/create.go --version/--iteration).
_DEB_VERSION = re.compile(r"^(\d+)\.(\d+)\.\d+(?:~[0-9A-Za-z.]+)?-\d+$")


def package_pins(version: Any, origin: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """(package -> pinned Debian version, packages that must not be installed) for ``gitlab_runner_version``.

    From 17.7 on gitlab-runner depends on the helper images of exactly its own version (17.8+:
    ``gitlab-runner-helper-images = <version>``), so both are pinned. Older packages carry the images
    themselves, and a newer helper package left behind keeps those files (it Replaces gitlab-runner), so
    it must go.
    """
    match = _DEB_VERSION.match(version) if isinstance(version, str) else None
    if match is None:
        raise ConfigError(
            f"{origin}: gitlab_runner_version {version!r} is not a Debian package version apt can pin: write the "
            'release and the package iteration, e.g. "19.3.0-1" (see `apt-cache policy gitlab-runner`)'
        )
    if (int(match.group(1)), int(match.group(2))) >= HELPER_PACKAGE_SINCE:
        return {RUNNER_PACKAGE: version, HELPER_PACKAGE: version}, ()
    return {RUNNER_PACKAGE: version}, (HELPER_PACKAGE,)


# ---------------------------------------------------------------------------------------------------
# What a runner's config looks like


def _mode_volumes(spec: RunnerSpec) -> list[str]:
    if spec.mode == "dind":
        return [CERTS_IN_JOB, "/cache"]
    if spec.mode == "socket":
        return [SOCKET_VOLUME, "/cache"]
    return [f"{spec.remote_cert_dir}:{CERTS_IN_JOB}:ro", "/cache"]


def _mode_docker_settings(spec: RunnerSpec) -> dict[str, Any]:
    settings: dict[str, Any] = {"tls_verify": False, "image": spec.image}
    if spec.mode != "dind":
        settings["privileged"] = False
    elif spec.privileged_form == "privileged":
        settings["privileged"] = True
    elif spec.privileged_form == "services_privileged":
        settings.update(
            privileged=False,
            services_privileged=True,
            allowed_privileged_services=list(DIND_PRIVILEGED_SERVICES),
        )
    else:  # capabilities: for kernels that cannot grant --privileged
        settings.update(
            privileged=False,
            cap_add=["ALL"],
            cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        )
    settings["disable_cache"] = False
    settings["volumes"] = _mode_volumes(spec)
    return settings


def docker_settings(spec: RunnerSpec) -> dict[str, Any]:
    """The [runners.docker] keys berth sets for this runner, in the order gitlab-runner writes them."""
    settings = _mode_docker_settings(spec)
    settings["volumes"] = [*settings["volumes"], *spec.volumes]
    if spec.services:
        settings["services"] = [dict(s) for s in spec.services]
    for key, value in spec.hardening.items():
        if key in ("cap_drop", "security_opt"):     # added to the mode's own entries, never replacing them
            settings[key] = list(dict.fromkeys([*settings.get(key, []), *value]))
        else:
            settings[key] = value
    settings.update(spec.docker)
    return settings


# Job hardening variables (role gitlab_runner) -> [runners.docker] keys (gitlab-runner common/config.go
# DockerConfig: memory, cpus for the job container; service_memory, service_cpus for services; cap_drop and
# security_opt apply to the job container only, executors/docker/docker.go createHostConfig).
JOB_VARIABLES = {
    "gitlab_runner_job_memory": "memory", "gitlab_runner_job_cpus": "cpus",
    "gitlab_runner_service_memory": "service_memory", "gitlab_runner_service_cpus": "service_cpus",
}
NO_NEW_PRIVILEGES = "no-new-privileges:true"
# docker/go-units RAMInBytes, as gitlab-runner reads memory values (it exits on anything else).
_MEMORY_RE = re.compile(r"^\d+(\.\d+)* ?[kKmMgGtTpP]?[iI]?[bB]?$")


def job_settings(host_vars: Mapping[str, Any], origin: Any = "inventory") -> dict[str, Any]:
    """The [runners.docker] keys the fleet's job hardening variables ask for (nothing when none is set)."""
    settings: dict[str, Any] = {}
    for variable, key in JOB_VARIABLES.items():
        value = host_vars.get(variable)
        if value in (None, ""):
            continue
        if key.endswith("memory") and not _MEMORY_RE.match(str(value)):
            raise ConfigError(f"{origin}: {variable} {value!r} is not a size gitlab-runner reads (e.g. 2g, 512m)")
        if key.endswith("cpus"):
            try:
                float(value)
            except ValueError:
                raise ConfigError(f"{origin}: {variable} {value!r} is not a number of CPUs (e.g. 2 or 1.5)") from None
        settings[key] = str(value)
    drops = host_vars.get("gitlab_runner_job_cap_drop") or []
    if drops:
        settings["cap_drop"] = [str(c).upper().removeprefix("CAP_") for c in drops]
    if host_vars.get("gitlab_runner_job_no_new_privileges") is True:
        settings["security_opt"] = [NO_NEW_PRIVILEGES]
    return settings


def harden(specs: list[RunnerSpec], host_vars: Mapping[str, Any], origin: Any = "inventory") -> list[RunnerSpec]:
    """Give every runner the fleet's job hardening (a runner's own ``docker`` keys still win)."""
    settings = job_settings(host_vars, origin)
    for spec in specs:
        spec.hardening = dict(settings)
    return specs


def runner_environment(spec: RunnerSpec) -> list[str]:
    """The [[runners]] environment berth sets: the mode's variables, then the inventory's."""
    env = list(spec.environment)
    if spec.mode == "remote":
        env = [
            f"DOCKER_HOST={spec.remote_host}",
            "DOCKER_TLS_VERIFY=1",
            f"DOCKER_CERT_PATH={CERTS_IN_JOB}",
            *env,
        ]
    return env


# ---------------------------------------------------------------------------------------------------
# config.toml


def _parse(text: str, path: str) -> tomlkit.TOMLDocument:
    """Parse config.toml; any problem is a ConfigError naming the file and line."""
    try:
        tomllib.loads(text)  # stricter than tomlkit about what TOML allows
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        if match:
            where = f"{path}:{match.group(1)}"
        elif "at end of document" in str(exc):
            where = f"{path}:{len(text.splitlines()) or 1}"
        else:
            where = path
        reason = re.sub(r"\s*\(at (line .*|end of document)\)$", "", str(exc)) or "invalid TOML"
        raise ConfigError(
            f"{where}: invalid TOML ({reason}); berth did not change it: fix the file"
        ) from None
    try:
        doc = tomlkit.parse(text)
    except ParseError as exc:
        raise ConfigError(
            f"{path}:{exc.line}: invalid TOML ({exc}); berth did not change it: fix the file"
        ) from None
    except TOMLKitError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); berth did not change it: fix the file") from None
    runners = doc.get("runners")
    if runners is not None and not isinstance(runners, AoT):
        raise ConfigError(
            f"{path}: runners must be [[runners]] tables, not {type(runners.unwrap()).__name__}"
        )
    return doc


def _blocks(doc: tomlkit.TOMLDocument) -> list[Table]:
    runners = doc.get("runners")
    return list(runners.body) if isinstance(runners, AoT) else []


def _block_name(block: Table) -> Any:
    name = block.get("name")
    return name.unwrap() if isinstance(name, Item) else name


def _blocks_by_name(doc: tomlkit.TOMLDocument, path: str) -> dict[str, Table]:
    found: dict[str, Table] = {}
    for block in _blocks(doc):
        name = _block_name(block)
        if not isinstance(name, str):
            continue
        if name in found:
            raise ConfigError(
                f"{path}: two [[runners]] blocks are named {name!r}; berth cannot tell which one is its own: "
                "remove or rename one"
            )
        found[name] = block
    return found


def runner_names(text: str, *, path: str = "config.toml") -> list[str]:
    """The names of the [[runners]] blocks in config.toml, in file order."""
    return [name for block in _blocks(_parse(text, path)) if isinstance(name := _block_name(block), str)]


def _same(found: Any, wanted: Any) -> bool:
    """Equal values of the same TOML type (true is not 1, 1.0 is not 1)."""
    if isinstance(wanted, dict):
        return (
            isinstance(found, dict)
            and found.keys() == wanted.keys()
            and all(_same(found[k], wanted[k]) for k in wanted)
        )
    if isinstance(wanted, list):
        return isinstance(found, list) and len(found) == len(wanted) and all(map(_same, found, wanted))
    return type(found) is type(wanted) and found == wanted


def _item(value: Any) -> Item:
    """A tomlkit item; mappings become inline tables so they can sit among plain keys."""
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        for key, inner in value.items():
            table.append(key, _item(inner))
        return table
    if isinstance(value, list):
        array = tomlkit.array()
        for inner in value:
            array.append(_item(inner))
        return array
    return tomlkit.item(value)


def _set_key(table: Any, key: str, value: Any, indent: str) -> bool:
    """Set ``key`` only if its value differs, keeping the line's layout and comment. True if changed."""
    if key in table:
        current = table[key]
        if _same(current.unwrap() if isinstance(current, Item) else current, value):
            return False
        if isinstance(current, (Table, AoT)):  # e.g. [[runners.docker.services]]: becomes an inline value
            del table[key]
        else:
            table[key] = _item(value)
            return True
    _insert_key(table, key, _item(value), indent)
    return True


def _insert_key(table: Any, key: str, item: Item, indent: str) -> None:
    """Insert a new key after the table's last plain key, indented like its neighbours."""
    container = table if isinstance(table, tomlkit.TOMLDocument) else table.value
    last_key = None
    for entry_key, entry in container.body:
        if entry_key is not None and not isinstance(entry, (Table, AoT)):
            last_key, indent = entry_key, entry.trivia.indent
    item.trivia.indent = indent
    if last_key is None:
        table.add(key, item)
    else:
        container._insert_after(last_key, key, item)  # tomlkit has no public "insert after"


def _del_key(table: Any, key: str) -> bool:
    if key not in table:
        return False
    del table[key]
    return True


def _check_globals(globals_: dict[str, Any], path: str) -> None:
    for key, value in globals_.items():
        if key not in OWNED_GLOBAL_KEYS:
            raise ConfigError(
                f"{path}: berth does not manage the global key {key!r}{_did_you_mean(key, OWNED_GLOBAL_KEYS)}"
            )
        if value is None:
            continue
        if GLOBAL_KEYS[key](value):
            hint = " (0 makes gitlab-runner exit)" if key == "concurrent" else ""
            raise ConfigError(f"{path}: {key} = {value!r} is not valid for config.toml{hint}")


def _toml_time(value: str) -> Item:
    return tomlkit.parse(f"t = {value}")["t"]


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry_text(expires_at: str | None, name: str) -> str:
    """GitLab's token_expires_at (ISO 8601 or null) as gitlab-runner writes it."""
    if not expires_at:
        return NO_EXPIRY
    try:
        moment = datetime.fromisoformat(expires_at)
    except ValueError:
        raise BerthError(
            f"GitLab gave runner {name!r} an unreadable token_expires_at {expires_at!r}"
        ) from None
    return _utc_text(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _credentials(token: RegisteredToken, name: str, now: datetime) -> list[tuple[str, Any]]:
    return [
        ("id", token.id),
        ("token", token.token),
        ("token_obtained_at", _toml_time(_utc_text(now))),
        ("token_expires_at", _toml_time(_expiry_text(token.token_expires_at, name))),
    ]


def _update_block(
    block: Table, spec: RunnerSpec, token: RegisteredToken | None, now: datetime, replace: bool = False
) -> bool:
    """Bring one existing [[runners]] block to the spec; True if anything changed."""
    changed = _set_key(block, "url", spec.url, "  ")
    # A block written by hand, never registered; or (replace) one re-registered because its url changed.
    if token is not None and ("token" not in block or replace):
        for key, value in _credentials(token, spec.name, now):
            item = value if isinstance(value, Item) else _item(value)
            if key in block and replace:
                block[key] = item
            elif key not in block:
                _insert_key(block, key, item, "  ")
        changed = True
    changed |= _set_key(block, "executor", spec.executor, "  ")
    for key in ("limit", "request_concurrency"):
        if getattr(spec, key) is not None:
            changed |= _set_key(block, key, getattr(spec, key), "  ")
    env = runner_environment(spec)
    changed |= _set_key(block, "environment", env, "  ") if env else _del_key(block, "environment")
    wanted = docker_settings(spec)
    docker = block.get("docker")
    if not isinstance(docker, Table):  # a block written by hand without [runners.docker]
        if docker is not None:
            del block["docker"]
        block.append("docker", _docker_table(wanted))
        return True
    for key, value in wanted.items():
        changed |= _set_key(docker, key, value, "    ")
    for key in sorted(MODE_OWNED_KEYS - wanted.keys()):
        changed |= _del_key(docker, key)
    return changed


def _docker_table(settings: dict[str, Any]) -> Table:
    """A [runners.docker] table laid out as gitlab-runner writes it (parsed, so tomlkit keeps the layout)."""
    lines = ["[runners]", "  [runners.docker]"] + [f"    {_key_line(k, v)}" for k, v in settings.items()]
    return tomlkit.parse("\n".join(lines) + "\n\n")["runners"]["docker"]


def _new_block(spec: RunnerSpec, token: RegisteredToken, now: datetime) -> str:
    """A [[runners]] block laid out as gitlab-runner writes it."""
    lines = ["[[runners]]"]
    keys: list[tuple[str, Any]] = [("name", spec.name), ("url", spec.url)]
    keys += _credentials(token, spec.name, now)
    keys.append(("executor", spec.executor))
    keys += [
        (key, getattr(spec, key))
        for key in ("limit", "request_concurrency")
        if getattr(spec, key) is not None
    ]
    if env := runner_environment(spec):
        keys.append(("environment", env))
    lines += [f"  {_key_line(key, value)}" for key, value in keys]
    lines.append("  [runners.docker]")
    lines += [f"    {_key_line(key, value)}" for key, value in docker_settings(spec).items()]
    return "\n".join(lines) + "\n"


def _key_line(key: str, value: Any) -> str:
    doc = tomlkit.document()
    doc.add(key, value if isinstance(value, Item) else _item(value))
    return doc.as_string().rstrip("\n")


def _append(text: str, blocks: list[str]) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    if text.strip() and not text.endswith("\n\n"):
        text += "\n"
    return text + "\n".join(blocks)


def merge_config(
    current_text: str | None,
    *,
    path: str,
    globals_: dict[str, Any],
    runners: list[RunnerSpec],
    tokens: dict[str, RegisteredToken],
    now: datetime | None = None,
    replace: Collection[str] = (),
) -> MergeResult:
    """Merge berth's globals and runners into config.toml text (None = no file yet). See the module docstring.

    A runner with no [[runners]] block yet needs its registration in ``tokens[name]`` (register it first).
    The runners named in ``replace`` get the credentials in ``tokens`` even over ones already there (a
    runner re-registered at a new url); no other block's id/token is ever changed.
    Nothing here writes files: a ConfigError means the caller must leave the file as it is.
    """
    now = now or datetime.now(UTC)
    _check_globals(globals_, path)
    if len({spec.name for spec in runners}) != len(runners):
        raise ConfigError(f"{path}: berth was given two runners with the same name")
    original = current_text or ""
    doc = _parse(original, path)
    existing = _blocks_by_name(doc, path)
    missing = [s.name for s in runners if s.name not in existing and s.name not in tokens]
    if missing:
        raise ConfigError(
            f"{path}: runner {missing[0]!r} is not in config.toml yet and has no token: it must be "
            "registered (created in GitLab or given token_env/token_file) before its config is written"
        )

    globals_updated = [k for k, v in globals_.items() if v is not None and _set_key(doc, k, v, "")]
    updated = [
        s.name
        for s in runners
        if s.name in existing and _update_block(existing[s.name], s, tokens.get(s.name), now, s.name in replace)
    ]
    added = [s.name for s in runners if s.name not in existing]
    text = doc.as_string()
    if added:
        by_name = {s.name: s for s in runners}
        text = _append(text, [_new_block(by_name[name], tokens[name], now) for name in added])
    _check_result(text, path, [s.name for s in runners])
    return MergeResult(
        text=text,
        changed=current_text is None or text != current_text,
        added=added,
        updated=updated,
        globals_updated=globals_updated,
    )


def _check_result(text: str, path: str, names: list[str]) -> None:
    """Refuse to hand back a config.toml that gitlab-runner could not read (a bug in berth, not the user)."""
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BerthError(f"berth produced invalid TOML for {path} ({exc}); nothing was written") from None
    found = [r.get("name") for r in parsed.get("runners", [])]
    for name in names:
        if found.count(name) != 1:
            raise BerthError(
                f"berth produced a {path} with runner {name!r} {found.count(name)} times; nothing was written"
            )


# ---------------------------------------------------------------------------------------------------
# Removing a runner

_HEADER_RE = re.compile(r"^[ \t]*(\[\[?)([^\[\]#]+)\]\]?[ \t]*(#.*)?$")
_COMMENT_RE = re.compile(r"^[ \t]*#")


def _headers(lines: list[str]) -> list[tuple[int, bool, str]]:
    """(line index, is [[array]], dotted key without spaces/quotes) of each table header, outside strings."""
    found = []
    in_string: str | None = None
    for index, line in enumerate(lines):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        match = _HEADER_RE.match(line.rstrip("\r\n"))
        if match:
            key = re.sub(r"[\s\"']", "", match.group(2))
            found.append((index, match.group(1) == "[[", key))
            continue
        code = line.split("#", 1)[0] if '"' not in line and "'" not in line else line
        for quote in ('"""', "'''"):
            if code.count(quote) % 2 == 1:
                in_string = quote
                break
    return found


def _comments_above(lines: list[str], index: int) -> int:
    """The first line of the comment lines directly above ``index`` (they belong to that header)."""
    while index > 0 and _COMMENT_RE.match(lines[index - 1]):
        index -= 1
    return index


def _cut_block(text: str, position: int) -> str | None:
    """Cut the ``position``-th [[runners]] block (with its leading comments) out of the text."""
    lines = text.splitlines(keepends=True)
    headers = _headers(lines)
    runner_headers = [i for i, (_, is_array, key) in enumerate(headers) if is_array and key == "runners"]
    if position >= len(runner_headers):
        return None
    h = runner_headers[position]
    start = _comments_above(lines, headers[h][0])
    end = len(lines)
    for index, _is_array, key in headers[h + 1 :]:
        if key == "runners" or not key.startswith("runners."):
            end = _comments_above(lines, index)
            break
    before, after = "".join(lines[:start]), "".join(lines[end:])
    if not after:  # the last block: do not leave blank lines at the end of the file
        before = before.rstrip("\r\n") + ("\n" if before.strip() else "")
    return before + after


def remove_runner(
    current_text: str, name: str, *, path: str = "config.toml"
) -> tuple[str, RemovedRunner | None]:
    """Remove the [[runners]] block named ``name``; other blocks stay byte-identical. None if not there."""
    doc = _parse(current_text, path)
    block = _blocks_by_name(doc, path).get(name)
    if block is None:
        return current_text, None
    blocks = _blocks(doc)
    position = next(i for i, b in enumerate(blocks) if b is block)
    plain = block.unwrap()
    removed = RemovedRunner(name=name, url=plain.get("url"), id=plain.get("id"), token=plain.get("token"))
    before = tomllib.loads(current_text)
    expected = dict(before)
    expected["runners"] = [r for i, r in enumerate(before["runners"]) if i != position]
    if not expected["runners"]:
        del expected["runners"]
    text = _cut_block(current_text, position)
    if text is None or not _parses_to(text, expected):
        # The line scan was fooled (e.g. a header-like line in a multi-line string): let tomlkit do it.
        del doc["runners"][position]
        text = doc.as_string()
        if not _parses_to(text, expected):
            raise BerthError(
                f"berth could not remove runner {name!r} from {path} cleanly; nothing was written"
            )
    return text, removed


def _parses_to(text: str, expected: dict[str, Any]) -> bool:
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    if parsed.get("runners") == []:
        del parsed["runners"]
    return parsed == expected
