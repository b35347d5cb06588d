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

# GitLab token prefixes: runner authentication (glrt-), runner registration (glrtr-), personal access
# (glpat-), and legacy runner registration tokens (GR1348941...). The prefix is kept so the operator
# still sees which kind of token was there.
_TOKEN_RE = re.compile(r"(glrtr-|glrt-|glpat-|GR1348941)[A-Za-z0-9_-]+")

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
