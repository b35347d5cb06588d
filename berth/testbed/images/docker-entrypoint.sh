#!/bin/sh
# Testbed equivalent of the docker:<v>-cli image's entrypoint: docker-library/docker 29/cli/docker-entrypoint.sh,
# followed step by step (DOCKER_HOST and TLS selection exactly as there).
set -eu

# An option first (`docker run docker:cli --version`): run it through docker.
if [ "${1#-}" != "$1" ]; then
	set -- docker "$@"
fi
# A docker subcommand first (`docker run docker:cli ps`): run it through docker.
if docker help "$1" > /dev/null 2>&1; then
	set -- docker "$@"
fi

# TLS only when the client directory holds all three of ca.pem, cert.pem and key.pem.
_should_tls() {
	[ -n "${DOCKER_TLS_CERTDIR:-}" ] \
	&& [ -s "$DOCKER_TLS_CERTDIR/client/ca.pem" ] \
	&& [ -s "$DOCKER_TLS_CERTDIR/client/cert.pem" ] \
	&& [ -s "$DOCKER_TLS_CERTDIR/client/key.pem" ]
}

# No DOCKER_HOST: a mounted socket first (standard, then rootless).
if [ -z "${DOCKER_HOST:-}" ] && [ -S /var/run/docker.sock ]; then
	export DOCKER_HOST=unix:///var/run/docker.sock
elif [ -z "${DOCKER_HOST:-}" ] && XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}" \
	&& [ -S "$XDG_RUNTIME_DIR/docker.sock" ]; then
	export DOCKER_HOST="unix://$XDG_RUNTIME_DIR/docker.sock"
fi

# Still none: the service called docker, on 2376 with TLS or DOCKER_TLS_VERIFY set, else 2375.
if [ -z "${DOCKER_HOST:-}" ]; then
	if _should_tls || [ -n "${DOCKER_TLS_VERIFY:-}" ]; then
		export DOCKER_HOST='tcp://docker:2376'
	else
		export DOCKER_HOST='tcp://docker:2375'
	fi
fi
# A tcp:// host and nothing said about TLS: use the client certificates when all three are there.
if [ "${DOCKER_HOST#tcp:}" != "$DOCKER_HOST" ] \
	&& [ -z "${DOCKER_TLS_VERIFY:-}" ] \
	&& [ -z "${DOCKER_CERT_PATH:-}" ] \
	&& _should_tls \
; then
	export DOCKER_TLS_VERIFY=1
	export DOCKER_CERT_PATH="$DOCKER_TLS_CERTDIR/client"
fi

if [ "$1" = 'dockerd' ]; then
	echo >&2 "It looks like you are trying to run a Docker daemon: use the dind image variant, with --privileged."
	sleep 3
fi

exec "$@"
