#!/usr/bin/env bash
# Make sure a Docker engine answers, and that debootstrap (for the testbed image) and the tools the tests
# run locally are installed.
# On a fresh machine of this kind: Debian's docker.io, dockerd started in the background (there is
# no systemd as PID 1 here). Where a daemon already answers, nothing is changed.
set -euo pipefail

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
# The tests run the testbed's job-image entrypoints on this machine too: their tools.
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
command -v hostname >/dev/null || need+=(hostname)
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || need+=(docker.io)
fi
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "ensure-docker: need root to install ${need[*]}" >&2; exit 1; }
  echo "ensure-docker: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-docker: starting dockerd (log: /var/log/berth-dockerd.log)"
rm -f /var/run/docker.pid
nohup dockerd --data-root /var/lib/docker >/var/log/berth-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60s; its log:" >&2
tail -20 /var/log/berth-dockerd.log >&2
exit 1
