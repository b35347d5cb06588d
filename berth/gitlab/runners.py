"""config.toml as a derived resource: merged with what the host has, runners registered only when new.

The plan merges with placeholders for runners that are not registered yet, so ``--check --diff``
shows the change without touching GitLab. The apply registers them (a token given as a secret is
verified with GitLab; otherwise the runner is created with ``POST /api/v4/user/runners``), merges
again with the real tokens, and writes the file. An API failure stops before anything is written.

A runner whose ``url`` changed keeps its token only if the new GitLab accepts it (``POST
/runners/verify``); otherwise it is registered there again, or the host fails: an old token is never
written next to a new url.

The system ID. GitLab tells the hosts that share a runner token apart by the system ID each sends
(its "runner managers"). gitlab-runner keeps its own in ``.runner_system_id`` beside config.toml and
writes one there when it starts without it (commands/internal/configfile/configfile.go). The package's
postinst starts the runner, so when berth installs the package in the same converge in which it
registers, the runner would have made an ID of its own, and GitLab would see two managers: berth's and
the runner's. So berth decides the ID at plan time, the way the runner would make it
(:func:`runner_system_id`), and writes the file BEFORE any other step of the apply: the runner that the
package then starts finds the file and adopts it (system_id_state.go keeps a well-formed ID it finds).
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import os
import re
import secrets
import string
import tomllib
from dataclasses import dataclass, field
from dataclasses import replace as replace_step
from pathlib import Path
from typing import TYPE_CHECKING, Any

from berth.engine.plan import AskAgent, Change, Plan, Planned
from berth.engine.protocol import (
    ApplyAnswer,
    ApplyRequest,
    DirectoryStep,
    Expectation,
    FileQuery,
    ProbeAnswer,
    ProbeRequest,
    Step,
    WriteStep,
)
from berth.errors import BerthError, ConfigError, HostFailed
from berth.gitlab.api import GitLabAPI, GitLabAPIError, is_registration_token
from berth.gitlab.runner_config import RegisteredToken, RunnerSpec, merge_config, registration_params, runner_names
from berth.gitlab.urls import VARIABLE, allowed_http, require_https
from berth.inventory.loader import Host
from berth.redact import redact

if TYPE_CHECKING:
    from berth.engine.roles import RoleContext
    from berth.transport.base import HostSession

PLACEHOLDER = "glrt-to-be-registered"
# gitlab-runner re-reads config.toml by itself; SIGHUP makes it do so now. Never a restart for that (a
# restart cancels jobs unless the unit stops with SIGQUIT). Only the main process gets the signal, as
# GitLab's docs say (docs/commands/_index.md "Signals": `kill -SIGHUP <main_runner_pid>`; the shell
# executor's job processes are in the same unit and must not get it). Newer systemd spells the option
# --kill-whom= and still accepts --kill-who= (getopt prefix, checked on systemd 252); older systemd knows
# only --kill-who=. A runner that is not running reads the file when it starts, hence `|| true`.
RELOAD_RUNNER = "systemctl kill --kill-who=main -s HUP gitlab-runner 2>/dev/null || true"
# listen_address is read once, when the runner starts (commands/multi.go run() -> setupMetricsAndDebugServer),
# so a change needs a restart. The stop half sends the unit's KillSignal: SIGQUIT with the role's drop-in
# (berth-kill.conf), gitlab-runner's graceful stop, so running jobs finish first and the runner starts
# again after them. --no-block: systemd carries the restart out; berth does not hold an SSH command open
# for as long as the longest job runs (the agent queues starts of a stopping runner the same way).
RESTART_RUNNER = "systemctl restart --no-block gitlab-runner"
RELOAD_HANDLER = "reload gitlab-runner"
RESTART_HANDLER = "restart gitlab-runner"
# The one global key gitlab-runner does not take on a reload.
RESTART_KEYS = ("listen_address",)

# Where gitlab-runner's system ID comes from (commands/internal/configfile/system_id_state.go, with
# github.com/denisbrodbeck/machineid v1.0.1 id_linux.go: the first of these files that can be read).
MACHINE_ID_FILES = ("/var/lib/dbus/machine-id", "/etc/machine-id")
# system_id_state.go loadFromFile: a file's ID is kept only if it has this form; else a new one is made.
SYSTEM_ID_RE = re.compile(r"^[sr]_[0-9a-zA-Z]{12}$")


def runner_system_id(machine_id: str | None) -> str:
    """The system ID gitlab-runner makes for a host (system_id_state.go GenerateUniqueSystemID).

    ``s_`` + the first 12 hex digits of HMAC-SHA256(key = the machine ID, message = "gitlab-runner");
    without a machine ID, ``r_`` + 12 random letters and digits.
    """
    if machine_id:
        mac = hmac.new(machine_id.encode(), b"gitlab-runner", hashlib.sha256).hexdigest()
        return "s_" + mac[:12]
    return "r_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))


def _machine_id(found: ProbeAnswer) -> str | None:
    """The host's machine ID as machineid.ID() reads it: the first readable file, trimmed (maybe empty)."""
    for path in MACHINE_ID_FILES:
        data = found.content(path)
        if data is not None:
            return data.decode(errors="replace").strip()
    return None


