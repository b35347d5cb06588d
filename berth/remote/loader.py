"""The first thing berth runs on a host: read from stdin and run by ``python3 -I -S -c``, with two arguments.

    python3 -I -S -c "import sys; f = sys.stdin.buffer; exec(f.read(int(f.readline())))" MODULE_NAME CACHE_DIR

It reads a script of berth/remote/ from stdin in turn (a line with its length, then its source), runs it as
module MODULE_NAME, and calls its ``main`` with the rest of stdin: the requests (berth/transport/bootstrap.py).
Compiling berth's agent costs the host about 5 ms of CPU on every run; loading it compiled, 0.1 ms. So the
compiled script is kept in CACHE_DIR (/run/berth: tmpfs, gone at reboot), named by the SHA-256 of the source
(and of the interpreter's version), and read only by root from a directory that root owns and nobody else can
write to. So the code that runs is always that of the source berth has just sent: a different source is another
name, and only root could have written the file. CACHE_DIR "-": compile every time. Stdlib only, imports only
what the agent imports anyway.
"""
import marshal
import os
import stat
import sys

try:
    from _sha256 import sha256  # Python 3.11 and older (hashlib would load OpenSSL's libcrypto first)
except ImportError:
    from _sha2 import sha256  # Python 3.12 and later


def usable(folder):
    """The cache folder, made 0700 when missing; trusted only by root, if root owns it and nobody else can write."""
    if os.geteuid() != 0:
        return False
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not stat.S_IMODE(st.st_mode) & 0o077


def compiled(source, module_name, cache_dir):
    """The script's code: from the cache, or compiled now (and kept there)."""
    if cache_dir == "-" or not usable(cache_dir):
        return compile(source, module_name.replace("_", "-"), "exec")
    # The interpreter's full version too: a patch release may change the bytecode (the .pyc's magic number).
    digest = sha256(source + sys.version.encode()).hexdigest()[:32]
    name = "%s-%s-%s.code" % (module_name, digest, sys.implementation.cache_tag)
    path = os.path.join(cache_dir, name)
    try:
        with open(path, "rb") as fh:
            return marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = compile(source, module_name.replace("_", "-"), "exec")
    keep(code, path, module_name)
    return code


def keep(code, path, module_name):
    """Write the code beside its final name and rename it there; drop the script's other versions (and what a
    run that died while writing one left)."""
    tmp = "%s.%d" % (path, os.getpid())
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as fh:
            marshal.dump(code, fh)
        os.rename(tmp, path)
        folder, mine = os.path.split(path)
        for other in os.listdir(folder):
            if other.startswith(module_name + "-") and other != mine:
                os.unlink(os.path.join(folder, other))
    except OSError:
        pass


def run(module_name, cache_dir):
    stream = sys.stdin.buffer
    source = stream.read(int(stream.readline()))
    scope = {"__name__": module_name}
    exec(compiled(source, module_name, cache_dir), scope)
    scope["main"](stream)


run(sys.argv[1], sys.argv[2])
