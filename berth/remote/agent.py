"""The remote half of berth: sent over SSH and run by the host's python3 (stdlib only, 3.9+).

It is never installed on the host. berth sends this source and JSON requests on stdin in one SSH command
(berth/transport/bootstrap.py), and reads a JSON answer, one line, from stdout for each. Four requests exist:

- ``probe``: read-only. Facts about the host and the state of every declared resource.
- ``apply``: an ordered list of steps, then the notified handlers, each guarded by a health check
  that restores the files written in this run when the service does not come back. With a
  ``drain`` (a handler will restart dockerd), the runner is stopped and running jobs waited for
  BEFORE the first step, so that a drain that times out leaves the host exactly as it was; the
  drain's last poll comes just before the first disruptive action, and a job that showed up
  meanwhile puts the files back. An apply holds the host's apply lock
  from start to end (one apply at a time per host, ApplyLock) and first checks that every file
  and unit it was planned from is still as the probe saw it (``expect``); if not, it changes
  nothing.
- ``health``: read-only. Do the daemons answer (unix socket /_ping, TCP ports accept)?
- ``csr``: make a key (when asked) and a certificate signing request for it; the key stays on the host.

A converge sends the probe, plans on the controller while this process waits, and sends the apply to
the same process when something changes (after a CSR for each certificate to issue, signed on the
controller): one command per host, converged or not.

The request names its ``protocol`` (berth/engine/protocol.py holds the typed side; this file cannot import
it) and the ``root`` every path is under ("/" on a host; berth.transport.local runs this file on the
controller against a temporary directory). A request of another protocol, or naming a step this agent
does not know, is refused before anything changes. Every command the agent runs goes through ``sh``
and is looked up on PATH: the one seam where the local transport puts its stand-ins.
"""

import _signal  # type: ignore[import-not-found]  # typeshed has no stub of the C module
import _socket
import binascii
import errno
import fcntl
import grp
import os
import pwd
import select
import stat
import sys
import time

# Only modules written in C, and os, stat and time that the interpreter has loaded anyway. Every probe (the
# no-op's only request) pays for what this imports: json, re, subprocess, socket, signal and contextlib cost
# the host 13 ms of CPU together (enum and the regex compiler come with them), twice an idle python3's
# start-up. In their place: _json (the C half of json: _Json), os.posix_spawn (spawn), _socket and _signal
# (the C modules under socket and signal). What only a rare apply needs (re, shutil) is imported where it is
# used; tempfile, base64 and urllib.parse not at all (binascii and a few lines here do their part). SHA-256
# comes from the interpreter's own module, as the stdlib's random.py takes sha512: hashlib loads OpenSSL's
# libcrypto first (6-9 ms more).
try:
    from _sha256 import sha256  # Python 3.11 and older
except ImportError:
    try:
        from _sha2 import sha256  # Python 3.12 and later
    except ImportError:
        from hashlib import sha256

PROTOCOL = 1            # berth/engine/protocol.py PROTOCOL; a request without one is protocol 1
ROOT = "/"              # the request's root: every path the agent reads or writes is under it


def host_path(path):
    """Where a host path is on this machine: itself on a host, under ROOT for the local transport."""
    return path if ROOT == "/" else os.path.join(ROOT, path.lstrip("/"))


class _Json:
    """json's loads, dumps, load and dump, on its C half alone: the json package imports re (5 ms of the host's
    CPU). The same objects as json's (strict, float, int; ASCII out, json's default separators); an error
    is a ValueError, as json's is."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__

    def __init__(self, c_json):
        self._scan = c_json.make_scanner(self)          # reads the attributes above (Modules/_json.c)
        self._encode = c_json.make_encoder(None, self._unserializable, c_json.encode_basestring_ascii, None,
                                           ": ", ", ", False, False, True)

    @staticmethod
    def _unserializable(value):
        raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)

    def loads(self, text):
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8")
        text = text.strip(" \t\n\r")
        try:
            value, end = self._scan(text, 0)
        except StopIteration:
            raise ValueError("Expecting value: %r" % text[:40]) from None
        if end != len(text):
            raise ValueError("Extra data at %d: %r" % (end, text[end:end + 40]))
        return value

    def dumps(self, value):
        return "".join(self._encode(value, 0))

    def load(self, fh):
        return self.loads(fh.read())

    def dump(self, value, fh):
        fh.write(self.dumps(value))


def _lean_json():
    """_Json where this interpreter's _json is the one it was written against; else the json package."""
    try:
        import _json
        lean = _Json(_json)
        sample = {"a": [1, 2.5, None, True, "\u00e9\n"], "b": {}}
        if lean.loads(lean.dumps(sample)) == sample and lean.dumps(sample) == (
                '{"a": [1, 2.5, null, true, "\\u00e9\\n"], "b": {}}'):
            return lean
    except Exception:       # any surprise in a private module: the public one
        pass
    import json
    return json


json = _lean_json()


class StepFailed(Exception):
    pass


class DrainTimeout(StepFailed):
    pass


class CommandTimeout(Exception):
    pass


def spawn(argv, env, output=None, new_session=False):
    """Start ``argv``: stdin from /dev/null, stdout and stderr to the ``output`` fd (else /dev/null); its pid.

    What subprocess does for this agent, without importing it (threading, selectors, signal: 5 ms of the host's
    CPU): the program is looked up on ``env``'s PATH, SIGPIPE and SIGXFSZ are the default again in the child
    (subprocess's restore_signals: Python ignores SIGPIPE), and no fd of this process but those three is
    inherited (Python opens every fd close-on-exec).
    """
    path = argv[0]
    if "/" not in path:
        for folder in env.get("PATH", os.defpath).split(os.pathsep):      # os.get_exec_path imports warnings
            candidate = os.path.join(folder, path)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                path = candidate
                break
        else:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory: %r" % argv[0])
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]  # type: list
    if output is None:
        actions += [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0), (os.POSIX_SPAWN_DUP2, 1, 2)]
    else:
        actions += [(os.POSIX_SPAWN_DUP2, output, 1), (os.POSIX_SPAWN_DUP2, output, 2)]
    return os.posix_spawn(path, argv, env, file_actions=actions, setsid=new_session,
                          setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))


def wait(pid, timeout=None):
    """The exit code of ``pid`` (minus the signal that ended it), or None when it still runs after ``timeout``
    seconds: polled, as subprocess's Popen.wait(timeout) does."""
    if timeout is None:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        delay = min(delay * 2, left, 0.05)
        time.sleep(delay)


