"""Issuing a host certificate through the agent that answered the probe: the host's openssl makes the key and
the CSR (the real openssl, on berth.transport.local's temporary root), the controller signs it, and the apply
installs both, all in the converge's one command."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from berth.engine.converge import Converger, Status, run_agent
from berth.engine.options import RunOptions
from berth.engine.protocol import CsrAnswer, CsrRequest
from berth.engine.roles import RoleContext
from berth.inventory.loader import Host
from berth.pki.ca import CertificateAuthority
from berth.pki.certificates import GENPKEY
from berth.transport.ssh import SSHSettings
from tests.unit.localhost import LocalHost
from tests.unit.test_pki import spki

TLS_ROLE = '''
from berth.pki.certificates import HostCertificate
from berth.role import Directory, RoleState


def declare(host, ctx):
    state = RoleState("tlsdemo")
    state.resources.append(Directory("/etc/tlsdemo", mode=0o700))
    state.derived.append(HostCertificate(cert_path="/etc/tlsdemo/cert.pem", key_path="/etc/tlsdemo/key.pem",
                                         common_name=host.name, sans=["local1", "192.0.2.10"],
                                         key_type=host.vars.get("tlsdemo_key_type", "ec-p256"),
                                         rotate_key=host.vars.get("tlsdemo_rotate", False)))
    return state
'''


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def public_key_of(key_pem: bytes) -> bytes:
    return spki(serialization.load_pem_private_key(key_pem, password=None).public_key())


def ask_csr(local: LocalHost, request: CsrRequest) -> CsrAnswer:
    return CsrAnswer.from_wire(run_agent(local.session(local.host()), request))


def test_the_agent_makes_a_key_that_stays_private_and_a_csr_for_it(local: LocalHost) -> None:
    answer = ask_csr(local, CsrRequest("/etc/new/tls/key.pem", "r1", GENPKEY["ec-p256"]))
    assert answer.error is None
    key = local.path("/etc/new/tls/key.pem")
    assert (mode(key), mode(key.parent), mode(key.parent.parent)) == (0o600, 0o700, 0o700)   # umask 077
    csr = x509.load_pem_x509_csr(answer.csr.encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "r1"
    assert spki(csr.public_key()) == public_key_of(key.read_bytes())
    assert "PRIVATE KEY" not in answer.csr


def test_without_genpkey_the_csr_is_for_the_key_already_there(local: LocalHost) -> None:
    first = ask_csr(local, CsrRequest("/etc/tls/key.pem", "r1", GENPKEY["ed25519"]))
    key_before = local.path("/etc/tls/key.pem").read_bytes()
    again = ask_csr(local, CsrRequest("/etc/tls/key.pem", "r1"))
    assert local.path("/etc/tls/key.pem").read_bytes() == key_before
    assert spki(x509.load_pem_x509_csr(again.csr.encode()).public_key()) == spki(
        x509.load_pem_x509_csr(first.csr.encode()).public_key())


def test_a_csr_for_a_missing_key_is_an_error_naming_the_key(local: LocalHost) -> None:
    answer = ask_csr(local, CsrRequest("/etc/tls/absent.pem", "r1"))
    assert answer.csr is None and "making a CSR for /etc/tls/absent.pem failed" in answer.error


def test_a_first_converge_issues_the_certificate_in_its_one_command(local: LocalHost, tmp_path: Path) -> None:
    (local.roles_dir / "tlsdemo").mkdir()
    (local.roles_dir / "tlsdemo" / "role.py").write_text(TLS_ROLE)
    ca = CertificateAuthority.init(tmp_path / "pki")
    context = RoleContext(local.roles_dir, pki_dir=tmp_path / "pki", ca_loader=CertificateAuthority.load)
    converger = Converger(SSHSettings(), context, RunOptions(), connect=local.session)

    def host(**variables: object) -> Host:
        return replace(local.host(**variables), roles=["tlsdemo"])

    report = converger.converge(host())
    assert report.status == Status.CHANGED, report.error
    assert report.commands == 1         # probe, CSR and apply: one agent process
    cert_path, key_path = local.path("/etc/tlsdemo/cert.pem"), local.path("/etc/tlsdemo/key.pem")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert spki(cert.public_key()) == public_key_of(key_path.read_bytes())
    assert ca.issued_by_us(cert_path.read_bytes()) == "current"
    assert (mode(key_path), mode(cert_path)) == (0o400, 0o444)        # the key made 0600, installed 0400
    assert not local.path("/etc/tlsdemo/key.pem.next").exists()       # swapped in by the apply

    rotated = converger.converge(host(tlsdemo_rotate=True))
    assert rotated.status == Status.CHANGED and rotated.commands == 1, rotated.error
    new_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert spki(new_cert.public_key()) == public_key_of(key_path.read_bytes()) != spki(cert.public_key())
