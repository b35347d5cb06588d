"""The testbed: runner hosts as containers on the local Docker engine.

Each host boots a real systemd as PID 1 with a real sshd from a Debian 12 root file system that
debootstrap builds here (no registry is needed). The image is tagged by a hash of its recipe, so
it is built once and reused. Every testbed host gets a fresh host key at first boot; `up` collects
them into the testbed's own known_hosts so that strict host key checking stays on.

Everything lives under ``.testbed/`` (git-ignored) and every container and network carries the
label ``berth.testbed=<id>``, the id being derived from the project directory, so that two clones on
one machine do not touch each other and ``down`` removes exactly its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from berth import shipped
from berth.errors import BerthError

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = "systemd,systemd-sysv,openssh-server,iproute2,sudo,ca-certificates,python3,openssl"
# Downloaded (not installed) into the image's apt cache so that berth's own install of Docker on
# every host finds the .debs locally: a shared apt cache without lock contention.
WARM_APT_PACKAGES = "docker.io"
SSH_USER = "berth"
# Memory each host may use: a ceiling, not a reservation, so that one runaway host (a build in a smoke job's
# dind, a stuck dpkg) cannot take the memory of the other 99. A converged host idles at about 50 MB with dockerd
# and peaked at 520 MB during its dpkg run; a smoke job runs a second dockerd and a build. BERTH_TESTBED_MEMORY
# overrides it.
HOST_MEMORY = "1536m"
# `docker run`s at once: dockerd serialises much of a container's creation, more only queue up there.
START_CONCURRENCY = 8
# Every host's systemd takes inotify instances, all counted against root; Linux's default (128) stops systemd
# from booting in the 20th container or so ("Failed to create inotify object: Too many open files").
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_PER_HOST = 10

# Runs inside the debootstrapped tree (chroot). Host keys are removed: each host makes its own.
CUSTOMIZE = r"""
set -eu
rm -f /etc/ssh/ssh_host_*
cat > /etc/systemd/system/berth-testbed-hostkeys.service <<'UNIT'
[Unit]
Description=Generate this testbed host's own SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/berth-testbed-hostkeys.service \
  /etc/systemd/system/multi-user.target.wants/berth-testbed-hostkeys.service
printf 'PasswordAuthentication no\nPermitRootLogin no\nUseDNS no\n' > /etc/ssh/sshd_config.d/berth-testbed.conf
useradd --create-home --shell /bin/bash berth
install -d -m 0700 -o berth -g berth /home/berth/.ssh
printf 'berth ALL=(ALL) NOPASSWD:ALL\n' > /etc/sudoers.d/berth && chmod 0440 /etc/sudoers.d/berth
for unit in getty@tty1.service console-getty.service systemd-firstboot.service; do
  ln -sf /dev/null /etc/systemd/system/$unit
done
rm -f /etc/hostname /etc/machine-id && touch /etc/machine-id
"""


REGISTRY = "registry"
REGISTRY_CONFIG = """version: 0.1
storage:
  filesystem: {rootdirectory: /var/lib/docker-registry}
  delete: {enabled: true}
http: {addr: ":5000"}
auth:
  htpasswd: {realm: berth-testbed, path: /etc/docker/registry/htpasswd}
"""
# Runs on a testbed host: its own file system (minus secrets and caches) becomes the job and service images,
# laid out as docker-library/docker 29/cli/Dockerfile and 29/dind/Dockerfile lay out the official ones
# (DOCKER_TLS_CERTDIR=/certs, /certs and /certs/client mode 1777, the entrypoints, VOLUME, EXPOSE 2375 2376,
# iptables-legacy under /usr/local/sbin/.iptables-legacy). {label} marks the scripts' version.
JOB_IMAGES_SCRIPT = r"""set -e
for tool in ip openssl hostname iptables-legacy dockerd; do
  command -v $tool >/dev/null || {{ echo "the job images need $tool on this host" >&2; exit 1; }}
