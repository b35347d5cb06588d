"""The controller's atomic write (#11): a unique temporary name, no symlink followed, nothing left on error."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from berth.files import write_atomic


def test_no_symlink_is_followed_neither_at_the_old_fixed_temp_name_nor_at_the_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / ".report.json.tmp").symlink_to(victim)     # the name the old code always used
    target = tmp_path / "report.json"
    target.symlink_to(victim)
    write_atomic(target, b"{}\n", mode=0o600)
    assert victim.read_text() == "keep me"
    assert not target.is_symlink() and target.read_bytes() == b"{}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_nothing_is_left_behind_on_error(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes", mode=0o600)  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == ["report.json"] and target.read_bytes() == b"old"
