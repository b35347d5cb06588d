"""dockerd's `hosts` (daemon.json, -H) read the way dockerd reads them, for the plain-TCP refusal and CIS 2.7.

moby daemon/pkg/opts/hosts.go (opts/hosts.go up to v28.5.2) ParseHost / parseDaemonHost / ParseTCPAddr:
the value is trimmed of spaces; an empty value is the default (unix socket; tcp://localhost:2376 with
tls); a value without "://" is tcp; tcp without a port gets 2375 (DefaultHTTPPort), without a host
`localhost`; `unix://` and `fd://` are local; `npipe://` is Windows only, anything else is refused by
dockerd. So `0.0.0.0:2375`, ` tcp://0.0.0.0:2375`, `tcp://:2375`, `tcp://[::]:2375`, `:2375` and
`tcp://0.0.0.0` all listen on TCP port 2375.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

PLAIN_PORT = 2375       # moby DefaultHTTPPort: what a tcp address without a port gets
TLS_PORT = 2376         # moby DefaultTLSHTTPPort
LOCAL_PROTOS = ("unix", "fd")


class BadHost(ValueError):
    """An entry dockerd would refuse to start with."""


@dataclass(frozen=True)
class Listener:
    proto: str              # tcp, unix, fd
    address: str            # as dockerd normalizes it: tcp://host:port, unix:///path, fd://...
    port: int | None = None

    @property
    def is_tcp(self) -> bool:
        return self.proto not in LOCAL_PROTOS


def parse_host(value: object, *, tls: bool = False) -> Listener:
    """One `hosts` entry as dockerd parses it (ParseHost). Raises BadHost for what dockerd refuses."""
    text = str(value).strip()
    if not text:
        return (Listener("tcp", f"tcp://localhost:{TLS_PORT}", TLS_PORT) if tls
                else Listener("unix", "unix:///var/run/docker.sock"))
    proto, sep, rest = text.partition("://")
    if not sep:
        proto, rest = "tcp", text
    if proto in LOCAL_PROTOS:
        return Listener(proto, f"{proto}://{rest}")
    if proto != "tcp":
        raise BadHost(f"{value!r}: unsupported proto {proto!r} (dockerd accepts tcp, unix, fd)")
    return _tcp(value, rest)


def _tcp(value: object, rest: str) -> Listener:
    try:
        parts = urlsplit("tcp://" + rest)
        port = parts.port
    except ValueError as exc:
        raise BadHost(f"{value!r}: {exc}") from None
    if parts.path or parts.query or parts.fragment:
        raise BadHost(f"{value!r}: a tcp address has no path")
    if port == 0:
        raise BadHost(f"{value!r}: invalid port 0")
    host = parts.hostname or "localhost"
    port = port or PLAIN_PORT
    shown = f"[{host}]" if ":" in host else host
    return Listener("tcp", f"tcp://{shown}:{port}", port)


def tcp_listeners(hosts: object, *, tls: bool = False) -> list[Listener]:
    """The entries of a daemon.json `hosts` value that listen on the network (anything but unix:// and fd://)."""
    return [listener for listener in (parse_host(h, tls=tls) for h in _entries(hosts)) if listener.is_tcp]


def _entries(hosts: object) -> list[object]:
    if hosts is None:
        return []
    if isinstance(hosts, (list, tuple)):
        return list(hosts)
    return [hosts]


def host_flags(argv: list[str]) -> list[str]:
    """The values of dockerd's -H/--host flags in ``argv``, spelled as pflag accepts them: `-H v`, `-H=v`,
    `-Hv`, `--host v`, `--host=v`."""
    values: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-H", "--host"):
            values.append(next(args, ""))
        elif arg.startswith("--host="):
            values.append(arg.removeprefix("--host="))
        elif arg.startswith("-H"):
            values.append(arg[2:].removeprefix("="))
    return values
