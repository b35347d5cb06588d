"""Host certificates: the key is made on the host, only a CSR crosses the wire.

A server certificate (the daemon's TLS port) or a client certificate (for jobs of a runner that
reach another daemon) is a *derived* resource: it can only be planned after the probe.

Planning needs the probe (the certificate on the host, the addresses for the SANs) and the CA, so
it runs after the probe. Issuing costs one more request to the agent that answered the probe (no extra
SSH command): the host creates its key (or reuses it) and answers with a CSR; the controller signs it; the
certificate goes out with the rest of the apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from berth.engine.plan import AskAgent, Change, Plan, Planned
from berth.engine.protocol import CsrAnswer, CsrRequest, FileQuery, InstallKeyStep, ProbeAnswer, Step, WriteStep
from berth.errors import HostFailed, PKIError
from berth.inventory.loader import Host
from berth.pki.ca import FLEET_ZONE, cert_info, parse_san, renewal_reason

if TYPE_CHECKING:
    from berth.engine.roles import RoleContext

# openssl genpkey arguments per key type (berth.pki.ca.KEY_TYPES).
GENPKEY = {
    "ec-p256": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"),
    "ec-p384": ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"),
    "ed25519": ("-algorithm", "ED25519"),
    "rsa-3072": ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"),
    "rsa-4096": ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"),
}


@dataclass(frozen=True)
class HostCertificate:
    cert_path: str
    key_path: str
    common_name: str
    sans: list[str]                  # server: from the inventory only (what the host reports is compared)
    purpose: str = "server"          # or "client"
    zone: str = FLEET_ZONE           # client: the trust zone whose CA signs it (berth.pki.ca)
    days: int = 365
    renew_days: int = 30
    key_type: str = "ec-p256"
    rotate_key: bool = False
    notify: tuple[str, ...] = ()

    def probe_files(self) -> list[FileQuery]:
        """The certificate is read (public); the key only checked for existence and mode, never read."""
        return [FileQuery(self.cert_path, content=True), FileQuery(self.key_path)]

    def plan(self, host: Host | None, found: ProbeAnswer, ctx: RoleContext, plan: Plan) -> Planned:
        """This certificate's changes; issuing one is the apply's ``prepare`` (the host makes the CSR)."""
        if self.purpose == "client":
            return self._plan_client(found, ctx)
        # Never from the host: a host whose root was taken would name itself after other daemons.
        wanted_sans = list(dict.fromkeys([*self.sans, "127.0.0.1"]))
        notes = self._reported_names(found.facts, wanted_sans)
        key = found.files.get(self.key_path, {})
        pem = found.content(self.cert_path) or None
        new_key = not key.get("exists") or self.rotate_key
        reason = renewal_reason(pem, wanted_sans=wanted_sans, ca=ctx.ca(), renew_days=self.renew_days)
        if reason is None and new_key:
            reason = "key rotation asked (docker_tls_rotate_key)" if key.get("exists") else "key missing"
        changes: list[Change] = []
        steps: list[Step] = []
        if key.get("exists") and not new_key and (key.get("mode"), key.get("owner"), key.get("group")) != (
                0o400, "root", "root"):
            changes.append(Change("file", self.key_path, f"mode {key.get('mode', 0):04o} -> 0400, owner "
                                                         f"{key.get('owner')}:{key.get('group')} -> root:root"))
            steps.append(WriteStep(self.key_path, None, 0o400))
        cert = found.file(self.cert_path)
        if reason is None and (cert.get("mode"), cert.get("owner"), cert.get("group")) != (0o444, "root", "root"):
            # CIS 3.11/3.12: verify holds the certificate to root:root 0444; a valid one only gets its attributes.
            changes.append(Change("file", self.cert_path, f"mode {cert.get('mode', 0):04o} -> 0444, owner "
                                                          f"{cert.get('owner')}:{cert.get('group')} -> root:root"))
            steps.append(WriteStep(self.cert_path, None, 0o444))
        if reason is None:
            leaf, chain = split_leaf(pem or b"")
            if chain != ctx.ca().chain_pem():
                # Same certificate, new intermediate: the cross-signed CA comes or goes with a rotation.
                changes.append(Change("certificate", self.cert_path, "CA chain updated (CA rotation)"))
                steps.append(self._write_step(leaf + ctx.ca().chain_pem()))
                return Planned(tuple(changes), tuple(steps), notify=self.notify, notes=notes)
            return Planned(tuple(changes), tuple(steps), notes=notes)
        changes.append(Change("certificate", self.cert_path, f"issue: {reason}"))
        return Planned(tuple(changes), tuple(steps), notify=self.notify, notes=notes,
                       prepare=_Issue(self, ctx, wanted_sans, new_key))

    def _reported_names(self, facts: dict[str, Any], wanted_sans: list[str]) -> tuple[str, ...]:
        """What the host says it is called, compared with the inventory's SANs: a difference is a note."""
        have = {_san_key(s) for s in wanted_sans}
        reported = [facts.get("hostname", ""), facts.get("fqdn", ""), *facts.get("addresses", [])]
        unnamed = [n for n in dict.fromkeys(reported) if n and n != "localhost" and _san_key(n) not in have
                   and not n.startswith(("127.", "::1"))]
        if not unnamed:
            return ()
        return (
            f"{self.common_name}: the host reports {', '.join(unnamed)} (hostname, FQDN, addresses), which its "
            "certificate does not name: SANs come from the inventory only. If clients reach the daemon by "
            "one of these, add it to docker_tls_extra_sans.",)

    def _plan_client(self, found: ProbeAnswer, ctx: RoleContext) -> Planned:
        pem = found.content(self.cert_path) or None
        new_key = not found.files.get(self.key_path, {}).get("exists") or self.rotate_key
        reason = "missing" if not pem else None
        if pem:
            info = cert_info(pem)
            if ctx.ca().zone_of(pem) != self.zone:
                reason = f"not issued by the current CA of zone {self.zone}"
            elif info.days_left() < self.renew_days:
                reason = f"expires in {info.days_left():.1f} days (renewal window {self.renew_days} days)"
        if reason is None and new_key:
            reason = "key missing"
        if reason is None:
            return Planned()
        return Planned((Change("certificate", self.cert_path, f"issue client certificate: {reason}"),),
                       notify=self.notify, prepare=_Issue(self, ctx, [], new_key))

    def _write_step(self, pem: bytes) -> WriteStep:
        return WriteStep(self.cert_path, pem, 0o444)


