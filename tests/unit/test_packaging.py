"""What the wheel holds is declared in pyproject.toml: every berth package, and the shipped files beside them."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_berth_package_is_in_the_wheel() -> None:
    declared = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "berth").rglob("__init__.py")}
    assert on_disk - declared == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_the_shipped_packages_are_the_repositorys_top_level_folders() -> None:
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert mapping == {"berth.shipped.roles": "roles", "berth.shipped.config": "config"}
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for role in (ROOT / "roles").iterdir():
        if not (role / "role.py").is_file():
            continue
        shipped = {f.relative_to(ROOT / "roles").as_posix() for f in role.rglob("*")
                   if f.is_file() and "__pycache__" not in f.parts}
        matched = {f for f in shipped if any(Path(f).match(pattern) for pattern in data["berth.shipped.roles"])}
        assert matched == shipped, f"files of role {role.name} the wheel would leave out"
    images = {p.name for p in (ROOT / "berth" / "testbed" / "images").iterdir()}
    assert all(Path("images", name).match(data["berth.testbed"][0]) for name in images)


def test_the_version_is_declared_once() -> None:
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "berth.__version__"}


def test_the_console_script_is_the_berth_program() -> None:
    assert PYPROJECT["project"]["scripts"] == {"berth": "berth.cli.main:main"}
