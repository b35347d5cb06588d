"""GitLab token kinds as gitlab-runner tells them apart, and as berth must mask them.

- network/gitlab.go ``TokenIsCreatedRunnerToken``: a token starting with ``glrt-`` belongs to a runner that
  several hosts may share, each a "runner manager" told apart by system ID. `gitlab-runner unregister`
  (commands/unregister.go) then removes only this host's manager (``DELETE /runners/managers``); every
  other token kind unregisters the runner itself (``DELETE /runners``).
- common/buildlogger/.../token_masker.go: the prefixes gitlab-runner masks in job logs. berth prints
  diffs and errors that may hold any of them, so it masks at least the same set.
"""

from __future__ import annotations

import pytest

from berth.gitlab.api import is_created_runner_token, is_registration_token
from berth.redact import redact
from tests.conformance.upstream import load

FACTS = load("gitlab_runner_tokens.json")
BODY = "Zx9_q-K3vT8mWb2LpR4s"


@pytest.mark.parametrize("prefix", FACTS["masked_token_prefixes"])
def test_every_prefix_gitlab_runner_masks_is_masked_whole(prefix: str) -> None:
    token = f"{prefix}{BODY}.01.a1b2c3d4"          # routable tokens carry dotted parts
    shown = redact(f"token = \"{token}\" (from {prefix.rstrip('-')})")
    assert BODY not in shown and "a1b2c3d4" not in shown, shown


def test_unregister_picks_the_endpoint_gitlab_runner_picks() -> None:
    created = FACTS["created_runner_token_prefix"]
    assert is_created_runner_token(f"{created}{BODY}")           # -> DELETE /runners/managers
    for other in ("glrtr-", "GR1348941", "glpat-"):
        assert not is_created_runner_token(f"{other}{BODY}")     # -> DELETE /runners


def test_only_legacy_registration_tokens_register_with_post_runners() -> None:
    """glrt- and glrtr- are authentication tokens of existing runners: they go to POST /runners/verify."""
    assert is_registration_token(f"GR1348941{BODY}")
    assert not is_registration_token(f"{FACTS['created_runner_token_prefix']}{BODY}")
    assert not is_registration_token(f"glrtr-{BODY}")
