"""Keep secrets out of everything berth prints, logs or raises.

berth routes its output through :func:`redact`. Besides the secrets it is told about, it masks anything
shaped like a GitLab token, so that a token berth never saw (one a server echoed back, or one read from a
file on the host) is masked too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

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


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with every secret (of 4+ characters) and every GitLab-token-shaped string masked."""
    variants: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LEN:
            variants.add(secret)
            variants.add(quote(secret, safe=""))  # as it appears in a form body or a URL
    # Longest first, so that a secret containing another one is masked whole.
    for variant in sorted(variants, key=len, reverse=True):
        text = text.replace(variant, MASK)
    return _TOKEN_RE.sub(lambda m: m.group(1) + MASK, text)
