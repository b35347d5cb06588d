"""docker_tls: the Docker API on TCP with mutual TLS, seen from the host and from the controller."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from berth.checks.plugin import Controller
from berth.pki.ca import CertInfo
from berth.role import Facts, load_role

ANY_ADDRESS = {"0.0.0.0": ("0.0.0.0", "*"), "::": ("[::]", "*")}


def test_listening_on_declared_port(listeners: list, host_vars: dict[str, Any]) -> None:
    """dockerd listens on the declared address and port (docker_tls_bind, docker_tls_port)."""
    bind, port = str(host_vars["docker_tls_bind"]), int(host_vars["docker_tls_port"])
    accepted = ANY_ADDRESS.get(bind, (bind, f"[{bind}]"))
    here = [f"{lst.address}:{lst.port} ({lst.process})" for lst in listeners if lst.port == port]
    mine = [lst for lst in listeners if lst.port == port and lst.address in accepted and lst.process == "dockerd"]
    assert mine, f"dockerd does not listen on {bind}:{port} (port {port}: {', '.join(here) or 'nothing'})"


@pytest.mark.cis("2.7")
def test_port_2375_closed(listeners: list) -> None:
    """Nothing listens on 2375, Docker's plain-TCP port."""
    open_ = [f"{lst.address}:{lst.port} ({lst.process})" for lst in listeners if lst.port == 2375]
    assert not open_, f"port 2375 is open: {', '.join(open_)}; berth never opens it"


@pytest.mark.parametrize("name, mode", [
    pytest.param("ca.pem", 0o444, id="ca.pem", marks=pytest.mark.cis("3.9", "3.10")),
    pytest.param("cert.pem", 0o444, id="cert.pem", marks=pytest.mark.cis("3.11", "3.12")),
    pytest.param("key.pem", 0o400, id="key.pem", marks=pytest.mark.cis("3.13", "3.14")),
])
def test_tls_file(name: str, mode: int, facts: Facts, host_vars: dict[str, Any]) -> None:
    """The CA bundle, certificate and key: root:root, certificates 0444, the key 0400."""
    found = facts.file(f"{host_vars['docker_tls_dir']}/{name}")
    assert found.exists, f"{found.path} is missing"
    assert (found.owner, found.group, found.mode) == ("root", "root", mode), (
        f"{found.describe()}, want root:root {mode:04o}")


def test_certificate_not_expiring(server_cert: CertInfo, host_vars: dict[str, Any]) -> None:
    """The server certificate is valid beyond the renewal window (docker_tls_renew_days)."""
    left, window = server_cert.days_left(), int(host_vars["docker_tls_renew_days"])
    assert left > window, (f"the certificate expires in {left:.1f} days, within the renewal window ({window} days): "
                           "a converge renews it")


def _san(name: str) -> str:
    try:
        return f"IP:{ipaddress.ip_address(name)}"
    except ValueError:
        return f"DNS:{name.lower()}"


def test_certificate_names_the_inventory_only(server_cert: CertInfo, host_vars: dict[str, Any], inventory_host: Any,
                                              roles_dir: Any) -> None:
    """The SANs are the names clients use, from the inventory only: inventory name, ansible_host (or the
    ssh_config HostName), docker_tls_extra_sans, 127.0.0.1; nothing the host says about itself, no wildcard."""
    wanted = [*load_role(roles_dir, "docker_tls").inventory_sans(inventory_host), "127.0.0.1"]
    have = {f"DNS:{s[4:].lower()}" if s.startswith("DNS:") else s for s in server_cert.sans}
    missing = [n for n in dict.fromkeys(wanted) if _san(n) not in have]
    extra = sorted(have - {_san(n) for n in wanted})
    assert not missing, f"the certificate's SANs do not cover {', '.join(missing)}"
    assert not extra, f"the certificate names {', '.join(extra)}, which the inventory does not give (a converge " \
                      "re-issues it)"


def test_mutual_tls_ping(controller: Controller, host_vars: dict[str, Any]) -> None:
    """From the controller, with berth's client certificate: the handshake succeeds, the server's
    certificate verifies against berth's CA for the host's name, and the Docker API answers /_ping."""
    served = controller.probe(int(host_vars["docker_tls_port"]))
    assert served.error is None, f"{controller.address}:{served.port}: {served.error}"
    assert served.ping == "OK", f"/_ping answered {served.ping!r}"


@pytest.mark.cis("2.7")
def test_refuses_clients_without_certificate(controller: Controller, host_vars: dict[str, Any]) -> None:
    """From the controller, without a client certificate: the handshake is refused."""
    outcome, detail = controller.without_certificate(int(host_vars["docker_tls_port"]))
    assert outcome != "answered", f"the Docker API answered without a client certificate ({detail}): anyone " \
                                  "who reaches the port is root on the host"
    assert outcome == "refused", f"cannot tell: {detail}"
