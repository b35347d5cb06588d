"""A remote-mode runner's certificate is issued in the zone of the daemon its remote_host names."""

from __future__ import annotations

import pytest

from berth.engine.roles import RoleContext
from berth.errors import ConfigError
from berth.inventory.loader import Inventory
from berth.pki.ca import CertificateAuthority
from berth.pki.certificates import HostCertificate
from tests.security.conftest import ROOT, load_hosts

INVENTORY = """\
all:
  vars:
    berth_roles: [docker_engine, docker_tls, gitlab_runner]
    gitlab_runner_install_method: none
  hosts:
    r1:
      ansible_host: 192.0.2.11
      gitlab_runners:
        - {name: to-r2, url: https://gitlab.example.com, mode: remote, remote_host: "tcp://REMOTE:2376"}
    r2:
      ansible_host: 192.0.2.12
      docker_tls_extra_sans: [builder.example.com]
    r3:
      ansible_host: 192.0.2.13
"""


def runner_certificate(tmp_path, ca, remote: str) -> HostCertificate:
    hosts = load_hosts(tmp_path, INVENTORY.replace("REMOTE", remote))
    inventory = Inventory(hosts=hosts, groups={}, path=tmp_path)
    ctx = RoleContext(ROOT / "roles", ca.pki_dir, ca_loader=CertificateAuthority.load, inventory=inventory)
    state = ctx.module("gitlab_runner").declare(hosts["r1"], ctx)
    (cert,) = [d for d in state.derived if isinstance(d, HostCertificate)]
    return cert


@pytest.mark.parametrize("remote", ["r2", "192.0.2.12", "BUILDER.example.com"])
def test_the_zone_is_the_daemon_that_remote_host_names(tmp_path, ca, remote):
    assert runner_certificate(tmp_path, ca, remote).zone == "host-r2"


def test_a_remote_host_outside_the_inventory_is_refused(tmp_path, ca):
    with pytest.raises(ConfigError, match=r"inv/hosts.yml:\d+: r1: remote_host 'tcp://r9:2376' is not a host"):
        runner_certificate(tmp_path, ca, "r9")
