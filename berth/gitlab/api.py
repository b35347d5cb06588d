"""A small client for the parts of GitLab's REST API v4 that berth needs to manage runners.

- ``POST /api/v4/user/runners`` (personal access token with scope ``create_runner``, GitLab 15.11+) creates a
  runner and returns its authentication token (``glrt-``) once; it cannot be read again later.
- ``POST /api/v4/runners/verify``, ``DELETE /api/v4/runners`` and ``DELETE /api/v4/runners/managers`` are
  authenticated by the runner token itself (form field ``token``).
- ``POST /api/v4/runners`` registers a runner with a legacy registration token (``GR1348941...``); GitLab
  17.0+ answers it with 410 Gone unless an administrator re-enabled registration tokens.

Token kinds (gitlabhq app/models/ci/runner.rb, lib/authn/tokens/runner_authentication_token.rb; gitlab-runner
network/gitlab.go, commands/register.go, commands/unregister.go): ``glrt-`` authenticates a runner created by a
user; ``glrtr-`` authenticates a runner that was registered with a registration token. Both are runner
authentication tokens (``/runners/verify``); only a registration token goes to ``POST /runners``. Newer
GitLab makes them routable: ``glrt-<payload>.01.<length><crc>``, dots included.

Every error is a :class:`GitLabAPIError` whose message never contains a token.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from berth import __version__
from berth.errors import BerthError, ConfigError
from berth.redact import redact

RUNNER_TYPES = ("instance_type", "group_type", "project_type")
ACCESS_LEVELS = ("not_protected", "ref_protected")
# gitlab-runner network/gitlab.go createdRunnerTokenPrefix: the token of a runner created by a user.
CREATED_RUNNER_TOKEN_PREFIX = "glrt-"
# The prefix of legacy registration tokens (gitlabhq app/models/concerns/runners_token_prefixable.rb).
REGISTRATION_TOKEN_PREFIX = "GR1348941"


# An administrator may set an instance-wide prefix in front of it: "<prefix>-glrt-..." (gitlabhq
# Ci::Runner.created_runner_prefix, lib/authn/tokens/runner_authentication_token.rb).
_CREATED_RUNNER_TOKEN = re.compile(r"^(?:[0-9A-Za-z_-]+-)?" + re.escape(CREATED_RUNNER_TOKEN_PREFIX))


def is_created_runner_token(token: str) -> bool:
    """A ``glrt-`` token: one runner shared by hosts, told apart by system ID (its "runner managers").

    gitlab-runner decides with this prefix (network/gitlab.go TokenIsCreatedRunnerToken) whether unregister
    removes only this host's manager or the runner itself. berth also counts a glrt- token behind an
    instance prefix, which gitlab-runner's plain prefix test misses: deleting such a runner would take it
    from every host that shares it.
    """
    return not token.startswith(("glrtr-", REGISTRATION_TOKEN_PREFIX)) and bool(_CREATED_RUNNER_TOKEN.match(token))


def is_registration_token(token: str) -> bool:
    """A legacy registration token, which creates a runner (``POST /runners``) rather than being one."""
    return token.startswith(REGISTRATION_TOKEN_PREFIX)

# The longest part of a server message worth showing to an operator.
_MAX_SERVER_MESSAGE = 300


class GitLabAPIError(BerthError):
    """GitLab refused or did not answer a request. ``status`` is the HTTP status, or None without one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CreatedRunner:
    """What ``POST /user/runners`` returns. The token is shown by GitLab only this once."""

    id: int
    token: str = field(repr=False)
    token_expires_at: str | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report redirects instead of following them: urllib would turn a POST into a GET and lose the form."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _public_url(url: str) -> str:
    """The URL without user:password@, so it can go into messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)  # GitLab coerces comma-separated tag_list
    return str(value)


class GitLabAPI:
    """Client for one GitLab instance. ``access_token`` (a PAT) is needed only to create runners."""

    def __init__(self, url: str, access_token: str | None, *, timeout: float = 10) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"GitLab URL {_public_url(url)!r} must start with https:// (or http://)")
        self.url = url.rstrip("/")
        self.public_url = _public_url(self.url)
        self._access_token = access_token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"GitLabAPI({self.public_url!r}, timeout={self.timeout})"

    # -- endpoints -------------------------------------------------------------------------------------

    def create_runner(
        self,
        *,
        runner_type: str,
        group_id: int | None = None,
        project_id: int | None = None,
        description: str | None = None,
        tag_list: list[str] | None = None,
        run_untagged: bool | None = None,
        locked: bool | None = None,
        access_level: str | None = None,
        paused: bool | None = None,
        maximum_timeout: int | None = None,
        maintenance_note: str | None = None,
    ) -> CreatedRunner:
        """Create a runner in GitLab (``POST /api/v4/user/runners``) and return its new token."""
        _check_create_params(
            runner_type, group_id, project_id, access_level, maximum_timeout, run_untagged, tag_list
        )
        if not self._access_token:
            raise GitLabAPIError(
                f"no access token for GitLab at {self.public_url}: "
                "set a token with scope create_runner in GITLAB_TOKEN"
            )
        form = {
            "runner_type": runner_type,
            "group_id": group_id if runner_type == "group_type" else None,
            "project_id": project_id if runner_type == "project_type" else None,
            "description": description,
            "tag_list": tag_list,
            "run_untagged": run_untagged,
            "locked": locked,
            "access_level": access_level,
            "paused": paused,
            "maximum_timeout": maximum_timeout,
            "maintenance_note": maintenance_note,
        }
        status, body = self._request("POST", "/api/v4/user/runners", form, context="create")
        if status != 201 or not isinstance(body, dict):
            raise self._unexpected(status, "/api/v4/user/runners")
        try:
            return CreatedRunner(
                id=int(body["id"]), token=str(body["token"]), token_expires_at=body.get("token_expires_at")
            )
        except (KeyError, TypeError, ValueError):
            raise self._unexpected(status, "/api/v4/user/runners") from None

    def register_runner_legacy(
        self, registration_token: str, *, description: str | None = None
    ) -> CreatedRunner:
        """Legacy registration (``POST /api/v4/runners``) with a registration token (``GR1348941...``).

        GitLab 17.0+ answers 410 Gone unless an administrator re-enabled registration tokens; the
        GitLabAPIError then tells the operator to create the runner with a glrt- token instead. The new
        runner's own token starts with ``glrtr-`` on current GitLab.
        """
        status, body = self._request(
            "POST",
            "/api/v4/runners",
            {"token": registration_token, "description": description},
            context="register",
            secrets=(registration_token,),
        )
        if status != 201 or not isinstance(body, dict) or "id" not in body or "token" not in body:
            raise self._unexpected(status, "/api/v4/runners")
        return CreatedRunner(
            id=int(body["id"]), token=str(body["token"]), token_expires_at=body.get("token_expires_at")
        )

    def verify_runner(self, token: str, system_id: str | None) -> dict[str, Any]:
        """Check a runner token (``POST /api/v4/runners/verify``); GitLab records this host's runner manager.

        ``system_id`` is optional to GitLab (lib/api/ci/runner.rb); without it the manager is ``<legacy>``.
        """
        status, body = self._request(
            "POST",
            "/api/v4/runners/verify",
            {"token": token, "system_id": system_id or None},
            context="runner",
            secrets=(token,),
        )
        if status != 200 or not isinstance(body, dict):
            raise self._unexpected(status, "/api/v4/runners/verify")
        return body

    def delete_runner(self, token: str) -> None:
        """Delete the runner itself, for every host that uses it (``DELETE /api/v4/runners``)."""
        status, _ = self._request(
            "DELETE", "/api/v4/runners", {"token": token}, context="runner", secrets=(token,)
        )
        if status != 204:
            raise self._unexpected(status, "/api/v4/runners")

    def delete_runner_manager(self, token: str, system_id: str) -> None:
        """Remove only this host's runner manager (``DELETE /api/v4/runners/managers``), like unregister."""
        try:
            status, _ = self._request(
                "DELETE",
                "/api/v4/runners/managers",
                {"token": token, "system_id": system_id},
                context="runner",
                secrets=(token,),
            )
        except GitLabAPIError as exc:
            if exc.status != 404:
                raise
            # lib/api/ci/runner.rb: `not_found!('Runner manager not found')`: the token is valid, but no
            # manager has this system ID.
            raise GitLabAPIError(
                f"GitLab at {self.public_url} answered 404 Runner manager not found: the runner has no "
                f"manager with this host's system ID {system_id} (it never ran here, or it was already "
                "unregistered), so there is nothing to unregister",
                status=404,
            ) from None
        if status != 204:
            raise self._unexpected(status, "/api/v4/runners/managers")

    def unregister_runner(self, token: str, system_id: str | None) -> str:
        """Unregister as ``gitlab-runner unregister`` does (commands/unregister.go unregisterRunner).

        A ``glrt-`` token: only this host's runner manager goes (``DELETE /runners/managers``). Any other
        token (``glrtr-``, older ones) belongs to a runner registered for this host alone: the runner goes
        (``DELETE /runners``). Returns what was done, for the operator.
        """
        if is_created_runner_token(token):
            if not system_id:
                raise GitLabAPIError(
                    "this host has no .runner_system_id, so GitLab has no runner manager of it to remove"
                )
            self.delete_runner_manager(token, system_id)
            return f"unregistered this host's runner manager ({system_id})"
        self.delete_runner(token)
        return "unregistered: deleted in GitLab (a runner registered with a registration token is this host's alone)"

    # -- transport -------------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, form: dict[str, Any], *, context: str, secrets: tuple[str, ...] = ()
    ) -> tuple[int, Any]:
        """Send a form-encoded request; return (status, decoded JSON body). Errors become GitLabAPIError."""
        secrets = (*secrets, self._access_token or "")
        data = urlencode({k: _form_value(v) for k, v in form.items() if v is not None}).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": f"berth/{__version__}",
        }
        if context == "create" and self._access_token:
            headers["PRIVATE-TOKEN"] = self._access_token
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            body = _decode(_read_quietly(exc))
            location = exc.headers.get("Location") if exc.headers else None
            # `from None`: the HTTPError holds the response; nothing of it should reach a traceback.
            raise self._http_error(exc.code, body, path, context, secrets, location) from None
        except TimeoutError:
            raise self._no_answer("timed out") from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except OSError as exc:  # e.g. connection reset while reading the answer
            raise self._no_answer(type(exc).__name__) from None

    def _no_answer(self, why: str) -> GitLabAPIError:
        return GitLabAPIError(f"GitLab at {self.public_url} did not answer within {self.timeout:g}s ({why})")

    def _unreachable(self, reason: Any) -> GitLabAPIError:
        if isinstance(reason, TimeoutError):
            return self._no_answer("timed out")
        if isinstance(reason, ConnectionRefusedError):
            return self._no_answer("connection refused")
        if isinstance(reason, socket.gaierror):
            return GitLabAPIError(
                f"GitLab at {self.public_url} cannot be reached: its host name does not resolve"
            )
        if isinstance(reason, ssl.SSLCertVerificationError):
            return GitLabAPIError(
                f"GitLab at {self.public_url} presented a TLS certificate this host does not trust "
                f"({reason.verify_message}): install its CA in the system trust store"
            )
        return self._no_answer(str(reason) if isinstance(reason, str) else type(reason).__name__)

    def _unexpected(self, status: int, path: str) -> GitLabAPIError:
        return GitLabAPIError(
            f"GitLab at {self.public_url} gave an unexpected answer to {path} (HTTP {status})", status=status
        )

    def _http_error(
        self, status: int, body: Any, path: str, context: str, secrets: tuple[str, ...], location: str | None
    ) -> GitLabAPIError:
        said = redact(_server_message(body), secrets)
        detail = f": GitLab said {said!r}" if said else ""
        url = self.public_url
        if status == 401:
            message = (
                f"GitLab at {url} refused the access token (401): "
                "set a token with scope create_runner in GITLAB_TOKEN"
            )
        elif status == 403 and context == "create":
            message = (
                f"GitLab at {url} refused to create the runner (403): the access token lacks scope "
                "create_runner, or its user lacks permission (instance_type needs an administrator, "
                f"group_type/project_type the Owner or Maintainer role){detail}"
            )
        elif status == 403 and context == "register":
            message = f"GitLab at {url} refused the registration token (403): it is not valid there{detail}"
        elif status == 403:
            message = (
                f"GitLab at {url} refused the runner token (403): it is invalid there, or the runner was "
                "deleted in GitLab"
            )
        elif status == 410:
            message = (
                "legacy registration tokens are disabled on this GitLab (410 Gone): "
                "create runners with a runner authentication token (glrt-)"
            )
        elif status == 404:
            message = (
                f"GitLab at {url} has no {path} (404): check the URL and that GitLab is 15.11 or newer{detail}"
            )
        elif status in (301, 302, 303, 307, 308):
            # Name the base URL the operator should configure, not the API path.
            target = (
                redact(_public_url(location).removesuffix(path), secrets) if location else "another address"
            )
            message = f"GitLab at {url} redirects to {target} ({status}): set the GitLab URL to that address"
        elif status == 400:
            message = f"GitLab at {url} rejected the request to {path} (400){detail}"
        elif status >= 500:
            message = f"GitLab at {url} failed on {path} (HTTP {status}); try again later{detail}"
        else:
            message = f"GitLab at {url} answered {path} with HTTP {status}{detail}"
        return GitLabAPIError(message, status=status)


