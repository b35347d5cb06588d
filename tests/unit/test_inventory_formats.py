"""INI inventories, templates, Ansible Vault and the JSON output: behaviour and errors (file and line).

Agreement with Ansible itself is tests/conformance/test_ansible_inventory.py; these pin berth's messages.
"""

from __future__ import annotations

import io
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from invoke import MockContext
from invoke.exceptions import Exit

from berth.errors import InventoryError
from berth.inventory import vault
from berth.inventory.layers import Origin
from berth.inventory.listing import host_json, list_json
from berth.inventory.loader import Inventory
from tests.unit.test_inventory import write

PASSWORD = "unit-test-password"


def load(root: Path, files: dict[str, str], source: str = "hosts.ini", **kwargs: Any) -> Inventory:
    write(root, files)
    kwargs.setdefault("vault_passwords", [])
    return Inventory.load(root / source, base_dir=root, **kwargs)


def error(root: Path, files: dict[str, str], source: str = "hosts.ini", **kwargs: Any) -> str:
    with pytest.raises(InventoryError) as info:
        load(root, files, source, **kwargs)
    return str(info.value)


def passwords(root: Path, text: str = PASSWORD, vault_id: str = "") -> list[vault.Password]:
    path = root / f"pass-{vault_id or 'default'}.txt"
    path.write_text(text + "\n")
    return vault.load_passwords([f"{vault_id}@{path}" if vault_id else str(path)], env={})


def vaulted(value: str, password: str = PASSWORD, vault_id: str = "", indent: int = 6) -> str:
    lines = vault.encrypt(value, password.encode(), vault_id=vault_id).splitlines()
    return "!vault |\n" + "\n".join(" " * indent + line for line in lines)


# -- INI ----------------------------------------------------------------------------------------------


def test_ini_types_as_ansible_reads_them(tmp_path: Path) -> None:
    inv = load(tmp_path, {"hosts.ini": """
        h1 n=22 yes=True word=true q="'quoted'" l="[1, 2]" spaced="a b"
        [g]
        h1:2222
        [g:vars]
        v=42
        s = text with spaces
        """})
    host = inv.hosts["h1"]
    assert host.vars == {"n": 22, "yes": True, "word": "true", "q": "quoted", "l": [1, 2], "spaced": "a b",
                         "ansible_port": 2222, "v": 42, "s": "text with spaces"}
    assert host.origins["s"] == Origin("hosts.ini", 6)
    assert host.groups == ["all", "g"]  # in a group: no longer "ungrouped"


def test_ini_group_priority_is_a_group_property(tmp_path: Path) -> None:
    inv = load(tmp_path, {"hosts.ini": """
        [a]
        h1
        [b]
        h1
        [a:vars]
        x=a
        ansible_group_priority=5
        [b:vars]
        x=b
        """})
    assert inv.hosts["h1"].groups == ["all", "b", "a"]
    assert inv.hosts["h1"].vars == {"x": "a"}
    assert inv.groups["a"].priority == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[g:bogus]\nh1\n",
         "hosts.ini:1: section [g:bogus] has unknown type 'bogus' (expected hosts, vars or children)"),
        ("[g]\nh1 novalue\n", "hosts.ini:2: expected key=value after the host name, got 'novalue'"),
        ("[g]\nh1\n[g:vars]\njust words\n", "hosts.ini:4: expected key=value in [g:vars], got 'just words'"),
        ("[g]\nh1\n[ghost:vars]\nx=1\n",
         "hosts.ini:3: section [ghost:vars] is for group 'ghost', which no section defines"),
        ("[g]\nh1\n[g:children]\nghost\n",
         "hosts.ini:4: section [g:children] names group 'ghost', which no section defines "
         "(add a [ghost] section, even an empty one)"),
        ("[g]\nh1 x='unclosed\n", "hosts.ini:2: cannot split host line \"h1 x='unclosed\": No closing quotation"),
        ("[g ]\nh1\n", "hosts.ini:1: invalid section '[g ]': no spaces or other characters allowed in a section name"),
        ("---\n", "hosts.ini:1: host '---' is not allowed: this looks like a YAML file (name it .yml)"),
        ("[g]\nweb[3:1]\n", "hosts.ini:2: bad host range 'web[3:1]': 3 is after 1"),
    ],
)
def test_ini_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "hosts.ini").write_text(text)
    assert error(tmp_path, {}) == message


def test_ini_children_before_their_groups(tmp_path: Path) -> None:
    inv = load(tmp_path, {"hosts.ini": "[top:children]\nmid\n[mid:children]\nleaf\n[leaf]\nh1\n[mid]\n"})
    assert inv.hosts["h1"].groups == ["all", "top", "mid", "leaf"]