@dataclass
class RunnerConfigFile:
    """config.toml as its role wants it (the inputs only: planning keeps no state here)."""

    path: str
    globals_: dict[str, Any]
    specs: list[RunnerSpec]
    api_token_env: str
    api_timeout: float = 10.0
    notify: tuple[str, ...] = ()
    notify_restart: tuple[str, ...] = ()   # notified instead when a key of RESTART_KEYS changes
    notes: list[str] = field(default_factory=list)
    backups: int = 3                       # gitlab_runner_config_backups: timestamped copies kept on the host
    insecure_http: tuple[str, ...] = ()    # gitlab_runner_insecure_http_urls: http urls a token may go to

    @property
    def system_id_path(self) -> str:
        return str(Path(self.path).parent / ".runner_system_id")

    def probe_files(self) -> list[FileQuery]:
        return [FileQuery(self.path, content=True), FileQuery(self.system_id_path, content=True),
                *(FileQuery(p, content=True) for p in MACHINE_ID_FILES)]

    def plan(self, host: Host, found: ProbeAnswer, ctx: RoleContext, plan: Plan) -> Planned:
        """config.toml merged with placeholders for the runners to register; the registrations are the
        apply's ``prepare`` (GitLab is not asked before then)."""
        notes = list(self.notes)
        state = found.files.get(self.path, {})
        data = found.content(self.path)
        current = data.decode() if data is not None else None
        on_host = (found.content(self.system_id_path) or b"").decode().strip()
        id_missing = not SYSTEM_ID_RE.match(on_host)
        system_id = runner_system_id(_machine_id(found)) if id_missing else on_host
        existing = set(runner_names(current, path=self._label(host))) if current else set()
        blocks = _registered_blocks(current) if current else {}
        pending: list[RunnerSpec] = []
        moved: dict[str, tuple[str, str, str]] = {}     # name: old url, new url, token
        for spec in self.specs:
            if spec.name in existing:
                old_url, token = blocks.get(spec.name, (None, None))
                if token and old_url and old_url != spec.url:
                    moved[spec.name] = (old_url, spec.url, token)
                    notes.append(self._move_note(spec, old_url))
                continue
            if spec.has_token_source or os.environ.get(self.api_token_env):
                pending.append(spec)
            else:
                notes.append(
                    f"runner {spec.name} ({spec.mode}): registration not attempted: no token. Set "
                    f"{self.api_token_env} to a GitLab access token with scope create_runner (berth then creates the "
                    f"runner at {spec.url}), or give token_env/token_file with a runner authentication token "
                    "(glrt-/glrtr-)."
                )
        wanted = [s for s in self.specs if s.name in existing or s in pending]
        placeholders = {s.name: RegisteredToken(0, PLACEHOLDER, None) for s in pending}
        merged = merge_config(current, path=self._label(host), globals_=self.globals_, runners=wanted,
                              tokens=placeholders)
        restart = [k for k in merged.globals_updated if k in RESTART_KEYS]
        notify = (*self.notify, *self.notify_restart) if restart and self.notify_restart else self.notify
        if merged.changed or current is None:
            summary = ", ".join(
                [f"register {s.name}" for s in pending]
                + [self._update_summary(n, moved) for n in merged.updated]
                + [f"set {k}" + (" (restarts gitlab-runner)" if k in restart else "") for k in merged.globals_updated]
            ) or "create"
            changes = [Change("file", self.path, summary, _diff(self.path, current, merged.text))]
            first: tuple[Step, ...] = ()
            if id_missing and (pending or moved):
                changes.append(self._system_id_change(on_host, system_id))
                first = self._system_id_steps(system_id)
            registration = _Registration(self, host, current, pending, moved, system_id)
            return Planned(tuple(changes), first=first, notify=notify, notes=tuple(notes), prepare=registration)
        if (state.get("mode"), state.get("owner")) != (0o600, "root"):
            return Planned((Change("file", self.path, f"mode {state.get('mode', 0):04o} -> 0600, owner root"),),
                           (WriteStep(self.path, None, 0o600),), notes=tuple(notes))
        return Planned(notes=tuple(notes))

    def _system_id_change(self, on_host: str, system_id: str) -> Change:
        return Change("file", self.system_id_path,
                      f"{'replace malformed' if on_host else 'create'}: system ID {system_id}, "
                      "made as gitlab-runner makes it, written before the runner can start")

    def _system_id_steps(self, system_id: str) -> tuple[Step, ...]:
        """Written first, before the package step whose postinst starts the runner (see the module docstring);
        the directory as the role wants it (0700), in case the package has not made it yet."""
        return (DirectoryStep(str(Path(self.path).parent), 0o700),
                # gitlab-runner writes the bare ID, 0600 (system_id_state.go saveConfig).
                _write(self.system_id_path, system_id))

    @staticmethod
    def _update_summary(name: str, moved: dict[str, tuple[str, str, str]]) -> str:
        if name not in moved:
            return f"update {name}"
        old, new, _ = moved[name]
        return f"update {name} (url {old} -> {new}: its token is verified at {new} first)"

    def _move_note(self, spec: RunnerSpec, old_url: str) -> str:
        if spec.has_token_source:
            fallback = "registers it there with the token from " + (
                f"token_env {spec.token_env}" if spec.token_env else
                f"token_file {spec.token_file}" if spec.token_file else "token")
        elif os.environ.get(self.api_token_env):
            fallback = f"creates the runner there with {self.api_token_env}"
        else:
            fallback = (f"fails this host: set {self.api_token_env} to re-create the runner there, or give "
                        "token_env/token_file")
        return (f"runner {spec.name}: url changes from {old_url} to {spec.url}: berth verifies the runner's token "
                f"at {spec.url} before writing config.toml; if {spec.url} refuses it, berth {fallback}. A runner "
                f"re-created there leaves the old one registered at {old_url}.")

    def _api(self, host: Host, spec: RunnerSpec, access_token: str | None) -> GitLabAPI:
        """The one way to GitLab: always the url declared for this runner, https unless explicitly allowed."""
        require_https(spec.url, self.insecure_http, f"{host.name}: runner {spec.name}")
        return GitLabAPI(spec.url, access_token, timeout=self.api_timeout)

    def _label(self, host: Host) -> str:
        return f"{host.name}:{self.path}"


