"""Fixtures of the unit tests."""

from tests.unit.localhost import local  # noqa: F401  (a host played by this machine: berth.transport.local)