done
cd /tmp/berth-images
tar -C / -c --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' --exclude='./run/*' --exclude='./tmp/*' \
  --exclude=./var/lib/docker --exclude=./var/cache/apt --exclude=./var/lib/apt/lists --exclude=./usr/share/doc \
  --exclude=./usr/share/man --exclude=./usr/share/locale --exclude=./home --exclude=./root --exclude=./etc/docker \
  --exclude=./etc/gitlab-runner --exclude='./etc/ssh/ssh_host_*' . | docker import - berth-testbed-rootfs:{version}
printf 'FROM berth-testbed-rootfs:{version}\nCOPY docker-entrypoint.sh dockerd-entrypoint.sh /usr/local/bin/\n\
ENV DOCKER_TLS_CERTDIR=/certs\nRUN mkdir -p /certs /certs/client && chmod 1777 /certs /certs/client\n\
LABEL berth.images={label}\nENTRYPOINT ["docker-entrypoint.sh"]\nCMD ["sh"]\n' > Dockerfile.cli
docker build -q -t docker:{version}-cli -f Dockerfile.cli . >/dev/null
printf 'FROM docker:{version}-cli\nRUN mkdir -p /usr/local/sbin/.iptables-legacy && for f in iptables \
iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do \
ln -sf /usr/sbin/$f-legacy /usr/local/sbin/.iptables-legacy/$f; done\nVOLUME /var/lib/docker\n\
EXPOSE 2375 2376\nENTRYPOINT ["dockerd-entrypoint.sh"]\nCMD []\n' > Dockerfile.dind
docker build -q -t docker:{version}-dind -f Dockerfile.dind . >/dev/null
docker rmi berth-testbed-rootfs:{version} >/dev/null 2>&1 || true
"""


def job_images_label() -> str:
    """A digest of what makes the job images, so that a changed entrypoint rebuilds them."""
    digest = hashlib.sha256(JOB_IMAGES_SCRIPT.encode())
    for script in ("docker-entrypoint.sh", "dockerd-entrypoint.sh"):
        digest.update((shipped.testbed_images() / script).read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class TestbedHost:
    name: str
    container: str
    address: str
    state: str


class TestbedError(BerthError):
    """The testbed could not be built or started; the message says which step and why."""


# Subnets for the testbed network, tried in order (another project's testbed may hold one).
TESTBED_SUBNETS = ("172.30.0.0/16", "172.29.0.0/16", "172.28.0.0/16", "172.27.0.0/16")


def _docker(*args: str, check: bool = True, input_: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=input_ is None, input=input_, check=False)
    if check and proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
        raise TestbedError(f"docker {' '.join(args[:3])} failed: {err.strip()}")
    return proc


class Testbed:
    """Runner hosts r1..rN for one project directory."""

    def __init__(self, root: Path, *, log: Callable[[str], None] = print) -> None:
        self.root = root.resolve()
        self.dir = self.root / ".testbed"
        self.id = hashlib.sha256(str(self.root).encode()).hexdigest()[:6]
        self.network = f"berth-{self.id}"
        self.label = f"berth.testbed={self.id}"
        self.log = log

    # -- paths the rest of berth reads ---------------------------------------------------------
    @property
    def key_file(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    def container_name(self, host: str) -> str:
        return f"berth-{self.id}-{host}"

    # -- image ---------------------------------------------------------------------------------
    @staticmethod
    def image_tag() -> str:
        recipe = "\n".join([SUITE, MIRROR, BASE_PACKAGES, WARM_APT_PACKAGES, CUSTOMIZE])
        return f"berth-testbed:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"

    def ensure_image(self) -> str:
        tag = self.image_tag()
        if _docker("image", "inspect", tag, check=False).returncode == 0:
            return tag
        if shutil.which("debootstrap") is None:
            raise TestbedError("debootstrap is not installed: `apt-get install debootstrap` (make setup does it)")
        self.log(f"building the testbed image {tag} (debootstrap, about a minute)")
        with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="berth-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            run = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE, str(rootfs), MIRROR],
                capture_output=True, text=True, check=False,
            )
            if run.returncode != 0:
                raise TestbedError(f"debootstrap failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
            subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", CUSTOMIZE], check=True)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            base = f"{tag}-base"
            imp = subprocess.run(
                ["docker", "import", "-c", 'CMD ["/sbin/init"]', "-", base],
                stdin=tar.stdout, capture_output=True, text=True, check=False,
            )
            tar.wait()
            if imp.returncode != 0:
                raise TestbedError(f"docker import failed: {imp.stderr.strip()}")
        warm = f"berth-warm-{self.id}"
        _docker("rm", "-f", warm, check=False)
        _docker("run", "--name", warm, base, "sh", "-c",
                f"apt-get update -qq && apt-get install -y -qq --download-only {WARM_APT_PACKAGES}")
        _docker("commit", "-c", 'CMD ["/sbin/init"]', warm, tag)
        _docker("rm", "-f", warm)
        _docker("rmi", base, check=False)
        return tag

    # -- keys ----------------------------------------------------------------------------------
    def ensure_keypair(self) -> None:
        """The controller's key for this testbed, made here where it is used."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        if self.key_file.exists():
            return
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        self.key_file.touch(mode=0o600)
        self.key_file.write_bytes(private)
        self.key_file.with_suffix(".pub").write_bytes(public + b" berth-testbed\n")

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, count: int = 3, *, fresh: bool = False) -> list[TestbedHost]:
        """Start r1..r{count}; running hosts are kept unless ``fresh`` (then every host is new)."""
        if count < 1:
            raise TestbedError("--hosts must be at least 1")
        tag = self.ensure_image()
        self.ensure_keypair()
        self._ensure_network()
        wanted = [f"r{i}" for i in range(1, count + 1)]
        existing = {h.name: h for h in self.status()}
        if fresh:   # the registry (a service of the testbed, not a runner host) stays
            for host in existing.values():
                if host.name != REGISTRY:
                    _docker("rm", "-f", host.container)
            existing = {REGISTRY: existing[REGISTRY]} if REGISTRY in existing else {}
        for name, host in existing.items():
            # Stopped leftovers (e.g. after the machine's processes were ended) have stale state.
            if name == REGISTRY:
                continue
            if name not in wanted or host.state != "running":
                _docker("rm", "-f", host.container)
        started = [name for name in wanted if name not in existing or existing[name].state != "running"]
        if started:
            self._raise_inotify_limit(count)
            began = time.monotonic()
            with ThreadPoolExecutor(max_workers=START_CONCURRENCY) as pool:
                list(pool.map(lambda name: self._run_host(name, tag), started))
            # Many systemd boots at once share the CPUs: the time allowed grows with their number.
            self._wait_booted(started, timeout=90 + 2 * len(started))
            self.log(f"{len(started)} host(s) started and booted in {time.monotonic() - began:.0f} s")
        hosts = [h for h in self.status() if h.name in wanted]
        self._write_client_files(hosts)
        return hosts

    def _raise_inotify_limit(self, count: int) -> None:
        """Raise fs.inotify.max_user_instances (a machine-wide limit only) when ``count`` hosts need more."""
        wanted = max(1024, INOTIFY_PER_HOST * (count + 1))
        try:
            current = int(INOTIFY_INSTANCES.read_text())
            if current < wanted:
                INOTIFY_INSTANCES.write_text(f"{wanted}\n")
                self.log(f"fs.inotify.max_user_instances raised from {current} to {wanted} (systemd in many hosts)")
        except (OSError, ValueError) as exc:
            if count > 10:
                raise TestbedError(
                    f"{count} hosts need fs.inotify.max_user_instances >= {wanted}, and it could not be raised "
                    f"({exc}); as root: sysctl fs.inotify.max_user_instances={wanted}") from None

    def down(self) -> list[str]:
        names = [c for c in _docker("ps", "-aq", "--filter", f"label={self.label}").stdout.split()]
        if names:
            _docker("rm", "-f", *names)
        _docker("network", "rm", self.network, check=False)
        for path in (self.ssh_config, self.known_hosts, self.dir / "inventory.yml"):
            path.unlink(missing_ok=True)
        return names

    def status(self) -> list[TestbedHost]:
        out = _docker(
            "ps", "-a", "--filter", f"label={self.label}",
            "--format", '{{.Label "berth.testbed.host"}}\t{{.Names}}\t{{.State}}',
        ).stdout
        rows = [line.split("\t") for line in out.splitlines()]
        running = [container for _, container, state in rows if state == "running"]
        addresses = self._addresses(running) if running else {}
        hosts = [TestbedHost(name, container, addresses.get(container, ""), state) for name, container, state in rows]
        return sorted(hosts, key=lambda h: int(h.name[1:]) if h.name[1:].isdigit() else 0)

    # -- what smoke tests need: job images and a registry -----------------------------------------
    def load_job_images(self, hosts: Sequence[str], version: str = "27.5") -> None:
        """Make docker:<version>-cli and -dind on each host's daemon from the host's own file system.

        No registry can be reached here, so these stand for Docker's official images: the real docker
        CLI and dockerd (Debian's), with entrypoints that behave as the official ones do.
        """
        label = job_images_label()

        def build(host: str) -> None:
            built = self.exec(host, "docker", "image", "inspect", "-f", '{{index .Config.Labels "berth.images"}}',
                              f"docker:{version}-dind", check=False)
            if built.returncode == 0 and built.stdout.strip() == label:
                return
            self.exec(host, "mkdir", "-p", "/tmp/berth-images")
            for script in ("docker-entrypoint.sh", "dockerd-entrypoint.sh"):
                source = shipped.testbed_images() / script
                _docker("cp", str(source), f"{self.container_name(host)}:/tmp/berth-images/{script}")
            self.exec(host, "chmod", "0755", "/tmp/berth-images/docker-entrypoint.sh",
                      "/tmp/berth-images/dockerd-entrypoint.sh")
            self.exec(host, "sh", "-c", JOB_IMAGES_SCRIPT.format(version=version, label=label))

        with ThreadPoolExecutor(max_workers=len(hosts) or 1) as pool:
            list(pool.map(build, hosts))

    def registry_up(self) -> dict[str, str]:
        """A real registry (Debian's docker-registry) with htpasswd auth, on its own testbed container.

        Returns (and writes to .testbed/registry.env, 0600) BERTH_REGISTRY, _USER and _PASSWORD.
        """
        env_file = self.dir / "registry.env"
        running = {h.name: h for h in self.status()}.get(REGISTRY)
        if running and running.state == "running" and env_file.exists():
            return dict(line.split("=", 1) for line in env_file.read_text().split())
        if running:
            _docker("rm", "-f", running.container)
        self.ensure_keypair()
        self._ensure_network()
        self._run_host(REGISTRY, self.ensure_image())
        self._wait_booted([REGISTRY])
        password = secrets.token_urlsafe(18)
        self.exec(REGISTRY, "sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                  "apt-get install -y -qq --no-install-recommends docker-registry apache2-utils >/dev/null")
        subprocess.run(["docker", "exec", "-i", self.container_name(REGISTRY), "sh", "-c",
                        "htpasswd -iBn berth > /etc/docker/registry/htpasswd"], input=password, text=True,
                       check=True, capture_output=True)
        self.exec(REGISTRY, "sh", "-c", f"cat > /etc/docker/registry/config.yml <<'EOF'\n{REGISTRY_CONFIG}EOF\n"
                  "systemctl restart docker-registry")
        address = f"{self._address(self.container_name(REGISTRY))}:5000"
        for _ in range(60):
            if self.exec(REGISTRY, "sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/5000", check=False).returncode == 0:
                break
            time.sleep(0.5)
        values = {"BERTH_REGISTRY": address, "BERTH_REGISTRY_USER": "berth", "BERTH_REGISTRY_PASSWORD": password}
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        return values

    def exec(self, host: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command on a testbed host as root, bypassing SSH (for tests that break hosts on purpose)."""
        return _docker("exec", self.container_name(host), *command, check=check)

    # -- internals -----------------------------------------------------------------------------
    def _ensure_network(self) -> None:
        if _docker("network", "inspect", self.network, check=False).returncode == 0:
            return
        # Never Docker's first pools: a host's dockerd takes 172.17.0.0/16 for its bridge, and a docker:dind
        # service on that bridge takes the next free one, 172.18.0.0/16, for its own. On a fresh machine the
        # testbed network would get 172.18.0.0/16 too, and the dind service could not reach the registry.
        for subnet in TESTBED_SUBNETS:
            if _docker("network", "create", "--label", self.label, "--subnet", subnet, self.network,
                       check=False).returncode == 0:
                return
        _docker("network", "create", "--label", self.label, self.network)     # all taken: Docker's choice

    def _run_host(self, name: str, image: str) -> None:
        _docker(
            "run", "-d", "--name", self.container_name(name), "--hostname", name,
            "--label", self.label, "--label", f"berth.testbed.host={name}",
            "--network", self.network, "--network-alias", name,
            # --privileged fails on these machines (README, "The testbed"); this set boots systemd.
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "--memory", os.environ.get("BERTH_TESTBED_MEMORY", HOST_MEMORY),
            "-v", f"{self.key_file.with_suffix('.pub')}:/home/{SSH_USER}/.ssh/authorized_keys:ro",
            image,
        )

    def _wait_booted(self, names: Sequence[str], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)

        def booted(name: str) -> bool:
            probe = "systemctl is-active ssh >/dev/null && test -s /etc/ssh/ssh_host_ed25519_key.pub"
            return self.exec(name, "sh", "-c", probe, check=False).returncode == 0

        while pending:
            with ThreadPoolExecutor(max_workers=START_CONCURRENCY) as pool:
                done = dict(zip(pending, pool.map(booted, pending), strict=True))
            pending = [name for name in pending if not done[name]]
            if pending and time.monotonic() > deadline:
                logs = self.exec(pending[0], "journalctl", "-b", "-n", "20", "--no-pager", check=False).stdout
                raise TestbedError(f"testbed host(s) {', '.join(pending)} did not boot in {timeout:.0f}s:\n{logs}")
            if pending:
                time.sleep(0.5)

    def _addresses(self, containers: Sequence[str]) -> dict[str, str]:
        """Every container's address in one `docker inspect` (one call per host costs seconds at 100 hosts)."""
        fmt = f"{{{{.Name}}}}\t{{{{(index .NetworkSettings.Networks \"{self.network}\").IPAddress}}}}"
        out = _docker("inspect", "-f", fmt, *containers).stdout
        return {name.lstrip("/"): address for name, _, address in (line.partition("\t") for line in out.splitlines())}

    def _address(self, container: str) -> str:
        fmt = f"{{{{(index .NetworkSettings.Networks \"{self.network}\").IPAddress}}}}"
        return _docker("inspect", "-f", fmt, container).stdout.strip()

    def _write_client_files(self, hosts: Sequence[TestbedHost]) -> None:
        known, config = [], []
        with ThreadPoolExecutor(max_workers=START_CONCURRENCY) as pool:
            keys = list(pool.map(lambda h: self.exec(h.name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout,
                                 hosts))
        for host, line in zip(hosts, keys, strict=True):
            key = line.split()
            known.append(f"{host.name},{host.address} {key[0]} {key[1]}")
            config.append(
                f"Host {host.name}\n  HostName {host.address}\n  User {SSH_USER}\n"
                f"  IdentityFile {self.key_file}\n  UserKnownHostsFile {self.known_hosts}\n"
                "  StrictHostKeyChecking yes\n"
            )
        self.known_hosts.write_text("\n".join(known) + "\n")
        self.ssh_config.write_text("\n".join(config))
        inventory = {"all": {"children": {"runners": {"hosts": {h.name: None for h in hosts}}}}}
        (self.dir / "inventory.yml").write_text(json.dumps(inventory, indent=2) + "\n")
