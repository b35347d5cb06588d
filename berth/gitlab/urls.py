"""GitLab over https only: tokens (access, runner, registration) never travel in clear.

An ``http://`` GitLab url is refused unless ``gitlab_runner_insecure_http_urls`` names it: an entry is
``http://host[:port]``; with a port it allows that port only, without one every port of that host (the
tests' GitLab stand-in listens on a random port of 127.0.0.1). Nothing else (paths, userinfo) may be in
an entry, so the list reads as what it allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from berth.errors import ConfigError

VARIABLE = "gitlab_runner_insecure_http_urls"


def allowed_http(value: object, origin: object) -> tuple[str, ...]:
    """The variable's entries, checked: each one an ``http://host[:port]`` url."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{origin}: {VARIABLE} must be a list of http://host[:port] urls, not {value!r}")
    for entry in value:
        parts = urlsplit(str(entry)) if isinstance(entry, str) else None
        if (parts is None or parts.scheme != "http" or not parts.hostname or parts.username is not None
                or parts.path.strip("/") or parts.query or parts.fragment or not _port_ok(parts)):
            raise ConfigError(f"{origin}: {VARIABLE}: {entry!r} is not an http://host[:port] url (nothing more)")
    return tuple(value)


def _port_ok(parts: SplitResult) -> bool:
    try:
        _ = parts.port
    except ValueError:
        return False
    return True


def http_problem(url: str, allowed: Iterable[str]) -> str | None:
    """Why berth must not send a token to ``url`` (None: it may): http that the variable does not allow."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return None
    if parts.scheme != "http":
        return f"url {url!r} must start with https://"
    if any(_matches(parts, urlsplit(entry)) for entry in allowed):
        return None
    return (f"url {_origin(parts)} is plain http: the runner's tokens would travel in clear. Use https://; a test "
            f"stand-in only may be allowed by listing it in {VARIABLE}")


def require_https(url: str, allowed: Iterable[str], where: str) -> None:
    problem = http_problem(url, allowed)
    if problem:
        raise ConfigError(f"{where}: {problem}")


def _matches(url: SplitResult, entry: SplitResult) -> bool:
    same_host = (url.hostname or "").lower() == (entry.hostname or "").lower()
    return same_host and (entry.port is None or (url.port or 80) == entry.port)


def _origin(parts: SplitResult) -> str:
    """scheme://host:port only: a url's userinfo is never shown."""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"
