"""What berth ships besides its code: the roles (roles/ in the repository), the default variables
(config/defaults.yml) and the testbed's job-image scripts. The one way to find them, installed from a wheel
or editable (`pip install -e .`)."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path


def _folder(package: str) -> Path:
    # Installed packages are plain folders (the wheel is unpacked, an editable install maps to the repository):
    # as_file() returns the folder itself, never a temporary copy, so the path stays valid.
    with as_file(files(package)) as path:
        return Path(path)


def roles_dir() -> Path:
    """The shipped roles: ``<name>/role.py``, ``defaults.yml``, ``templates/``, ``verify/``."""
    return _folder("berth.shipped.roles")


def config_defaults() -> Path:
    """The variables every host gets, above role defaults and below the inventory."""
    return _folder("berth.shipped.config") / "defaults.yml"


def testbed_images() -> Path:
    """The entrypoints of the testbed's docker:cli/docker:dind equivalents (berth/testbed/images)."""
    return _folder("berth.testbed") / "images"
