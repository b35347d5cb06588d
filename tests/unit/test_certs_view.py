"""certs.status reads in a 100-column terminal: one line per daemon, expiry in human units."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from berth.cli import app, certs_view

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("not_after", "shown"), [
    ("2027-12-01T12:00:00+00:00", "2027-12-01, in 365 days"),
    ("2026-12-02T13:00:00+00:00", "2026-12-02, in 1 day"),
    ("2026-12-01T18:00:00+00:00", "2026-12-01, in 6 h"),
    ("2026-11-20T12:00:00+00:00", "2026-11-20, 11 days ago (expired)"),
    ("2026-12-01T11:00:00", "2026-12-01, today (expired)"),
    (None, "-"),
])
def test_expiry_in_human_units(not_after: str | None, shown: str) -> None:
    assert certs_view.expiry(not_after, now=NOW) == shown


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(app, "console", Console(file=out, width=100, highlight=False))
    monkeypatch.setattr(certs_view, "console", app.console)
    return out


def test_served_rows_fit_100_columns_one_line_each(screen: io.StringIO) -> None:
    row = {"host": "runner-eu-west-17", "endpoint": "tcp://172.30.0.17:2376", "subject": "runner-eu-west-17",
           "sans": ["runner-eu-west-17", "runner-eu-west-17.ci.example.com", "172.30.0.17"],
           "not_after": "2027-12-01T12:00:00+00:00", "days_left": 365.0, "issuer": "berth fleet CA",
           "issued_by_berth": "current CA", "ping": "OK", "error": None}
    certs_view.print_served([row, {**row, "host": "r2", "issued_by_berth": "no", "issuer": "Other CA",
                                   "ping": None, "error": "connection refused"}], title="berth certs.status", now=NOW)
    lines = screen.getvalue().splitlines()
    assert max(map(len, lines)) <= 100
    healthy = [line for line in lines if "runner-eu-west-17" in line]
    assert len(healthy) == 1, screen.getvalue()       # a healthy daemon is one line: nothing wrapped
    assert "172.30.0.17:2376" in healthy[0] and "2027-12-01, in 365 days" in healthy[0]
    assert healthy[0].rstrip().endswith(" ok")
    assert "not berth" in screen.getvalue() and "refused" in screen.getvalue()


def test_client_rows_say_valid_revoked_or_expired(screen: io.StringIO) -> None:
    rows = [{"name": "ci", "zone": "fleet", "serial": 1, "not_after": "2027-01-01T00:00:00+00:00", "days_left": 30.0,
             "revoked": "-", "fingerprint": "ab" * 8},
            {"name": "old", "zone": "host-r1", "serial": 2, "not_after": "2026-01-01T00:00:00+00:00",
             "days_left": -300.0, "revoked": "-", "fingerprint": "cd" * 8},
            {"name": "gone", "zone": "fleet", "serial": 3, "not_after": "2027-01-01T00:00:00+00:00",
             "days_left": 30.0, "revoked": "2026-11-30", "fingerprint": "ef" * 8}]
    certs_view.print_clients(rows, title="berth certs.status --clients", now=NOW)
    text = screen.getvalue()
    assert max(map(len, text.splitlines())) <= 100
    assert " valid " in text and " expired " in text and "revoked 2026-11-30" in text
