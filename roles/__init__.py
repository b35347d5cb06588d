"""The roles berth ships: in the wheel this folder is the package berth.shipped.roles (pyproject.toml).

Not imported as code: berth loads each role's role.py by path (berth/engine/roles.py).
"""
