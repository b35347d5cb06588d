"""Compliance verification: the pytest plugin and the fleet-wide verify run."""
