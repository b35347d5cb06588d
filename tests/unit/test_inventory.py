"""Tests for berth.inventory.loader: YAML inventories, variable precedence with provenance, checks, select()."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.errors import InventoryError
from berth.inventory.layers import Origin
from berth.inventory.loader import GroupNode, Inventory

INVENTORY = "inventory/hosts.yml"


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def load(root: Path, files: dict[str, str] | None = None, **kwargs: Any) -> Inventory:
    write(root, files or {})
    return Inventory.load(root / INVENTORY, base_dir=root, **kwargs)


def load_error(root: Path, files: dict[str, str] | None = None, **kwargs: Any) -> str:
    with pytest.raises(InventoryError) as info:
        load(root, files, **kwargs)
    return str(info.value)


def names(hosts: list[Any]) -> list[str]:
    return [host.name for host in hosts]


ROLES = {
    "roles/docker_tls/defaults.yml": """
        # TLS for dockerd
        docker_tls_port: 2376
        docker_tls_verify: true
        docker_tls_version: 1.2
        docker_tls_sans: []
        docker_daemon_options: {}
        docker_tls_extra: null
        docker_tls_name: docker
        """,
    "roles/gitlab_runner/defaults.yml": """
        runner_concurrent: 4
        docker_tls_name: runner
        """,
}


# -- precedence: one case per level, each with every lower level also setting `level` ----------------

# (level name, the value it sets, the origin reported when it is the highest level present)
LEVELS = [
    ("role defaults", "role", "roles/base/defaults.yml:2"),
    ("config defaults", "config", "config/defaults.yml:1"),
    ("inventory all vars", "all-vars", "inventory/hosts.yml:3"),
    ("inventory group vars", "group-vars", "inventory/hosts.yml:7"),
    ("group_vars/all", "group_vars-all", "inventory/group_vars/all.yml:1"),
    ("group_vars/<group>", "group_vars-runners", "inventory/group_vars/runners.yml:1"),
    ("inventory host vars", "host", "inventory/hosts.yml:11"),
    ("host_vars/<host>", "host_vars", "inventory/host_vars/h1.yml:1"),
    ("extra vars", "extra", "-e (command line)"),
]


def build_levels(root: Path, top: int) -> dict[str, Any]:
    """Write every level up to ``top`` (1-based) setting `level`; levels above it are commented out so that
    line numbers stay the same. Returns the keyword arguments for Inventory.load."""

    def on(level: int) -> str:
        return "" if level <= top else "# "

    write(
        root,
        {
            "roles/base/defaults.yml": f"base_other: 1\n{on(1)}level: role\n",
            "config/defaults.yml": f"{on(2)}level: config\n",
            INVENTORY: f"""\
all:
  vars:
    {on(3)}level: all-vars
  children:
    runners:
      vars:
        {on(4)}level: group-vars
      hosts:
        h1:
          berth_roles: [base]
          {on(7)}level: host
