"""berth's inventory loader against ansible-core itself, inventory by inventory, host by host, variable by
variable.

Each folder under ``inventories/`` is one case; its ``case.yml`` lists the ``-i`` sources (files or
directories, relative to the case) and, optionally, ``vault_ids``: ``[id@]file`` items (a file or an
executable script, relative to the case), given to Ansible as ``--vault-id`` and to berth as
``--vault-password-file``; ``min_ansible``: the ansible-core version the case needs (berth renders
templates as 2.19 does: ``"{{ 5 }}"`` is 5 but ``"{{ '{}' }}"`` stays a string, where 2.17/2.18 would
``literal_eval`` it).

For every case, ansible-core (the ``dev`` extra pins the bench's range) is run as a subprocess:

- ``ansible-inventory --list`` gives the groups: every group Ansible lists (it drops empty ones) must have
  the same hosts, in the same order, and the same children in berth;
- ``ansible-inventory --host H``, for every host, gives the names of H's variables (as written: it neither
  renders templates nor decrypts vault values); berth must have exactly these names;
- one ``ansible all -m debug`` run renders them the way a play sees them, with ``query('vars', ...)``
  (templates rendered, vault values decrypted); berth's value must equal Ansible's for every variable.

Ignored: nothing berth exposes. ``ansible-inventory`` itself drops Ansible's internal names
(``inventory_file``, ``inventory_dir``, ``playbook_dir``...: constants.py INTERNAL_STATIC_VARS), which berth
does not define; magic names (``inventory_hostname``, ``groups``, ``hostvars``...) are not variables in either.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.inventory import vault
from berth.inventory.loader import Inventory

CASES = Path(__file__).parent / "inventories"
BIN = Path(sys.executable).parent
IGNORED: frozenset[str] = frozenset()  # see the module docstring: nothing to ignore today
_DEBUG_LINE = re.compile(r"^(\S+) \| SUCCESS => (\{.*\})$")


def cases() -> list[str]:
    return sorted(path.name for path in CASES.iterdir() if (path / "case.yml").is_file())


def _ansible(tool: str, case: Path, spec: dict[str, Any], *args: str, tmp: Path) -> str:
    executable = BIN / tool
    assert executable.exists(), f"{executable} is missing: pip install -e '.[dev]' (ansible-core is a test dependency)"
    command = [str(executable)]
    for source in spec["sources"]:
        command += ["-i", source]
    for item in spec.get("vault_ids", []):
        command += ["--vault-id", item]
    config = tmp / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(config),  # nothing from ~/.ansible.cfg or /etc/ansible
        "ANSIBLE_HOME": str(tmp / "home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "tmp"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",  # a source Ansible cannot parse fails the test
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
    }
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    result = subprocess.run([*command, *args], cwd=case, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{tool} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _rendered_by_ansible(case: Path, spec: dict[str, Any], names: dict[str, list[str]], tmp: Path) -> dict:
    """Each host's variables as a play sees them: ``query('vars', ...)`` renders and decrypts."""
    (tmp / "names.json").write_text(json.dumps({"berth_oracle_names": names}))
    expression = (
        "{{ dict(berth_oracle_names[inventory_hostname] | zip("
        "query('vars', *berth_oracle_names[inventory_hostname]))) }}"
    )
    out = _ansible("ansible", case, spec, "all", "-o", "-m", "debug", "-a", f"msg={expression}",
                   "-e", f"@{tmp / 'names.json'}", tmp=tmp)
    rendered = {}
    for line in out.splitlines():
        match = _DEBUG_LINE.match(line)
        if match:
            rendered[match[1]] = json.loads(match[2])["msg"]
    return rendered


@pytest.mark.parametrize("name", cases())
def test_inventory_matches_ansible(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES / name
    spec = yaml.safe_load((case / "case.yml").read_text())
    installed = tuple(int(part) for part in metadata.version("ansible-core").split(".")[:2])
    needed = tuple(int(part) for part in str(spec.get("min_ansible", "2.17")).split("."))
    # pyproject's dev extra pins ansible-core >= 2.19 (its template semantics): an older one is a setup error.
    assert installed >= needed, f"{name} needs ansible-core {needed}+, {installed} is installed: make setup"
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    monkeypatch.chdir(case)  # vault ids are relative to the case
    passwords = vault.load_passwords(spec.get("vault_ids", []))
    inv = Inventory.load([case / source for source in spec["sources"]], base_dir=case, vault_passwords=passwords)

    listing = json.loads(_ansible("ansible-inventory", case, spec, "--list", tmp=tmp_path))
    meta = listing.pop("_meta")
    # Groups: Ansible lists the non-empty ones; berth must agree on each one's hosts and children.
    for group, body in listing.items():
        assert group in inv.groups, f"{name}: berth has no group {group!r}"
        if group != "all":
            assert inv.groups[group].hosts == body.get("hosts", []), f"{name}: hosts of {group}"
        assert inv.groups[group].children == body.get("children", []), f"{name}: children of {group}"
    non_empty = {group for group, body in inv.groups.items() if body.hosts or body.children}
    assert non_empty == set(listing), f"{name}: groups"

    hosts = sorted({host for body in listing.values() for host in body.get("hosts", [])})
    assert sorted(inv.hosts) == hosts, f"{name}: hosts"
    names = {}
    for host in hosts:
        written = json.loads(_ansible("ansible-inventory", case, spec, "--host", host, tmp=tmp_path))
        assert set(written) == set(meta["hostvars"].get(host, {})), f"{name}: --host {host} and --list disagree"
        names[host] = sorted(set(written) - IGNORED)
        assert sorted(set(inv.hosts[host].vars) - IGNORED) == names[host], f"{name}: variable names of {host}"

    rendered = _rendered_by_ansible(case, spec, names, tmp_path)
    assert sorted(rendered) == hosts
    for host in hosts:
        for key in names[host]:
            assert inv.hosts[host].vars[key] == rendered[host][key], f"{name}: {host}: {key}"
            assert type(inv.hosts[host].vars[key]) is type(rendered[host][key]), f"{name}: {host}: type of {key}"


def test_the_corpus_is_big_enough() -> None:
    names = cases()
    assert len(names) >= 10
    sources = [
        path for name in names for path in (CASES / name).rglob("*") if path.is_file() and path.name != "case.yml"
    ]
    assert any(path.suffix == ".ini" for path in sources)
    assert any(path.suffix in (".yml", ".yaml") for path in sources)
