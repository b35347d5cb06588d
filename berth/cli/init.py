"""`berth init DIR`: a starting project. Existing files are never overwritten: if any is there, nothing is written."""

from __future__ import annotations

import os
from pathlib import Path

from berth.errors import BerthError
from berth.settings import MARKER

BERTH_YML = """\
# berth's project settings. berth finds this project from here: --project DIR, $BERTH_PROJECT, or the nearest
# berth.yml above the working directory. Relative paths are relative to this file's directory.
inventory: inventory/hosts.yml
roles_dir: roles               # your own roles; one named like a shipped role replaces it
pki_dir: .berth/pki            # berth's CA and zone CAs (git-ignored). Override with BERTH_PKI_DIR.
forks: 10                      # hosts converged or verified at once
host_key_checking: strict      # or accept-new (OpenSSH's meaning); --accept-new-host-keys sets it for one run
connect_timeout: 10            # seconds for the TCP connect, the SSH greeting and the login
connect_attempts: 3            # tries of a connection that timed out, was refused or had no route (not a failed login)
"""

HOSTS_YML = """\
# Your runner hosts, in Ansible's inventory format (YAML or INI). berth logs in over SSH as ssh would:
# ~/.ssh/config and known_hosts apply (host keys are checked strictly).
all:
  children:
    runners:
      hosts:
        runner-1.example.com:
          ansible_host: 192.0.2.10      # replace with your host (or drop it: the name is then resolved)
          ansible_user: admin           # a non-root user needs passwordless sudo
"""

RUNNERS_YML = """\
# Variables of the group `runners` (README of berth: "Inventory and variables", "Roles").
berth_roles: [docker_engine, docker_tls, gitlab_runner]

# One runner per mode you need. Export GITLAB_TOKEN (an access token with scope create_runner) and berth
# creates them through GitLab's API, or give each a token_env / token_file with a glrt- token.
gitlab_runners:
  - name: "{{ inventory_hostname_short }}-dind"
    url: https://gitlab.example.com
    mode: dind
    runner_type: instance_type
    tag_list: [docker]
"""

ALL_YML = """\
# Variables of every host. berth's own defaults lie below these (role defaults, then berth's defaults).
# docker_tls_extra_sans: [docker.internal.example.com]
"""

GITIGNORE = """\
# berth's CA, zone CAs and client certificates: keys that open every daemon. Never commit them.
.berth/
# Keys and certificates made by `berth certs.client --out DIR`
*.pem
reports/
"""

README = """\
# Runner fleet

This repository is a [berth](https://pypi.org/project/berth/) project: the inventory of our GitLab Runner hosts.

```sh
pipx install berth                      # once per machine
berth certs.init                        # berth's CA, in .berth/pki (keep it safe: it is not committed)
berth setup-runner --check --diff       # what would change
berth setup-runner                      # converge every host
berth verify                            # compliance checks
```

- `berth.yml`: project settings (where the inventory is, the CA, forks).
- `inventory/`: hosts and variables (Ansible's format).
- `roles/`: roles of our own; a role named like one of berth's replaces it.
"""

ROLES_README = """\
Roles of this project: `<name>/role.py`, `defaults.yml`, `templates/`, `verify/`, as berth's own roles.
A role here named like one of berth's replaces it; give hosts a role with `berth_roles`.
"""

FILES: dict[str, str] = {
    MARKER: BERTH_YML,
    "inventory/hosts.yml": HOSTS_YML,
    "inventory/group_vars/all.yml": ALL_YML,
    "inventory/group_vars/runners.yml": RUNNERS_YML,
    "roles/README.md": ROLES_README,
    ".gitignore": GITIGNORE,
    "README.md": README,
}


def write_project(folder: Path) -> list[Path]:
    """Write the starting files into ``folder`` (made if missing); refuse, writing nothing, if any exists."""
    if folder.exists() and not folder.is_dir():
        raise BerthError(f"{folder} exists and is not a directory")
    present = [name for name in FILES if (folder / name).exists() or (folder / name).is_symlink()]
    if present:
        raise BerthError(f"{folder}: {', '.join(present)} already exist(s); berth init never overwrites a file. "
                         "Pick an empty or new directory, or move those files away")
    written: list[Path] = []
    for name, text in FILES.items():
        path = folder / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: a file that appeared since the check above is refused, never overwritten.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.chmod(path, 0o644)    # whatever the umask: nothing here is secret, the team shares these files
        except OSError as exc:
            raise BerthError(f"{path}: {exc.strerror or exc}; wrote {len(written)} of {len(FILES)} files "
                             f"({', '.join(map(str, written)) or 'none'})") from None
        written.append(path)
    return written