""",
            "inventory/group_vars/all.yml": f"{on(5)}level: group_vars-all\n",
            "inventory/group_vars/runners.yml": f"{on(6)}level: group_vars-runners\n",
            "inventory/host_vars/h1.yml": f"{on(8)}level: host_vars\n",
        },
    )
    return {
        "roles_dir": root / "roles",
        "config_defaults": root / "config/defaults.yml",
        "extra_vars": ["level=extra"] if top >= 9 else [],
    }


@pytest.mark.parametrize(
    ("top", "value", "origin"),
    [(n, v, o) for n, (_, v, o) in enumerate(LEVELS, 1)],
    ids=[name for name, _, _ in LEVELS],
)
def test_each_precedence_level_beats_the_one_below(tmp_path: Path, top: int, value: str, origin: str) -> None:
    kwargs = build_levels(tmp_path, top)
    host = load(tmp_path, **kwargs).hosts["h1"]
    assert host.vars["level"] == value
    assert str(host.origins["level"]) == origin


def test_a_level_that_does_not_set_a_variable_leaves_the_lower_value(tmp_path: Path) -> None:
    kwargs = build_levels(tmp_path, 9)
    host = load(tmp_path, **kwargs).hosts["h1"]
    assert host.vars["base_other"] == 1
    assert host.origins["base_other"] == Origin("roles/base/defaults.yml", 1)
    assert host.origins["berth_roles"] == Origin(INVENTORY, 10)


def test_dicts_are_replaced_not_merged(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: """
                all:
                  vars:
                    opts: {a: 1, b: 2}
                  hosts:
                    h1:
                      opts: {a: 3}
                """
        },
    ).hosts["h1"]
    assert host.vars["opts"] == {"a": 3}
    assert host.origins["opts"] == Origin(INVENTORY, 6)


def test_group_vars_files_beat_every_groups_inventory_vars(
    tmp_path: Path,
) -> None:
    # As Ansible: all groups' inventory vars first, then the group_vars files; so a parent's group_vars file
    # beats its child's inventory vars.
    inv = load(
        tmp_path,
        {
            INVENTORY: """
                all:
                  children:
                    parent:
                      vars: {from_parent_file: inventory, x: parent-inventory}
                      children:
                        child:
                          vars: {x: child-inventory}
                          hosts: {h1: }
                """,
            "inventory/group_vars/parent.yml": "x: parent-file\nfrom_parent_file: parent-file\n",
        },
    )
    host = inv.hosts["h1"]
    assert host.groups == ["all", "parent", "child"]
    assert host.vars["x"] == "parent-file"
    assert host.origins["x"] == Origin("inventory/group_vars/parent.yml", 1)
    assert host.vars["from_parent_file"] == "parent-file"
    assert host.origins["from_parent_file"] == Origin("inventory/group_vars/parent.yml", 2)


def test_extra_vars_apply_in_the_order_given(tmp_path: Path) -> None:
    host = load(tmp_path, {INVENTORY: "all:\n  hosts:\n    h1:\n"}, extra_vars=["x=1", "x=2 y=3"]).hosts["h1"]
    assert (host.vars["x"], host.vars["y"]) == (2, 3)


# -- group_vars and host_vars ---------------------------------------------------------------------------

SIMPLE = """
    all:
      children:
        runners:
          hosts:
            runner-01.example.com:
            h2:
    """


def test_group_vars_folder_merges_its_files_in_name_order(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: SIMPLE,
            "inventory/group_vars/runners/b.yaml": "x: from-b\n",
            "inventory/group_vars/runners/a.yml": "x: from-a\ny: from-a\n",
            "inventory/group_vars/runners/notes.txt": "x: ignored\n",
        },
    ).hosts["h2"]
    assert host.vars["x"] == "from-b"
    assert host.origins["x"] == Origin("inventory/group_vars/runners/b.yaml", 1)
    assert host.origins["y"] == Origin("inventory/group_vars/runners/a.yml", 2)


def test_group_vars_file_with_yaml_extension_or_none(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: SIMPLE,
            "inventory/group_vars/all": "a: no-extension\n",
            "inventory/group_vars/runners.yaml": "# runners\nb: yaml-extension\n",
        },
    ).hosts["h2"]
    assert host.vars["a"] == "no-extension"
    assert str(host.origins["a"]) == "inventory/group_vars/all:1"
    assert str(host.origins["b"]) == "inventory/group_vars/runners.yaml:2"


def test_host_vars_file_without_extension_for_a_dotted_host_name(tmp_path: Path) -> None:
    inv = load(
        tmp_path, {INVENTORY: SIMPLE, "inventory/host_vars/runner-01.example.com": "ansible_port: 2222\n"}
    )
    host = inv.hosts["runner-01.example.com"]
    assert host.port == 2222
    assert str(host.origins["ansible_port"]) == "inventory/host_vars/runner-01.example.com:1"
    assert inv.hosts["h2"].port is None


def test_host_vars_folder(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: SIMPLE,
            "inventory/host_vars/h2/10-main.yml": "x: main\nsecret: plain\n",
            "inventory/host_vars/h2/20-vault.yml": "secret: s3cret\n",
        },
    ).hosts["h2"]
    assert host.vars == {"x": "main", "secret": "s3cret"}
    assert str(host.origins["secret"]) == "inventory/host_vars/h2/20-vault.yml:1"
    assert str(host.origins["x"]) == "inventory/host_vars/h2/10-main.yml:1"


def test_empty_vars_files_and_hidden_files_are_fine(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: SIMPLE,
            "inventory/group_vars/runners.yml": "# nothing yet\n",
            "inventory/group_vars/.runers.yml.swp": "junk",
            "inventory/host_vars/h2.yml~": "junk",
        },
    ).hosts["h2"]
    assert host.vars == {}


# -- inventory structure ----------------------------------------------------------------------------


def test_host_ranges(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        {
            INVENTORY: """
                all:
                  hosts:
                    r[1:3]:
                    web[08:10].example.com:
                      ansible_user: deploy
                    node-[a:c]:
                    odd[1:7:3]:
                    rack[1:2]-[A:B]:
                """
        },
    )
    assert list(inv.hosts) == [
        "r1", "r2", "r3",
        "web08.example.com", "web09.example.com", "web10.example.com",
        "node-a", "node-b", "node-c",
        "odd1", "odd4", "odd7",
        "rack1-A", "rack1-B", "rack2-A", "rack2-B",
    ]  # fmt: skip
    assert inv.hosts["web09.example.com"].user == "deploy"
    assert inv.hosts["web09.example.com"].origins["ansible_user"] == Origin(INVENTORY, 5)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("r[3:1]", "inventory/hosts.yml:3: bad host range 'r[3:1]': 3 is after 1"),
        (
            "r[01:100]",
            "inventory/hosts.yml:3: bad host range 'r[01:100]': zero-padded bounds must have the same width",
        ),
        (
            "r[1:a]",
            "inventory/hosts.yml:3: bad host range 'r[1:a]': "
            "bounds must be two numbers or two letters of the "
            "same case",
        ),
        (
            "r[1:3:0]",
            "inventory/hosts.yml:3: bad host range 'r[1:3:0]': the stride must be a positive integer",
        ),
        ("r[1]", "inventory/hosts.yml:3: bad host range 'r[1]': expected [start:end] or [start:end:stride]"),
        ("r[1:2", "inventory/hosts.yml:3: bad host range in 'r[1:2': unbalanced brackets"),
    ],
)
def test_bad_host_ranges(tmp_path: Path, pattern: str, message: str) -> None:
    assert load_error(tmp_path, {INVENTORY: f"all:\n  hosts:\n    {pattern}:\n"}) == message


NESTED = """
    all:
      vars:
        ansible_user: deploy
      hosts:
        bastion:
      children:
        runners:
          children:
            docker_runners:
              hosts:
                r1:
                r2:
            shell_runners:
              hosts:
                r2:
                r3:
        europe:
          hosts:
            r1:
          children:
            docker_runners:
        empty:
    """


def test_nested_children_and_a_host_in_two_groups(tmp_path: Path) -> None:
    inv = load(tmp_path, {INVENTORY: NESTED})
    assert list(inv.hosts) == ["bastion", "r1", "r2", "r3"]
    assert inv.hosts["bastion"].groups == ["all", "ungrouped"]  # as Ansible: in no group but all
    # depth 1: europe < runners (alphabetical); depth 2: docker_runners < shell_runners
    assert inv.hosts["r2"].groups == ["all", "europe", "runners", "docker_runners", "shell_runners"]
    assert inv.hosts["r3"].groups == ["all", "runners", "shell_runners"]
    assert inv.groups["europe"].children == ["docker_runners"]
    assert inv.groups["docker_runners"].hosts == ["r1", "r2"]
    assert list(inv.groups) == [
        "all", "ungrouped", "runners", "docker_runners", "shell_runners", "europe", "empty"
    ]


def test_groups_of_equal_depth_merge_alphabetically(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: """
                all:
                  children:
                    zeta:
                      vars: {x: zeta}
                      hosts: {h1: }
                    alpha:
                      vars: {x: alpha}
                      hosts: {h1: }
                """
        },
    ).hosts["h1"]
    assert host.groups == ["all", "alpha", "zeta"]
    assert host.vars["x"] == "zeta"
    assert host.origins["x"] == Origin(INVENTORY, 4)


def test_ansible_group_priority_merges_higher_later(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: """
                all:
                  children:
                    alpha:
                      vars: {x: alpha, ansible_group_priority: 10}
                      hosts: {h1: }
                    zeta:
                      vars: {x: zeta}
                      hosts: {h1: }
                    child_parent:
                      children:
                        child:
                          vars: {x: child}
                """,
            "inventory/group_vars/zeta.yml": "ansible_group_priority: 5\n",
        },
    ).hosts["h1"]
    assert host.groups == ["all", "zeta", "alpha"]
    assert host.vars["x"] == "alpha"
    assert host.origins["x"] == Origin(INVENTORY, 4)


def test_ansible_group_priority_does_not_beat_depth(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: """
                all:
                  children:
                    parent:
                      vars: {x: parent, ansible_group_priority: 99}
                      children:
                        child:
                          vars: {x: child}
                          hosts: {h1: }
                """
        },
    ).hosts["h1"]
    assert host.vars["x"] == "child"


def test_top_level_groups_besides_all_are_children_of_all(tmp_path: Path) -> None:
    inv = load(tmp_path, {INVENTORY: "all:\n  hosts: {a: }\nweb:\n  hosts: {w1: }\n"})
    assert inv.groups["all"].children == ["ungrouped", "web"]
    assert inv.hosts["w1"].groups == ["all", "web"]


def test_host_listed_twice_merges_its_inventory_vars(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: """
                all:
                  children:
                    a:
                      hosts:
                        h1: {x: 1, y: 1}
                    b:
                      hosts:
                        h1: {x: 2}
                """
        },
    ).hosts["h1"]
    assert host.vars == {"x": 2, "y": 1}
    assert host.origins["x"] == Origin(INVENTORY, 8)


def test_tree_and_groups(tmp_path: Path) -> None:
    inv = load(tmp_path, {INVENTORY: NESTED, "inventory/group_vars/europe.yml": "region: eu\n"})
    tree = inv.tree()
    docker = GroupNode("docker_runners", ["r1", "r2"], [])
    assert tree == GroupNode(
        "all",
        ["bastion"],
        [
            GroupNode("ungrouped", ["bastion"], []),  # first under "all", as in Ansible
            GroupNode("runners", [], [docker, GroupNode("shell_runners", ["r2", "r3"], [])]),
            GroupNode("europe", ["r1"], [docker]),
            GroupNode("empty", [], []),
        ],
    )
    assert dataclasses.asdict(tree)["children"][2]["name"] == "europe"
    assert inv.groups["europe"].vars == {"region": "eu"}
    assert inv.groups["all"].vars == {"ansible_user": "deploy"}


def test_host_connection_properties(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        {
            INVENTORY: """
                all:
                  hosts:
                    h1:
                      ansible_host: 10.0.0.11
                      ansible_port: 2222
                      ansible_user: deploy
                      ansible_ssh_private_key_file: ~/.ssh/ci
                    h2:
                """
        },
    )
    h1, h2 = inv.hosts["h1"], inv.hosts["h2"]
    assert (h1.address, h1.port, h1.user, h1.key_file) == ("10.0.0.11", 2222, "deploy", "~/.ssh/ci")
    assert (h2.address, h2.port, h2.user, h2.key_file) == ("h2", None, None, None)


def test_variables_are_plain_copies(tmp_path: Path) -> None:
    inv = load(tmp_path, {INVENTORY: "all:\n  vars:\n    opts: {a: [1, 2]}\n  hosts: {h1: , h2: }\n"})
    h1, h2 = inv.hosts["h1"], inv.hosts["h2"]
    assert type(h1.vars["opts"]) is dict
    assert type(h1.vars["opts"]["a"]) is list
    h1.vars["opts"]["a"].append(3)
    assert h2.vars["opts"] == {"a": [1, 2]}
    assert yaml.safe_dump(h2.vars) == "opts:\n  a:\n  - 1\n  - 2\n"


def test_origins_outside_base_dir_keep_the_given_path(tmp_path: Path) -> None:
    write(tmp_path, {INVENTORY: "all:\n  hosts:\n    h1: {x: 1}\n"})
    inv = Inventory.load(str(tmp_path / INVENTORY), base_dir=tmp_path / "elsewhere")
    assert str(inv.hosts["h1"].origins["x"]) == f"{tmp_path / INVENTORY}:3"
    assert inv.path == tmp_path / INVENTORY


def test_base_dir_defaults_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {INVENTORY: "all:\n  hosts:\n    h1: {x: 1}\n"})
    monkeypatch.chdir(tmp_path)
    inv = Inventory.load(INVENTORY)
    assert str(inv.hosts["h1"].origins["x"]) == "inventory/hosts.yml:3"


def test_yaml_anchors_and_merge_keys_keep_lines(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            INVENTORY: """
                all:
                  vars:
                    common: &common
                      a: 1
                      b: 2
                  hosts:
                    h1:
                      <<: *common
                      b: 3
                """
        },
    ).hosts["h1"]
    assert (host.vars["a"], host.vars["b"]) == (1, 3)
    assert (host.origins["a"], host.origins["b"]) == (Origin(INVENTORY, 4), Origin(INVENTORY, 9))


# -- extra vars -----------------------------------------------------------------------------------------


def test_extra_vars_key_value_are_yaml_scalars(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {INVENTORY: "all:\n  hosts:\n    h1:\n"},
        extra_vars=[
            "docker_tls_port=2377 verify=true name=runner-1",
            "msg='hello world' empty= ver=1.10 list=[1,2]",
        ],
    ).hosts["h1"]
    assert host.vars == {
        "docker_tls_port": 2377,
        "verify": True,
        "name": "runner-1",
        "msg": "hello world",
        "empty": "",
        "ver": 1.1,
        "list": "[1,2]",
    }
    assert host.origins["docker_tls_port"] == Origin("-e (command line)")
    assert str(host.origins["msg"]) == "-e (command line)"


def test_extra_vars_from_a_file(tmp_path: Path) -> None:
    write(tmp_path, {"extra.yml": "# overrides\nx: from-file\nopts: {a: 1}\n"})
    host = load(
        tmp_path,
        {INVENTORY: "all:\n  hosts:\n    h1: {x: host}\n"},
        extra_vars=[f"@{tmp_path / 'extra.yml'}"],
    ).hosts["h1"]
    assert host.vars["x"] == "from-file"
    assert host.vars["opts"] == {"a": 1}
    assert str(host.origins["x"]) == "-e @extra.yml:2"


def test_extra_vars_as_a_json_mapping(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {INVENTORY: "all:\n  hosts:\n    h1:\n"},
        extra_vars=['{"docker_daemon_options": {"debug": true}, "n": 2}'],
    ).hosts["h1"]
    assert host.vars == {"docker_daemon_options": {"debug": True}, "n": 2}
    assert host.origins["n"] == Origin("-e (command line)")


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("novalue", "-e (command line): expected key=value, @file.yml or a {...} mapping, got 'novalue'"),
        ("a=1 9x=2", "-e (command line): expected key=value, @file.yml or a {...} mapping, got '9x=2'"),
        ("msg='open", '-e (command line): No closing quotation in "msg=\'open"'),
        ("{a: 1", "-e (command line):1:6: expected ',' or '}', but got '<stream end>'"),
        ("@missing.yml", "-e @missing.yml: file not found"),
    ],
)
def test_bad_extra_vars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arg: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_error(tmp_path, {INVENTORY: "all:\n  hosts:\n    h1:\n"}, extra_vars=[arg]) == message


def test_extra_vars_file_must_hold_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, {"extra.yml": "# a list\n- a\n- b\n"})
    message = load_error(
        tmp_path, {INVENTORY: "all:\n  hosts:\n    h1:\n"}, extra_vars=[f"@{tmp_path / 'extra.yml'}"]
    )
    assert message == "-e @extra.yml:2: expected a mapping of variables, got a list"


# -- roles ----------------------------------------------------------------------------------------------


def test_berth_roles_pull_in_role_defaults_in_listed_order(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        {
            **ROLES,
            INVENTORY: """
                all:
                  hosts:
                    both:
                      berth_roles: [docker_tls, gitlab_runner, docker_tls]
                    reversed:
                      berth_roles: [gitlab_runner, docker_tls]
                    none:
                """,
        },
        roles_dir=tmp_path / "roles",
    )
    both = inv.hosts["both"]
    assert both.roles == ["docker_tls", "gitlab_runner"]
    assert both.vars["docker_tls_port"] == 2376
    assert both.origins["docker_tls_port"] == Origin("roles/docker_tls/defaults.yml", 2)
    assert both.vars["runner_concurrent"] == 4
    assert both.vars["docker_tls_name"] == "runner"
    assert both.origins["docker_tls_name"] == Origin("roles/gitlab_runner/defaults.yml", 2)
    assert inv.hosts["reversed"].vars["docker_tls_name"] == "docker"
    assert inv.hosts["none"].roles == []
    assert inv.hosts["none"].vars == {}


def test_berth_roles_without_roles_dir_are_kept_without_defaults(tmp_path: Path) -> None:
    host = load(tmp_path, {INVENTORY: "all:\n  vars:\n    berth_roles: [docker]\n  hosts: {h1: }\n"}).hosts[
        "h1"
    ]
    assert host.roles == ["docker"]
    assert host.vars == {"berth_roles": ["docker"]}


def test_berth_roles_from_extra_vars(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {**ROLES, INVENTORY: "all:\n  vars:\n    berth_roles: [docker_tls]\n  hosts: {h1: }\n"},
        roles_dir=tmp_path / "roles",
        extra_vars=['{"berth_roles": ["gitlab_runner"]}'],
    ).hosts["h1"]
    assert host.roles == ["gitlab_runner"]
    assert "docker_tls_port" not in host.vars


def test_unknown_role_in_berth_roles(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        {**ROLES, INVENTORY: "all:\n  hosts:\n    h1:\n      berth_roles: [docker_tl]\n"},
        roles_dir=tmp_path / "roles",
    )
    assert message == (
        "inventory/hosts.yml:4: berth_roles names unknown role 'docker_tl', not in roles/ "
        "(nearest: docker_tls)"
    )


def test_berth_roles_must_be_a_list_of_names(tmp_path: Path) -> None:
    message = load_error(tmp_path, {INVENTORY: "all:\n  hosts:\n    h1:\n      berth_roles: docker_tls\n"})
    assert message == "inventory/hosts.yml:4: berth_roles must be a list of role names, got 'docker_tls'"


# -- type checks and typos --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "docker_tls_port: abc",
            "docker_tls_port must be an integer (role docker_tls default: 2376), got 'abc' (str)",
        ),
        (
            "docker_tls_port: true",
            "docker_tls_port must be an integer (role docker_tls default: 2376), got True (bool)",
        ),
        (
            "docker_tls_verify: 1",
            "docker_tls_verify must be a boolean (role docker_tls default: True), got 1 (int)",
        ),
        (
            "docker_tls_version: '1.3'",
            "docker_tls_version must be a number (role docker_tls default: 1.2), got '1.3' (str)",
        ),
        (
            "docker_tls_sans: a.example",
            "docker_tls_sans must be a list (role docker_tls default: []), got 'a.example' (str)",
        ),
        (
            "docker_daemon_options: [debug]",
            "docker_daemon_options must be a mapping (role docker_tls default: {}), got ['debug'] (list)",
        ),
        (
            "docker_tls_port:",
            "docker_tls_port must be an integer (role docker_tls default: 2376), got None (null)",
        ),
    ],
)
def test_wrong_type_names_file_line_and_expected_type(tmp_path: Path, line: str, message: str) -> None:
    got = load_error(
        tmp_path,
        {**ROLES, INVENTORY: SIMPLE, "inventory/group_vars/runners.yml": f"# TLS\nx: 1\n\n{line}\n"},
        roles_dir=tmp_path / "roles",
    )
    assert got == f"inventory/group_vars/runners.yml:4: {message}"


def test_types_that_fit(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            **ROLES,
            INVENTORY: SIMPLE,
            "inventory/host_vars/h2.yml": """
                berth_roles: [docker_tls]
                docker_tls_version: 1
                docker_tls_extra: [anything]
                docker_daemon_options: {debug: true}
                """,
        },
        roles_dir=tmp_path / "roles",
    ).hosts["h2"]
    assert host.vars["docker_tls_version"] == 1
    assert host.vars["docker_tls_extra"] == ["anything"]
    assert host.vars["docker_daemon_options"] == {"debug": True}


def test_types_are_checked_for_hosts_without_the_role_and_for_extra_vars(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        {**ROLES, INVENTORY: SIMPLE},
        roles_dir=tmp_path / "roles",
        extra_vars=["docker_tls_port=x2376"],
    )
    assert message == (
        "-e (command line): docker_tls_port must be an integer (role docker_tls default: 2376), "
        "got 'x2376' (str)"
    )


def test_config_defaults_are_checked_against_role_defaults(tmp_path: Path) -> None:
    write(tmp_path, {"config/defaults.yml": "runner_concurrent: four\n"})
    message = load_error(
        tmp_path,
        {**ROLES, INVENTORY: SIMPLE},
        roles_dir=tmp_path / "roles",
        config_defaults=tmp_path / "config/defaults.yml",
    )
    assert message == (
        "config/defaults.yml:1: runner_concurrent must be an integer (role gitlab_runner default: 4), "
        "got 'four' (str)"
    )


def test_unknown_variable_close_to_a_role_default(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        {**ROLES, INVENTORY: SIMPLE, "inventory/host_vars/h2.yml": "a: 1\ndocker_daemon_option: {}\n"},
        roles_dir=tmp_path / "roles",
    )
    assert message == (
        "inventory/host_vars/h2.yml:2: unknown variable 'docker_daemon_option' "
        "(did you mean 'docker_daemon_options'?)"
    )


def test_unknown_variable_close_to_a_config_default(tmp_path: Path) -> None:
    write(tmp_path, {"config/defaults.yml": "registry_mirror: ''\n"})
    message = load_error(
        tmp_path,
        {INVENTORY: "all:\n  vars:\n    registry_mirrors: [a]\n"},
        config_defaults=tmp_path / "config/defaults.yml",
    )
    assert (
        message
        == "inventory/hosts.yml:3: unknown variable 'registry_mirrors' (did you mean 'registry_mirror'?)"
    )


def test_free_variables_are_allowed(tmp_path: Path) -> None:
    host = load(
        tmp_path,
        {
            **ROLES,
            INVENTORY: SIMPLE,
            "inventory/host_vars/h2.yml": """
                site_name: lab
                tls_port: 1
                ansible_docker_tls_port: x
                berth_docker_tls_port: y
                """,
        },
        roles_dir=tmp_path / "roles",
    ).hosts["h2"]
    assert (host.vars["site_name"], host.vars["tls_port"]) == ("lab", 1)
    assert host.vars["berth_docker_tls_port"] == "y"


def test_unknown_variable_with_close_match_is_an_error_even_plural(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        {**ROLES, INVENTORY: SIMPLE, "inventory/host_vars/h2.yml": "docker_tls_ports: [1, 2]\n"},
        roles_dir=tmp_path / "roles",
    )
    assert (
        message == "inventory/host_vars/h2.yml:1: unknown variable 'docker_tls_ports' "
        "(did you mean 'docker_tls_port'?)"
    )


@pytest.mark.parametrize("value", ["'22'", "22.0", "true"])
def test_ansible_port_must_be_an_integer(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, {INVENTORY: f"all:\n  hosts:\n    h1:\n      ansible_port: {value}\n"})
    shown = {"'22'": "'22' (str)", "22.0": "22.0 (float)", "true": "True (bool)"}[value]
    assert message == f"inventory/hosts.yml:4: ansible_port must be an integer, got {shown}"


def test_ansible_group_priority_must_be_an_integer(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, {INVENTORY: SIMPLE, "inventory/group_vars/runners.yml": "ansible_group_priority: high\n"}
    )
    assert (
        message
        == "inventory/group_vars/runners.yml:1: ansible_group_priority must be an integer, got 'high' (str)"
    )


# -- errors -------------------------------------------------------------------------------------------


def test_missing_inventory_file(tmp_path: Path) -> None:
    assert (
        load_error(tmp_path)
        == "inventory inventory/hosts.yml does not exist (use --inventory to pick another)"
    )


def test_inventory_directory_reads_its_files_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, {
        "inventory/10-web.yml": "web:\n  hosts: {w1: {x: yaml}}\n",
        "inventory/20-more": "[web]\nw1 x=ini\n",  # no extension, not YAML: INI
        "inventory/README.md": "# skipped by extension\n",
        "inventory/.hidden.yml": "not: [parsed\n",
        "inventory/sub/30-db.ini": "[db]\nd1\n",
        "inventory/group_vars/web.yml": "y: 1\n",
    })
    inv = Inventory.load(tmp_path / "inventory", base_dir=tmp_path)
    assert list(inv.hosts) == ["w1", "d1"]
    assert inv.hosts["w1"].vars == {"x": "ini", "y": 1}
    assert inv.hosts["w1"].origins["x"] == Origin("inventory/20-more", 2)


NO_HOSTS = "inventory/hosts.yml: no hosts in the inventory (e.g. 'all:' then 'hosts:', or an INI host line)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", NO_HOSTS),
        ("# only a comment\n", NO_HOSTS),
        ("all:\n  children: {empty: }\n", NO_HOSTS),
        (
            "\n- all\n",
            "inventory/hosts.yml:2: the inventory must be a mapping of groups (e.g. 'all:'), got a list",
        ),
    ],
)
def test_empty_or_without_all(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, {INVENTORY: ""})
    (tmp_path / INVENTORY).write_text(text)
    assert load_error(tmp_path) == message


def test_top_level_groups_need_no_all(tmp_path: Path) -> None:
    # As Ansible's yaml plugin: every top-level key is a group, "all" is optional.
    inv = load(tmp_path, {INVENTORY: "runners:\n  hosts: {a: }\n"})
    assert inv.hosts["a"].groups == ["all", "runners"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "all:\n  hosts:\n    a: {x: 1\n",
            "inventory/hosts.yml:4:1: expected ',' or '}', but got '<stream end>'",
        ),
        ("all:\n  hosts: a: b\n", "inventory/hosts.yml:2:11: mapping values are not allowed here"),
        (
            "all:\n  hosts:\n    a:\n   b: 2\n",
            "inventory/hosts.yml:4:4: expected <block end>, but found '<block mapping start>'",
        ),
        ("all:\n\thosts:\n", "inventory/hosts.yml:2:1: found character '\\t' that cannot start any token"),
        (
            "all:\n  hosts:\n    a:\n    a:\n",
            "inventory/hosts.yml:4:5: found duplicate key 'a' (first at line 3)",
        ),
        (
            "all:\n  vars:\n    p: !secret |\n      x\n",
            "inventory/hosts.yml:3:8: could not determine a constructor for the tag '!secret'",
        ),
    ],
)
def test_yaml_syntax_errors_give_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, {INVENTORY: ""})
    (tmp_path / INVENTORY).write_text(text)
    assert load_error(tmp_path) == message


def test_yaml_syntax_error_in_a_vars_file(tmp_path: Path) -> None:
    message = load_error(tmp_path, {INVENTORY: SIMPLE, "inventory/group_vars/all.yml": "a: 1\nb: [\n"})
    assert message == "inventory/group_vars/all.yml:3:1: expected the node content, but found '<stream end>'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "all:\n  hosts:\n    - r1\n    - r2\n",
            "inventory/hosts.yml:2: 'hosts' of group 'all' must be a mapping of host names "
            "(each followed by ':'), "
            "got a list",
        ),
        (
            "all:\n  hosts:\n    r1: 10.0.0.1\n",
            "inventory/hosts.yml:3: host 'r1' must be followed by a mapping of variables or nothing, "
            "got a string "
            "'10.0.0.1' (e.g. 'r1: {ansible_host: ...}')",
        ),
        (
            "all:\n  children: [web, db]\n",
            "inventory/hosts.yml:2: 'children' of group 'all' must be a mapping of group names "
            "(each followed by ':'), "
            "got a list",
        ),
        (
            "all:\n  children:\n    web: [w1]\n",
            "inventory/hosts.yml:3: group 'web' must be a mapping with hosts, vars or children, got a list",
        ),
        (
            "all:\n  children:\n    web:\n      host: {w1: }\n",
            "inventory/hosts.yml:4: group 'web' has unknown key 'host' (expected hosts, vars or children; "
            "did you mean 'hosts'?)",
        ),
        (
            "all:\n  children:\n    web:\n      w1:\n",
            "inventory/hosts.yml:4: group 'web' has unknown key 'w1' (expected hosts, vars or children)",
        ),
        ("all:\n  vars: [a]\n", "inventory/hosts.yml:2: 'vars' of group 'all' must be a mapping, got a list"),
        ("all:\n  vars: {1: a}\n", "inventory/hosts.yml:2: variable names must be strings, got 1"),
        (
            "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n",
            "inventory/hosts.yml:7: group 'a' cannot be a child of 'b': that makes a loop",
        ),
    ],
)
def test_wrong_structure(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, {INVENTORY: ""})
    (tmp_path / INVENTORY).write_text(text)
    assert load_error(tmp_path) == message


def test_vars_file_must_be_a_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, {INVENTORY: SIMPLE, "inventory/host_vars/h2.yml": "# x\n- a: 1\n"})
    assert message == "inventory/host_vars/h2.yml:2: expected a mapping of variables, got a list"


def test_group_vars_for_unknown_group(tmp_path: Path) -> None:
    message = load_error(tmp_path, {INVENTORY: SIMPLE, "inventory/group_vars/runner.yml": "x: 1\n"})
    assert (
        message == "inventory/group_vars/runner.yml: there is no group 'runner' in inventory/hosts.yml "
        "(nearest: runners)"
    )


def test_group_vars_folder_for_unknown_group_without_near_names(tmp_path: Path) -> None:
    message = load_error(tmp_path, {INVENTORY: SIMPLE, "inventory/group_vars/databases/main.yml": "x: 1\n"})
    assert message == (
        "inventory/group_vars/databases/: there is no group 'databases' in inventory/hosts.yml "
        "(known groups: all, ungrouped, runners)"
    )


def test_host_vars_for_unknown_host(tmp_path: Path) -> None:
    message = load_error(tmp_path, {INVENTORY: SIMPLE, "inventory/host_vars/runner-01.yml": "x: 1\n"})
    assert message == (
        "inventory/host_vars/runner-01.yml: there is no host 'runner-01' in inventory/hosts.yml "
        "(nearest: runner-01.example.com)"
    )


def test_missing_config_defaults_file(tmp_path: Path) -> None:
    message = load_error(tmp_path, {INVENTORY: SIMPLE}, config_defaults=tmp_path / "config/defaults.yml")
    assert message == "config/defaults.yml: file not found"


def test_errors_are_inventory_errors_with_exit_code_4(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load(tmp_path)
    assert info.value.exit_code == 4


# -- select() -----------------------------------------------------------------------------------------


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return load(tmp_path, {INVENTORY: NESTED})


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (None, ["bastion", "r1", "r2", "r3"]),
        ("all", ["bastion", "r1", "r2", "r3"]),
        ("*", ["bastion", "r1", "r2", "r3"]),
        ("r2", ["r2"]),
        ("runners", ["r1", "r2", "r3"]),  # through its children
        ("shell_runners", ["r2", "r3"]),
        ("r*", ["r1", "r2", "r3"]),  # hosts r1..r3 and the group runners
        ("*_runners", ["r1", "r2", "r3"]),
        ("b?stion", ["bastion"]),
        ("r[13]", ["r1", "r3"]),
        ("runners,!shell_runners", ["r1"]),
        ("!runners", ["bastion"]),
        ("all:!r2", ["bastion", "r1", "r3"]),
        ("runners:&europe", ["r1", "r2"]),
        ("&europe,!r1", ["r2"]),
        ("r3,bastion", ["bastion", "r3"]),  # inventory order, not pattern order
        ("r3:shell_runners:r2", ["r2", "r3"]),  # no duplicates
        (["r3", "bastion,r3"], ["bastion", "r3"]),
        ("empty", []),
        (" r1 , r2 ", ["r1", "r2"]),
    ],
)
def test_select(inv: Inventory, patterns: Any, expected: list[str]) -> None:
    assert names(inv.select(patterns)) == expected


def test_select_returns_the_host_objects(inv: Inventory) -> None:
    assert inv.select("r1") == [inv.hosts["r1"]]


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ("r9", "unknown host or group 'r9' (nearest: r1, r2, r3)"),
        ("runners,!europa", "unknown host or group 'europa' (nearest: europe)"),
        ("&shell", "unknown host or group 'shell' (nearest: shell_runners)"),
        (
            "&database",
            "unknown host or group 'database' (known groups: all, ungrouped, runners, docker_runners, "
            "shell_runners, europe, empty)",
        ),
        (
            "db*",
            "unknown host or group 'db*' (known groups: all, ungrouped, runners, docker_runners, shell_runners, "
            "europe, empty)",
        ),
        ("", "empty host pattern (use 'all' for every host)"),
        ("r1,!", "empty host pattern after '!' or '&'"),
    ],
)
def test_select_errors(inv: Inventory, patterns: str, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        inv.select(patterns)
    assert str(info.value) == message


def test_select_a_host_name_with_colons(tmp_path: Path) -> None:
    inv = load(tmp_path, {INVENTORY: "all:\n  hosts:\n    'fd00::1':\n    h2:\n"})
    assert names(inv.select("fd00::1")) == ["fd00::1"]
    assert names(inv.select("h2,fd00::1")) == ["fd00::1", "h2"]
