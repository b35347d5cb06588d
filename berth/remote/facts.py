"""The remote half of `invoke verify`: every fact the checks of a host need, in ONE SSH command.

Sent over SSH and run by the host's python3 (stdlib only, 3.9+), like berth/remote/agent.py; nothing is
installed on the host. It reads one JSON request on stdin and writes one JSON answer on stdout.
Read-only: it never writes a file, and it never touches docker.sock, because under socket
activation a connection to the socket would start a stopped dockerd and hide the drift.

Request (assembled on the controller from every role's ``berth_verify_facts`` hook):
  files     paths to stat (following symlinks); ``content`` true to read public files (never keys)
  globs     patterns whose matching files are stat-ed (e.g. /etc/docker/certs.d/**)
  units     systemd units for ``systemctl show``
  packages  Debian packages for dpkg-query
  commands  name -> shell command; rc, stdout and stderr are returned
"""

import base64
import glob
import grp
import json
import os
import pwd
import socket
import subprocess
import sys

UNIT_PROPERTIES = "LoadState,ActiveState,SubState,UnitFileState,FragmentPath,DropInPaths,ExecStart,MainPID"


def run(command, shell=False, timeout=30):
    env = dict(os.environ, LC_ALL="C")
    try:
        proc = subprocess.run(command, shell=shell, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"rc": 127, "stdout": "", "stderr": str(exc)}
    return {"rc": proc.returncode, "stdout": proc.stdout.decode("utf-8", "replace"),
            "stderr": proc.stderr.decode("utf-8", "replace")}


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def file_state(path, content):
    try:
        st = os.stat(path)
    except OSError as exc:
        return {"exists": False, "error": exc.strerror}
    state = {
        "exists": True,
        "mode": st.st_mode & 0o7777,
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "type": "dir" if os.path.isdir(path) else "socket" if (st.st_mode & 0o170000) == 0o140000 else "file",
        "is_link": os.path.islink(path),
    }
    if content and state["type"] == "file":
        with open(path, "rb") as fh:
            state["content"] = base64.b64encode(fh.read()).decode()
    return state


def unit_state(name):
    out = run(["systemctl", "show", "-p", UNIT_PROPERTIES, name])["stdout"]
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def package_versions(names):
    if not names:
        return {}
    out = run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n", *names])["stdout"]
    found = dict.fromkeys(names)
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] in found and parts[1].startswith("ii"):
            found[parts[0]] = parts[2]
    return found


def addresses():
    found = []
    result = run(["ip", "-j", "addr", "show"])
    if result["rc"] == 0:
        for link in json.loads(result["stdout"] or "[]"):
            if link.get("ifname", "").startswith(("docker", "br-", "veth")):
                continue     # dockerd's own bridges are not how clients reach the host
            for addr in link.get("addr_info", []):
                if addr.get("scope") == "global":
                    found.append(addr["local"])
    return found


def main(stream):
    request = json.loads(stream.readline())
    globbed = sorted({p for pattern in request.get("globs", []) for p in glob.glob(pattern, recursive=True)})
    files = {f["path"]: file_state(f["path"], f.get("content", False)) for f in request.get("files", [])}
    # A globbed file is stat-ed; one also requested by name keeps what was asked (its content).
    files.update({p: file_state(p, False) for p in globbed if os.path.isfile(p) and p not in files})
    answer = {
        "host": {"hostname": socket.gethostname(), "fqdn": socket.getfqdn(), "addresses": addresses()},
        "files": files,
        "globs": {pattern: sorted(glob.glob(pattern, recursive=True)) for pattern in request.get("globs", [])},
        "units": {name: unit_state(name) for name in request.get("units", [])},
        "packages": package_versions(request.get("packages", [])),
        "commands": {name: run(cmd, shell=True) for name, cmd in request.get("commands", {}).items()},
    }
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main(sys.stdin.buffer)