def sh(argv, check=False, env=None, timeout=None):
    """Run a command: the only way this agent starts a process (see the module docstring).

    Never with the agent's stdin: it is the controller's channel for the next request (main), and a command
    that asks a question (a dpkg conffile prompt) must get an end of file, not wait for the controller. A
    command that outlives ``timeout`` is killed (CommandTimeout), as subprocess.run(timeout=) does.
    """
    full_env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    full_env.update(env or {})
    read_end, write_end = os.pipe()
    try:
        pid = spawn(argv, full_env, output=write_end)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks = []
    try:
        while True:
            if deadline is not None and not select.select([read_end], [], [], max(0.0, deadline -
                                                                                   time.monotonic()))[0]:
                os.kill(pid, _signal.SIGKILL)
                os.waitpid(pid, 0)
                raise CommandTimeout("%s did not finish within %gs" % (" ".join(argv), timeout))
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    code = wait(pid)
    out = b"".join(chunks).decode("utf-8", "replace")
    if check and code != 0:
        raise StepFailed("%s exited %d: %s" % (" ".join(argv), code, out.strip()[-2000:]))
    return code, out


def _run_bounded(cmd, timeout, unit, stop=True):
    """Run a handler's command for at most ``timeout`` seconds; None, or why it did not finish.

    On time-out the command's process group is killed and, with ``stop``, the unit stopped: systemd would
    otherwise carry on with the hanging start job after its client is gone (and `stop` cancels that job).
    Without ``stop`` (starting the restored configuration) systemd is left to finish the start.
    """
    pid = spawn(["sh", "-c", cmd], dict(os.environ, LC_ALL="C"), new_session=True)
    if wait(pid, timeout) is not None:
        return None
    try:       # noqa: SIM105 - contextlib.suppress: an import every probe would pay for
        os.killpg(pid, _signal.SIGKILL)
    except OSError:
        pass
    wait(pid)
    if unit and stop:
        sh(["systemctl", "stop", unit], timeout=120)
    return "`%s` did not finish within %gs (the health timeout): %s hangs while starting" % (
        cmd, timeout, unit or "the service")


RECOVERY_TIMEOUT = 120      # seconds the restored configuration's restart may take at least
HEALTH_POLL = 0.05          # seconds between a health check's looks: systemd says dockerd started a few
                            # ms before its TLS port listens; a look costs one connect


def _new_file_beside(path):
    """A new, empty file (0600) beside ``path``, under a name nobody could have made first (O_EXCL, no symlink
    followed), as tempfile.mkstemp makes one: without importing tempfile (3 ms of the host's CPU per apply)."""
    folder, name = os.path.split(path)
    while True:
        tmp = os.path.join(folder or "/", ".%s.%s.berth-tmp" % (name, os.urandom(6).hex()))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), tmp
        except FileExistsError:
            continue


def _query_value(text):
    """``text`` percent-encoded for a URL's query, as urllib.parse.quote does (without importing it: 2 ms)."""
    unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
    return "".join(c if c in unreserved else "".join("%%%02X" % b for b in c.encode()) for c in text)


def _write_error(path, exc):
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ("cannot write %s: no space left on the file system of %s; the old file is unchanged. "
                "Free space there and re-run" % (path, os.path.dirname(path) or "/"))
    return "cannot write %s: %s; the old file is unchanged" % (path, exc.strerror or exc)


# -- probe ------------------------------------------------------------------------------------
def file_state(path, want_content):
    path = host_path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    state = {
        "exists": True,
        "mode": st.st_mode & 0o7777,
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "is_dir": os.path.isdir(path),
        "is_link": os.path.islink(path),
    }
    if os.path.isfile(path):
        with open(path, "rb") as fh:
            data = fh.read()
        state["sha256"] = sha256(data).hexdigest()
        if want_content:
            state["content"] = binascii.b2a_base64(data, newline=False).decode()
    return state


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def facts():
    osr = {}
    try:
        with open(host_path("/etc/os-release")) as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                osr[key] = value.strip('"')
    except OSError:
        pass
    addresses = []
    code, out = sh(["ip", "-j", "addr", "show"])
    if code == 0:
        for link in json.loads(out or "[]"):
            # Bridges dockerd itself creates come and go with it; they are not how clients reach the host.
            if link.get("ifname", "").startswith(("docker", "br-", "veth")):
                continue
            for addr in link.get("addr_info", []):
                if addr.get("scope") == "global":
                    addresses.append(addr["local"])
    code, arch = sh(["dpkg", "--print-architecture"])
    return {
        "os_id": osr.get("ID", ""),
        "os_version": osr.get("VERSION_ID", ""),
        "os_codename": osr.get("VERSION_CODENAME", ""),
        "arch": arch.strip() if code == 0 else os.uname().machine,
        "hostname": _socket.gethostname(),
        "fqdn": fqdn(),
        "addresses": addresses,
        "python": "%d.%d" % sys.version_info[:2],
        "apt_lists_age": _apt_lists_age(),
        "dockerd": dockerd_version(),
    }


# `dockerd --version` starts a 100 MB Go binary: about 40 ms of the host's CPU, a third of a no-op probe. Its
# answer is kept here, root's alone (0700; tmpfs, so gone at reboot), for as long as the binary is the same file.
VERSION_CACHE = "/run/berth/dockerd-version.json"


