"""Role docker_tls: the Docker API on TCP with mutual TLS, certificates from berth's CA.

The listener itself is written into daemon.json by role docker_engine (one owner per file);
this role lays down the CA bundle and the server certificate and refuses unsafe settings.
"""

from __future__ import annotations

from berth.certificates import HostCertificate
from berth.errors import ConfigError
from berth.inventory import Host
from berth.pki import KEY_TYPES
from berth.resources import Directory, File, RoleState
from berth.roles import RoleContext


def declare(host: Host, ctx: RoleContext) -> RoleState:
    v = host.vars
    _refuse_plain_tcp(host)
    if "docker_engine" not in host.roles:
        raise ConfigError(f"{host.origins.get('berth_roles')}: {host.name}: role docker_tls needs role docker_engine")
    if v["docker_tls_key_type"] not in KEY_TYPES:
        raise ConfigError(f"{host.origins.get('docker_tls_key_type')}: docker_tls_key_type must be one of "
                          f"{', '.join(KEY_TYPES)}, got {v['docker_tls_key_type']!r}")
    # A new certificate or CA bundle needs a restart (drained: role docker_engine).
    restart = ctx.module("docker_engine").restart_handler(host)
    d = v["docker_tls_dir"]
    sans = [host.name, *([v["ansible_host"]] if v.get("ansible_host") else []), *v["docker_tls_extra_sans"]]
    state = RoleState("docker_tls")
    state.resources += [
        Directory(d, mode=0o755),
        # During a CA rotation the bundle holds both CAs, so clients of either are accepted.
        File(f"{d}/ca.pem", ctx.ca().bundle_pem(), mode=0o444, notify=(restart,)),
    ]
    state.derived.append(HostCertificate(
        cert_path=f"{d}/cert.pem", key_path=f"{d}/key.pem", common_name=host.name, sans=sans,
        days=v["docker_tls_days"], renew_days=v["docker_tls_renew_days"], key_type=v["docker_tls_key_type"],
        rotate_key=v["docker_tls_rotate_key"], notify=(restart,),
    ))
    return state


def _refuse_plain_tcp(host: Host) -> None:
    v = host.vars
    if v["docker_tls_port"] == 2375:
        raise ConfigError(
            f"{host.origins.get('docker_tls_port')}: {host.name}: docker_tls_port 2375 is Docker's plain-TCP port; "
            "berth never opens it. Use 2376 (TLS by convention) or another port."
        )
    if not v["docker_tls_verify"]:
        raise ConfigError(
            f"{host.origins.get('docker_tls_verify')}: {host.name}: docker_tls_verify false would accept any "
            "client on the TCP port, and any client of the Docker API is root on the host. berth requires "
            "client certificates: issue one with `invoke certs.client --name NAME`."
        )
