"""The host-side loader (berth/remote/loader.py): a script compiled once is kept in a root-only folder and loaded
from there next time; a folder others can write to is never read. The real bootstrap command, under sh."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
from pathlib import Path

from berth.transport.bootstrap import HostScript, command

ECHO = "import sys\n\ndef main(stream):\n    sys.stdout.write('%s ' + stream.readline().decode())\n"


def run(script: HostScript, cache: Path) -> str:
    done = subprocess.run(["sh", "-c", command(script.module_name, str(cache))], input=script.payload('{"a": 1}'),
                          capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def echo(tmp_path: Path, word: str) -> HostScript:
    path = tmp_path / "echo.py"
    path.write_text(ECHO % word)
    return HostScript(path, "berth_echo")


def planted_code(word: str) -> bytes:
    """What a cache file would hold for a script that says ``word``."""
    return marshal.dumps(compile(ECHO % word, "planted", "exec"))


def test_a_compiled_script_is_kept_for_root_and_loaded_from_there_next_time(tmp_path) -> None:
    cache = tmp_path / "run" / "berth"
    assert run(echo(tmp_path, "compiled"), cache) == 'compiled {"a": 1}\n'
    kept = sorted(cache.glob("berth_echo-*.code")) if cache.exists() else []
    if os.geteuid() != 0:
        assert kept == []           # only root's agent keeps code, in root's folder
        return
    (code,) = kept
    assert code.name.endswith(f"-{sys.implementation.cache_tag}.code")
    assert (code.stat().st_mode & 0o777, cache.stat().st_mode & 0o777) == (0o600, 0o700)
    code.write_bytes(planted_code("cached"))           # what the next run loads: the cached code, not compiled
    assert run(echo(tmp_path, "compiled"), cache) == 'cached {"a": 1}\n'
    # Another source is another name; the older version is dropped, and what a run that died left too.
    (cache / f"{code.name}.4242").write_bytes(b"half written")
    assert run(echo(tmp_path, "changed"), cache) == 'changed {"a": 1}\n'
    (newer,) = cache.iterdir()
    assert newer != code and newer.name.endswith(".code")


def test_a_cache_folder_that_others_can_write_to_is_never_read(tmp_path) -> None:
    script = echo(tmp_path, "compiled")
    trusted = tmp_path / "run" / "berth"
    run(script, trusted)                                  # root's run names the file it keeps for this source
    names = [p.name for p in trusted.glob("*.code")] if trusted.exists() else ["berth_echo-any.code"]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    for name in names:
        (shared / name).write_bytes(planted_code("planted"))
    assert run(script, shared) == 'compiled {"a": 1}\n'
    assert sorted(p.name for p in shared.iterdir()) == sorted(names)     # nothing kept there either


def test_without_a_cache_folder_the_script_is_compiled_every_time(tmp_path) -> None:
    script = echo(tmp_path, "compiled")
    done = subprocess.run(["sh", "-c", script.command], input=script.payload("{}"), capture_output=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.stdout == b"compiled {}\n" and script.command.split()[-1] == "-"
