"""`certs.status` for people: one short row per daemon or client, dates in human units, fits 100 columns.

The rows given here are the ``--json`` rows (every detail: subject, SANs, serials, exact expiry); the
table keeps what an operator scans for: who, where, until when, issued by whom, and what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.table import Table

from berth.cli.app import console, safe


def expiry(not_after: str | None, *, now: datetime | None = None) -> str:
    """'2027-12-01, in 365 days', '2026-11-20, 11 days ago (expired)', or '-'."""
    if not not_after:
        return "-"
    when = datetime.fromisoformat(not_after)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    days = (when - (now or datetime.now(UTC))).total_seconds() / 86400
    date = when.date().isoformat()
    if days >= 1:
        return f"{date}, in {int(days)} day{'s' if int(days) != 1 else ''}"
    if days >= 0:
        return f"{date}, in {max(1, round(days * 24))} h"
    ago = int(-days)
    return f"{date}, {ago} day{'s' if ago != 1 else ''} ago (expired)" if ago else f"{date}, today (expired)"


def _table(title: str, *columns: str, folding: tuple[str, ...]) -> Table:
    """Columns that identify a row never wrap; only the free-text ones (``folding``) may."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column not in folding)
    return table


def print_served(rows: Sequence[dict[str, Any]], *, title: str, now: datetime | None = None) -> None:
    """What each daemon serves on its TLS port."""
    table = _table(title, "host", "endpoint", "expires", "issued by", "state", folding=("issued by", "state"))
    for row in rows:
        issuer = row.get("issued_by_berth") or "-"
        if issuer == "no":
            issuer = f"not berth ({row.get('issuer') or '?'})"
        ping = row.get("ping")
        state = row.get("error") or ("ok" if ping == "OK" else f"/_ping: {ping}" if ping else "no answer")
        endpoint = (row.get("endpoint") or "-").removeprefix("tcp://")
        table.add_row(*map(safe, (row["host"], endpoint, expiry(row.get("not_after"), now=now), issuer, state)))
    console.print(table)


def print_clients(rows: Sequence[dict[str, Any]], *, title: str, now: datetime | None = None) -> None:
    """The client certificates berth issued."""
    table = _table(title, "name", "zone", "expires", "state", "fingerprint", folding=("state",))
    for row in rows:
        if row.get("revoked", "-") != "-":
            state = f"revoked {row['revoked']}"
        else:
            state = "valid" if float(row.get("days_left") or 0) > 0 else "expired"
        table.add_row(*map(safe, (row["name"], row["zone"], expiry(row.get("not_after"), now=now), state,
                                  row.get("fingerprint") or "-")))
    console.print(table)
