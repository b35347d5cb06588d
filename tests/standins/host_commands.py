"""Stand-ins for the commands berth's agent runs on a host, for the engine's unit tests (berth.transport.local).

``install(bin_dir, root)`` writes small executables into ``bin_dir`` (systemctl, dpkg-query, dpkg, apt-get,
ip, journalctl, dockerd) that run this file. Each records its call (``calls.jsonl`` under the state
directory) and keeps the host's state in files there: units (``units/NAME.json``), packages
(``packages.json``). Only the output the agent parses is reproduced:
- systemctl show -p A,B [--value] UNIT: ``Key=value`` lines, or bare values with --value (systemctl(1));
  a unit it does not know is LoadState=not-found, ActiveState=inactive, as systemd reports one.
- dpkg-query -W -f '${Package}\\t${db:Status-Abbrev}\\t${Version}\\n' NAMES: one line per installed package
  (dpkg-query(1)); unknown names go to stderr with exit 1.
- ip -j addr show: iproute2's JSON (ifname, addr_info[].local, scope).
- dockerd --version: "Docker version X, build Y"; --validate --config-file F: "configuration OK" or the
  JSON error with exit 1 (moby cmd/dockerd/docker.go).
A unit can be made to fail its start: ``units/NAME.json`` {"fails_if": [path, text]} fails the start while
the file at ``path`` (under root) contains ``text``, as dockerd refuses a daemon.json it cannot load.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

COMMANDS = ("systemctl", "dpkg-query", "dpkg", "apt-get", "ip", "journalctl", "dockerd")
DOCKERD_VERSION = "Docker version 20.10.24+dfsg1, build 297e128"


def install(bin_dir: Path, root: Path) -> Path:
    """Put the stand-ins into ``bin_dir``; returns their state directory (calls, units, packages)."""
    state = bin_dir.parent / "standin-state"
    (state / "units").mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        script = bin_dir / name
        # -S -E: no site packages, no PYTHON* variables; the stand-ins need the standard library only.
        script.write_text(f'#!/bin/sh\nexec {sys.executable} -S -E {Path(__file__).resolve()} {name} '
                          f'"{state}" "{root}" "$@"\n')
        script.chmod(0o755)
    # The agent's python3: this interpreter, not whatever shim PATH finds first.
    (bin_dir / "python3").symlink_to(sys.executable)
    return state


def calls(state: Path) -> list[list[str]]:
    """Every command the stand-ins ran, in order, as argv lists."""
    log = state / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def unit(state: Path, name: str) -> dict:
    path = state / "units" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def set_unit(state: Path, name: str, **values: object) -> None:
    path = state / "units" / f"{name}.json"
    path.write_text(json.dumps({**unit(state, name), **values}))


def packages(state: Path) -> dict[str, str]:
    path = state / "packages.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _set_packages(state: Path, installed: dict[str, str]) -> None:
    (state / "packages.json").write_text(json.dumps(installed))


# -- the commands --------------------------------------------------------------------------------------
def systemctl(state: Path, root: Path, args: list[str]) -> int:
    words = [a for a in args if not a.startswith("-")]
    verb, names = (words[0], words[1:]) if words else ("", [])
    if verb == "show":
        props = args[args.index("-p") + 1].split(",") if "-p" in args else []
        name = words[-1]
        known = unit(state, name)
        values = {"LoadState": "loaded" if known else "not-found",
                  "ActiveState": known.get("active", "inactive"), "UnitFileState": known.get("enabled", "")}
        for prop in props:
            print(values.get(prop, "") if "--value" in args else f"{prop}={values.get(prop, '')}")
        return 0
    if verb in ("daemon-reload", "reset-failed", "kill"):
        return 0
    for name in names:
        if verb in ("enable", "disable"):
            set_unit(state, name, enabled="enabled" if verb == "enable" else "disabled")
        elif verb == "stop":
            set_unit(state, name, active="inactive")
        elif verb in ("start", "restart", "reload"):
            broken = _broken(root, unit(state, name).get("fails_if"))
            set_unit(state, name, active="failed" if broken else "active")
            if broken:
                print(f"Job for {name}.service failed because the control process exited with error code.",
                      file=sys.stderr)
                return 1
    return 0


def _broken(root: Path, rule: list[str] | None) -> bool:
    if not rule:
        return False
    path = root / rule[0].lstrip("/")
    return path.exists() and rule[1] in path.read_text()


def dpkg_query(state: Path, root: Path, args: list[str]) -> int:
    names = [a for a in args[args.index("-f") + 2:]] if "-f" in args else []
    installed = packages(state)
    missing = 0
    for name in names:
        if name in installed:
            print(f"{name}\tii \t{installed[name]}")
        else:
            print(f"dpkg-query: no packages found matching {name}", file=sys.stderr)
            missing = 1
    return missing


def apt_get(state: Path, root: Path, args: list[str]) -> int:
    if args[:1] == ["update"] or "update" in args[:2]:
        lists = root / "var/lib/apt/lists"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("")
        return 0
    installed = packages(state)
    words = [a for a in args[1:] if not a.startswith("-") and "::" not in a and a not in ("install",)]
    for word in words:
        if word.endswith(".deb"):
            installed[Path(word).stem] = "1.0-deb"
        elif word.endswith("-"):
            installed.pop(word[:-1], None)
        else:
            name, _, version = word.partition("=")
            installed[name] = version or "1.0-standin"
    _set_packages(state, installed)
    return 0


def dpkg(state: Path, root: Path, args: list[str]) -> int:
    print("amd64")
    return 0


def ip(state: Path, root: Path, args: list[str]) -> int:
    print(json.dumps([{"ifname": "lo", "addr_info": [{"local": "127.0.0.1", "scope": "host"}]},
                      {"ifname": "eth0", "addr_info": [{"local": "192.0.2.10", "scope": "global"}]}]))
    return 0


def journalctl(state: Path, root: Path, args: list[str]) -> int:
    name = args[args.index("-u") + 1] if "-u" in args else ""
    if unit(state, name).get("active") == "failed":
        print(f"{name}: unable to configure the daemon: the stand-in's configuration is broken")
    return 0


def dockerd(state: Path, root: Path, args: list[str]) -> int:
    if "--version" in args:
        print(os.environ.get("STANDIN_DOCKERD_VERSION", DOCKERD_VERSION))
        return 0
    if "--validate" in args:
        try:
            json.loads(Path(args[args.index("--config-file") + 1]).read_text())
        except ValueError as exc:
            print(f"unable to configure the Docker daemon with file: {exc}")
            return 1
        print("configuration OK")
        return 0
    return 1


def main(argv: list[str]) -> int:
    name, state, root, args = argv[0], Path(argv[1]), Path(argv[2]), argv[3:]
    with open(state / "calls.jsonl", "a") as log:
        log.write(json.dumps([name, *args]) + "\n")
    return {"systemctl": systemctl, "dpkg-query": dpkg_query, "dpkg": dpkg, "apt-get": apt_get, "ip": ip,
            "journalctl": journalctl, "dockerd": dockerd}[name](state, root, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