def test_several_sources_merge_in_order(tmp_path: Path) -> None:
    write(tmp_path, {
        "a/hosts.ini": "[g]\nh1 x=a y=a\n",
        "a/group_vars/g.yml": "gv: a\n",
        "b/hosts.yml": "g:\n  hosts:\n    h1: {x: b}\n    h2:\n",
        "b/group_vars/g.yml": "gv: b\n",
    })
    inv = Inventory.load([tmp_path / "a/hosts.ini", tmp_path / "b/hosts.yml"], base_dir=tmp_path,
                         vault_passwords=[])
    assert inv.hosts["h1"].vars == {"x": "b", "y": "a", "gv": "b"}
    assert inv.hosts["h1"].origins["gv"] == Origin("b/group_vars/g.yml", 1)
    assert list(inv.hosts) == ["h1", "h2"]


# -- templates ----------------------------------------------------------------------------------------


def test_templates_see_the_host_and_the_inventory(tmp_path: Path) -> None:
    inv = load(tmp_path, {"hosts.yml": """
        all:
          vars:
            sans: ["{{ inventory_hostname }}.lan", "{{ inventory_hostname_short }}"]
            peers: "{{ groups['web'] | reject('equalto', inventory_hostname) | list }}"
            port: "{{ base | int + 1 }}"
            base: "2375"
            first_ip: "{{ hostvars[groups['web'][0]].ip }}"
            mine: "{{ group_names | join(',') }}"
            enabled: "{{ 'yes' | bool }}"
            json: "{{ {'a': 1} | to_json }}"
          children:
            web:
              hosts:
                w1.example.com: {ip: 10.0.0.1}
                w2.example.com: {ip: 10.0.0.2}
        """}, source="hosts.yml")
    host = inv.hosts["w2.example.com"]
    assert host.vars["sans"] == ["w2.example.com.lan", "w2"]
    assert host.vars["peers"] == ["w1.example.com"]
    assert host.vars["port"] == 2376
    assert host.vars["first_ip"] == "10.0.0.1"
    assert host.vars["mine"] == "web"
    assert host.vars["enabled"] is True
    assert host.vars["json"] == '{"a": 1}'
    assert host.templates["port"] == "{{ base | int + 1 }}"
    assert "base" not in host.templates


def test_undefined_variable_names_variable_file_and_line(tmp_path: Path) -> None:
    message = error(tmp_path, {"hosts.yml": "all:\n  hosts:\n    h1:\n      x: 1\n      san: '{{ nope }}.lan'\n"},
                    source="hosts.yml")
    assert message == "hosts.yml:5: san (host h1): 'nope' is undefined in template '{{ nope }}.lan'"


def test_template_loop_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, {"hosts.yml": "all:\n  hosts:\n    h1:\n      a: '{{ b }}'\n      b: '{{ a }}'\n"},
                    source="hosts.yml")
    assert message == "hosts.yml:4: a: template loop for host h1 (a -> b -> a)"


def test_unsafe_is_not_rendered(tmp_path: Path) -> None:
    inv = load(tmp_path, {"hosts.yml": "all:\n  hosts:\n    h1:\n      raw: !unsafe '{{ x }}'\n"}, source="hosts.yml")
    assert inv.hosts["h1"].vars["raw"] == "{{ x }}"


# -- vault --------------------------------------------------------------------------------------------


def test_vault_round_trip_and_format() -> None:
    text = vault.encrypt("s3cret", b"pw", vault_id="prod")
    assert text.splitlines()[0] == "$ANSIBLE_VAULT;1.2;AES256;prod"
    assert all(len(line) <= 80 for line in text.splitlines())
    assert vault.decrypt(text, [vault.Password("default", b"pw", "x")], "where") == "s3cret"
    assert "s3cret" in vault.revealed()


def test_vault_values_and_encrypted_files(tmp_path: Path) -> None:
    plain_file = "pw_from_file: f1le-secret\n"
    write(tmp_path, {"group_vars/all.yml": plain_file})
    encrypted = vault.encrypt(plain_file, PASSWORD.encode())
    (tmp_path / "group_vars/all.yml").write_text(encrypted)
    inv = load(tmp_path, {"hosts.yml": f"all:\n  hosts:\n    h1:\n      token: {vaulted('glrt-abc', indent=8)}\n"},
               source="hosts.yml", vault_passwords=passwords(tmp_path))
    assert inv.hosts["h1"].vars == {"token": "glrt-abc", "pw_from_file": "f1le-secret"}
    assert {"glrt-abc", "f1le-secret"} <= set(vault.revealed())


