"""STAND-IN for GitLab's REST API v4 runner endpoints: a real GitLab cannot run in the test environment.

This is not GitLab. It is a small HTTP server on 127.0.0.1 (random port) that answers the endpoints berth
calls as GitLab's own code does. Sources (gitlabhq, newest stored copies; "GL" below):

- ``lib/api/user_runners.rb``: ``POST /user/runners`` (Grape params, then the service);
- ``app/services/ci/runners/create_runner_service.rb`` and ``runner_creation_strategies/*.rb``: scope
  lookup ("Missing/invalid group|project" = 400), permission ("Insufficient permissions" = 403), then the
  model's validations (``app/models/ci/runner.rb``: maximum_timeout >= 600, tags or run_untagged) = 400;
- ``lib/api/ci/runner.rb``: ``POST /runners`` (legacy registration), ``DELETE /runners``,
  ``DELETE /runners/managers``, ``POST /runners/verify``;
- ``app/services/ci/runners/register_runner_service.rb``: which registration token is valid and whether
  registration is allowed;
- ``lib/api/ci/helpers/runner.rb``: ``authenticate_runner!`` (403 for an unknown token) and the runner
  manager it records per ``system_id`` (``<legacy>`` when none is sent);
- ``lib/api/helpers.rb``: error bodies (``forbidden!`` -> ``{"message": "403 Forbidden - why"}``,
  ``bad_request!`` -> ``"400 Bad request - why"``, ``not_found!(r)`` -> ``"404 r Not Found"``); Grape's own
  parameter errors are ``{"error": "x is missing"}``;
- ``lib/authn/token_field/generator/routable_token.rb`` and the routable-token design document: token shape.

What it answers:

- ``POST /api/v4/user/runners`` (header PRIVATE-TOKEN): 401 wrong/missing token; 403 without scope
  ``create_runner``/``api``; 400 for Grape parameter errors; 400 ``Missing/invalid group`` (or project) for
  an id GitLab does not have; 403 ``Insufficient permissions`` for a group/project the user may not create
  runners in, or an instance runner by a non-administrator; 400 for maximum_timeout < 600 and for
  run_untagged=false without tags; else 201 ``{id, token: "glrt-...", token_expires_at}``.
- ``POST /api/v4/runners`` (legacy registration token): 410 ``410 Gone - runner registration disallowed``
  when registration tokens are off (GitLab 17.0+ default; ``allow_registration=False``), for ANY non-empty
  token; with ``allow_registration=True``: 201 ``{id, token: "glrtr-...", ...}`` for ``registration_token``
  and 403 ``403 Forbidden - invalid token supplied`` for any other.
- ``POST /api/v4/runners/verify`` (token, optional system_id): 200 ``{id, token, token_expires_at}`` for a
  known token, recording the runner manager ``system_id`` (``<legacy>`` without one); 403 otherwise.
- ``DELETE /api/v4/runners`` (token): 204, the runner and all its managers gone; 403 for an unknown token.
- ``DELETE /api/v4/runners/managers`` (token, system_id): 204; 403 for an unknown token; 404
  ``404 Runner manager not found Not Found`` for a system_id with no manager; 400 without system_id.

- ``GET /api/v4/runners`` (the user's own runners: group and project ones, ``current_user.ci_owned_runners``) and
  ``GET /api/v4/runners/all`` (administrators only, else 403), filtered by ``type``, one page, each runner as
  ``lib/api/entities/ci/runner.rb`` shows it (id, description, runner_type, paused, ...); ``GET /api/v4/runners/:id``
  as ``lib/api/entities/ci/runner_details.rb`` (with ``maintenance_note`` and ``tag_list``); ``POST
  /api/v4/runners/:id/reset_authentication_token``: 201 ``{token, token_expires_at}``
  (``lib/api/entities/ci/reset_token_result.rb``), the old token no longer valid. All in ``lib/api/ci/runners.rb``;
  the list needs the token scope ``api`` or ``read_api``, the ``:id`` routes accept ``manage_runner`` too
  (``allow_access_with_scope :manage_runner``); 404 ``404 Runner Not Found`` for an unknown id (``get_runner``).

Faults, for the tests of berth's retries:

- :meth:`GitLabStandIn.fail_next`: the next ``times`` requests to a route answer 500 ``{"message": "500 Internal
  Server Error"}`` (what ``handle_api_exception`` in ``lib/api/helpers.rb`` renders for an unhandled error) without
  doing anything; then the route answers as usual.
- :meth:`GitLabStandIn.hang_after_create`: the next ``POST /user/runners`` creates the runner, then holds its
  answer for ``seconds`` (a client with a shorter timeout gets none): a create that GitLab committed while the
  answer was lost, as behind a proxy that timed out.

Every request is recorded in :attr:`GitLabStandIn.requests` (method, path, form) with token values masked,
so tests can assert for example that no runner was created. ``delay`` makes every answer late, to test
timeouts. It does not implement users, token expiry or rotation (other than the reset above), pagination (a
list is one page), JSON request bodies, or any other endpoint (404). Use it as a context manager::

    with GitLabStandIn(access_token="glpat-test") as gl:
        api = GitLabAPI(gl.url, "glpat-test")
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

RUNNER_TYPES = ("instance_type", "group_type", "project_type")
ACCESS_LEVELS = ("not_protected", "ref_protected")

# app/models/ci/runner.rb: CREATED_RUNNER_TOKEN_PREFIX; app/models/concerns/ci/runners/registrable.rb (and
# lib/authn/tokens/runner_authentication_token.rb): REGISTRATION_RUNNER_TOKEN_PREFIX, the authentication
# token of a runner that was registered with a registration token.
CREATED_PREFIX = "glrt-"
REGISTERED_PREFIX = "glrtr-"
# app/models/ci/runner.rb: `runner_types` enum; the partition ("t") the token's routing payload carries.
_TYPE_IDS = {"instance_type": 1, "group_type": 2, "project_type": 3}
# lib/api/ci/helpers/runner.rb LEGACY_SYSTEM_XID: the manager of a request without system_id.
LEGACY_SYSTEM_ID = "<legacy>"

# Form fields whose values are secrets and are never recorded.
_SECRET_FIELDS = {"token", "registration_token"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    # Whether a PRIVATE-TOKEN header was sent (its value is not kept).
    private_token_sent: bool


@dataclass
class StandInRunner:
    id: int
    token: str = field(repr=False)
    runner_type: str
    params: dict[str, str]
    token_expires_at: str | None = None
    managers: set[str] = field(default_factory=set)  # system IDs that authenticated with this token


def routable_token(prefix: str, payload: Mapping[str, int | str]) -> str:
    """A token shaped as GitLab makes it now (lib/authn/token_field/generator/routable_token.rb, version 1):

    ``<prefix><base64url(routing payload + 16 random bytes + their count)>.01.<payload length><crc32>``,
    the length 2 and the CRC32 (of everything before it) 7 base36 digits. The HTTP Router's rule for runner
    tokens (doc/development/cells/routable_tokens.md) matches ``^glrtr?-[0-9A-Za-z_-]{27,300}\\.01\\.``.
    """
    routing = "\n".join(f"{k}:{_base36(v) if isinstance(v, int) else v}" for k, v in sorted(payload.items()))
    random_bytes = secrets.token_bytes(16)
    encoded = base64.urlsafe_b64encode(routing.encode() + random_bytes + bytes([len(random_bytes)]))
    body = encoded.decode().rstrip("=")
    text = f"{prefix}{body}.01.{_base36(len(body)).rjust(2, '0')}"
    return text + _base36(zlib.crc32(text.encode())).rjust(7, "0")


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


class GitLabStandIn:
    """STAND-IN for a GitLab instance's runner API; see the module docstring.

    ``groups``/``projects`` map the ids GitLab has to whether the access token's user may create runners
    there (Owner/Maintainer); any other id does not exist. ``admin`` is whether that user may create
    instance runners.
    """

    def __init__(
        self,
        access_token: str = "glpat-standin-access-token",
        *,
        scopes: tuple[str, ...] = ("api", "create_runner"),
        admin: bool = True,
        groups: Mapping[int, bool] | None = None,
        projects: Mapping[int, bool] | None = None,
        registration_token: str = "GR1348941standin-registration-token",
        allow_registration: bool = False,
        token_expires_at: str | None = None,
        delay: float = 0.0,
    ) -> None:
        self.access_token = access_token
        self.scopes = scopes
        self.admin = admin
        self.groups = dict(groups if groups is not None else {1: True})
        self.projects = dict(projects if projects is not None else {1: True})
        self.registration_token = registration_token
        self.allow_registration = allow_registration
        self.token_expires_at = token_expires_at
        self.delay = delay
        self.requests: list[RecordedRequest] = []
        self._failures: dict[tuple[str, str], int] = {}
        self._hang_create = 0.0
        self.runners: dict[int, StandInRunner] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> GitLabStandIn:
        handler = type("_BoundHandler", (_Handler,), {"standin": self})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="gitlab-standin",
            daemon=True,
        )  # a short poll interval keeps stop() fast
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in `delay`
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GitLabStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- helpers for tests -------------------------------------------------------------------------

    def add_runner(
        self, runner_type: str = "project_type", token: str | None = None, *, registered: bool = False
    ) -> StandInRunner:
        """Create a runner directly (as if made in the UI, or registered with a registration token when
        ``registered``) and return it; its token is ``runner.token``."""
        with self._lock:
            return self._create(runner_type, {}, token, registered=registered)

    def fail_next(self, method: str, path: str, *, times: int = 1) -> None:
        """The next ``times`` ``method path`` requests answer 500 and change nothing (see the module docstring)."""
        with self._lock:
            self._failures[(method, path)] = self._failures.get((method, path), 0) + times

    def hang_after_create(self, seconds: float) -> None:
        """The next create makes the runner, then answers only after ``seconds``."""
        with self._lock:
            self._hang_create = seconds

    def _take_hang(self, method: str, path: str, status: int) -> float:
        with self._lock:
            if (method, path) != ("POST", "/api/v4/user/runners") or status != 201:
                return 0.0
            seconds, self._hang_create = self._hang_create, 0.0
            return seconds

    @property
    def created(self) -> list[RecordedRequest]:
        """The recorded create-runner requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/api/v4/user/runners"]

    def runner_by_token(self, token: str) -> StandInRunner | None:
        with self._lock:
            return self._find(token)

    # -- behaviour ---------------------------------------------------------------------------------

    def _create(
        self, runner_type: str, params: dict[str, str], token: str | None = None, *, registered: bool = False
    ) -> StandInRunner:
        # Ci::Runner#prefix_for_new_and_legacy_runner: glrtr- for registration_token registrations, glrt- for
        # runners created by a user; the routing payload (cell, organization, partition, owner, creator)
        # follows the design document's keys; berth treats the token as opaque.
        payload: dict[str, int | str] = {"c": 1, "o": 1, "t": _TYPE_IDS[runner_type], "u": 1}
        if runner_type == "group_type":
            payload["g"] = int(params.get("group_id", 1))
        if runner_type == "project_type":
            payload["p"] = int(params.get("project_id", 1))
        runner = StandInRunner(
            id=self._next_id,
            token=token or routable_token(REGISTERED_PREFIX if registered else CREATED_PREFIX, payload),
            runner_type=runner_type,
            params=params,
            token_expires_at=self.token_expires_at,
        )
        self.runners[runner.id] = runner
        self._next_id += 1
        return runner

    def _find(self, token: str | None) -> StandInRunner | None:
        return next((r for r in self.runners.values() if token and r.token == token), None)

    def handle(
        self, method: str, path: str, form: dict[str, str], private_token: str | None
    ) -> tuple[int, Any]:
        """Answer one request: (status, JSON body or None)."""
        with self._lock:
            masked = {k: ("***" if k in _SECRET_FIELDS else v) for k, v in form.items()}
            self.requests.append(RecordedRequest(method, path, masked, private_token is not None))
            if self._failures.get((method, path)):
                self._failures[(method, path)] -= 1
                return 500, {"message": "500 Internal Server Error"}
            runner_route = re.fullmatch(r"/api/v4/runners/(\d+)(/reset_authentication_token)?", path)
            if runner_route and method == ("POST" if runner_route[2] else "GET"):
                return self._runner_by_id(int(runner_route[1]), bool(runner_route[2]), private_token)
            route = {
                ("POST", "/api/v4/user/runners"): self._post_user_runners,
                ("POST", "/api/v4/runners"): self._post_legacy_runners,
                ("POST", "/api/v4/runners/verify"): self._post_verify,
                ("DELETE", "/api/v4/runners"): self._delete_runner,
                ("DELETE", "/api/v4/runners/managers"): self._delete_manager,
                ("GET", "/api/v4/runners"): self._list_owned,
                ("GET", "/api/v4/runners/all"): self._list_all,
            }.get((method, path))
            if route is None:
                return 404, {"message": "404 Not Found"}
            return route(form, private_token)

    def _registration_details(self, runner: StandInRunner) -> dict[str, Any]:
        # lib/api/entities/ci/runner_registration_details.rb: id, token, token_expires_at.
        return {"id": runner.id, "token": runner.token, "token_expires_at": runner.token_expires_at}

    def _post_user_runners(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        # lib/api/user_runners.rb: `before { authenticate! }` runs before Grape validates the parameters.
        if private_token != self.access_token:
            return 401, {"message": "401 Unauthorized"}
        # `allow_access_with_scope :create_runner` (and `api`): lib/api/api_guard.rb's insufficient scope error.
        if "create_runner" not in self.scopes and "api" not in self.scopes:
            return 403, {
                "error": "insufficient_scope",
                "error_description": (
                    "The request requires higher privileges than provided by the access token."
                ),
                "scope": "create_runner",
            }
        if errors := _grape_errors(form):
            return 400, {"error": ", ".join(errors)}
        runner_type = form["runner_type"]
        # create_runner_service.rb: strategy.validate_params (group/project_runner_strategy.rb), then
        # strategy.authorized_user?, then runner.save! (model validations), each its own answer.
        scope_id = None
        if runner_type in ("group_type", "project_type"):
            kind = "group" if runner_type == "group_type" else "project"
            scope_id = int(form[f"{kind}_id"])
            known = self.groups if kind == "group" else self.projects
            if scope_id not in known:
                return 400, {"message": f"400 Bad request - Missing/invalid {kind}"}
            if not known[scope_id]:
                return 403, {"message": "403 Forbidden - Insufficient permissions"}
        elif not self.admin:  # instance_runner_strategy.rb: can?(:create_instance_runner)
            return 403, {"message": "403 Forbidden - Insufficient permissions"}
        if problems := _model_errors(form):
            return 400, {"message": "400 Bad request - " + _to_sentence(problems)}
        runner = self._create(runner_type, dict(form))
        return 201, self._registration_details(runner)

    # -- lib/api/ci/runners.rb: the user's view of runners (PRIVATE-TOKEN) --------------------------------

    def _user_error(self, scopes: tuple[str, ...], private_token: str | None) -> tuple[int, Any] | None:
        # `before { authenticate! }`; lib/api/api_guard.rb: a token without an allowed scope is refused.
        if private_token != self.access_token:
            return 401, {"message": "401 Unauthorized"}
        if not set(scopes) & set(self.scopes):
            return 403, {"error": "insufficient_scope", "scope": " ".join(scopes), "error_description":
                         "The request requires higher privileges than provided by the access token."}
        return None

    def _listed(self, runner: StandInRunner) -> dict[str, Any]:
        # lib/api/entities/ci/runner.rb
        paused = runner.params.get("paused", "false").lower() in ("true", "1")
        return {"id": runner.id, "description": runner.params.get("description", ""), "ip_address": None,
                "active": not paused, "paused": paused, "is_shared": runner.runner_type == "instance_type",
                "runner_type": runner.runner_type, "name": "gitlab-runner", "online": bool(runner.managers),
                "status": "online" if runner.managers else "never_contacted"}

    def _list(self, form: dict[str, str], runners: list[StandInRunner]) -> tuple[int, Any]:
        wanted = form.get("type")
        if wanted is not None and wanted not in RUNNER_TYPES:
            return 400, {"error": "type does not have a valid value"}
        return 200, [self._listed(r) for r in runners if wanted in (None, r.runner_type)]

    def _list_owned(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        # `get do`: current_user.ci_owned_runners, the runners of the groups and projects the user owns.
        if error := self._user_error(("api", "read_api"), private_token):
            return error
        return self._list(form, [r for r in self.runners.values() if r.runner_type != "instance_type"])

    def _list_all(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        # `get 'all'`: authenticated_as_admin! (403 for anyone else).
        if error := self._user_error(("api", "read_api"), private_token):
            return error
        if not self.admin:
            return 403, {"message": "403 Forbidden"}
        return self._list(form, list(self.runners.values()))

    def _runner_by_id(self, runner_id: int, reset: bool, private_token: str | None) -> tuple[int, Any]:
        # `get ':id'` (Entities::Ci::RunnerDetails) and `post ':id/reset_authentication_token'`
        # (Entities::Ci::ResetTokenResult); get_runner: not_found!('Runner').
        if error := self._user_error(("api", "read_api", "manage_runner"), private_token):
            return error
        runner = self.runners.get(runner_id)
        if runner is None:
            return 404, {"message": "404 Runner Not Found"}
        if reset:
            runner.token = routable_token(CREATED_PREFIX, {"c": 1, "o": 1, "t": _TYPE_IDS[runner.runner_type]})
            return 201, {"token": runner.token, "token_expires_at": runner.token_expires_at}
        tags = [t.strip() for t in runner.params.get("tag_list", "").split(",") if t.strip()]
        return 200, {**self._listed(runner), "tag_list": tags,
                     "maintenance_note": runner.params.get("maintenance_note")}

    def _post_legacy_runners(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        # lib/api/ci/runner.rb `post '/'`: `requires :token`; RegisterRunnerService#attrs_from_token: a valid
        # registration token, else (any non-empty token while registration is disallowed) {} -> 410, else
        # nil -> 403 "invalid token supplied".
        if "token" not in form:
            return 400, {"error": "token is missing"}
        token = form["token"]
        if token and not self.allow_registration:
            return 410, {"message": "410 Gone - runner registration disallowed"}
        if not token or not secrets.compare_digest(token, self.registration_token):
            return 403, {"message": "403 Forbidden - invalid token supplied"}
        runner = self._create("instance_type", {k: v for k, v in form.items() if k != "token"}, registered=True)
        return 201, self._registration_details(runner)

    def _post_verify(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        # lib/api/ci/runner.rb `post '/verify'`: `requires :token`, `optional :system_id`; authenticate_runner!
        # (403 unless the token is known) ensures the runner manager params[:system_id] or LEGACY_SYSTEM_XID.
        if "token" not in form:
            return 400, {"error": "token is missing"}
        runner = self._find(form["token"])
        if runner is None:
            return 403, {"message": "403 Forbidden"}
        runner.managers.add(form.get("system_id", LEGACY_SYSTEM_ID))
        return 200, self._registration_details(runner)

    def _delete_runner(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        # lib/api/ci/runner.rb `delete '/'`: authenticate_runner!, then the runner (all its managers) goes.
        if "token" not in form:
            return 400, {"error": "token is missing"}
        runner = self._find(form["token"])
        if runner is None:
            return 403, {"message": "403 Forbidden"}
        del self.runners[runner.id]
        return 204, None

    def _delete_manager(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        # lib/api/ci/runner.rb `delete '/managers'`: requires token and system_id; authenticate_runner!
        # (403); `not_found!('Runner manager not found') unless runner_manager` (404).
        missing = [f"{key} is missing" for key in ("token", "system_id") if key not in form]
        if missing:
            return 400, {"error": ", ".join(missing)}
        runner = self._find(form["token"])
        if runner is None:
            return 403, {"message": "403 Forbidden"}
        if form["system_id"] not in runner.managers:
            return 404, {"message": "404 Runner manager not found Not Found"}
        runner.managers.discard(form["system_id"])
        return 204, None


def _grape_errors(form: dict[str, str]) -> list[str]:
    """lib/api/user_runners.rb's `params` block, as Grape reports violations (in declaration order)."""
    errors = []
    runner_type = form.get("runner_type")
    if runner_type is None:
        errors.append("runner_type is missing, runner_type does not have a valid value")
    elif runner_type not in RUNNER_TYPES:
        errors.append("runner_type does not have a valid value")
    for kind in ("group", "project"):
        key = f"{kind}_id"
        if runner_type == f"{kind}_type":  # `given runner_type: ...` { requires :<kind>_id, type: Integer }
            if key not in form:
                errors.append(f"{key} is missing")
            elif not _is_integer(form[key]):
                errors.append(f"{key} is invalid")
    for key in ("paused", "locked", "run_untagged"):
        if key in form and form[key].lower() not in ("true", "false", "1", "0"):
            errors.append(f"{key} is invalid")
    if "access_level" in form and form["access_level"] not in ACCESS_LEVELS:
        errors.append("access_level does not have a valid value")
    if "maximum_timeout" in form and not _is_integer(form["maximum_timeout"]):
        errors.append("maximum_timeout is invalid")
    return errors


def _model_errors(form: dict[str, str]) -> list[str]:
    """app/models/ci/runner.rb validations that POST /user/runners can trip (full messages)."""
    problems = []
    tags = [t.strip() for t in form.get("tag_list", "").split(",") if t.strip()]
    run_untagged = form.get("run_untagged", "true").lower() in ("true", "1")  # Grape default: true
    if not tags and not run_untagged:  # tag_constraints
        problems.append("Tags list can not be empty when runner is not allowed to pick untagged jobs")
    if len(tags) > 50:  # TAG_LIST_MAX_LENGTH
        problems.append("Tags list Too many tags specified. Please limit the number of tags to 50")
    if "maximum_timeout" in form and int(form["maximum_timeout"]) < 600:
        problems.append("Maximum timeout needs to be at least 10 minutes")
    for key, label in (("description", "Description"), ("maintenance_note", "Maintenance note")):
        if len(form.get(key, "")) > 1024:
            problems.append(f"{label} is too long (maximum is 1024 characters)")
    return problems


def _to_sentence(items: list[str]) -> str:
    """Rails' Array#to_sentence, as `result.errors.to_sentence` in lib/api/user_runners.rb."""
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def _is_integer(text: str) -> bool:
    return text.lstrip("-").isdigit()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected in the timeout tests


class _Handler(BaseHTTPRequestHandler):
    standin: GitLabStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; requests are recorded on the stand-in instead

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        form = dict(parse_qsl(raw, keep_blank_values=True))
        if self.standin.delay and self.standin._stopping.wait(self.standin.delay):
            return  # stopped while delaying: answer nothing
        parts = urlsplit(self.path)
        if self.command == "GET":
            form = dict(parse_qsl(parts.query, keep_blank_values=True))
        path = parts.path
        status, body = self.standin.handle(self.command, path, form, self.headers.get("PRIVATE-TOKEN"))
        hang = self.standin._take_hang(self.command, path, status)
        if hang and self.standin._stopping.wait(hang):
            return
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = _serve
    do_DELETE = _serve
    do_GET = _serve
