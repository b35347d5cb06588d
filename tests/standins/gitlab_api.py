"""STAND-IN for GitLab's REST API v4 runner endpoints: a real GitLab cannot run in the test environment.

This is not GitLab. It is a small HTTP server on 127.0.0.1 (random port) that answers the few endpoints berth
calls the way GitLab documents them (gitlabhq lib/api/user_runners.rb and doc/api/users.md "Create a runner
linked to a user"; doc/api/runners.md; see /work/shared/FACTS.md section 2):

- ``POST /api/v4/user/runners`` (header PRIVATE-TOKEN): 201 ``{id, token: "glrt-...", token_expires_at}``;
  401 for a wrong or missing token; 403 when the token lacks scope ``create_runner`` or the user may not
  create instance runners; 400 for a missing/invalid ``runner_type`` or a missing ``group_id``/``project_id``.
- ``POST /api/v4/runners`` (legacy registration token): 410 ``{"message": "410 Gone - runner registration
  disallowed"}``, as GitLab 17.0+ answers by default.
- ``POST /api/v4/runners/verify`` (form token, system_id): 200 for a known token with a system_id (and the
  host's runner manager is recorded, as GitLab does), 403 otherwise.
- ``DELETE /api/v4/runners`` (form token): 204, or 403 for an unknown token.
- ``DELETE /api/v4/runners/managers`` (form token, system_id): 204, or 403 for an unknown token or manager.

Every request is recorded in :attr:`GitLabStandIn.requests` (method, path, form) with token values masked,
so tests can assert for example that no runner was created. ``delay`` makes every answer late, to test
timeouts. Use it as a context manager::

    with GitLabStandIn(access_token="glpat-test") as gl:
        api = GitLabAPI(gl.url, "glpat-test")
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

RUNNER_TYPES = ("instance_type", "group_type", "project_type")
ACCESS_LEVELS = ("not_protected", "ref_protected")

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
    managers: set[str] = field(default_factory=set)  # system IDs that verified with this token


class GitLabStandIn:
    """STAND-IN for a GitLab instance's runner API; see the module docstring."""

    def __init__(
        self,
        access_token: str = "glpat-standin-access-token",
        *,
        scopes: tuple[str, ...] = ("api", "create_runner"),
        admin: bool = True,
        token_expires_at: str | None = None,
        delay: float = 0.0,
    ) -> None:
        self.access_token = access_token
        self.scopes = scopes
        self.admin = admin
        self.token_expires_at = token_expires_at
        self.delay = delay
        self.requests: list[RecordedRequest] = []
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

    def add_runner(self, runner_type: str = "project_type", token: str | None = None) -> StandInRunner:
        """Create a runner directly (as if made in the UI) and return it; its token is ``runner.token``."""
        with self._lock:
            return self._create(runner_type, {}, token)

    @property
    def created(self) -> list[RecordedRequest]:
        """The recorded create-runner requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/api/v4/user/runners"]

    def runner_by_token(self, token: str) -> StandInRunner | None:
        with self._lock:
            return self._find(token)

    # -- behaviour ---------------------------------------------------------------------------------

    def _create(self, runner_type: str, params: dict[str, str], token: str | None = None) -> StandInRunner:
        runner = StandInRunner(
            id=self._next_id,
            token=token or "glrt-" + secrets.token_urlsafe(15),
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
            route = {
                ("POST", "/api/v4/user/runners"): self._post_user_runners,
                ("POST", "/api/v4/runners"): self._post_legacy_runners,
                ("POST", "/api/v4/runners/verify"): self._post_verify,
                ("DELETE", "/api/v4/runners"): self._delete_runner,
                ("DELETE", "/api/v4/runners/managers"): self._delete_manager,
            }.get((method, path))
            if route is None:
                return 404, {"message": "404 Not Found"}
            return route(form, private_token)

    def _post_user_runners(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        if private_token != self.access_token:
            return 401, {"message": "401 Unauthorized"}
        if "create_runner" not in self.scopes and "api" not in self.scopes:
            return 403, {
                "error": "insufficient_scope",
                "error_description": (
                    "The request requires higher privileges than provided by the access token."
                ),
                "scope": "create_runner",
            }
        runner_type = form.get("runner_type")
        if not runner_type:
            return 400, {"error": "runner_type is missing, runner_type does not have a valid value"}
        if runner_type not in RUNNER_TYPES:
            return 400, {"error": "runner_type does not have a valid value"}
        if runner_type == "group_type" and not form.get("group_id", "").isdigit():
            return 400, {"error": "group_id is missing"}
        if runner_type == "project_type" and not form.get("project_id", "").isdigit():
            return 400, {"error": "project_id is missing"}
        if "access_level" in form and form["access_level"] not in ACCESS_LEVELS:
            return 400, {"error": "access_level does not have a valid value"}
        if runner_type == "instance_type" and not self.admin:
            return 403, {"message": "403 Forbidden - Insufficient permissions"}
        runner = self._create(runner_type, dict(form))
        return 201, {"id": runner.id, "token": runner.token, "token_expires_at": runner.token_expires_at}

    def _post_legacy_runners(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        return 410, {"message": "410 Gone - runner registration disallowed"}

    def _post_verify(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        runner = self._find(form.get("token"))
        system_id = form.get("system_id")
        if runner is None or not system_id:
            return 403, {"message": "403 Forbidden"}
        runner.managers.add(system_id)
        return 200, {"id": runner.id, "token": runner.token, "token_expires_at": runner.token_expires_at}

    def _delete_runner(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        runner = self._find(form.get("token"))
        if runner is None:
            return 403, {"message": "403 Forbidden"}
        del self.runners[runner.id]
        return 204, None

    def _delete_manager(self, form: dict[str, str], private_token: str | None) -> tuple[int, Any]:
        runner = self._find(form.get("token"))
        system_id = form.get("system_id", "")
        if runner is None or system_id not in runner.managers:
            return 403, {"message": "403 Forbidden"}
        runner.managers.discard(system_id)
        return 204, None


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
        path = urlsplit(self.path).path
        status, body = self.standin.handle(self.command, path, form, self.headers.get("PRIVATE-TOKEN"))
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
