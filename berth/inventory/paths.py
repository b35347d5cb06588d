"""Path variables confined to where they may point (#11): berth writes and chmods them as root.

Each path is absolute and already normalized (no `..`, `.`, `//`, trailing `/`): a value that would
normalize to something else is refused rather than silently fixed, so what the inventory says is what
berth touches. Then it must lie strictly below one of the places that variable may point to. Errors name
the variable, the file and line it came from, the host, and what is allowed.

- ``docker_dropin_name``: a plain file name ending in ``.conf`` (it is joined to the docker.service.d dir).
- ``docker_daemon_json``: a ``.json`` file below /etc/docker.
- ``docker_tls_dir``: a directory below /etc/docker (it holds the daemon's key).
- ``gitlab_runner_config``: a ``.toml`` file whose directory (made 0700) is /etc/gitlab-runner or a directory
  below /etc/gitlab-runner, /srv or /opt; never a system directory such as /etc.
- a runner's ``remote_cert_dir`` (mounted into every job of that runner): a directory below the config.toml
  directory (default <config dir>/certs/<name>), or two levels or more below /srv or /opt; never the config
  directory itself or anything containing it, which would mount every runner's token into jobs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

from berth.errors import ConfigError
from berth.inventory.loader import Host

_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*$")
RUNNER_CONFIG_ROOTS = ("/etc/gitlab-runner", "/srv", "/opt")
CERT_DIR_ROOTS = ("/srv", "/opt")


def path_problem(value: object, *, below: Sequence[str], suffix: str = "", min_depth: int = 1) -> str | None:
    """Why ``value`` may not be used (None: it may): not absolute, not normalized, or not strictly below
    one of ``below`` (at least ``min_depth`` components deeper), or without ``suffix``."""
    if not isinstance(value, str) or not value:
        return "must be an absolute path"
    if not value.startswith("/"):
        return "must be an absolute path"
    if posixpath.normpath(value) != value or value.startswith("//") or "\0" in value:
        return "must be a plain absolute path (no '..', '.', '//' or trailing '/')"
    if suffix and not value.endswith(suffix):
        return f"must end in {suffix}"
    for root in below:
        if _depth_below(value, root) >= min_depth:
            return None
    where = " or ".join(f"{r}/" for r in below)
    deep = "" if min_depth == 1 else f" ({min_depth} levels or more)"
    return f"must be below {where}{deep}"


def _depth_below(path: str, root: str) -> int:
    """How many components ``path`` lies below ``root`` (0: not below it, or equal)."""
    if not path.startswith(root.rstrip("/") + "/"):
        return 0
    return len(path[len(root.rstrip("/")) + 1:].split("/"))


def contains(outer: str, inner: str) -> bool:
    """Whether ``inner`` is ``outer`` or lies below it."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _fail(host: Host, variable: str, value: object, problem: str) -> ConfigError:
    origin = host.origins.get(variable, variable)
    return ConfigError(f"{origin}: {host.name}: {variable} {value!r} {problem}")


def check_file_name(host: Host, variable: str, *, suffix: str) -> str:
    value = host.vars[variable]
    if not isinstance(value, str) or not _FILE_NAME_RE.match(value) or not value.endswith(suffix):
        raise _fail(host, variable, value, f"must be a plain file name ending in {suffix} (no '/', no leading '.')")
    return value


def check_path(host: Host, variable: str, *, below: Sequence[str], suffix: str = "", min_depth: int = 1) -> str:
    value = host.vars[variable]
    problem = path_problem(value, below=below, suffix=suffix, min_depth=min_depth)
    if problem:
        raise _fail(host, variable, value, problem)
    return str(value)


def check_runner_config(host: Host) -> str:
    """gitlab_runner_config: its directory is made 0700, so it must be berth's own directory."""
    value = host.vars["gitlab_runner_config"]
    problem = path_problem(value, below=RUNNER_CONFIG_ROOTS, suffix=".toml")
    if problem is None and posixpath.dirname(value) in ("/srv", "/opt"):
        problem = "must be in a directory of its own (its directory is made 0700), e.g. /srv/gitlab-runner/"
    if problem:
        raise _fail(host, "gitlab_runner_config", value, problem)
    return str(value)


def cert_dir_problem(cert_dir: str, config_dir: str) -> str | None:
    """Why a runner's remote_cert_dir (mounted into its jobs) may not be used, next to ``config_dir``."""
    if contains(cert_dir, config_dir):
        return (f"would mount {config_dir} (every runner's token) into the jobs; use a directory below it, "
                f"e.g. {config_dir}/certs/<runner>")
    if path_problem(cert_dir, below=[config_dir]) is None:
        return None
    problem = path_problem(cert_dir, below=CERT_DIR_ROOTS, min_depth=2)
    if problem and "below" in problem:
        return f"must be below {config_dir}/, or 2 levels or more below /srv/ or /opt/"
    return problem