@dataclass(frozen=True)
class _Registration:
    """The apply's part of config.toml: register the new runners, re-verify the moved ones, write the file."""

    config: RunnerConfigFile
    host: Host
    current: str | None
    pending: list[RunnerSpec]
    moved: dict[str, tuple[str, str, str]]     # name: old url, new url, token
    system_id: str

    def __call__(self, ask: AskAgent | None = None) -> list[Step]:       # GitLab's API is asked, not the host
        config, host = self.config, self.host
        tokens = {spec.name: self._register(spec) for spec in self.pending}
        replace = []
        for spec in config.specs:
            if spec.name in self.moved and (token := self._reverify(spec)) is not None:
                tokens[spec.name] = token
                replace.append(spec.name)
        merged = merge_config(self.current, path=config._label(host), globals_=config.globals_,
                              runners=self.specs_to_write(), tokens=tokens, replace=replace)
        return [replace_step(_write(config.path, merged.text), backup=self.current is not None,
                             backup_keep=config.backups)]

    def specs_to_write(self) -> list[RunnerSpec]:
        existing = set(runner_names(self.current)) if self.current else set()
        return [s for s in self.config.specs if s.name in existing or s in self.pending]

    def _register(self, spec: RunnerSpec) -> RegisteredToken:
        config, host = self.config, self.host
        try:
            token = _secret_token(spec)
            if token and is_registration_token(token):
                # A registration token: the deprecated path; GitLab 17+ answers 410 unless re-enabled.
                created = config._api(host, spec, None).register_runner_legacy(
                    token, description=spec.description or spec.name)
                return RegisteredToken(created.id, created.token, created.token_expires_at)
            if token:
                # A runner authentication token: glrt- (created runner) or glrtr- (registered runner).
                api = config._api(host, spec, None)
                answer = api.verify_runner(token, self.system_id)
                return RegisteredToken(int(answer["id"]), token, answer.get("token_expires_at"))
            api = config._api(host, spec, os.environ.get(config.api_token_env))
            created = api.create_runner(**registration_params(spec))
            # As `gitlab-runner register --token` does: this host becomes the runner's manager.
            api.verify_runner(created.token, self.system_id)
            return RegisteredToken(created.id, created.token, created.token_expires_at)
        except BerthError as exc:
            raise _failed(host, spec, exc) from None

    def _reverify(self, spec: RunnerSpec) -> RegisteredToken | None:
        """A runner whose url changed: None if the GitLab at the new url accepts its token, else its new
        registration there. Fails the host rather than write the old token with the new url."""
        config, host = self.config, self.host
        old_url, new_url, token = self.moved[spec.name]
        try:
            config._api(host, spec, None).verify_runner(token, self.system_id)
            return None
        except GitLabAPIError as exc:
            if exc.status != 403:
                raise _failed(host, spec, exc) from None
        try:
            secret = _secret_token(spec)
        except BerthError as exc:
            raise _failed(host, spec, exc) from None
        if (secret and secret != token) or (not spec.has_token_source and os.environ.get(config.api_token_env)):
            return self._register(spec)
        if spec.has_token_source:   # the token it gives is the refused one; creating needs no token source
            remedy = (f"give token_env/token_file a token of a runner at {new_url}, or remove them and set "
                      f"{config.api_token_env} to re-create it")
        else:
            remedy = f"set {config.api_token_env} to re-create it, or give token_env/token_file"
        raise HostFailed(
            f"{host.name}: runner {spec.name}: url changed from {old_url} to {new_url} and {new_url} refuses its "
            f"token; {remedy}; config.toml left as it was")


