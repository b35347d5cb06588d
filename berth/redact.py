"""Keep secrets out of everything berth prints, logs, raises or writes as a report.

One mechanism for the console, ``--diff``, the JSON reports and JUnit. Values are masked by what they
are, not only by a list of known values:

- the secrets berth is told about (and every environment variable whose name looks secret);
- anything shaped like a GitLab token (every prefix gitlab-runner masks);
- the userinfo of a URL (``https://user:pass@host`` -> ``https://***@host``);
- the value of a key whose name looks secret, in TOML/INI (``SecretKey = "..."``), JSON and Python
  reprs (``"password": "..."``), and ``NAME=value`` entries (``environment = ["DEPLOY_PASSWORD=..."]``);
- in structured data (:func:`redact_data`, for JSON reports), every string under such a key.

Which names look secret (:func:`secret_name`): a name holding TOKEN, SECRET, PASSWORD, PASSWD, PASSPHRASE,
CREDENTIAL or APIKEY anywhere, or the word KEY or AUTH (``AccessKey``, ``api_key``, ``DOCKER_AUTH_CONFIG``),
case-insensitively, unless its last word says the value is a reference, not the secret: a path or file
(``key_file``, ``tls_key_file``, ``token_file``, ``CredentialsFile``), a variable name (``token_env``), a time
(``token_expires_at``), a type or a name. Those stay readable because an operator needs them and they give
nothing away. What this cannot see: a secret in a free-form string with no name next to it (a command
line), or in a TOML multi-line string; say what is secret with the ``secrets`` argument for those.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from berth.inventory import vault

MASK = "***"

# GitLab token prefixes, as gitlab-runner masks them in job logs (common/buildlogger/internal/tokensanitizer/
# token_masker.go, after https://docs.gitlab.com/security/tokens/ "Token prefixes"): personal access (glpat-),
# runner authentication (glrt-, and glrtr- for a runner registered with a registration token), OAuth app
# secret (gloas-), deploy (gldt-), CI/CD job (glcbt-), pipeline trigger (glptt-), feed (glft-), incoming
# mail (glimt-), agent for Kubernetes (glagent-), service account OAuth (glsoat-), feature flags client
# (glffct-), gltok-; and legacy runner registration tokens (GR1348941...). Tokens may hold dots: routable
# ones end in ".01.<length><crc>" (gitlabhq lib/authn/token_field/generator/routable_token.rb), masked
# with the rest. The prefix is kept so the operator still sees the kind.
_TOKEN_RE = re.compile(
    r"(glpat-|glrtr-|glrt-|gloas-|gldt-|glcbt-|glptt-|glft-|glimt-|glagent-|glsoat-|glffct-|gltok-|GR1348941)"
    r"[A-Za-z0-9_-]+(?:\.[0-9A-Za-z_-]+)*"
)

# Shorter strings would mask ordinary words and numbers.
_MIN_SECRET_LEN = 4

_SECRET_PARTS = ("token", "secret", "password", "passwd", "passphrase", "credential", "apikey")
_SECRET_WORDS = frozenset({"key", "auth", "pass", "pw", "pwd"})
# A last word that makes the value a reference to a secret (where it is, what it is called), not the secret.
_REFERENCE_WORDS = frozenset({
    "file", "files", "path", "paths", "dir", "directory", "env", "var", "variable", "at", "type", "types",
    "name", "names", "id", "ids", "sock", "socket", "days", "length", "count", "set", "url", "method", "fingerprint",
})

_URL_USERINFO_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"<>]+@")
# "NAME=value" inside quotes: an environment entry. The whole quoted rest is the value.
_ENV_ENTRY_RE = re.compile(
    r"""(?P<q>["'])(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>(?:\\.|(?!(?P=q))[^\\\n])*)(?P=q)"""
)
# name = value (TOML, INI, key=value on a command line) and "name": value (JSON, Python repr).
_ASSIGN_RE = re.compile(
    r"""(?P<lead>^|[\s{,(\[;&?])"""
    r"""(?:(?P<q>["'])(?P<qname>[A-Za-z_][\w.-]*)(?P=q)\s*[:=]|(?P<name>[A-Za-z_][\w.-]*)\s*=)\s*"""
    r"""(?P<value>"(?:\\.|[^"\\\n])*"|'[^'\n]*'|\[[^\]\n]*\]|\{[^}\n]*\}|[^\s,}\]'"#&;\[{]+)""",
    re.MULTILINE,
)


def _words(name: str) -> list[str]:
    """``SecretAccessKey`` -> [secret, access, key]; ``tls_key_file`` -> [tls, key, file]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def secret_name(name: str) -> bool:
    """Whether a key or variable called ``name`` holds a secret (the rule is in the module docstring)."""
    words = _words(name)
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    joined = "".join(words)
    return any(part in joined for part in _SECRET_PARTS) or any(w in _SECRET_WORDS for w in words)


# The shell's working directories: "pwd" here is "print working directory", not a password.
_SHELL_VARIABLES = frozenset({"PWD", "OLDPWD"})


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of this process's environment variables whose names look secret (GITLAB_TOKEN, ...)."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items()
            if k not in _SHELL_VARIABLES and secret_name(k) and len(v) >= _MIN_SECRET_LEN]


def _mask_quoted(value: str) -> str:
    """The value masked, its quotes or brackets kept (an array or inline table is masked whole)."""
    if len(value) >= 2 and ((value[0] in "\"'" and value[-1] == value[0]) or value[0] + value[-1] in ("[]", "{}")):
        return value[0] + MASK + value[-1]
    return MASK


def _mask_assignment(match: re.Match[str]) -> str:
    name = match.group("qname") or match.group("name")
    if not secret_name(name) or match.group("value") in ("true", "false", "null", "None", '""', "''"):
        return match.group(0)
    start = match.start("value") - match.start(0)
    return match.group(0)[:start] + _mask_quoted(match.group("value"))


def _mask_env_entry(match: re.Match[str]) -> str:
    if not secret_name(match.group("name")) or not match.group("value"):
        return match.group(0)
    q = match.group("q")
    return f"{q}{match.group('name')}={MASK}{q}"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with every known secret (4+ characters) and every secret-shaped value masked.

    Values decrypted from Ansible Vault are known secrets wherever redact is called, told or not.
    """
    variants: set[str] = set()
    for secret in (*secrets, *vault.revealed()):
        if secret and len(secret) >= _MIN_SECRET_LEN:
            variants.add(secret)
            variants.add(quote(secret, safe=""))  # as it appears in a form body or a URL
    # Longest first, so that a secret containing another one is masked whole.
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, MASK)
    text = _URL_USERINFO_RE.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _ENV_ENTRY_RE.sub(_mask_env_entry, text)
    text = _ASSIGN_RE.sub(_mask_assignment, text)
    return _TOKEN_RE.sub(lambda m: m.group(1) + MASK, text)


def redact_data(data: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A copy of JSON-like ``data`` for a report: strings under a secret-looking key masked whole, every
    other string through :func:`redact`. Keys, numbers and booleans are kept."""
    known = list(secrets)
    return _redact_value(data, known, hidden=False)


def _redact_value(value: Any, secrets: list[str | None], *, hidden: bool) -> Any:
    if isinstance(value, Mapping):
        return {k: _redact_value(v, secrets, hidden=hidden or (isinstance(k, str) and secret_name(k)))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v, secrets, hidden=hidden) for v in value]
    if isinstance(value, str):
        return (MASK if value else value) if hidden else redact(value, secrets)
    return value


def redact_xml(document: bytes, secrets: Iterable[str | None] = ()) -> bytes:
    """A copy of an XML report (JUnit) with every attribute value and text through :func:`redact`."""
    import xml.etree.ElementTree as ET

    known = list(secrets)
    root = ET.fromstring(document)
    for element in root.iter():
        element.attrib = {k: redact(v, known) for k, v in element.attrib.items()}
        if element.text:
            element.text = redact(element.text, known)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
