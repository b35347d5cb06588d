"""Role docker_tls: the Docker API on TCP with mutual TLS, certificates from berth's CA.

daemon.json belongs to role docker_engine (one owner per file): this role contributes the TLS keys and the
listener to it (``contribute``), lays down the CA bundle and the server certificate, and refuses unsafe
settings. Its files notify docker_engine's handler by name (``restart docker``).
"""

from __future__ import annotations

from berth.role import (
    KEY_TYPES,
    ConfigError,
    Contribution,
    Directory,
    File,
    Host,
    HostCertificate,
    RoleContext,
    RoleState,
    check_path,
    host_address,
)

RESTART_DOCKER = "restart docker"       # role docker_engine's handler: a new certificate or CA needs a restart


def contribute(host: Host) -> list[Contribution]:
    """The TLS keys and the TCP listener, for role docker_engine's daemon.json."""
    v = host.vars
    _refuse_plain_tcp(host)
    d = check_path(host, "docker_tls_dir", below=["/etc/docker"])
    keys = {"tls": True, "tlsverify": True, "tlscacert": f"{d}/ca.pem", "tlscert": f"{d}/cert.pem",
            "tlskey": f"{d}/key.pem"}
    listener = f"tcp://{v['docker_tls_bind']}:{v['docker_tls_port']}"
    return [*(Contribution("docker.daemon_json", k, value) for k, value in keys.items()),
            # dockerd answers on every address of a 0.0.0.0 bind: the health check dials loopback
            Contribution("docker.listeners", listener, {"health": ["127.0.0.1", int(v["docker_tls_port"])]})]


def declare(host: Host, ctx: RoleContext) -> RoleState:
    v = host.vars
    _refuse_plain_tcp(host)
    if "docker_engine" not in host.roles:
        raise ConfigError(f"{host.origins.get('berth_roles')}: {host.name}: role docker_tls needs role docker_engine")
    if v["docker_tls_key_type"] not in KEY_TYPES:
        raise ConfigError(f"{host.origins.get('docker_tls_key_type')}: docker_tls_key_type must be one of "
                          f"{', '.join(KEY_TYPES)}, got {v['docker_tls_key_type']!r}")
    # A new certificate or CA bundle needs a restart (drained: role docker_engine).
    restart = RESTART_DOCKER
    d = v["docker_tls_dir"]
    sans = inventory_sans(host)
    state = RoleState("docker_tls")
    state.resources += [
        Directory(d, mode=0o755),
        # tlscacert: the CAs of the zones whose client certificates this daemon accepts, never the root
        # (berth.pki.ca "Trust zones"); dockerd trusts exactly these.
        File(f"{d}/ca.pem", ctx.ca().daemon_trust_pem(host.name), mode=0o444, notify=(restart,)),
    ]
    state.derived.append(HostCertificate(
        cert_path=f"{d}/cert.pem", key_path=f"{d}/key.pem", common_name=host.name, sans=sans,
        days=v["docker_tls_days"], renew_days=v["docker_tls_renew_days"], key_type=v["docker_tls_key_type"],
        rotate_key=v["docker_tls_rotate_key"], notify=(restart,),
    ))
    return state


def inventory_sans(host: Host) -> list[str]:
    """The server certificate's names, from the controller's side only: the inventory name, ansible_host (or,
    without it, the HostName of the ssh_config berth connects with) and docker_tls_extra_sans. A wildcard is
    refused: one host's certificate would then be valid for every daemon under the domain."""
    v = host.vars
    named: list[tuple[str, str]] = [(host.name, "the inventory host name")]
    if v.get("ansible_host"):
        named.append((str(v["ansible_host"]), "ansible_host"))
    else:
        # No ssh_config yet (None): the converge itself says so when it connects.
        address = host_address(host)
        if address is not None:
            named.append((address, "berth_ssh_config"))
    extra = v["docker_tls_extra_sans"]
    if isinstance(extra, str) or not isinstance(extra, list):
        raise ConfigError(f"{host.origins.get('docker_tls_extra_sans')}: {host.name}: docker_tls_extra_sans must be "
                          f"a list of names and addresses, got {extra!r}")
    named += [(str(s), "docker_tls_extra_sans") for s in extra]
    for value, variable in named:
        if "*" in value:
            origin = host.origins.get(variable, variable) if variable != "the inventory host name" else "inventory"
            raise ConfigError(
                f"{origin}: {host.name}: {variable} {value!r} is a wildcard; berth never puts one in a certificate "
                "(it would be valid for every daemon under that domain). List the exact names instead.")
    return list(dict.fromkeys(value for value, _ in named))


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
