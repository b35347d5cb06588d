#!/bin/sh
# Testbed equivalent of the docker:<v>-dind image's entrypoint (docker-library/docker dockerd-entrypoint.sh):
# with DOCKER_TLS_CERTDIR set, make a CA, a server and a client certificate (client/key.pem 0644 so that
# the job container can read it through the shared volume), then run dockerd on 2376 with --tlsverify.
set -eu
dir="${DOCKER_TLS_CERTDIR:-}"
if [ -n "$dir" ]; then
  mkdir -p "$dir/ca" "$dir/server" "$dir/client"
  [ -s "$dir/ca/key.pem" ] || openssl genrsa -out "$dir/ca/key.pem" 2048 2>/dev/null
  openssl req -new -x509 -days 825 -key "$dir/ca/key.pem" -subj "/CN=docker:dind CA" -out "$dir/ca/cert.pem"
  sans="DNS:docker,DNS:localhost,DNS:$(hostname)"
  for ip in $(hostname -i 2>/dev/null) 127.0.0.1; do sans="$sans,IP:$ip"; done
  for who in server client; do
    [ -s "$dir/$who/key.pem" ] || openssl genrsa -out "$dir/$who/key.pem" 2048 2>/dev/null
    if [ "$who" = server ]; then ext="extendedKeyUsage=serverAuth
subjectAltName=$sans"; else ext="extendedKeyUsage=clientAuth"; fi
    printf '%s\n' "$ext" > "$dir/$who/ext.cnf"
    openssl req -new -key "$dir/$who/key.pem" -subj "/CN=docker:dind $who" -out "$dir/$who/csr.pem"
    openssl x509 -req -in "$dir/$who/csr.pem" -CA "$dir/ca/cert.pem" -CAkey "$dir/ca/key.pem" -CAcreateserial \
      -days 825 -extfile "$dir/$who/ext.cnf" -out "$dir/$who/cert.pem" 2>/dev/null
    cp "$dir/ca/cert.pem" "$dir/$who/ca.pem"
  done
  chmod 0644 "$dir/client/key.pem"
  exec dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2376 --tlsverify \
    --tlscacert "$dir/server/ca.pem" --tlscert "$dir/server/cert.pem" --tlskey "$dir/server/key.pem" "$@"
fi
exec dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2375 "$@"
