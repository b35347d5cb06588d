"""Uploads into a fresh private directory (#11): .deb files never go to a predictable /tmp name; the
directory is berth's own (random name, 0700, made by the SFTP client), the agent installs only from it,
and removes it when the apply ends, also on failure."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from berth.engine.plan import make_plan
from berth.engine.resources import Packages
from berth.remote import agent


def plan_uploading(deb: Path):
    found = {"packages": {"gitlab-runner": None}, "files": {}, "services": {}, "facts": {}}
    return make_plan([Packages(["gitlab-runner"], debs=[deb])], [], found)


def test_uploads_go_into_an_unpredictable_directory_of_their_own(tmp_path: Path) -> None:
    deb = tmp_path / "gitlab-runner.deb"
    deb.write_bytes(b"!<arch>\n")
    first, second = plan_uploading(deb), plan_uploading(deb)
    (_, remote), = first.uploads
    assert not remote.startswith("/tmp/")
    assert os.path.dirname(remote) == first.upload_dir and first.upload_dir.startswith("/var/tmp/berth-")
    assert len(os.path.basename(first.upload_dir)) >= len("berth-") + 32          # 128 random bits
    assert first.upload_dir != second.upload_dir
    (step,) = first.steps
    assert step.debs == (remote,) and step.upload_dir == first.upload_dir


@pytest.fixture
def upload_dir():
    path = tempfile.mkdtemp(prefix="berth-", dir="/var/tmp")     # as SFTP mkdir(0700) makes it
    yield path
    if os.path.islink(path):
        os.unlink(path)
    elif os.path.isdir(path):
        import shutil

        shutil.rmtree(path)


def test_the_directory_is_removed_when_the_apply_fails(upload_dir: str) -> None:
    deb = Path(upload_dir) / "0123.deb"
    deb.write_bytes(b"!<arch>\n")
    answer = agent.apply({"steps": [{"op": "command", "cmd": "exit 3", "name": "earlier step"},
                                    {"op": "packages", "install": [], "debs": [str(deb)], "upload_dir": upload_dir}],
                          "handlers": [], "upload_dir": upload_dir})
    assert answer["error"].startswith("earlier step")
    assert not os.path.exists(upload_dir)


@pytest.mark.parametrize("spoil", ["open to others", "symlink", "outside"])
def test_packages_are_installed_only_from_the_private_directory(upload_dir: str, tmp_path: Path, spoil: str) -> None:
    deb = Path(upload_dir) / "0123.deb"
    deb.write_bytes(b"!<arch>\n")
    if spoil == "open to others":
        os.chmod(upload_dir, 0o777)
    elif spoil == "symlink":                     # someone swapped the directory for a link to theirs
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        (theirs / "0123.deb").write_bytes(b"evil")
        os.rename(upload_dir, str(tmp_path / "moved"))
        os.symlink(theirs, upload_dir)
    elif spoil == "outside":
        deb = tmp_path / "0123.deb"
        deb.write_bytes(b"evil")
    answer = agent.apply({"steps": [{"op": "packages", "install": [], "debs": [str(deb)], "upload_dir": upload_dir,
                                     "cache_valid_time": 10**9}],
                          "handlers": [], "upload_dir": upload_dir})
    assert answer["error"] and "nothing installed" in answer["error"]
    if spoil == "symlink":
        assert (tmp_path / "theirs" / "0123.deb").read_bytes() == b"evil"     # never followed for removal
