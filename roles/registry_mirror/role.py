"""Role registry_mirror: dockerd pulls Docker Hub images through a pull-through mirror, with its CA if needed.

The example role, written against the role API only (berth.role; docs/WRITING_A_ROLE.md):

- daemon.json belongs to role docker_engine; this role contributes one key to it, ``registry-mirrors``, and
  never writes the file itself (``contribute``). A change of that key reloads dockerd, a removal restarts it:
  docker_engine decides (moby daemon/reload.go reloads registry-mirrors when it is set).
- The mirror's CA goes where dockerd looks for a registry's CAs: ``/etc/docker/certs.d/<host[:port]>/ca.crt``
  (moby daemon/pkg/registry/registry.go hostCertsDir, CertsDir in config.go). dockerd reads that folder
  each time it connects to the registry (newTLSConfig -> loadTLSConfig), so a new CA needs no handler.

Mirror URLs are checked as dockerd checks them, in every dockerd berth supports, so that a bad URL is an
inventory error, not a dockerd that refuses its daemon.json: moby daemon/pkg/registry/config.go
ValidateMirror (v28+: scheme http or https, no query, fragment or user info) and registry/config.go
ValidateMirror at v20.10.24 (Debian 12: also no path). berth also refuses http:// (images unauthenticated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from berth.role import Contribution, Directory, File, Host, RoleContext, RoleState, host_var_error

VARIABLE = "registry_mirrors"
CERTS_DIR = "/etc/docker/certs.d"          # moby daemon/pkg/registry/config.go CertsDir (Linux, not rootless)


def mirrors(host: Host) -> list[dict[str, Any]]:
    """The declared mirrors as [{url, host, ca_file}], checked; url without a trailing slash, duplicates dropped
    (as moby's loadMirrors drops them)."""
    value = host.vars[VARIABLE]
    if not isinstance(value, list):
        raise host_var_error(host, VARIABLE, f"must be a list of mirror URLs or {{url, ca_file}}, got {value!r}")
    found: dict[str, dict[str, Any]] = {}
    for entry in value:
        item = {"url": entry} if isinstance(entry, str) else entry
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or set(item) - {"url", "ca_file"}:
            raise host_var_error(host, VARIABLE, f"entry {entry!r}: give a URL or {{url: URL, ca_file: PATH}}")
        url = check_url(host, item["url"])
        found.setdefault(url, {"url": url, "host": urlsplit(url).netloc, "ca_file": item.get("ca_file") or None})
    return list(found.values())


def check_url(host: Host, url: str) -> str:
    """A mirror URL as every supported dockerd accepts it (module docstring), https only; returns it normalized."""
    if "://" not in url or url.startswith("://"):
        raise host_var_error(host, VARIABLE, f"{url!r} has no scheme: write https://{url}")
    parts = urlsplit(url)
    problem = None
    if parts.scheme == "http":
        problem = "is plain http: images would travel unauthenticated; use https (with ca_file for a private CA)"
    elif parts.scheme != "https":
        problem = f"has scheme {parts.scheme!r}; dockerd accepts https:// (or http://) mirrors only"
    elif not parts.hostname:
        problem = "names no host"
    elif parts.username is not None or parts.password is not None:
        problem = "holds a user or password, which dockerd refuses (and would print)"
        url = f"https://***@{parts.hostname}"
    elif parts.query or parts.fragment or "?" in url or "#" in url:
        problem = "has a query or fragment, which dockerd refuses"
    elif parts.path not in ("", "/"):
        problem = "has a path, which dockerd 20.10 (Debian 12) refuses"
    if problem:
        raise host_var_error(host, VARIABLE, f"{url!r} {problem}")
    return f"https://{parts.netloc}"


def read_ca(host: Host, path: str) -> bytes:
    """The mirror's CA certificate from the controller: a PEM certificate, nothing else (never a key)."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise host_var_error(host, VARIABLE, f"ca_file {path}: cannot read it on the controller "
                                             f"({exc.strerror})") from None
    if b"-----BEGIN CERTIFICATE-----" not in data or b"PRIVATE KEY" in data:
        raise host_var_error(host, VARIABLE, f"ca_file {path}: not a PEM certificate (or it holds a private key)")
    return data


def ca_path(mirror: dict[str, Any]) -> str:
    """Where dockerd looks for the mirror's CA: certs.d/<host[:port] as in the URL>/ca.crt."""
    return f"{CERTS_DIR}/{mirror['host']}/ca.crt"


def contribute(host: Host) -> list[Contribution]:
    """daemon.json ``registry-mirrors``, for role docker_engine (none when no mirror is declared)."""
    urls = [m["url"] for m in mirrors(host)]
    return [Contribution("docker.daemon_json", "registry-mirrors", urls)] if urls else []


def declare(host: Host, ctx: RoleContext) -> RoleState:
    state = RoleState("registry_mirror")
    with_ca = [m for m in mirrors(host) if m["ca_file"]]
    if with_ca:
        state.resources.append(Directory(CERTS_DIR, mode=0o755))
    for mirror in with_ca:
        state.resources += [
            Directory(f"{CERTS_DIR}/{mirror['host']}", mode=0o755),
            # CIS Docker Benchmark 3.7/3.8: registry certificates root:root, 0444 or stricter.
            File(ca_path(mirror), read_ca(host, mirror["ca_file"]), mode=0o444),
        ]
    return state