@dataclass(frozen=True)
class _Issue:
    """Issuing one certificate during the apply: the host makes its key (if needed) and a CSR; berth signs it."""

    cert: HostCertificate
    ctx: RoleContext
    wanted_sans: list[str]
    new_key: bool

    def __call__(self, ask: AskAgent) -> list[Step]:
        cert = self.cert
        csr_key = cert.key_path + ".next" if self.new_key else cert.key_path
        answer = CsrAnswer.from_wire(ask(CsrRequest(csr_key, cert.common_name,
                                                    GENPKEY[cert.key_type] if self.new_key else None)))
        if not answer.csr:
            raise HostFailed(f"{cert.common_name}: the agent answered no CSR for {csr_key}")
        csr = answer.csr.encode()
        ca = self.ctx.ca()
        if cert.purpose == "client":
            pem = ca.sign_client_csr(csr, name=cert.common_name, zone=cert.zone, days=cert.days)
        else:
            pem = ca.sign_server_csr(csr, sans=self.wanted_sans, days=cert.days, common_name=cert.common_name)
        steps: list[Step] = []
        if self.new_key:
            # Swapped in by the apply, so that a rollback restores the old key with the old certificate.
            steps.append(InstallKeyStep(src=cert.key_path + ".next", path=cert.key_path))
        steps.append(cert._write_step(pem + (ca.chain_pem() if cert.purpose == "server" else b"")))
        return steps


def split_leaf(pem: bytes) -> tuple[bytes, bytes]:
    """The first PEM block (the server's own certificate) and the rest (its chain)."""
    marker = b"-----END CERTIFICATE-----\n"
    end = pem.find(marker)
    if end < 0:
        return pem, b""
    return pem[: end + len(marker)], pem[end + len(marker):]


def _san_key(name: str) -> str:
    """How two names compare as SANs (case-insensitive DNS names, IPs as addresses)."""
    try:
        gn = parse_san(name)
    except PKIError:
        return f"?:{name}"
    return f"IP:{gn.value}" if not isinstance(gn.value, str) else f"DNS:{gn.value.lower()}"
