#!/bin/sh
# Testbed equivalent of the docker:<v>-cli image's entrypoint (docker-library/docker docker-entrypoint.sh):
# pick DOCKER_HOST the way the real image does, then run the command.
set -e
if [ -z "${DOCKER_HOST:-}" ]; then
  if [ -S /var/run/docker.sock ]; then
    export DOCKER_HOST=unix:///var/run/docker.sock
  elif [ -n "${DOCKER_TLS_CERTDIR:-}" ] && [ -s "$DOCKER_TLS_CERTDIR/client/ca.pem" ] || [ -n "${DOCKER_TLS_VERIFY:-}" ]; then
    export DOCKER_HOST=tcp://docker:2376
  else
    export DOCKER_HOST=tcp://docker:2375
  fi
fi
case "$DOCKER_HOST" in
  tcp://*)
    if [ -z "${DOCKER_TLS_VERIFY:-}" ] && [ -z "${DOCKER_CERT_PATH:-}" ] && [ -n "${DOCKER_TLS_CERTDIR:-}" ] \
       && [ -s "$DOCKER_TLS_CERTDIR/client/ca.pem" ] && [ -s "$DOCKER_TLS_CERTDIR/client/cert.pem" ] \
       && [ -s "$DOCKER_TLS_CERTDIR/client/key.pem" ]; then
      export DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH="$DOCKER_TLS_CERTDIR/client"
    fi ;;
esac
exec "$@"