def _check_create_params(
    runner_type: str,
    group_id: int | None,
    project_id: int | None,
    access_level: str | None,
    maximum_timeout: int | None = None,
    run_untagged: bool | None = None,
    tag_list: list[str] | None = None,
) -> None:
    """Refuse a create request GitLab would reject, before anything is sent."""
    # gitlabhq app/models/ci/runner.rb validations, which POST /user/runners answers with 400.
    if maximum_timeout is not None and maximum_timeout < 600:
        raise ConfigError(f"maximum_timeout must be at least 600 seconds (GitLab refuses {maximum_timeout})")
    if run_untagged is False and not tag_list:
        raise ConfigError("run_untagged false needs a tag_list: GitLab refuses a runner that could run no job")
    if runner_type not in RUNNER_TYPES:
        raise ConfigError(f"runner_type must be one of {', '.join(RUNNER_TYPES)}, not {runner_type!r}")
    if runner_type == "group_type" and group_id is None:
        raise ConfigError("runner_type group_type needs group_id")
    if runner_type == "project_type" and project_id is None:
        raise ConfigError("runner_type project_type needs project_id")
    if access_level is not None and access_level not in ACCESS_LEVELS:
        raise ConfigError(f"access_level must be one of {', '.join(ACCESS_LEVELS)}, not {access_level!r}")


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except (OSError, ValueError):
        return b""


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _flatten(part: Any) -> str:
    """Model validation errors come as {"message": {"field": ["problem", ...]}} (render_validation_error!)."""
    if isinstance(part, dict):
        return "; ".join(f"{key} {', '.join(map(str, v)) if isinstance(v, list) else v}" for key, v in part.items())
    return str(part)


def _server_message(body: Any) -> str:
    """GitLab's own words from an error body ({"message": ...} or Grape's {"error": ...})."""
    if isinstance(body, dict):
        parts = [body.get("message"), body.get("error"), body.get("error_description")]
        text = "; ".join(_flatten(part) for part in parts if part)
    elif isinstance(body, str):
        text = body.strip()
    else:
        text = ""
    text = " ".join(text.split())
    if len(text) > _MAX_SERVER_MESSAGE:
        text = text[:_MAX_SERVER_MESSAGE] + "..."
    return text
