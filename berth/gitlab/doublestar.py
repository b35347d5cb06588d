"""Glob matching as github.com/bmatcuk/doublestar/v4 ``Match`` does it.

gitlab-runner matches ``allowed_privileged_services`` and ``allowed_privileged_images`` with it against the
image name exactly as the job wrote it (executors/docker/docker.go isInAllowedPrivilegedImages), so berth
must match the same way to know which services a runner really makes privileged.
"""

from __future__ import annotations

import re


def match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern`` as github.com/bmatcuk/doublestar/v4 Match does.

    gitlab-runner matches allowed_privileged_services/_images with it (executors/docker/docker.go
    isInAllowedPrivilegedImages): ``*`` and ``?`` stop at ``/``, ``**`` as a whole path element spans
    elements, ``[...]``/``[^...]``/``[!...]`` classes, ``{a,b}`` alternatives, ``\\`` escapes. A malformed
    pattern matches nothing (the runner ignores Match's error).
    """
    regex = _doublestar_regex(pattern)
    return regex is not None and re.fullmatch(regex, name, re.DOTALL) is not None


def _doublestar_regex(pattern: str) -> str | None:
    out, depth, i = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 == len(pattern):
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            whole = pattern.startswith("**", i) and (i == 0 or pattern[i - 1] == "/")
            if whole and i + 2 == len(pattern):
                out.append(".*")
                i += 2
                continue
            if whole and pattern[i + 2] == "/":
                out.append("(?:.*/)?")
                i += 3
                continue
            while i < len(pattern) and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            close = pattern.find("]", i + 2)
            if close < 0:
                return None
            body = pattern[i + 1:close]
            negate = body[:1] in ("^", "!")
            body = body[1:] if negate else body
            chars = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body)
            out.append(f"[^/{chars}]" if negate else f"(?!/)[{chars}]")
            i = close + 1
            continue
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    return None if depth else "".join(out)
