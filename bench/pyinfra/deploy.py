"""pyinfra deploy: the same desired state as berth's roles with bench/inventory (see bench/ansible/site.yml).

Run by the bench as ``pyinfra -y --sudo --parallel N INVENTORY bench/pyinfra/deploy.py``; the inventory
(written by the bench) gives each host its SSH settings and ``bench_ca_pem``, its own tlscacert on the controller.
Handlers are operations guarded by ``_if=any_changed(...)``, pyinfra's way. As in the playbook, the server
key and certificate (issued by berth before any tool is measured) are only held to their mode and owner.
"""

from pathlib import Path

import yaml
from pyinfra import host
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

DESIRED = Path(__file__).resolve().parent.parent / "desired"
v = yaml.safe_load((DESIRED / "vars.yml").read_text())
root = {"user": "root", "group": "root"}


def template(name: str, dest: str, mode: str):
    return files.template(name=dest, src=str(DESIRED / name), dest=dest, mode=mode, **root, **v)


apt.packages(name="Docker Engine is installed", packages=[v["docker_package"]])
files.directory(name="/etc/docker exists", path="/etc/docker", mode="755", **root)
daemon_json = template("daemon.json.j2", v["docker_daemon_json"], "644")
files.directory(name="docker.service.d exists", path="/etc/systemd/system/docker.service.d", mode="755", **root)
docker_dropin = template("docker-hosts.conf.j2", v["docker_dropin"], "644")
systemd.service(name="dockerd is enabled and running", service="docker", running=True, enabled=True)

tls = v["docker_tls_dir"]
files.directory(name="TLS directory exists", path=tls, mode="755", **root)
ca = files.put(name="CA bundle", src=host.data.bench_ca_pem, dest=f"{tls}/ca.pem", mode="444", **root)
files.file(name="server certificate (mode and owner only)", path=f"{tls}/cert.pem", mode="444", **root)
files.file(name="server key (mode and owner only)", path=f"{tls}/key.pem", mode="400", **root)

files.directory(name="/etc/gitlab-runner exists", path=str(Path(v["gitlab_runner_config"]).parent), mode="700",
                **root)
files.directory(name="gitlab-runner.service.d exists", path="/etc/systemd/system/gitlab-runner.service.d",
                mode="755", **root)
runner_dropin = template("kill.conf.j2", v["gitlab_runner_dropin"], "644")
config_toml = template("config.toml.j2", v["gitlab_runner_config"], "600")

# Handlers, in the order berth and the playbook run them.
systemd.daemon_reload(name="systemd daemon-reload", _if=any_changed(docker_dropin, runner_dropin))
restart = any_changed(daemon_json, docker_dropin, ca)
systemd.service(name="restart docker", service="docker", running=True, restarted=True, _if=restart)
server.shell(
    name="wait for dockerd's TLS port",
    commands=[f"timeout 30 sh -c 'until python3 -c \"import socket; socket.create_connection("
              f"(\\\"127.0.0.1\\\", {v['docker_tls_port']}), 1)\" 2>/dev/null; do sleep 0.3; done'"],
    _if=restart,
)
server.shell(name="reload gitlab-runner", commands=["systemctl kill -s SIGHUP gitlab-runner 2>/dev/null || true"],
             _if=config_toml.did_change)
