"""What a no-op probe costs the host: dockerd's version is read once per dockerd binary (berth/agent.py).

The fake dockerd is a shell script that counts its runs; the cache lives where root alone can write.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from berth.remote import agent


@pytest.fixture
def dockerd(tmp_path: Path, monkeypatch) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the version cache is root's: run the unit tests as root (make test does)")
    script = tmp_path / "bin" / "dockerd"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\necho run >> {tmp_path}/runs\necho 'Docker version 27.5.1, build 9f9e405'\n")
    script.chmod(0o755)
    cache = tmp_path / "run-berth"
    monkeypatch.setattr(agent, "_which", lambda name: str(script))
    monkeypatch.setattr(agent, "VERSION_CACHE", str(cache / "dockerd-version.json"))
    return script


def runs(script: Path) -> int:
    path = script.parent.parent / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_the_version_is_read_once_per_binary(dockerd: Path) -> None:
    assert agent.dockerd_version() == "Docker version 27.5.1, build 9f9e405"
    assert agent.dockerd_version() == "Docker version 27.5.1, build 9f9e405"
    assert runs(dockerd) == 1
    cache = Path(agent.VERSION_CACHE)
    assert (cache.parent.stat().st_mode & 0o777, cache.stat().st_mode & 0o777) == (0o700, 0o600)


def test_a_replaced_binary_is_asked_again(dockerd: Path) -> None:
    agent.dockerd_version()
    dockerd.write_text(dockerd.read_text().replace("27.5.1", "28.0.0"))
    assert agent.dockerd_version() == "Docker version 28.0.0, build 9f9e405"
    assert runs(dockerd) == 2


def test_a_cache_others_could_write_is_not_believed(dockerd: Path) -> None:
    agent.dockerd_version()
    cache = Path(agent.VERSION_CACHE)
    cache.write_text(cache.read_text().replace("27.5.1", "99.0.0"))
    cache.parent.chmod(0o777)
    assert agent.dockerd_version() == "Docker version 27.5.1, build 9f9e405"
    assert runs(dockerd) == 2


def test_services_are_read_in_one_systemctl(monkeypatch) -> None:
    calls: list[list[str]] = []
    blocks = {"docker": "LoadState=loaded\nActiveState=active\nUnitFileState=enabled",
              "nosuch": "LoadState=not-found\nActiveState=inactive\nUnitFileState=",
              "containerd": "LoadState=loaded\nActiveState=inactive\nUnitFileState=disabled"}

    def sh(argv, **kw):
        calls.append(argv)
        return 0, "\n\n".join(blocks[name] for name in argv[4:]) + "\n"

    monkeypatch.setattr(agent, "sh", sh)
    found = agent.services(["docker", "nosuch", "containerd"])
    assert len(calls) == 1
    assert found == {"docker": {"active": True, "enabled": True, "loaded": True},
                     "nosuch": {"active": False, "enabled": False, "loaded": False},
                     "containerd": {"active": False, "enabled": False, "loaded": True}}


def test_a_probe_and_an_apply_import_only_what_they_use(tmp_path: Path) -> None:
    # Each module the agent imports is host CPU on every run (json with re 5 ms, subprocess 5 ms, tempfile 3 ms,
    # hashlib's libcrypto 6-9 ms): a fresh interpreter, as the host's (-I -S), runs a probe that runs commands,
    # then an apply that writes a file and runs a handler, and lists the modules loaded by then.
    target = tmp_path / "etc" / "x.conf"
    script = f"""
import sys
sys.path.insert(0, {str(Path(agent.__file__).parent)!r})
import agent
found = agent.probe({{"files": [{{"path": {str(target)!r}, "content": True}}], "packages": ["bash"],
                      "services": ["berth-no-such-unit"]}})
after_probe = set(sys.modules)
answer = agent.apply({{"steps": [{{"op": "write", "path": {str(target)!r}, "content": "eAo=", "mode": 420,
                                  "owner": "root", "group": "root"}}],
                      "handlers": [{{"name": "h", "cmd": "echo handled > {target}.h", "disruptive": False}}]}})
print(agent.json.dumps([answer["error"], found["facts"]["hostname"], sorted(after_probe), sorted(sys.modules)]))
"""
    import json
    import socket
    import subprocess

    target.parent.mkdir()
    done = subprocess.run(["python3", "-I", "-S", "-c", script], capture_output=True, timeout=60, text=True)
    assert done.returncode == 0, done.stderr
    error, hostname, after_probe, after_apply = json.loads(done.stdout)
    assert error is None and target.read_bytes() == b"x\n" and (tmp_path / "etc" / "x.conf.h").exists()
    assert hostname == socket.gethostname()
    never = {"tempfile", "urllib.parse", "base64", "hashlib", "_hashlib", "shutil", "ipaddress", "json", "re",
             "subprocess", "socket", "signal", "contextlib", "enum", "threading", "selectors"}
    assert never & set(after_probe) == set() and never & set(after_apply) == set()
