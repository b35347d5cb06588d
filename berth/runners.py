"""config.toml as a derived resource: merged with what the host has, runners registered only when new.

The plan merges with placeholders for runners that are not registered yet, so ``--check --diff``
shows the change without touching GitLab. The apply registers them (a token given as a secret is
verified with GitLab; otherwise the runner is created with ``POST /api/v4/user/runners``), merges
again with the real tokens, and writes the file. An API failure stops before anything is written.
"""

from __future__ import annotations

import base64
import difflib
import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from berth.errors import BerthError, ConfigError, HostFailed
from berth.gitlab_api import GitLabAPI
from berth.inventory import Host
from berth.plan import Change, Plan
from berth.redact import redact
from berth.runner_config import RegisteredToken, RunnerSpec, merge_config, registration_params, runner_names

if TYPE_CHECKING:
    from berth.roles import RoleContext
    from berth.ssh import Session

PLACEHOLDER = "glrt-to-be-registered"
# gitlab-runner re-reads config.toml by itself; SIGHUP makes it do so now. Never a restart (it cancels jobs).
RELOAD_RUNNER = "systemctl kill -s SIGHUP gitlab-runner 2>/dev/null || true"
LEGACY_PREFIXES = ("glrtr-", "GR1348941")   # runner registration tokens (deprecated workflow)


@dataclass
class RunnerConfigFile:
    path: str
    globals_: dict[str, Any]
    specs: list[RunnerSpec]
    api_token_env: str
    api_timeout: float = 10.0
    notify: tuple[str, ...] = ()
    due: bool = False
    notes: list[str] = field(default_factory=list)
    _current: str | None = None
    _pending: list[RunnerSpec] = field(default_factory=list)
    _system_id: str | None = None

    @property
    def system_id_path(self) -> str:
        return str(Path(self.path).parent / ".runner_system_id")

    def probe_files(self) -> list[dict[str, Any]]:
        return [{"path": self.path, "content": True}, {"path": self.system_id_path, "content": True}]

    def plan(self, host: Host, found: dict[str, Any], ctx: RoleContext, plan: Plan) -> bool:
        state = found["files"].get(self.path, {})
        self._current = base64.b64decode(state["content"]).decode() if state.get("content") is not None else None
        sid = found["files"].get(self.system_id_path, {})
        self._system_id = base64.b64decode(sid["content"]).decode().strip() if sid.get("content") else None
        existing = set(runner_names(self._current, path=self._label(host))) if self._current else set()
        self._pending = []
        for spec in self.specs:
            if spec.name in existing:
                continue
            if spec.has_token_source or os.environ.get(self.api_token_env):
                self._pending.append(spec)
            else:
                plan.notes.append(
                    f"runner {spec.name} ({spec.mode}): registration not attempted: no token. Set "
                    f"{self.api_token_env} to a GitLab access token with scope create_runner (berth then creates the "
                    f"runner at {spec.url}), or give token_env/token_file with a glrt- token."
                )
        wanted = [s for s in self.specs if s.name in existing or s in self._pending]
        placeholders = {s.name: RegisteredToken(0, PLACEHOLDER, None) for s in self._pending}
        merged = merge_config(self._current, path=self._label(host), globals_=self.globals_, runners=wanted,
                              tokens=placeholders)
        if merged.changed or self._current is None:
            summary = ", ".join(
                [f"register {s.name}" for s in self._pending] + [f"update {n}" for n in merged.updated]
                + [f"set {k}" for k in merged.globals_updated]
            ) or "create"
            plan.changes.append(Change("file", self.path, summary, _diff(self.path, self._current, merged.text)))
            self.due = True
            return True
        if (state.get("mode"), state.get("owner")) != (0o600, "root"):
            plan.changes.append(Change("file", self.path, f"mode {state.get('mode', 0):04o} -> 0600, owner root"))
            plan.steps.append({"op": "write", "path": self.path, "content": None, "mode": 0o600, "owner": "root",
                               "group": "root"})
        return False

    def prepare(self, session: Session, ctx: RoleContext) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        if not self._system_id:
            # gitlab-runner's own fallback format; the runner keeps using the file it finds.
            self._system_id = "r_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))
            steps.append(_write(self.system_id_path, self._system_id + "\n"))
        tokens = {spec.name: self._register(session.host, spec) for spec in self._pending}
        merged = merge_config(self._current, path=self._label(session.host), globals_=self.globals_,
                              runners=self.specs_to_write(), tokens=tokens)
        steps.append({**_write(self.path, merged.text), "backup": self._current is not None})
        return steps

    def specs_to_write(self) -> list[RunnerSpec]:
        existing = set(runner_names(self._current)) if self._current else set()
        return [s for s in self.specs if s.name in existing or s in self._pending]

    def _register(self, host: Host, spec: RunnerSpec) -> RegisteredToken:
        try:
            token = _secret_token(spec)
            if token and token.startswith(LEGACY_PREFIXES):
                # A registration token: the deprecated path; GitLab 17+ answers 410 unless re-enabled.
                created = GitLabAPI(spec.url, None, timeout=self.api_timeout).register_runner_legacy(
                    token, description=spec.description or spec.name)
                return RegisteredToken(created.id, created.token, created.token_expires_at)
            if token:
                api = GitLabAPI(spec.url, None, timeout=self.api_timeout)
                answer = api.verify_runner(token, self._system_id or "")
                return RegisteredToken(int(answer["id"]), token, answer.get("token_expires_at"))
            api = GitLabAPI(spec.url, os.environ.get(self.api_token_env), timeout=self.api_timeout)
            created = api.create_runner(**registration_params(spec))
            # As `gitlab-runner register --token` does: this host becomes the runner's manager.
            api.verify_runner(created.token, self._system_id or "")
            return RegisteredToken(created.id, created.token, created.token_expires_at)
        except BerthError as exc:
            message = redact(str(exc))
            raise HostFailed(f"{host.name}: runner {spec.name}: {message}; config.toml left as it was") from None

    def _label(self, host: Host) -> str:
        return f"{host.name}:{self.path}"