def _failed(host: Host, spec: RunnerSpec, exc: BerthError) -> HostFailed:
    return HostFailed(f"{host.name}: runner {spec.name}: {redact(str(exc))}; config.toml left as it was")


def _registered_blocks(text: str) -> dict[str, tuple[str | None, str | None]]:
    """{name: (url, token)} of the [[runners]] blocks (runner_names has already refused invalid TOML)."""
    try:
        blocks = tomllib.loads(text).get("runners", [])
    except tomllib.TOMLDecodeError:
        blocks = []
    return {b["name"]: (b.get("url"), b.get("token")) for b in blocks
            if isinstance(b, dict) and isinstance(b.get("name"), str)}


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


def _write(path: str, text: str) -> WriteStep:
    return WriteStep(path, text.encode(), 0o600)


def _diff(path: str, old: str | None, new: str) -> str:
    lines = difflib.unified_diff((old or "").splitlines(keepends=True), new.splitlines(keepends=True),
                                 f"{path} (host)" if old is not None else "/dev/null", f"{path} (wanted)")
    return redact("".join(lines))


def remove_from_host(session: HostSession, name: str, *, delete: bool) -> str:
    """Remove runner ``name`` from the host's config.toml and unregister it; the other runners stay byte-identical.

    GitLab first: if unregistering fails, the file is left as it was. Without ``delete`` berth unregisters
    as `gitlab-runner unregister` does: a glrt- runner loses only this host's runner manager, any other
    runner (registered for this host alone) is deleted. With ``delete`` the runner itself is deleted in
    GitLab, for every host that uses it.
    """
    from berth.engine.converge import AgentProcess, handler_call, lock_request
    from berth.engine.resources import Handler
    from berth.gitlab.runner_config import remove_runner

    host = session.host
    path = host.vars["gitlab_runner_config"]
    probe = RunnerConfigFile(path, {}, [], host.vars["gitlab_runner_api_token_env"])
    # One agent process, one SSH command: it answers the probe, waits while GitLab is told, then applies.
    with AgentProcess(session, ProbeRequest(files=tuple(probe.probe_files()))) as agent:
        found = ProbeAnswer.from_wire(agent.first)
        data = found.content(path)
        if data is None:
            raise ConfigError(f"{host.name}: {path} does not exist; no runner {name!r} to remove")
        text = data.decode()
        remaining, removed = remove_runner(text, name, path=f"{host.name}:{path}")
        if removed is None:
            names = ", ".join(runner_names(text)) or "none"
            raise ConfigError(f"{host.name}: no runner {name!r} in {path} (runners there: {names})")
        system_id = (found.content(probe.system_id_path) or b"").decode().strip()
        outcome = "removed only from config.toml (it had no token, so nothing to unregister)"
        if removed.token:   # the token goes only where the runner itself sends it, and never over plain http
            allowed = allowed_http(host.vars.get(VARIABLE), host.origins.get(VARIABLE, VARIABLE))
            require_https(removed.url or "", allowed, f"{host.name}: runner {name} in {path}")
        try:
            if removed.token:
                api = GitLabAPI(removed.url or "", None, timeout=float(host.vars["gitlab_runner_api_timeout"]))
                if delete:
                    api.delete_runner(removed.token)
                    outcome = "deleted in GitLab"
                else:
                    outcome = api.unregister_runner(removed.token, system_id)
        except BerthError as exc:
            raise HostFailed(f"{host.name}: runner {name}: {redact(str(exc))}; config.toml left as it was") from None
        state = found.file(path)
        seen = {k: state.get(k) for k in ("exists", "sha256", "mode", "owner", "group")}
        step = replace_step(_write(path, remaining), backup=True,
                            backup_keep=int(host.vars.get("gitlab_runner_config_backups", 3)))
        # GitLab has been told: the file must still be as it was read.
        request = ApplyRequest(steps=(step,), handlers=(handler_call(Handler(RELOAD_HANDLER, RELOAD_RUNNER)),),
                               lock=lock_request(host), expect=Expectation(files={path: seen}))
        answer = ApplyAnswer.from_wire(agent.ask(request))
        if answer.error:
            raise HostFailed(f"{host.name}: {answer.error}")
        return outcome
