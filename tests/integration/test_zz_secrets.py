"""Runs last (file order): nothing berth printed in the whole session holds a token."""

from __future__ import annotations

import re

from tests.integration.test_gitlab_runner import MARKER


def test_no_token_in_any_captured_output(berth):
    assert berth.outputs, "the session ran berth"
    joined = "\n".join(berth.outputs)
    assert MARKER not in joined
    assert not re.search(r"glrt-(?!\*\*\*)[A-Za-z0-9_-]{6,}", joined)
    assert not re.search(r"glpat-(?!\*\*\*)[A-Za-z0-9_-]{6,}", joined)


def test_no_registry_password_in_any_captured_output(berth, testbed):
    password = testbed.registry_up()["BERTH_REGISTRY_PASSWORD"]
    assert len(password) >= 16
    assert all(password not in out for out in berth.outputs)
