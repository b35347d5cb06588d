"""Errors that berth turns into messages and exit codes, never into tracebacks.

Exit codes follow ansible-playbook so that scripts written for it keep working;
``CHANGES_PENDING`` is berth's own, for ``--check`` runs that found drift.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    HOST_FAILED = 2
    HOST_UNREACHABLE = 3
    BAD_INVENTORY = 4
    BAD_OPTIONS = 5
    CHANGES_PENDING = 6
    INTERRUPTED = 99


class BerthError(Exception):
    """An error with a message meant for the operator and an exit code."""

    exit_code: ExitCode = ExitCode.ERROR


class InventoryError(BerthError):
    """The inventory, a vars file or a variable value is wrong. The message names the file and line."""

    exit_code = ExitCode.BAD_INVENTORY


class ConfigError(BerthError):
    """A role's or berth's configuration is contradictory or incomplete."""

    exit_code = ExitCode.BAD_INVENTORY


class OptionError(BerthError):
    """A command-line option is wrong."""

    exit_code = ExitCode.BAD_OPTIONS


class PKIError(BerthError):
    """The CA is missing, locked, or would be overwritten."""


class HostUnreachable(BerthError):
    """SSH could not reach or authenticate a host (including a changed host key)."""

    exit_code = ExitCode.HOST_UNREACHABLE


class HostFailed(BerthError):
    """A host was reached but converging it failed."""

    exit_code = ExitCode.HOST_FAILED
