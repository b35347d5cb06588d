"""Server certificate SANs come from the inventory; what a host says about itself is compared, never trusted."""

from __future__ import annotations

import base64

import pytest

from berth.engine.plan import Plan, Planned
from berth.engine.protocol import ProbeAnswer
from berth.engine.roles import RoleContext
from berth.errors import ConfigError, PKIError
from berth.pki.ca import CertificateAuthority, parse_san
from berth.pki.certificates import HostCertificate
from tests.security.conftest import ONE_DAEMON as INVENTORY
from tests.security.conftest import ROOT, load_hosts


def tls_state(hosts, ctx, name="r1"):
    return ctx.module("docker_tls").declare(hosts[name], ctx)


def test_a_wildcard_in_extra_sans_is_refused_with_file_and_line(tmp_path, ca):
    extra = "docker_tls_extra_sans:\n  - build.example.com\n  - '*.prod.example.com'\n"
    hosts = load_hosts(tmp_path, INVENTORY, {"r1": extra})
    ctx = RoleContext(ROOT / "roles", ca.pki_dir, ca_loader=CertificateAuthority.load)
    with pytest.raises(ConfigError) as err:
        tls_state(hosts, ctx)
    assert "docker_tls_extra_sans" in str(err.value) and "inv/host_vars/r1.yml:1" in str(err.value)
    assert "*.prod.example.com" in str(err.value)


def test_a_wildcard_ansible_host_is_refused(tmp_path, ca):
    hosts = load_hosts(tmp_path, INVENTORY.replace("192.0.2.11", "'*.example.com'"))
    with pytest.raises(ConfigError, match=r"inv/hosts.yml:6: r1: ansible_host"):
        tls_state(hosts, RoleContext(ROOT / "roles", ca.pki_dir, ca_loader=CertificateAuthority.load))


def test_the_ca_never_signs_a_wildcard(ca):
    with pytest.raises(PKIError, match="wildcard"):
        parse_san("*.prod.example.com")


def plan_server_cert(ca: CertificateAuthority, facts: dict) -> Planned:
    cert = HostCertificate(cert_path="/etc/docker/tls/cert.pem", key_path="/etc/docker/tls/key.pem",
                           common_name="r1", sans=["r1", "192.0.2.11"])
    found = ProbeAnswer(facts, {"/etc/docker/tls/cert.pem": {}, "/etc/docker/tls/key.pem": {}})
    return cert.plan(None, found, RoleContext(ROOT / "roles", ca.pki_dir, ca_loader=CertificateAuthority.load), Plan())


def test_what_the_host_reports_is_not_in_the_sans_but_in_a_note(ca):
    facts = {"hostname": "r1", "fqdn": "*.prod.example.com", "addresses": ["192.0.2.11", "10.9.9.9"]}
    planned = plan_server_cert(ca, facts)
    assert planned.prepare.wanted_sans == ["r1", "192.0.2.11", "127.0.0.1"]     # what the CSR is signed for
    note = " ".join(planned.notes)
    assert "*.prod.example.com" in note and "10.9.9.9" in note and "docker_tls_extra_sans" in note


def test_a_certificate_with_more_names_than_the_inventory_is_reissued(ca):
    from berth.pki.ca import generate_key_pem, make_csr_pem

    pem = ca.sign_server_csr(make_csr_pem(generate_key_pem(), "r1"), sans=["r1", "192.0.2.11", "127.0.0.1",
                                                                            "registry.example.com"])
    cert = HostCertificate(cert_path="/c", key_path="/k", common_name="r1", sans=["r1", "192.0.2.11"])
    found = ProbeAnswer({}, {"/c": {"content": base64.b64encode(pem).decode()},
                             "/k": {"exists": True, "mode": 0o400, "owner": "root", "group": "root"}})
    ctx = RoleContext(ROOT / "roles", ca.pki_dir, ca_loader=CertificateAuthority.load)
    planned = cert.plan(None, found, ctx, Plan())
    assert planned.prepare is not None and planned.notify == cert.notify
    assert "registry.example.com" in planned.changes[0].summary