def _secret_token(spec: RunnerSpec) -> str | None:
    if spec.token_env:
        value = os.environ.get(spec.token_env)
        if not value:
            raise ConfigError(f"runner {spec.name}: token_env {spec.token_env} is not set in the environment")
        return value.strip()
    if spec.token_file:
        path = Path(spec.token_file).expanduser()
        if not path.exists():
            raise ConfigError(f"runner {spec.name}: token_file {path} does not exist")
        return path.read_text().strip()
    return spec.token


def _write(path: str, text: str) -> dict[str, Any]:
    return {"op": "write", "path": path, "content": base64.b64encode(text.encode()).decode(), "mode": 0o600,
            "owner": "root", "group": "root", "backup": False}


def _diff(path: str, old: str | None, new: str) -> str:
    lines = difflib.unified_diff((old or "").splitlines(keepends=True), new.splitlines(keepends=True),
                                 f"{path} (host)" if old is not None else "/dev/null", f"{path} (wanted)")
    return redact("".join(lines))


def remove_from_host(session: Session, name: str, *, delete: bool) -> str:
    """Remove runner ``name`` from the host's config.toml and unregister it; the other runners stay byte-identical.

    GitLab first: if unregistering fails, the file is left as it was. Without ``delete`` only this host's
    runner manager is removed (what `gitlab-runner unregister` does with a glrt- token); with it, the
    runner itself is deleted in GitLab.
    """
    from berth.engine import handler_request, run_agent
    from berth.resources import Handler
    from berth.runner_config import remove_runner

    host = session.host
    path = host.vars["gitlab_runner_config"]
    probe = RunnerConfigFile(path, {}, [], host.vars["gitlab_runner_api_token_env"])
    found = run_agent(session, {"action": "probe", "files": probe.probe_files(), "packages": [], "services": []})
    state = found["files"][path]
    if state.get("content") is None:
        raise ConfigError(f"{host.name}: {path} does not exist; no runner {name!r} to remove")
    text = base64.b64decode(state["content"]).decode()
    remaining, removed = remove_runner(text, name, path=f"{host.name}:{path}")
    if removed is None:
        names = ", ".join(runner_names(text)) or "none"
        raise ConfigError(f"{host.name}: no runner {name!r} in {path} (runners there: {names})")
    sid = found["files"][probe.system_id_path]
    system_id = base64.b64decode(sid["content"]).decode().strip() if sid.get("content") else ""
    api = GitLabAPI(removed.url, None, timeout=float(host.vars["gitlab_runner_api_timeout"]))
    try:
        if removed.token and delete:
            api.delete_runner(removed.token)
        elif removed.token:
            api.delete_runner_manager(removed.token, system_id)
    except BerthError as exc:
        raise HostFailed(f"{host.name}: runner {name}: {redact(str(exc))}; config.toml left as it was") from None
    answer = run_agent(session, {
        "action": "apply", "steps": [{**_write(path, remaining), "backup": True}],
        "handlers": [handler_request(Handler("reload gitlab-runner", RELOAD_RUNNER))],
    })
    if answer.get("error"):
        raise HostFailed(f"{host.name}: {answer['error']}")
    return "deleted in GitLab" if delete else "unregistered this host's runner manager"