def test_wrong_vault_password_names_file_and_line(tmp_path: Path) -> None:
    files = {"hosts.yml": f"all:\n  hosts:\n    h1:\n      token: {vaulted('t0ken-x', indent=8)}\n"}
    message = error(tmp_path, files, source="hosts.yml", vault_passwords=passwords(tmp_path, "Xyzzy-pw"))
    assert message.startswith("hosts.yml:4: wrong vault password: none of default (")
    assert "t0ken-x" not in message and "Xyzzy-pw" not in message


def test_unknown_vault_id(tmp_path: Path) -> None:
    files = {"hosts.yml": f"all:\n  hosts:\n    h1:\n      token: {vaulted('x-secret', 'prodpw', 'prod', 8)}\n"}
    message = error(tmp_path, files, source="hosts.yml", vault_passwords=passwords(tmp_path, "devpw", "dev"))
    assert message.startswith("hosts.yml:4: vault id 'prod' has no password, and none of the others opens it")


def test_vault_without_password(tmp_path: Path) -> None:
    files = {"hosts.yml": f"all:\n  hosts:\n    h1:\n      token: {vaulted('x-secret', indent=8)}\n"}
    assert error(tmp_path, files, source="hosts.yml") == (
        "hosts.yml:4: vault-encrypted, and no vault password given (--vault-password-file FILE or "
        "ANSIBLE_VAULT_PASSWORD_FILE)"
    )


def test_password_script_and_environment(tmp_path: Path) -> None:
    script = tmp_path / "pass.sh"
    script.write_text(f"#!/bin/sh\necho {PASSWORD}\n")
    script.chmod(0o755)
    (found,) = vault.load_passwords([], env={"ANSIBLE_VAULT_PASSWORD_FILE": str(script)})
    assert found.secret == PASSWORD.encode()
    assert found.vault_id == "default"


def test_matches_ansible_vault_output() -> None:
    # Made by `ansible-vault encrypt_string` (ansible-core 2.19) with password "corpus-vault-password".
    case = Path(__file__).parents[1] / "conformance/inventories/vault"
    text = (case / "hosts.yml").read_text()
    envelope = text.split("!vault |", 1)[1].split("r2:", 1)[0]
    lines = "\n".join(line.strip() for line in envelope.strip().splitlines())
    assert vault.decrypt(lines, [vault.Password("default", b"corpus-vault-password", "x")], "w") == (
        "glrt-corpus-token-11"
    )


# -- the command line ---------------------------------------------------------------------------------


