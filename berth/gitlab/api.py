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

Retries (tenacity, with backoff, ``attempts`` in all) are made only where repeating cannot do harm: a call that
got no answer or a 429/5xx answer is repeated when it is idempotent (verify, delete, list, read, token reset).
Creating a runner is never repeated blindly: each create carries a marker in its maintenance note, and after a
create without an answer berth looks for a runner with that marker first (``GET /runners``, ``GET /runners/:id``);
if GitLab made it, berth takes it over with a new token (``POST /runners/:id/reset_authentication_token``) instead
of creating a second one (gitlabhq lib/api/ci/runners.rb).

Every error is a :class:`GitLabAPIError` whose message never contains a token.
"""

from __future__ import annotations

import json
import re
import secrets as token_bytes
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

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
# Answers after which the same request may well succeed: rate limited, or GitLab (or its proxy) failing for now.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Put in a created runner's maintenance note, so that berth can tell whether a create without an answer made it.
CREATE_MARKER = "berth-create:"


class GitLabAPIError(BerthError):
    """GitLab refused or did not answer a request. ``status`` is the HTTP status, or None without one.

    ``transient``: no answer, or an answer that says "try again" (RETRY_STATUSES); the request may have been
    carried out all the same.
    """

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, GitLabAPIError) and exc.transient


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

    def __init__(self, url: str, access_token: str | None, *, timeout: float = 10, attempts: int = 3,
                 retry_wait: float = 0.5) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"GitLab URL {_public_url(url)!r} must start with https:// (or http://)")
        self.url = url.rstrip("/")
        self.public_url = _public_url(self.url)
        self._access_token = access_token
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.retry_wait = retry_wait
        self._opener = urllib.request.build_opener(_NoRedirect)

    def _retried(self, call: Any) -> Any:
        """``call(attempt_number)``, repeated while it fails transiently, at most ``attempts`` times."""
        try:
            for attempt in Retrying(stop=stop_after_attempt(self.attempts), retry=retry_if_exception(_transient),
                                    wait=wait_exponential(multiplier=self.retry_wait, max=10)):
                with attempt:
                    return call(attempt.retry_state.attempt_number)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            assert isinstance(last, GitLabAPIError)
            raise GitLabAPIError(f"{last} (after {self.attempts} attempts)", status=last.status) from None
        raise AssertionError("unreachable")     # Retrying either returns or raises

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
        marker = CREATE_MARKER + token_bytes.token_hex(8)
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
            "maintenance_note": f"{maintenance_note}\n{marker}" if maintenance_note else marker,
        }

        def attempt(number: int) -> CreatedRunner:
            try:
                status, body = self._request("POST", "/api/v4/user/runners", form, context="create")
            except GitLabAPIError as exc:
                if not exc.transient:
                    raise                   # GitLab answered no: nothing was created
                found = self._created_by(marker, runner_type, description, exc)
                if found is not None:
                    return self._take_over(found)
                raise                       # GitLab has no runner from this create: another one is safe
            if status != 201 or not isinstance(body, dict):
                raise self._unexpected(status, "/api/v4/user/runners")
            try:
                return CreatedRunner(
                    id=int(body["id"]), token=str(body["token"]), token_expires_at=body.get("token_expires_at")
                )
            except (KeyError, TypeError, ValueError):
                raise self._unexpected(status, "/api/v4/user/runners") from None

        return self._retried(attempt)

    def _created_by(self, marker: str, runner_type: str, description: str | None,
                    failed: GitLabAPIError) -> int | None:
        """The id of the runner a create without an answer made (its maintenance note holds ``marker``), or None.

        If GitLab cannot tell, the create must not be repeated: that error is not transient.
        """
        try:
            for runner in sorted(self.list_runners(runner_type), key=lambda r: -int(r.get("id", 0))):
                if description is not None and runner.get("description") != description:
                    continue
                if marker in (self.get_runner(int(runner["id"])).get("maintenance_note") or ""):
                    return int(runner["id"])
        except (GitLabAPIError, KeyError, TypeError, ValueError) as exc:
            raise GitLabAPIError(
                f"{failed}; GitLab then could not say whether it created the runner ({exc}), so berth does not "
                f"create it again: look for a runner whose maintenance note holds {marker} at {self.public_url} "
                "(delete it, or give its token with token_env/token_file), then re-run. Listing runners needs the "
                "access token's scope api (or read_api)", status=getattr(exc, "status", None)) from None
        return None

    def _take_over(self, runner_id: int) -> CreatedRunner:
        """A runner created without berth seeing its token: a new token for it (the old one was never seen)."""
        status, body = self._retried(lambda _: self._request(
            "POST", f"/api/v4/runners/{runner_id}/reset_authentication_token", {}, context="create"))
        if status != 201 or not isinstance(body, dict) or "token" not in body:
            raise self._unexpected(status, "/api/v4/runners/:id/reset_authentication_token")
        return CreatedRunner(id=runner_id, token=str(body["token"]), token_expires_at=body.get("token_expires_at"))

    def list_runners(self, runner_type: str) -> list[dict[str, Any]]:
        """The runners of ``runner_type`` the access token's user can see: ``GET /runners`` (owned: group and
        project runners) or, for instance runners, ``GET /runners/all`` (administrators), every page."""
        path = "/api/v4/runners/all" if runner_type == "instance_type" else "/api/v4/runners"
        runners: list[dict[str, Any]] = []
        for page in range(1, 101):      # 100 pages of 100: far more runners than berth looks through
            status, body = self._retried(lambda _, p=page: self._request(
                "GET", path, {"type": runner_type, "per_page": 100, "page": p}, context="create"))
            if status != 200 or not isinstance(body, list):
                raise self._unexpected(status, path)
            runners += [r for r in body if isinstance(r, dict)]
            if len(body) < 100:
                break
        return runners

    def get_runner(self, runner_id: int) -> dict[str, Any]:
        """``GET /runners/:id``: a runner's details (its maintenance note among them)."""
        status, body = self._retried(lambda _: self._request(
            "GET", f"/api/v4/runners/{runner_id}", {}, context="create"))
        if status != 200 or not isinstance(body, dict):
            raise self._unexpected(status, "/api/v4/runners/:id")
        return body

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
        status, body = self._retried(lambda _: self._request(
            "POST",
            "/api/v4/runners/verify",
            {"token": token, "system_id": system_id or None},
            context="runner",
            secrets=(token,),
        ))
        if status != 200 or not isinstance(body, dict):
            raise self._unexpected(status, "/api/v4/runners/verify")
        return body

    def delete_runner(self, token: str) -> None:
        """Delete the runner itself, for every host that uses it (``DELETE /api/v4/runners``)."""
        def attempt(number: int) -> int:
            try:
                return self._request("DELETE", "/api/v4/runners", {"token": token}, context="runner",
                                     secrets=(token,))[0]
            except GitLabAPIError as exc:
                # A repeat refused because the token is gone: the unanswered attempt before it deleted the runner.
                if number > 1 and exc.status == 403:
                    return 204
                raise

        status = self._retried(attempt)
        if status != 204:
            raise self._unexpected(status, "/api/v4/runners")

    def delete_runner_manager(self, token: str, system_id: str) -> None:
        """Remove only this host's runner manager (``DELETE /api/v4/runners/managers``), like unregister."""
        def attempt(number: int) -> int:
            try:
                return self._request("DELETE", "/api/v4/runners/managers", {"token": token, "system_id": system_id},
                                     context="runner", secrets=(token,))[0]
            except GitLabAPIError as exc:
                if number > 1 and exc.status == 404:
                    return 204      # the unanswered attempt before this one removed it
                raise

        try:
            status = self._retried(attempt)
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
        encoded = urlencode({k: _form_value(v) for k, v in form.items() if v is not None})
        data = None if method == "GET" else encoded.encode()
        if method == "GET" and encoded:
            path = f"{path}?{encoded}"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": f"berth/{__version__}",
        }
        if context == "create" and self._access_token:
            headers["PRIVATE-TOKEN"] = self._access_token
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        path = path.split("?", 1)[0]
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
        return GitLabAPIError(f"GitLab at {self.public_url} did not answer within {self.timeout:g}s ({why})",
                              transient=True)

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
        return GitLabAPIError(message, status=status, transient=status in RETRY_STATUSES)


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
