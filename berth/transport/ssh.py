"""One SSH session per host: ssh_config honoured, known_hosts enforced, every command counted.

Fabric's defaults are wrong for a provisioning tool: inside an Invoke task a Connection reads no
ssh_config (its config is cloned lazily; fabric#2111), and Connection.__init__ always sets paramiko's
AutoAddPolicy, so every connection, ProxyJump hops included, accepts any host key silently (fabric#1804).
Here the ssh_config is loaded explicitly and every hop's host key policy is strict unless the operator asks
for ``accept-new`` (OpenSSH's meaning: unknown keys are added, changed keys are refused).

A host that cannot be reached is reported with the reason (timed out after how long, refused, no route, a name
that does not resolve, authentication failed with which keys, host key unknown or changed) and what to do.
Connecting is retried (``connect_attempts``, with backoff) only where another attempt can succeed: a time-out,
a refusal (sshd restarting), no route (a host rebooting); never a failed login or a host key problem.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import fabric
import paramiko
from paramiko.ssh_exception import NoValidConnectionsError
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from berth.errors import HostFailed, HostUnreachable
from berth.inventory.loader import Host
from berth.transport.base import CommandResult

__all__ = ["HOST_KEY_POLICIES", "CommandResult", "SSHSettings", "Session", "fabric_config", "network_address"]

HOST_KEY_POLICIES = ("strict", "accept-new")


@dataclass(frozen=True)
class SSHSettings:
    ssh_config: Path | None = None           # None: ~/.ssh/config when it exists
    host_key_checking: str = "strict"        # or "accept-new"
    connect_timeout: float = 10.0
    connect_attempts: int = 3                # tries of a connection that timed out, was refused or had no route
    retry_wait: float = 1.0                  # seconds before the second try; doubled each time, at most 10


class Transient(Exception):
    """A connection failure another attempt may not meet (carries the operator's message)."""


class SessionBroken(HostUnreachable):
    """The SSH session broke during a command (the connection was lost, the host went away)."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Transient)


def explain_connect_error(exc: BaseException, target: str, timeout: float) -> tuple[str, bool]:
    """(what happened and what to do, whether another attempt may succeed) for a failed TCP/SSH connect."""
    if isinstance(exc, NoValidConnectionsError):
        # paramiko tried every address of the name; one reason stands for all (the first).
        exc = next(iter(exc.errors.values()), exc)
    if isinstance(exc, socket.gaierror):
        return (f"the name {target.rsplit(':', 1)[0]} does not resolve ({exc.strerror}): check HostName in the "
                "ssh_config or ansible_host, and the controller's DNS", False)
    if isinstance(exc, TimeoutError | socket.timeout):
        return (f"no answer from {target} within {timeout:g}s (connect_timeout): the host is down, or a firewall "
                "drops SSH; check that it runs and that port is open to this controller", True)
    code = getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return (f"connection refused at {target}: sshd is not running there, or listens on another port "
                "(Port in the ssh_config, ansible_port)", True)
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return (f"no route to {target} ({os.strerror(code)}): the host is down or not on a network this controller "
                "reaches", True)
    if isinstance(exc, paramiko.SSHException) and "banner" in str(exc).lower():
        return (f"{target} accepted the connection but sent no SSH greeting within {timeout:g}s: sshd hangs, or "
                "something other than sshd listens there", True)
    if isinstance(exc, EOFError | ConnectionResetError) or code in (errno.ECONNRESET, errno.EPIPE):
        return f"{target} closed the connection during the SSH handshake ({exc.__class__.__name__})", True
    if isinstance(exc, paramiko.SSHException) and "no existing session" in str(exc).lower():
        return (f"the SSH connection to {target} ended before the login (no session): sshd dropped it "
                "(its MaxStartups, a firewall, a host going down)", True)
    return f"cannot connect to {target} ({exc.__class__.__name__}: {exc})", False


def _cause(cx: fabric.Connection, exc: BaseException) -> BaseException:
    """The transport's own error behind paramiko's "No existing session" (a handshake that failed in its thread)."""
    if "no existing session" not in str(exc).lower():
        return exc
    transport = cx.client.get_transport() if cx.client is not None else None
    saved = getattr(transport, "saved_exception", None)
    if saved is not None:
        return saved
    if transport is not None and not getattr(transport, "remote_version", ""):
        # start_client gave up at the connect timeout before the banner timeout recorded its error.
        return paramiko.SSHException("Error reading SSH protocol banner")
    return exc


def tried_keys(cx: fabric.Connection) -> str:
    """The keys paramiko offers: IdentityFile/key_filename, the ssh-agent's, then ~/.ssh/id_* (look_for_keys)."""
    files = cx.connect_kwargs.get("key_filename") or []
    keys = [str(f) for f in ([files] if isinstance(files, str) else files)]
    if os.environ.get("SSH_AUTH_SOCK") and cx.connect_kwargs.get("allow_agent", True):
        keys.append("the keys of the ssh-agent at $SSH_AUTH_SOCK")
    if cx.connect_kwargs.get("look_for_keys", True):
        keys += [str(p) for p in (Path("~/.ssh").expanduser() / f"id_{kind}" for kind in
                                  ("rsa", "dsa", "ecdsa", "ed25519")) if p.exists()]
    return ", ".join(dict.fromkeys(keys)) or "none (no IdentityFile, no ssh-agent, no ~/.ssh/id_* key)"


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """OpenSSH's StrictHostKeyChecking=accept-new: remember unknown keys, never accept changed ones."""

    _lock = threading.Lock()

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        with self._lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with self.known_hosts.open("a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


@dataclass
class Session:
    """An open SSH session to one inventory host. Not thread-safe; one per worker."""

    host: Host
    settings: SSHSettings = field(default_factory=SSHSettings)
    commands: int = 0
    _cx: fabric.Connection | None = None
    connected_in: float = 0.0     # seconds the connection and authentication took (the report's "connect")
    agent_root: str = "/"

    # -- connecting ----------------------------------------------------------------------------
    def open(self) -> Session:
        if self._cx is not None:
            return self
        started = time.monotonic()
        cfg = fabric_config(self.host, self.settings)
        lookup = cfg.base_ssh_config.lookup(self.host.name)
        kwargs: dict = {}
        if self.host.key_file:
            kwargs["key_filename"] = os.path.expanduser(str(self.host.key_file))
        cx = fabric.Connection(
            self.host.address if self.host.vars.get("ansible_host") else self.host.name,
            user=self.host.user, port=self.host.port, config=cfg, connect_kwargs=kwargs,
            connect_timeout=self.settings.connect_timeout,
        )
        known_hosts = _known_hosts(cfg, self.host.name)
        strict = self.settings.host_key_checking == "strict" and lookup.get("stricthostkeychecking") != "accept-new"
        # Every hop is checked like the last one: Fabric gives ProxyJump hops paramiko's AutoAddPolicy.
        known = _check_host_keys(cx, known_hosts, strict)
        target = f"{cx.host}:{cx.port}"
        attempts = max(1, self.settings.connect_attempts)
        try:
            for attempt in Retrying(stop=stop_after_attempt(attempts), retry=retry_if_exception(_retryable),
                                    wait=wait_exponential(multiplier=self.settings.retry_wait, max=10),
                                    reraise=False):
                with attempt:
                    self._connect(cx, known, known_hosts, target)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise HostUnreachable(f"{self.host.name}: {last} (after {attempts} attempts)") from None
        # A drain can keep one command silent for many minutes: keepalives stop NAT and firewalls
        # from dropping the idle connection meanwhile.
        transport = cx.client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        self._cx = cx
        self.connected_in = time.monotonic() - started
        return self

    def _connect(self, cx: fabric.Connection, known: dict[str, Path], known_hosts: Path, target: str) -> None:
        """One attempt; raises Transient for what another attempt may overcome, HostUnreachable otherwise."""
        timeout = self.settings.connect_timeout
        # paramiko waits 15 s for the greeting and 30 s for the login by default, whatever the connect timeout.
        cx.connect_kwargs.setdefault("banner_timeout", timeout)
        cx.connect_kwargs.setdefault("auth_timeout", timeout)
        try:
            cx.open()
        except paramiko.BadHostKeyException as exc:
            hop = exc.hostname
            raise HostUnreachable(
                f"{self.host.name}: the host key of {hop}{_via(cx, hop)} CHANGED ({exc.key.get_name()}); it is not "
                f"the one in {known.get(hop, known_hosts)}. If the host was rebuilt, remove the old key "
                f"(ssh-keygen -R {hop} -f {known.get(hop, known_hosts)}); "
                "otherwise someone may be intercepting the connection."
            ) from None
        except paramiko.AuthenticationException as exc:
            raise HostUnreachable(
                f"{self.host.name}: authentication failed for user {cx.user} at {target} ({exc}); keys tried: "
                f"{tried_keys(cx)}. Put the matching public key in ~{cx.user}/.ssh/authorized_keys on the host, or "
                "name the right key (IdentityFile in the ssh_config, ansible_ssh_private_key_file)"
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                hop = _hop_named_in(str(exc)) or cx.host
                raise HostUnreachable(
                    f"{self.host.name}: the host key of {hop}{_via(cx, hop)} is unknown (not in "
                    f"{known.get(hop, known_hosts)}); strict host key checking refuses it. Add it to known_hosts, "
                    "or pass --accept-new-host-keys to trust it on first use."
                ) from None
            self._give_up_or_retry(cx, _cause(cx, exc), target)
        except (TimeoutError, NoValidConnectionsError, OSError, EOFError) as exc:
            self._give_up_or_retry(cx, exc, target)

    def _give_up_or_retry(self, cx: fabric.Connection, exc: BaseException, target: str) -> None:
        with contextlib.suppress(Exception):
            cx.close()      # a half-open client must not be reused by the next attempt
        message, transient = explain_connect_error(exc, target, self.settings.connect_timeout)
        if transient:
            raise Transient(message) from None
        raise HostUnreachable(f"{self.host.name}: {message}") from None

    def close(self) -> None:
        if self._cx is not None:
            self._cx.close()
            self._cx = None

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_root(self) -> bool:
        assert self._cx is not None
        return self._cx.user == "root"

    # -- commands ------------------------------------------------------------------------------
    def run(
        self, command: str, *, stdin: bytes | None = None, sudo: bool = True, timeout: float | None = 600,
        on_stderr_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run one command (as root through ``sudo -n`` for a non-root user), feeding ``stdin`` if given.

        Every call is one SSH round trip and is counted: that count is the figure berth reports.
        """
        return _ChannelExchange(self, *self._exec(command, stdin, sudo, timeout, on_stderr_line)).finish()

    def start(self, command: str, *, stdin: bytes, sudo: bool = True,
              on_stderr_line: Callable[[str], None] | None = None) -> _ChannelExchange:
        """As ``run``, stdin left open: the command answers line by line (one SSH command, counted once)."""
        return _ChannelExchange(self, *self._exec(command, stdin, sudo, None, on_stderr_line))

    def _exec(self, command: str, stdin: bytes | None, sudo: bool, timeout: float | None,
              on_stderr_line: Callable[[str], None] | None) -> tuple[paramiko.Channel, _ChannelOutput]:
        """The command started, ``stdin`` sent and left open (``_ChannelExchange.finish`` closes it)."""
        self.open()
        assert self._cx is not None
        if sudo and not self.is_root:
            command = "sudo -n -- sh -c " + shlex.quote(command)
        self.commands += 1
        try:
            chan = self._cx.client.get_transport().open_session(timeout=self.settings.connect_timeout)
            chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
        except (TimeoutError, paramiko.SSHException, OSError, EOFError) as exc:
            raise self._broken(exc) from None
        return chan, _ChannelOutput(chan, on_stderr_line)

    def _broken(self, exc: BaseException) -> SessionBroken:
        self.close()
        return SessionBroken(f"{self.host.name}: the SSH session broke during a command "
                             f"({exc.__class__.__name__}: {exc})")

    def put_private(self, directory: str, files: list[tuple[bytes, str]]) -> None:
        """Upload ``files`` (data, path inside ``directory``) into a directory made now, mode 0700.

        The directory's name is random (berth/engine/plan.py) and SFTP mkdir fails if anything, a symlink included,
        is already there, so nobody else can have prepared it, and 0700 keeps others from adding or swapping
        files in it before root installs them. Counted as one command per file.
        """
        self.open()
        assert self._cx is not None
        sftp = self._cx.sftp()
        try:
            sftp.mkdir(directory, mode=0o700)
        except OSError as exc:
            raise HostFailed(f"{self.host.name}: cannot make the upload directory {directory} ({exc}); "
                             "it must not exist before berth makes it. Nothing was changed") from None
        try:
            for data, remote_path in files:
                if not remote_path.startswith(directory + "/"):
                    raise HostFailed(f"{self.host.name}: {remote_path} is outside the upload directory {directory}")
                self.commands += 1
                with sftp.open(remote_path, "wbx") as fh:     # x: O_EXCL, never onto something already there
                    fh.set_pipelined(True)
                    fh.write(data)
        except BaseException:
            _remove_quietly(sftp, directory, [p for _, p in files])   # the agent that would remove it never runs
            raise


def _remove_quietly(sftp: paramiko.SFTPClient, directory: str, paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            sftp.remove(path)
    with contextlib.suppress(OSError):
        sftp.rmdir(directory)


def _known_hosts(cfg: fabric.Config, name: str) -> Path:
    lookup = cfg.base_ssh_config.lookup(name)
    return Path(lookup.get("userknownhostsfile", "~/.ssh/known_hosts").split()[0]).expanduser()


def _check_host_keys(cx: fabric.Connection, known_hosts: Path, strict: bool) -> dict[str, Path]:
    """Load known_hosts into ``cx`` and every ProxyJump hop before it, each refusing unknown keys when strict.

    Returns each hop's known_hosts file by the name paramiko reports it under (``host`` or ``[host]:port``).
    """
    files: dict[str, Path] = {}
    hop: object = cx
    while isinstance(hop, fabric.Connection):
        hop_known = known_hosts if hop is cx else _known_hosts(hop.config, hop.original_host)
        if hop_known.exists() and strict:
            _use_known_hosts(hop.client, hop_known)
        elif hop_known.exists():
            hop.client.load_host_keys(str(hop_known))      # accept-new adds to it: this client's own copy
        hop.client.set_missing_host_key_policy(paramiko.RejectPolicy() if strict else _AcceptNewPolicy(hop_known))
        files[hop.host if hop.port == 22 else f"[{hop.host}]:{hop.port}"] = hop_known
        hop = hop.gateway
    return files


def _use_known_hosts(client: paramiko.SSHClient, path: Path) -> None:
    """``client.load_host_keys(path)``, with the file parsed once per run and version of it.

    paramiko's HostKeys.load compares each line with every line before it, so loading a fleet's known_hosts
    for every connection cost O(hosts^3) in all (a second of controller CPU at 100 hosts). Strict checking
    only reads the entries, so every client can share them.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    with _parsed_lock:
        shared = _known.get(key)
        if shared is None:
            shared = _known[key] = paramiko.HostKeys()
            shared.load(str(path))
    client._host_keys_filename = str(path)
    client.get_host_keys()._entries.extend(shared._entries)


_known: dict[tuple[str, int, int, int], paramiko.HostKeys] = {}


def _hop_named_in(message: str) -> str | None:
    """The host paramiko's RejectPolicy names ("Server '[h]:p' not found in known_hosts")."""
    start = message.find("'")
    end = message.find("'", start + 1)
    return message[start + 1:end] if 0 <= start < end else None


def _via(cx: fabric.Connection, hop: str) -> str:
    return "" if hop in (cx.host, f"[{cx.host}]:{cx.port}") else f" (a ProxyJump hop to {cx.host})"


def fabric_config(host: Host, settings: SSHSettings) -> fabric.Config:
    """A Fabric config with the host's ssh_config loaded (berth_ssh_config, else ~/.ssh/config)."""
    named = settings.ssh_config or host.vars.get("berth_ssh_config")
    path = Path(named).expanduser() if named else Path("~/.ssh/config").expanduser()
    if named and not path.exists():
        raise HostUnreachable(
            f"{host.name}: the ssh_config {path} (berth_ssh_config, {host.origins.get('berth_ssh_config')}) "
            "does not exist; for the testbed run `invoke testbed.up`"
        )
    # An explicit SSHConfig object: Fabric then loads no file itself (as set_runtime_ssh_path did, no system
    # or user file either) and Connection looks the host up in it.
    cfg = fabric.Config(lazy=True, ssh_config=_parsed_ssh_config(path) if path.exists() else None)
    cfg.timeouts.connect = settings.connect_timeout
    return cfg


class _SharedSSHConfig(paramiko.SSHConfig):
    """One parsed ssh_config for every host of a run, each host looked up once.

    Fabric parsed the file again for every connection and paramiko scans every stanza on every lookup (and
    shlex-splits each Host line again), so a run over N hosts with an N-stanza ssh_config cost O(N^2): at
    100 testbed hosts that was most of the controller's CPU (bench/README.md). The answers are paramiko's
    (OpenSSH's rules) over the stanzas that can apply; only work that cannot change them is saved.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._answers: dict[str, paramiko.SSHConfigDict] = {}
        self._index: dict[str, list[int]] | None = None    # plain Host name -> its stanzas
        self._always: list[int] = []

    def lookup(self, hostname: str) -> paramiko.SSHConfigDict:
        with self._lock:
            answer = self._answers.get(hostname)
        if answer is None:
            answer = paramiko.SSHConfig.lookup(self._view(hostname), hostname)
            with self._lock:
                self._answers[hostname] = answer
        # A copy: callers may change their answer (its lists too), never another host's.
        return paramiko.SSHConfigDict({k: list(v) if isinstance(v, list) else v for k, v in answer.items()})

    def _view(self, hostname: str) -> paramiko.SSHConfig:
        """The stanzas that can apply to ``hostname``, in file order: those whose Host patterns are all plain
        names other than it cannot (OpenSSH: a stanza applies when one pattern matches and no negated one
        does), so a lookup reads a handful of stanzas, not one per host of the fleet. Everything with a
        wildcard, a Match, or canonicalization (which changes the name looked up) is always kept."""
        with self._lock:
            if self._index is None:
                self._index, self._always = {}, []
                canonical = any("canonicalizehostname" in c["config"] for c in self._config)
                for position, context in enumerate(self._config):
                    patterns = context.get("host", [])
                    literal = patterns and not context.get("matches") and not canonical and all(
                        not p.startswith("!") and not set(p) & set("*?[") for p in patterns)
                    for name in patterns if literal else ():
                        self._index.setdefault(name, []).append(position)
                    if not literal:
                        self._always.append(position)
            positions = sorted({*self._always, *self._index.get(hostname, ())})
        view = paramiko.SSHConfig()
        view._config = [self._config[i] for i in positions]
        return view


_parsed: dict[tuple[str, int, int, int], _SharedSSHConfig] = {}
_parsed_lock = threading.Lock()


def _parsed_ssh_config(path: Path) -> _SharedSSHConfig:
    """``path`` parsed once per process and version of the file (its inode, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    with _parsed_lock:
        parsed = _parsed.get(key)
        if parsed is None:
            parsed = _parsed[key] = _SharedSSHConfig()
            with path.open() as fh:
                parsed.parse(fh)
    return parsed


def network_address(host: Host, settings: SSHSettings) -> str:
    """The address other protocols (the TLS port) reach the host at: ansible_host, else ssh_config's HostName."""
    if host.vars.get("ansible_host"):
        return str(host.vars["ansible_host"])
    named = settings.ssh_config or host.vars.get("berth_ssh_config")
    path = Path(named).expanduser() if named else Path("~/.ssh/config").expanduser()
    if not path.exists():
        return str(fabric_config(host, settings).base_ssh_config.lookup(host.name).get("hostname", host.name))
    return str(_parsed_ssh_config(path).lookup(host.name).get("hostname", host.name))


class _ChannelOutput:
    """A command's stdout and stderr, read together, so that a chatty stderr cannot stall stdout.

    Read until the channel's EOF, not until the exit status: sshd may send it before the last of the output
    (a 100 kB answer came back cut at 96 kB once in seven tries here), so only EOF says that nothing more will
    come. ``on_line`` gets each complete stderr line as it arrives (the agent's events: it waits for a lock).
    """

    def __init__(self, chan: paramiko.Channel, on_line: Callable[[str], None] | None) -> None:
        self.chan, self.on_line = chan, on_line
        self.out, self.err = bytearray(), bytearray()
        self.told = 0

    def pump(self, until: Callable[[], bool] = lambda: False) -> None:
        """Read until ``until()`` holds or the channel ends."""
        # paramiko's pipe for select(): readable while stdout or stderr holds data, and for good after EOF. Waiting
        # on it instead of polling every 10 ms keeps 100 idle channels from waking the controller 10,000 times a
        # second (bench/README.md).
        chan, ready = self.chan, self.chan.fileno()
        while not until():
            progressed = False
            if chan.recv_ready():
                self.out += chan.recv(65536)
                progressed = True
            if chan.recv_stderr_ready():
                self.err += chan.recv_stderr(65536)
                progressed = True
                self._tell()
            if progressed:
                continue
            if chan.eof_received or chan.closed:
                break
            select.select([ready], [], [], 1.0)

    def _tell(self) -> None:
        if self.on_line is None:
            return
        end = self.err.rfind(b"\n")
        if end >= self.told:
            for text in bytes(self.err[self.told:end]).decode(errors="replace").splitlines():
                self.on_line(text)
            self.told = end + 1

    def line(self) -> bytes:
        self.pump(until=lambda: b"\n" in self.out)
        head, _, rest = bytes(self.out).partition(b"\n")
        self.out = bytearray(rest)
        return head

    def stdout(self) -> str:
        return bytes(self.out).decode(errors="replace")

    def stderr(self) -> str:
        return bytes(self.err).decode(errors="replace")


@dataclass
class _ChannelExchange:
    """Session.start's open command (berth.transport.base.Exchange)."""

    session: Session
    chan: paramiko.Channel
    output: _ChannelOutput

    def send(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
        except (TimeoutError, paramiko.SSHException, OSError, EOFError) as exc:
            raise self.session._broken(exc) from None

    def read_line(self) -> bytes:
        try:
            return self.output.line()
        except (TimeoutError, paramiko.SSHException, OSError, EOFError) as exc:
            raise self.session._broken(exc) from None

    def finish(self) -> CommandResult:
        try:
            if not self.chan.closed:
                self.chan.shutdown_write()
            self.output.pump()
            code = self.chan.recv_exit_status()
            self.chan.close()
        except (TimeoutError, paramiko.SSHException, OSError, EOFError) as exc:
            raise self.session._broken(exc) from None
        return CommandResult(code, self.output.stdout(), self.output.stderr())