def dockerd_version():
    """`dockerd --version` ("Docker version 20.10.24+dfsg1, build 297e128"), or None without dockerd.

    The plan needs it before the apply: a dockerd older than 23 cannot check daemon.json itself.
    """
    dockerd = _which("dockerd")
    if dockerd is None:
        return None
    try:
        st = os.stat(dockerd)
    except OSError:
        return None
    key = [os.path.realpath(dockerd), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    cached = _read_version_cache()
    if cached.get("key") == key:
        return cached.get("version")
    try:
        code, out = sh([dockerd, "--version"], timeout=30)
    except (OSError, CommandTimeout):
        return None
    version = out.strip() if code == 0 else None
    if version is not None:
        _write_version_cache({"key": key, "version": version})
    return version


def _read_version_cache():
    try:
        st = os.lstat(os.path.dirname(VERSION_CACHE))
        # Trusted only in a directory that root owns and nobody else can write to.
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o077:
            return {}
        with open(VERSION_CACHE) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _write_version_cache(entry):
    if os.geteuid() != 0:
        return
    try:
        os.makedirs(os.path.dirname(VERSION_CACHE), mode=0o700, exist_ok=True)
        fd, tmp = _new_file_beside(VERSION_CACHE)
        with open(fd, "w") as fh:
            json.dump(entry, fh)
        os.rename(tmp, VERSION_CACHE)
    except OSError:
        pass


def _which(name):
    # sbin too: Debian's docker.io installs /usr/sbin/dockerd, and a non-login PATH may lack it.
    for folder in (os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin:/usr/bin").split(":"):
        path = os.path.join(folder, name)
        if folder and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _apt_lists_age():
    lists = host_path("/var/lib/apt/lists")
    try:
        stamps = [os.stat(os.path.join(lists, n)).st_mtime for n in os.listdir(lists) if n.endswith("Packages")]
    except OSError:
        stamps = []
    return time.time() - max(stamps) if stamps else None


def packages(names):
    if not names:
        return {}
    _, out = sh(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n", *list(names)])
    found = {name: None for name in names}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] in found and parts[1].startswith("ii"):
            found[parts[0]] = parts[2]
    return found


def services(names):
    result = {}
    # One systemctl for every unit (a block each, in the order asked, blank lines between): each systemctl
    # costs the host about 9 ms of CPU, systemd's answer included, whatever the number of units.
    _, out = sh(["systemctl", "show", "-p", "ActiveState,UnitFileState,LoadState", *names]) if names else (0, "")
    blocks = [b for b in out.split("\n\n") if b.strip()]
    if len(blocks) != len(names):
        blocks = [sh(["systemctl", "show", "-p", "ActiveState,UnitFileState,LoadState", n])[1] for n in names]
    for i, name in enumerate(names):
        props = dict(line.split("=", 1) for line in blocks[i].splitlines() if "=" in line)
        result[name] = {
            "active": props.get("ActiveState") == "active",
            "enabled": props.get("UnitFileState") in ("enabled", "enabled-runtime", "static", "alias"),
            "loaded": props.get("LoadState") == "loaded",
        }
    return result


def probe(request):
    return {
        "timings": {},
        "facts": facts(),
        "files": {f["path"]: file_state(f["path"], f.get("content", False)) for f in request.get("files", [])},
        "packages": packages(request.get("packages", [])),
        "services": services(request.get("services", [])),
    }


# -- apply ------------------------------------------------------------------------------------
APT_INSTALL = ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
               "-o", "Dpkg::Options::=--force-confold", "-o", "DPkg::Lock::Timeout=300"]


def apt_install_commands(step):
    """The apt-get runs of a packages step.

    A pinned version ("name=1.2-1") is what the inventory wants even when it is older than the installed
    one, and apt-get -y refuses any downgrade without --allow-downgrades (apt-get(8)). "name-" removes a
    package in the same run (apt-get(8), install). A removed package may have held files of a pinned one
    (dpkg keeps a file with the installed package that Replaces the one being unpacked, and deletes it
    with that package; tried with dpkg 1.21 on Debian 12), so the pinned ones are then reinstalled.
    """
    names = list(step.get("install", []))
    debs = list(step.get("debs", []))
    remove = list(step.get("remove", []))
    reinstall = list(step.get("reinstall", [])) if remove else []
    pinned = any("=" in name for name in names + reinstall)
    base = APT_INSTALL + (["--allow-downgrades"] if pinned else [])
    commands = []
    if names or debs or remove:
        commands.append(base + debs + names + [name + "-" for name in remove])
    if reinstall:
        commands.append([*base, "--reinstall", *reinstall])
    return commands


class Applier:
    def __init__(self, apt_lock_timeout=300.0):
        self.apt_lock_timeout = apt_lock_timeout
        self.apt_waited = None      # seconds this apply waited for apt's lock, when it had to
        self.written = []          # (path, previous bytes or None), for rollback
        self.staged = []           # (write step, candidate path): checked and moved into place after all steps
        self.log = []

    def write(self, step):
        path = host_path(step["path"])
        data = binascii.a2b_base64(step["content"]) if step.get("content") is not None else None
        previous = None
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                previous = fh.read()
        if data is not None and step.get("validate"):
            # The candidate goes beside the real file (same file system: the rename is atomic). It is checked
            # after the other steps, when the files it names (TLS certificates) are in place too.
            candidate = path + CANDIDATE_SUFFIX
            self._atomic(candidate, data, step["mode"], step["owner"], step["group"], target=path)
            self.staged.append((step, candidate))
        elif data is not None:
            self._backup(step, previous)
            self.written.append((step["path"], previous))
            self._atomic(path, data, step["mode"], step["owner"], step["group"])
        else:
            os.chown(path, pwd.getpwnam(step["owner"]).pw_uid, grp.getgrnam(step["group"]).gr_gid)
            os.chmod(path, step["mode"])

    @staticmethod
    def _backup(step, previous):
        if step.get("backup") and previous is not None:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            Applier._atomic(host_path(step["path"]) + "." + stamp + ".bak", previous, 0o600, "root", "root")
            prune_backups(host_path(step["path"]), int(step.get("backup_keep", DEFAULT_BACKUPS)))

    def commit_staged(self):
        """Check each candidate (dockerd --validate where dockerd can), then rename it over the real file.

        A candidate dockerd refuses fails the host with dockerd's own message; the files this run wrote
        are put back first, so the host keeps the configuration it runs with.
        """
        staged, self.staged = self.staged, []
        for step, candidate in staged:
            error = VALIDATORS[step["validate"]](candidate)
            if error is not None:
                for _, other in staged:
                    os.unlink(other) if os.path.exists(other) else None
                restored = self.restore()
                raise StepFailed("%s: %s%s; %s unchanged" % (
                    step["path"], error, "; restored " + ", ".join(restored) if restored else "", step["path"]))
        for step, candidate in staged:
            path = host_path(step["path"])
            previous = None
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    previous = fh.read()
            self._backup(step, previous)
            self.written.append((step["path"], previous))
            os.rename(candidate, path)

    def restore(self):
        """Put back every file this run wrote or removed; returns their paths.

        Each through a temporary file and a rename, as it was written: a file system that filled up meanwhile
        leaves the file as it is rather than truncated.
        """
        for logical, previous in reversed(self.written):
            path = host_path(logical)
            if previous is None:
                os.unlink(path) if os.path.exists(path) else None
                continue
            try:
                st = os.stat(path)
                self._atomic(path, previous, stat.S_IMODE(st.st_mode), _name(pwd.getpwuid, st.st_uid),
                             _name(grp.getgrgid, st.st_gid))
            except (OSError, StepFailed):
                with open(path, "wb") as fh:
                    fh.write(previous)
        return [p for p, _ in self.written]

    def put_back(self):
        """Restore this run's files, and have systemd read the restored units (a daemon-reload may have read the
        new ones); returns their paths."""
        restored = self.restore()
        sh(["systemctl", "daemon-reload"])
        return restored

    @staticmethod
    def _atomic(path, data, mode, owner, group, target=None):
        # Temp file beside the target, then rename: readers see the old or the new file, never half. ``target``:
        # the file an error names (a candidate is written beside the file it will replace).
        try:
            fd, tmp = _new_file_beside(path)
        except OSError as exc:
            raise StepFailed(_write_error(target or path, exc)) from None
        try:
            os.fchmod(fd, mode)
            os.fchown(fd, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
            view = memoryview(data)
            while view:
                # A nearly full file system takes part of a write without an error; the next part fails.
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, path)
        except BaseException as exc:
            os.close(fd) if _is_open(fd) else None
            os.unlink(tmp) if os.path.exists(tmp) else None
            if isinstance(exc, OSError):
                raise StepFailed(_write_error(target or path, exc)) from None
            raise

    def install_key(self, step):
        """Swap a freshly made key into place, remembering the old one for a rollback (it stays on the host)."""
        path = host_path(step["path"])
        previous = None
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                previous = fh.read()
        self.written.append((step["path"], previous))
        src = host_path(step["src"])
        os.chown(src, 0, 0)
        os.chmod(src, 0o400)
        os.rename(src, path)

    def directory(self, step):
        path = host_path(step["path"])
        if not os.path.isdir(path):
            os.makedirs(path, mode=step["mode"])
        os.chown(path, pwd.getpwnam(step["owner"]).pw_uid, grp.getgrnam(step["group"]).gr_gid)
        os.chmod(path, step["mode"])

    def remove(self, step):
        path = host_path(step["path"])
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                self.written.append((step["path"], fh.read()))
            os.unlink(path)

    def packages(self, step):
        if step.get("debs"):
            check_upload_dir(step.get("upload_dir"), step["debs"])
        waited = wait_for_apt(self.apt_lock_timeout, tell)
        self.apt_waited = waited or self.apt_waited
        max_age = step.get("cache_valid_time", 3600)
        age = _apt_lists_age()
        # A pinned version that is not installed yet may be newer than the lists, however fresh they are.
        pinned = any("=" in name for name in step.get("install", []))
        if step.get("update") or pinned or age is None or age > max_age:
            sh(["apt-get", "update", "-qq"], check=True)
        debs = set(step.get("debs", []))
        for argv in apt_install_commands(step):
            # apt's own wait covers a lock taken between our look and its start (DPkg::Lock::Timeout).
            sh([host_path(a) if a in debs else "DPkg::Lock::Timeout=%d" % max(int(self.apt_lock_timeout), 1)
                if a.startswith("DPkg::Lock::Timeout=") else a for a in argv], check=True)

    def service(self, step):
        name = step["name"]
        if step.get("enabled") is not None:
            sh(["systemctl", "enable" if step["enabled"] else "disable", name], check=True)
        if step.get("running") is True:
            # A unit still stopping (gitlab-runner finishing its jobs after SIGQUIT, e.g. after a drain that
            # timed out) holds a plain `start` until its jobs end: queue the start instead of waiting.
            block = ["--no-block"] if unit_state(name) == "deactivating" else []
            # A unit that failed too often in a row is refused a start until its failure is reset.
            sh(["systemctl", "reset-failed", name])
            sh(["systemctl", "start", *block, name], check=True)
        elif step.get("running") is False:
            sh(["systemctl", "stop", name], check=True)

    def group_members(self, step):
        """gpasswd with an argument vector (no shell): a user name cannot become a command."""
        for flag, users in (("-a", step.get("add", [])), ("-d", step.get("remove", []))):
            for user in users:
                code, out = sh(["gpasswd", flag, user, step["group"]])
                if code != 0:
                    raise StepFailed("gpasswd %s %s %s: %s" % (flag, user, step["group"], out.strip()[-500:]))

    def command(self, step):
        code, out = sh(["sh", "-c", step["cmd"]])
        if code != 0:
            raise StepFailed("%s: %s" % (step.get("name", step["cmd"]), out.strip()[-2000:]))
        return out

    # -- handlers -----------------------------------------------------------------------------
    def handler(self, step):
        """Run a handler; if its health check fails, restore this run's files and try again.

        The command itself is bounded by the health check's timeout too: a service that hangs while starting
        (`systemctl restart` waits for it) is a failed start, not a reason to wait forever.
        """
        if not step.get("health"):
            self.command(step)
            return {"name": step["name"], "ok": True}
        timeout = float(step["health"].get("timeout", 30))
        error = _run_bounded(step["cmd"], timeout, step.get("unit"))
        waited = time.monotonic()
        if error is None:
            error = self.healthy(step["health"])
        if error is None:
            return {"name": step["name"], "ok": True, "health": time.monotonic() - waited}
        reason = self.why_unhealthy(step.get("unit"), error)
        if not step.get("rollback"):
            raise StepFailed("%s: %s" % (step["name"], reason))
        self.put_back()
        if step.get("unit"):
            sh(["systemctl", "reset-failed", step["unit"]])
        # The previous configuration gets more time than the new one had, and is never stopped for being slow.
        _run_bounded(step["cmd"], max(timeout, RECOVERY_TIMEOUT), step.get("unit"), stop=False)
        still = self.healthy(step["health"])
        if still is None:
            outcome = " and the service is running again"
        elif step.get("unit") and unit_state(step["unit"]) == "active":
            outcome = ", BUT THE SERVICE STILL DOES NOT ANSWER: %s" % still
        else:
            outcome = ", BUT THE SERVICE IS STILL DOWN"
        raise StepFailed("%s failed: %s; the previous %s %s restored%s" % (
            step["name"], reason, ", ".join(p for p, _ in self.written) or "configuration",
            "was" if len(self.written) == 1 else "were", outcome))

    def why_unhealthy(self, unit, error):
        """What to tell of a handler whose health check failed.

        A unit that failed: its own words (dockerd's "failed to start daemon: ..."). A start that hung: that,
        with what the unit logged before it was stopped. A unit that runs but does not answer: the check's
        finding (its log holds no reason then, only lines of a start that went well).
        """
        hung = "did not finish" in error
        if not hung and unit and unit_state(unit) == "active":
            return "%s is running but %s" % (unit, error)
        said = self.journal_error(unit)
        if hung:
            return error + ("; its log: %s" % said if said else "")
        return said or error

    @staticmethod
    def healthy(health):
        deadline = time.time() + health.get("timeout", 30)
        while True:
            last = None
            if health.get("unix"):
                last = _ping_unix(host_path(health["unix"]))
            for hostport in health.get("tcp", []):
                last = last or _tcp_open(hostport[0], hostport[1])
            if last is None or time.time() > deadline:
                return last
            time.sleep(HEALTH_POLL)

    @staticmethod
    def journal_error(unit):
        if not unit:
            return None
        _, out = sh(["journalctl", "-u", unit, "-n", "40", "--no-pager", "-o", "cat"])
        lines = [ln for ln in out.splitlines() if ln.strip()]
        for marker in ("failed to start daemon", "unable to configure", "level=fatal", "level=error"):
            hits = [ln for ln in lines if marker in ln]
            if hits:
                return hits[-1].strip()
        return lines[-1].strip() if lines else None


# -- daemon.json --------------------------------------------------------------------------------
CANDIDATE_SUFFIX = ".berth-new"
VALIDATE_SINCE = (23, 0)     # moby v23.0.0 cmd/dockerd/options.go adds the "validate" flag


def validate_daemon_json(path):
    """dockerd's verdict on a daemon.json: None if it is accepted or this dockerd cannot judge, else its error.

    moby cmd/dockerd/docker.go: `dockerd --validate --config-file F` loads F as a start would (unknown keys,
    value types, conflicts with its own flags, TLS files) and exits 0 printing "configuration OK", or prints
    the error and exits 1. Before 23 the flag does not exist; there the controller's key table warned
    (berth/docker/daemon_keys.py) and the restart's health check judges. The flags of the systemd unit are not on
    this command line, so a conflict with them shows only at the restart (and is rolled back there).
    """
    dockerd = _which("dockerd")
    if dockerd is None:
        return None
    if major_minor(dockerd_version()) < VALIDATE_SINCE:
        return None
    code, out = sh([dockerd, "--validate", "--config-file", path], timeout=120)
    if code == 0:
        return None
    return "dockerd --validate refused it: %s" % (out.strip()[-1500:] or "exit %d" % code)


def major_minor(version):
    """(major, minor) of `dockerd --version` ("Docker version 20.10.24+dfsg1, build 297e128"); (0, 0) if none."""
    words = (version or "").partition("version ")[2].split(".")
    numbers = []
    for word in words[:2]:
        digits = len(word) - len(word.lstrip("0123456789"))
        if not digits:
            return (0, 0)
        numbers.append(int(word[:digits]))
    return tuple(numbers) if len(numbers) == 2 else (0, 0)


VALIDATORS = {"dockerd": validate_daemon_json}


# -- drain ------------------------------------------------------------------------------------
# A runtime drop-in (under /run: gone at reboot) that makes `systemctl stop` graceful for the runner:
# SIGQUIT is gitlab-runner's "finish running jobs, take no new ones, then exit" (its docs,
# commands/_index.md), and systemd must wait for that. A bare `systemctl kill -s SIGQUIT` is not
# enough: the packaged unit has Restart=always, so systemd would start the runner again as soon as it
# exited, and it would take new jobs while dockerd restarts.
DRAIN_DROPIN = "/run/systemd/system/%s.service.d/zz-berth-drain.conf"
DRAIN_DROPIN_TEXT = b"# berth: drained before a disruptive change (removed when the runner resumes)\n" \
    b"[Service]\nKillSignal=SIGQUIT\nTimeoutStopSec=infinity\n"
# The same, as systemctl show reports it of a unit whose stop is graceful already: role gitlab_runner's
# berth-kill.conf with the default gitlab_runner_stop_timeout. Then the drop-in, and the two daemon-reloads
# that add and remove it (each runs every systemd generator), are skipped.
GRACEFUL_STOP = {"KillSignal": str(int(_signal.SIGQUIT)), "TimeoutStopUSec": "infinity"}


class Drain:
    """Before a dockerd restart: the runner takes no new jobs and its running jobs end.

    Two quiet polls in a row, ``interval`` apart, let the restart go ahead: a job's container stops at the end
    of each section and starts again for the next, so none may run for a moment. ``begin`` stops the runner and
    waits for the first; ``settle``, just before the first disruptive action, makes the second. The apply's
    files, their validation and the daemon-reload run in between: the interval overlaps work that ends no job.

    One poll is enough when no job container exists at all, in any state: gitlab-runner creates a job's
    containers once, starts them again for each section, and removes them only at the job's end (gitlab-runner
    executors/docker/docker_command.go requestBuildContainer, requestHelperContainer; docker.go Cleanup removes
    ``temporary``), so a job between two sections still has a stopped container.
    """

    def __init__(self, spec):
        self.spec = spec
        self.unit = spec.get("runner_unit")
        self.stopped_runner = False
        self.settled = bool(spec.get("force"))
        self.quiet = 0              # quiet polls in a row (2: no job container at all, or two an interval apart)
        self.quiet_at = None        # monotonic time of the last quiet poll, None: the last poll was busy
        self.deadline = None        # one timeout for the whole drain, from its first wait
        self.state = {"forced": bool(spec.get("force")), "runner": "absent", "jobs": 0, "waited": 0.0,
                      "resumed": False}  # type: dict

    def begin(self):
        """Stop the runner; wait for one quiet poll. A drain that times out here has changed nothing."""
        if self.spec.get("force"):
            # --force: the restart goes ahead; the answer says how many jobs it hit
            self.state["jobs"] = len(running(job_containers(host_path(self.spec["socket"]), self.spec["job_label"])))
            return
        self._stop_runner()
        self._wait(quiet_polls=1)

    def settle(self):
        """The second quiet poll, at least ``interval`` after the first; waits longer when a job showed up."""
        if not self.settled:
            self._wait(quiet_polls=2)
            self.settled = True

    def _wait(self, quiet_polls):
        started = time.monotonic()
        if self.deadline is None:
            self.deadline = started + float(self.spec["timeout"])
        interval = float(self.spec.get("interval", 1.0))
        while self.quiet < quiet_polls:
            if self.quiet_at is not None:      # polls of one row are an interval apart, whatever ran between
                time.sleep(max(0.0, self.quiet_at + interval - time.monotonic()))
            found = job_containers(host_path(self.spec["socket"]), self.spec["job_label"])
            jobs = running(found)
            self.state["jobs"] = max(self.state["jobs"], len(jobs))
            # The runner exits only when all its jobs are done.
            busy = bool(jobs) or (self.stopped_runner and unit_state(self.unit) not in ("inactive", "failed"))
            if busy:
                self.quiet, self.quiet_at = 0, None
            else:
                self.quiet, self.quiet_at = (self.quiet + 1 if found else 2), time.monotonic()
                continue
            if time.monotonic() >= self.deadline:
                self.state["waited"] = round(self.state["waited"] + time.monotonic() - started, 1)
                what = "%d job container(s) still running (%s)" % (len(jobs), ", ".join(
                    "%s job %s" % (c["Id"][:12], c.get("Labels", {}).get(self.spec["job_label"], "?"))
                    for c in jobs)) if jobs else "%s still finishing its jobs" % self.unit
                raise DrainTimeout("drain timed out after %gs: %s" % (float(self.spec["timeout"]), what))
            time.sleep(interval)
        self.state["waited"] = round(self.state["waited"] + time.monotonic() - started, 1)

    def _stop_runner(self):
        if not self.unit:
            return
        _, out = sh(["systemctl", "show", "-p", "LoadState,ActiveState," + ",".join(GRACEFUL_STOP), self.unit])
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        if props.get("LoadState") != "loaded":
            return
        if props.get("ActiveState") not in ("active", "activating", "reloading"):
            self.state["runner"] = "inactive"      # stopped by someone else: left as it is
            return
        if any(props.get(key) != value for key, value in GRACEFUL_STOP.items()):
            path = host_path(DRAIN_DROPIN % self.unit)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Applier._atomic(path, DRAIN_DROPIN_TEXT, 0o644, "root", "root")
            sh(["systemctl", "daemon-reload"], check=True)
        sh(["systemctl", "stop", "--no-block", self.unit], check=True)
        self.stopped_runner = True
        self.state["runner"] = "stopped"

    def resume(self, daemon_error):
        """Start the runner again, unless dockerd is down (it would only fail the jobs it took)."""
        if not self.stopped_runner:
            return
        if daemon_error:
            self.state["runner"] = "left stopped: %s" % daemon_error
            return
        stopping = unit_state(self.unit) == "deactivating"
        dropin = host_path(DRAIN_DROPIN % self.unit)
        if not stopping and os.path.exists(dropin):
            os.unlink(dropin)
            sh(["systemctl", "daemon-reload"])
        # While the runner still finishes its jobs (the drain timed out), its stop stays graceful (the drop-in
        # goes at reboot), and --no-block lets systemd start it once those jobs are done.
        code, out = sh(["systemctl", "start", "--no-block", self.unit])
        self.state["resumed"] = code == 0
        if code != 0:
            self.state["runner"] = "not resumed: %s" % out.strip()[-300:]
        else:
            self.state["runner"] = "resumes when its running jobs end" if stopping else "resumed"


def unit_state(unit):
    _, out = sh(["systemctl", "show", "-p", "ActiveState", "--value", unit])
    return out.strip()


def job_containers(socket_path, label):
    """Every container that carries the label, in any state, from the Docker API on the unix socket (no CLI)."""
    query = "/containers/json?all=1&filters=" + _query_value(json.dumps({"label": [label]}))
    try:
        return json.loads(_docker_get(socket_path, query))
    except (OSError, ValueError):
        return []           # no daemon answers: nothing of it runs that a restart could stop


def running(containers):
    """The containers a restart would stop (moby's State: a paused or restarting one is running too)."""
    return [c for c in containers if c.get("State", "running") in ("running", "paused", "restarting")]


def _docker_get(socket_path, path):
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    conn.settimeout(10)
    try:
        conn.connect(socket_path)
        # HTTP/1.0: the daemon answers without chunked encoding and closes the connection.
        conn.sendall(("GET %s HTTP/1.0\r\nHost: docker\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        conn.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise ValueError(head[:200])
    return body.decode()


def _is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _ping_unix(path):
    try:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        conn.settimeout(3)
        conn.connect(path)
        conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        reply = conn.recv(4096)
        conn.close()
    except OSError as exc:
        return "%s does not answer (%s)" % (path, exc)
    return None if reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n")[0] else "bad /_ping reply"


def _tcp_open(host, port):
    """None when something accepts a TCP connection on host:port (any of its addresses, as
    socket.create_connection tries them), else why not."""
    error = None
    try:
        # The name as bytes: a str is encoded with the idna codec, whose import (with re's) costs 7 ms.
        for family, kind, proto, _, address in _socket.getaddrinfo(host.encode(), port, 0, _socket.SOCK_STREAM):
            conn = _socket.socket(family, kind, proto)
            try:
                conn.settimeout(3)
                conn.connect(address)
                return None
            except OSError as exc:
                error = exc
            finally:
                conn.close()
    except OSError as exc:
        error = exc
    return "nothing listens on %s:%s (%s)" % (host, port, error)


def fqdn():
    """socket.getfqdn(): the first name with a dot among what the resolver says of this host's name."""
    name = _socket.gethostname()
    try:
        primary, aliases, _ = _socket.gethostbyaddr(name.encode())  # type: ignore[arg-type]  # bytes: no idna codec
    except OSError:
        return name
    return next((n for n in [primary, *aliases] if "." in n), primary)


DEFAULT_BACKUPS = 3


def prune_backups(path, keep):
    """Keep the newest ``keep`` backups of ``path``: an old config.toml still holds the tokens of runners
    removed since. The timestamped names sort in time order."""
    # An apply's only regular expression: not worth re's import on every probe.
    import re
    folder, name = os.path.split(path)
    pattern = re.compile(re.escape(name) + r"\.\d{8}T\d{6}\.bak$")
    backups = sorted(f for f in os.listdir(folder or "/") if pattern.match(f))
    for old in backups[:max(len(backups) - max(keep, 1), 0)]:
        victim = os.path.join(folder, old)
        if os.path.isfile(victim) and not os.path.islink(victim):
            os.unlink(victim)


UPLOAD_ROOT = "/var/tmp"       # berth/engine/plan.py UPLOAD_ROOT


def _upload_dir_problem(path):
    """Why ``path`` is not the private directory berth's SFTP client made for this apply (None: it is)."""
    if os.path.dirname(path) != UPLOAD_ROOT or not os.path.basename(path).startswith("berth-"):
        return "%s is not a berth upload directory" % path
    try:
        st = os.lstat(host_path(path))
    except OSError as exc:
        return "%s: %s" % (path, exc)
    owners = {0, int(os.environ.get("SUDO_UID", 0))}     # root, or the SSH user sudo runs us for
    if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077 or st.st_uid not in owners:
        return "%s is not a private directory of the SSH user (a symlink, or open to others)" % path
    return None


def check_upload_dir(path, debs):
    """Refuse to install packages from anywhere but the private upload directory of this apply."""
    problem = _upload_dir_problem(path or "")
    if problem is None and any(os.path.dirname(d) != path or os.path.islink(host_path(d)) for d in debs):
        problem = "a package is not a plain file inside %s" % path
    if problem:
        raise StepFailed("uploaded packages: %s; nothing installed" % problem)


def remove_upload_dir(path):
    # rmtree neither follows a symlink at the top (lstat first) nor inside; a foreign path is left alone.
    if _upload_dir_problem(path) is None:
        import shutil

        shutil.rmtree(host_path(path), ignore_errors=True)


# -- one apply at a time -----------------------------------------------------------------------
LOCK_DIR = "/run/berth"        # a tmpfs on systemd hosts: a lock never outlives a reboot
LOCK_FILE = "apply.lock"
HOLDER_FILE = "apply.holder"   # who holds the lock: read by the apply that waits for it


class ApplyLock:
    """The host's apply lock: flock(2) on /run/berth/apply.lock, held by this process for the whole apply.

    The kernel releases it when the process ends, however it ends, so a killed apply never leaves it behind.
    The holder's account (controller user@host, its pid, the run id, when it started) is kept beside it.
    """

    def __init__(self, spec, on_wait):
        self.dir = host_path(spec.get("dir", LOCK_DIR))
        self.timeout = float(spec.get("timeout", 600))
        self.holder = dict(spec.get("holder", {}), agent_pid=os.getpid())
        self.on_wait = on_wait
        self.fd = None
        self.waited = None          # {"seconds": s, "for": holder} when another apply held it

    def acquire(self):
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, mode=0o700)
        os.chmod(self.dir, 0o700)
        self.fd = os.open(os.path.join(self.dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.fchmod(self.fd, 0o600)
        started = time.time()
        other = None
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            current = self._read_holder()
            if current != other:
                other = current
                self.on_wait({"wait": "apply lock", "holder": other, "timeout": self.timeout})
            if time.time() - started >= self.timeout:
                os.close(self.fd)
                self.fd = None
                raise StepFailed("another berth apply is running on this host: %s; waited %gs for it "
                                 "(berth_apply_lock_timeout); nothing was changed. Re-run when it has ended"
                                 % (describe_holder(other), self.timeout))
            time.sleep(0.5)
        if other is not None:
            self.waited = {"seconds": round(time.time() - started, 1), "for": other}
        self.holder["since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        Applier._atomic(os.path.join(self.dir, HOLDER_FILE), json.dumps(self.holder).encode(), 0o600,
                        "root", "root")

    def _read_holder(self):
        try:
            with open(os.path.join(self.dir, HOLDER_FILE)) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def release(self):
        if self.fd is None:
            return
        path = os.path.join(self.dir, HOLDER_FILE)
        if self._read_holder().get("agent_pid") == os.getpid():
            os.unlink(path) if os.path.exists(path) else None
        os.close(self.fd)       # closing the last descriptor releases the flock
        self.fd = None


def describe_holder(holder):
    if not holder:
        return "an apply of an older berth, or one that has not said who it is yet"
    since = holder.get("since", "?")
    return "run %s of %s (controller pid %s), applying since %s (agent pid %s on this host)" % (
        holder.get("run", "?"), holder.get("controller", "?"), holder.get("pid", "?"), since,
        holder.get("agent_pid", "?"))


def check_expected(expect, steps=()):
    """What changed since the probe among the files and units the plan was made from (empty: nothing).

    A unit that has meanwhile reached the state this apply's service step wants (started, enabled by someone
    else) is no conflict: the step would only have done the same.
    """
    changed = []
    for path, seen in sorted(expect.get("files", {}).items()):
        now = file_state(path, False)
        if not seen.get("exists"):
            if now.get("exists"):
                changed.append("%s (created)" % path)
            continue
        if not now.get("exists"):
            changed.append("%s (removed)" % path)
            continue
        what = [key for key in ("sha256", "mode", "owner", "group") if seen.get(key) != now.get(key)]
        if what:
            changed.append("%s (%s)" % (path, "content" if "sha256" in what else ", ".join(what)))
    for unit, seen in sorted(expect.get("services", {}).items()):
        now = services([unit])[unit]
        wanted = {}
        for step in steps:
            if step.get("op") == "service" and step.get("name") == unit:
                wanted = {"active": step.get("running"), "enabled": step.get("enabled")}
        what = [key for key in ("active", "enabled")
                if bool(seen.get(key)) != now[key] and not (wanted.get(key) and now[key])]
        if what:
            changed.append("unit %s (%s)" % (unit, ", ".join(what)))
    return changed


# -- apt's locks --------------------------------------------------------------------------------
# What apt-get and dpkg lock (apt-pkg/deb/debsystem.cc: the frontend lock, then dpkg's own; apt-get update:
# the lists; downloads: the archives). unattended-upgrades, apt-daily and a person's apt-get hold them alike.
APT_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock",
             "/var/cache/apt/archives/lock")


def apt_lock_holder(locks=APT_LOCKS):
    """(lock file, holder description) of the first of apt's locks someone holds, else None.

    Held means a POSIX lock (what apt and dpkg take, fcntl F_SETLK) or a flock(2) is on it; the holder is the
    process that has the file open, found in /proc (the lock's owner may be a child of that process).
    """
    for path in locks:
        path = host_path(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            held = False
            for kind, take, drop in ((fcntl.lockf, fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_UN),
                                     (fcntl.flock, fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_UN)):
                try:
                    kind(fd, take)
                    kind(fd, drop)
                except OSError:
                    held = True
        finally:
            os.close(fd)
        if held:
            return path, _processes_with(path)
    return None


def _processes_with(path):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
            if not any(os.readlink("/proc/%s/fd/%s" % (pid, fd)) == path for fd in fds):
                continue
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        found.append("process %s (%s)" % (pid, cmd[:120] or "?"))
    return ", ".join(found) or "a process this agent cannot see"


def wait_for_apt(timeout, on_wait, locks=APT_LOCKS):
    """Wait until nobody holds apt's locks, for at most ``timeout`` seconds; returns the seconds waited."""
    started = time.time()
    told = None
    while True:
        held = apt_lock_holder(locks)
        if held is None:
            return round(time.time() - started, 1)
        if held != told:
            told = held
            on_wait({"wait": "apt lock", "lock": held[0], "holder": held[1], "timeout": timeout})
        if time.time() - started >= timeout:
            raise StepFailed("apt's lock %s is still held after %gs (berth_apt_lock_timeout) by %s; nothing was "
                             "installed. Let it finish (unattended-upgrades, apt-daily) or stop it, then re-run"
                             % (held[0], timeout, held[1]))
        time.sleep(1.0)


def tell(event):
    """A line on stderr for the controller, which shows it while the apply runs (berth/engine/converge.py)."""
    try:
        sys.stderr.write("berth-event: %s\n" % json.dumps(event))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass      # the controller is gone: the apply goes on


def apply(request):
    # The apply goes on to its end when the controller or its SSH connection goes away (sshd then hangs up on
    # us): an apply cut short between two steps is worse than one that completes without an audience.
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    applier = Applier(apt_lock_timeout=float(request.get("apt_lock_timeout", 300)))
    results = {"steps": [], "handlers": [], "error": None, "drain": None, "waited": None}  # type: dict
    timings = results["timings"] = {}     # seconds, for the report (bench/README.md)
    lock = ApplyLock(request["lock"], tell) if request.get("lock") else None
    drain = None
    try:
        if lock is not None:
            lock.acquire()
            results["waited"] = lock.waited
        changed = check_expected(request.get("expect", {}), request.get("steps", []))
        if changed:
            after = " (meanwhile this run waited %gs for %s)" % (lock.waited["seconds"], describe_holder(
                lock.waited["for"])) if lock is not None and lock.waited else ""
            raise StepFailed("changed since it was read: %s%s; nothing was changed: re-run"
                             % ("; ".join(changed), after))
        drain = Drain(request["drain"]) if request.get("drain") else None
        started = time.monotonic()
        if drain is not None:
            try:
                drain.begin()       # before any step: a drain that times out here has changed nothing
            except DrainTimeout as exc:
                raise StepFailed("%s; nothing was changed" % exc) from None
            timings["drain"] = time.monotonic() - started

        def settle():
            """The drain's second poll, before the first action that ends running jobs."""
            if drain is None or drain.settled:
                return
            waited = time.monotonic()
            try:
                drain.settle()
            except DrainTimeout as exc:
                restored = applier.put_back()
                raise StepFailed("%s; %s, nothing was restarted" % (exc, "the files this apply wrote were put back ("
                                 + ", ".join(restored) + ")" if restored else "nothing was changed")) from None
            finally:
                timings["drain"] = timings.get("drain", 0.0) + time.monotonic() - waited

        started = time.monotonic()
        for step in request.get("steps", []):
            if step["op"] in DISRUPTIVE_STEPS:
                settle()
            getattr(applier, step["op"])(step)     # a name of STEPS: main refused any other
            results["steps"].append(step.get("id"))
        timings["steps"], started = time.monotonic() - started, time.monotonic()
        applier.commit_staged()
        timings["validate"] = time.monotonic() - started
        for handler in request.get("handlers", []):
            if handler.get("disruptive", True):
                settle()
            started = time.monotonic()
            done = applier.handler(handler)
            results["handlers"].append(done["name"])
            timings["handler:" + done["name"]] = time.monotonic() - started - done.get("health", 0.0)
            if "health" in done:
                timings["health:" + done["name"]] = done["health"]
    except (StepFailed, OSError, KeyError, CommandTimeout) as exc:
        results["error"] = str(exc)
    finally:
        for _, candidate in applier.staged:    # a step failed before they were checked
            os.unlink(candidate) if os.path.exists(candidate) else None
        # Uploaded .deb files belong to this apply alone: removed even when it ended before installing them.
        if request.get("upload_dir"):
            remove_upload_dir(request["upload_dir"])
        if drain is not None:
            resumed = time.monotonic()
            try:
                drain.resume(_ping_unix(host_path(drain.spec["socket"])))
            except (OSError, CommandTimeout) as exc:
                drain.state["runner"] = "not resumed: %s" % exc
            results["drain"] = drain.state
            timings["resume"] = time.monotonic() - resumed
            if results["error"] and drain.stopped_runner:
                results["error"] += "; %s %s" % (drain.unit, drain.state["runner"])
        if lock is not None:
            lock.release()
    results["apt_waited"] = applier.apt_waited
    return results


def health(request):
    """Each check as a handler's health check would run it, with the request's (short) timeout."""
    problems = []
    for check in request.get("checks", []):
        error = Applier.healthy(dict(check, timeout=request.get("timeout", check.get("timeout", 10))))
        if error:
            problems.append(error)
    return {"error": "; ".join(problems) or None}


CSR_PEM = r"-----BEGIN CERTIFICATE REQUEST-----[^-]+-----END CERTIFICATE REQUEST-----"


def csr(request):
    """A certificate signing request for the key at ``key``, made with the host's openssl; with ``genpkey``
    (openssl genpkey's options), the key is made first. Its folder is made 0700 and the key 0600 (umask 077):
    the key never leaves the host, only the CSR does. Before an apply, outside its lock: the apply swaps a
    new key in (install_key) and writes the signed certificate."""
    key = host_path(request["key"])
    old_umask = os.umask(0o077)
    try:
        os.makedirs(os.path.dirname(key), exist_ok=True)
        if request.get("genpkey") is not None:
            code, out = sh(["openssl", "genpkey", *request["genpkey"], "-out", key])
            if code != 0:
                return {"error": "making the key %s failed: %s" % (request["key"], out.strip()[-500:])}
        code, out = sh(["openssl", "req", "-new", "-key", key, "-subj", "/CN=" + request["common_name"]])
    finally:
        os.umask(old_umask)
    # A CSR is rare: not worth re's import on every probe.
    import re
    found = re.search(CSR_PEM, out)
    if code != 0 or found is None:
        return {"error": "making a CSR for %s failed: %s" % (request["key"], out.strip()[-500:])}
    return {"csr": found.group(0) + "\n", "error": None}


ACTIONS = {"probe": probe, "apply": apply, "health": health, "csr": csr}
# The steps an apply may name (berth/engine/protocol.py STEP_OPS), each an Applier method.
STEPS = ("write", "install_key", "directory", "remove", "packages", "service", "group_members")
# Steps that may end running jobs (a package's maintainer scripts restart dockerd; a unit stops or starts):
# the drain is settled before them. The others only write files, which no running job reads.
DISRUPTIVE_STEPS = ("packages", "service")


def refusal(request):
    """Why this agent will not run the request (None: it will). Checked before anything changes."""
    version = request.get("protocol", 1)
    if version != PROTOCOL:
        return ("the controller speaks agent protocol %r, this agent speaks %d: use the same berth release "
                "for the controller and its agent" % (version, PROTOCOL))
    if request.get("action") not in ACTIONS:
        return "unknown request %r (this agent knows %s)" % (request.get("action"), ", ".join(sorted(ACTIONS)))
    unknown = [s.get("op") for s in request.get("steps", []) if s.get("op") not in STEPS]
    if unknown:
        return "unknown step %s (this agent knows %s); nothing was changed" % (
            ", ".join(repr(op) for op in unknown), ", ".join(STEPS))
    root = request.get("root", "/")
    if not isinstance(root, str) or not os.path.isabs(root):
        return "root must be an absolute path, got %r" % (root,)
    return None


def answer(raw):
    """The answer to one request (a JSON text)."""
    global ROOT
    started = time.monotonic()
    request = json.loads(raw)
    problem = refusal(request)
    if problem is not None:
        result = {"error": problem, "refused": True}
    else:
        ROOT = request.get("root", "/")
        result = ACTIONS[request["action"]](request)
    if isinstance(result.get("timings"), dict):
        result["timings"]["agent"] = time.monotonic() - started
    result["protocol"] = PROTOCOL
    return result


def main(stream):
    """Answer each request of ``stream`` (one JSON line each) on a line of stdout, until stdin ends.

    One process answers a converge's probe and then the apply made from it: one SSH command for both.
    """
    for raw in iter(stream.readline, b""):
        result = answer(raw)
        try:
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            return      # the controller went away; what the apply did is on the host (a re-run reads it)


if __name__ == "__main__":
    main(sys.stdin.buffer)
