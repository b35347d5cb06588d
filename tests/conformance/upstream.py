"""Facts read from upstream source, committed under ``upstream/`` (see ``extract.py`` for how they are made)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

UPSTREAM = Path(__file__).parent / "upstream"


@cache
def load(name: str) -> dict[str, Any]:
    return json.loads((UPSTREAM / name).read_text())


def runner_tables() -> dict[str, dict[str, str]]:
    """config.toml table -> {key: Go type} from gitlab-runner's config structs."""
    return load("gitlab_runner_config.json")["tables"]


def reloaded_keys() -> dict[str, list[str]]:
    """moby tag -> daemon.json keys a SIGHUP re-applies in that version."""
    return load("moby_reload.json")["reloaded_keys"]