def shipped_defaults() -> dict:
    """The variables every host gets from berth's own config/defaults.yml."""
    import yaml

    from berth import shipped

    return yaml.safe_load(shipped.config_defaults().read_text())


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write(tmp_path, {"berth.yml": "inventory: inventory/hosts.yml\n"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    return tmp_path


def test_wrong_password_exits_4_and_prints_no_secret(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from berth.cli import tasks

    pw = passwords(project, "not-the-password")
    assert pw
    write(project, {"inventory/hosts.yml":
                    f"all:\n  hosts:\n    h1:\n      token: {vaulted('glpat-leak', indent=8)}\n"})
    with pytest.raises(Exit) as info:
        tasks.inventory_show(MockContext(), host="h1", vault_password_file=[str(project / "pass-default.txt")])
    assert info.value.code == 4
    err = capsys.readouterr().err
    assert "inventory/hosts.yml:4: wrong vault password" in err
    assert "glpat-leak" not in err and "not-the-password" not in err


def test_show_json_masks_decrypted_values(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from berth.cli import tasks

    passwords(project)
    write(project, {"inventory/hosts.yml":
                    f"all:\n  hosts:\n    h1:\n      token: {vaulted('s3cr3t-val', indent=8)}\n"
                    "      url: 'https://u:{{ token }}@x'\n"})
    tasks.inventory_show(MockContext(), host="h1", json=True,
                         vault_password_file=[str(project / "pass-default.txt")])
    out = json.loads(capsys.readouterr().out)
    assert out == {**shipped_defaults(), "token": "***", "url": "https://***@x"}    # userinfo masked whole


def test_list_json_has_ansible_inventorys_shape(tmp_path: Path) -> None:
    inv = load(tmp_path, {"hosts.ini": "solo\n[web]\nw1 a=1\n[web:children]\nedge\n[edge]\ne1\n[empty]\n"})
    assert list_json(inv, []) == {
        "_meta": {"hostvars": {"w1": {"a": 1}}, "profile": "inventory_legacy"},
        "all": {"children": ["ungrouped", "web", "empty"]},
        "ungrouped": {"hosts": ["solo"]},
        "web": {"hosts": ["w1"], "children": ["edge"]},
        "edge": {"hosts": ["e1"]},
    }
    assert host_json(inv.hosts["w1"], []) == {"a": 1}


def test_encrypt_string_task(project: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from berth.cli import tasks

    passwords(project)
    monkeypatch.setattr("sys.stdin", io.StringIO("value-to-hide\n"))
    tasks.vault_encrypt_string(MockContext(), name="tok", vault_password_file=[str(project / "pass-default.txt")])
    out = capsys.readouterr().out
    assert out.startswith("tok: !vault |\n    $ANSIBLE_VAULT;1.1;AES256\n")
    write(project, {"inventory/hosts.yml": "all:\n  hosts:\n    h1:\n" + textwrap.indent(out, "      ")})
    inv = Inventory.load(project / "inventory/hosts.yml", base_dir=project,
                         vault_passwords=vault.load_passwords([str(project / "pass-default.txt")], env={}))
    assert inv.hosts["h1"].vars["tok"] == "value-to-hide"
    assert os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE") is None


def test_values_derived_from_a_secret_are_secrets(tmp_path: Path) -> None:
    files = {"hosts.yml": f"all:\n  hosts:\n    h1:\n      token: {vaulted('der1ved-src', indent=8)}\n"
                          "      encoded: '{{ token | b64encode }}'\n      hint: '{{ 42 }}-public'\n"}
    inv = load(tmp_path, files, source="hosts.yml", vault_passwords=passwords(tmp_path))
    encoded = inv.hosts["h1"].vars["encoded"]
    assert encoded == "ZGVyMXZlZC1zcmM="
    assert encoded in vault.revealed()
    assert "42-public" not in vault.revealed()


def test_berth_roles_cannot_be_templated(tmp_path: Path) -> None:
    files = {"hosts.yml": "all:\n  hosts:\n    h1:\n      berth_roles: '{{ [\"a\"] }}'\n"}
    assert error(tmp_path, files, source="hosts.yml") == (
        "hosts.yml:4: berth_roles cannot be a template, got '{{ [\"a\"] }}'"
    )


def test_inventory_scripts_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {"inv/hosts.ini": "h1\n", "inv/dynamic.sh": "#!/bin/sh\necho '{}'\n"})
    (tmp_path / "inv/dynamic.sh").chmod(0o755)
    with pytest.raises(InventoryError) as info:
        Inventory.load(tmp_path / "inv", base_dir=tmp_path, vault_passwords=[])
    assert str(info.value) == (
        "inv/dynamic.sh: executable inventory scripts are not supported (remove its x bit if it is a plain "
        "inventory file)"
    )


def test_list_json_with_repeated_inventory_option(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from berth.cli import tasks

    write(project, {"one.ini": "[web]\nw1\n", "two/hosts.yml": "db:\n  hosts:\n    d1: {port: 5432}\n"})
    tasks.inventory_list(MockContext(), inventory=["one.ini", "two"], json=True)
    out = json.loads(capsys.readouterr().out)
    assert out["all"] == {"children": ["ungrouped", "web", "db"]}
    assert out["web"] == {"hosts": ["w1"]} and out["db"] == {"hosts": ["d1"]}
    assert out["_meta"]["hostvars"]["d1"] == {**shipped_defaults(), "port": 5432}


def test_templates_cannot_change_the_inventory(tmp_path: Path) -> None:
    text = "web:\n  hosts:\n    h1:\n      x: \"{{ groups['web'].append('evil') }}\"\n"
    message = error(tmp_path, {"hosts.yml": text}, source="hosts.yml")
    assert message.startswith("hosts.yml:4: x (host h1): SecurityError: ")


def test_show_prints_template_and_value(project: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from berth.cli import app, tasks

    # rich reads COLUMNS when the console is made (at import, maybe by another test of this process).
    monkeypatch.setattr(app.console, "width", 200)
    write(project, {"inventory/hosts.yml": "all:\n  hosts:\n    h1:\n      san: '{{ inventory_hostname }}.lan'\n"})
    tasks.inventory_show(MockContext(), host="h1")
    err = capsys.readouterr().err
    assert "'h1.lan'" in err
    assert "template: '{{ inventory_hostname }}.lan'" in err
    assert "inventory/hosts.yml:4" in err


def test_one_vars_name_written_two_ways_is_an_error(tmp_path: Path) -> None:
    files = {"hosts.ini": "h1\n", "group_vars/all": "a: 1\n", "group_vars/all.yml": "a: 2\n"}
    assert error(tmp_path, files) == (
        "group_vars/all.yml: group 'all' also has group_vars/all, and Ansible reads only that one "
        "(merge them, or make a folder of files)"
    )


def test_vault_client_script_gets_the_vault_id(tmp_path: Path) -> None:
    script = tmp_path / "keyring-client.sh"
    script.write_text('#!/bin/sh\n[ "$1" = --vault-id ] && echo "pw-for-$2"\n')
    script.chmod(0o755)
    (found,) = vault.load_passwords([f"prod@{script}"], env={})
    assert (found.vault_id, found.secret) == ("prod", b"pw-for-prod")
