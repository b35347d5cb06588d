"""tests/security: hostile input, unit level (no Docker, no testbed)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The roles' verify modules are imported by some tests here; their CIS marks are berth's own.
    config.addinivalue_line("markers", "cis(*ids): CIS Docker Benchmark controls a verify check covers")
