#!/bin/sh
# Testbed equivalent of the docker:<v>-dind image's entrypoint: docker-library/docker 29/dind/dockerd-entrypoint.sh,
# followed step by step for everything a job can see (certificates, SANs, ports, arguments). Not followed: the
# rootless branch (that is the dind-rootless image) and the hack/dind wrapper (not in this image).
set -eu

# _tls_ensure_private: keep an existing key, else RSA 4096 as upstream (slow, but the job sees the key size).
_tls_ensure_private() {
	f="$1"
	[ -s "$f" ] || openssl genrsa -out "$f" 4096
}

# _tls_san: every address of every interface (`ip -oneline address`, IPv6 included), /etc/hostname, docker,
# localhost, `hostname -f`, `hostname -s`, then $DOCKER_TLS_SAN as given; sorted, unique, comma-joined.
_tls_san() {
	{
		ip -oneline address | awk '{ gsub(/\/.+$/, "", $4); print "IP:" $4 }'
		{
			cat /etc/hostname
			echo 'docker'
			echo 'localhost'
			hostname -f
			hostname -s
		} | sed 's/^/DNS:/'
		[ -z "${DOCKER_TLS_SAN:-}" ] || echo "$DOCKER_TLS_SAN"
	} | sort -u | xargs printf '%s,' | sed "s/,\$//"
}

_tls_generate_certs() {
	dir="$1"
	# Server certs given by the user and no CA key: only verify them, never overwrite (upstream's first rule).
	if [ -s "$dir/server/ca.pem" ] && [ -s "$dir/server/cert.pem" ] && [ -s "$dir/server/key.pem" ] \
		&& [ ! -s "$dir/ca/key.pem" ]; then
		openssl verify -CAfile "$dir/server/ca.pem" "$dir/server/cert.pem"
		return 0
	fi
	certValidDays='825'
	# A CA key, or no CA cert: berth's equivalent manages the CA, as upstream does.
	if [ -s "$dir/ca/key.pem" ] || [ ! -s "$dir/ca/cert.pem" ]; then
		mkdir -p "$dir/ca"
		_tls_ensure_private "$dir/ca/key.pem"
		openssl req -new -key "$dir/ca/key.pem" -out "$dir/ca/cert.pem" -subj '/CN=docker:dind CA' -x509 \
			-days "$certValidDays" -addext keyUsage=critical,digitalSignature,keyCertSign
	fi
	# Public certs are made anew on every start (addresses change); keys are kept.
	if [ -s "$dir/ca/key.pem" ]; then
		mkdir -p "$dir/server"
		_tls_ensure_private "$dir/server/key.pem"
		openssl req -new -key "$dir/server/key.pem" -out "$dir/server/csr.pem" -subj '/CN=docker:dind server'
		printf '[ x509_exts ]\nextendedKeyUsage = serverAuth\nsubjectAltName = %s\n' "$(_tls_san)" \
			> "$dir/server/openssl.cnf"
		openssl x509 -req -in "$dir/server/csr.pem" -CA "$dir/ca/cert.pem" -CAkey "$dir/ca/key.pem" \
			-CAcreateserial -out "$dir/server/cert.pem" -days "$certValidDays" \
			-extfile "$dir/server/openssl.cnf" -extensions x509_exts
		cp "$dir/ca/cert.pem" "$dir/server/ca.pem"
		openssl verify -CAfile "$dir/server/ca.pem" "$dir/server/cert.pem"
	fi
	if [ -s "$dir/ca/key.pem" ]; then
		mkdir -p "$dir/client"
		_tls_ensure_private "$dir/client/key.pem"
		chmod 0644 "$dir/client/key.pem"   # upstream: shared with the job through the /certs/client volume
		openssl req -new -key "$dir/client/key.pem" -out "$dir/client/csr.pem" -subj '/CN=docker:dind client'
		printf '[ x509_exts ]\nextendedKeyUsage = clientAuth\n' > "$dir/client/openssl.cnf"
		openssl x509 -req -in "$dir/client/csr.pem" -CA "$dir/ca/cert.pem" -CAkey "$dir/ca/key.pem" \
			-CAcreateserial -out "$dir/client/cert.pem" -days "$certValidDays" \
			-extfile "$dir/client/openssl.cnf" -extensions x509_exts
		cp "$dir/ca/cert.pem" "$dir/client/ca.pem"
		openssl verify -CAfile "$dir/client/ca.pem" "$dir/client/cert.pem"
	fi
}

# No arguments, or the first one is an option (as `services: command` gives): dockerd with the defaults.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
	dockerSocket='unix:///var/run/docker.sock'
	case "${DOCKER_HOST:-}" in
		unix://*) dockerSocket="$DOCKER_HOST" ;;
	esac
	# Upstream decides on DOCKER_TLS_CERTDIR alone: non-empty means TLS on 2376 (certs made or verified
	# above; dockerd then fails if a user-managed CA left no server certs), empty means 2375 without TLS.
	if [ -n "${DOCKER_TLS_CERTDIR:-}" ]; then
		_tls_generate_certs "$DOCKER_TLS_CERTDIR"
		set -- dockerd --host="$dockerSocket" --host=tcp://0.0.0.0:2376 --tlsverify \
			--tlscacert "$DOCKER_TLS_CERTDIR/server/ca.pem" --tlscert "$DOCKER_TLS_CERTDIR/server/cert.pem" \
			--tlskey "$DOCKER_TLS_CERTDIR/server/key.pem" "$@"
	else
		set -- dockerd --host="$dockerSocket" --host=tcp://0.0.0.0:2375 "$@"
	fi
fi

if [ "$1" = 'dockerd' ]; then
	# A stale PID file from an unclean stop would keep dockerd from starting.
	find /run /var/run -iname 'docker*.pid' -delete || :
	# Upstream runs dockerd under docker-init (tini) against zombie shims; Debian ships it as docker-init
	# or tini, when present.
	if command -v docker-init > /dev/null; then
		set -- docker-init -- "$@"
	elif command -v tini > /dev/null; then
		set -- tini -- "$@"
	fi
	# iptables: legacy when the kernel already has legacy tables or nf_tables is unusable, as upstream.
	iptablesLegacy=
	if [ -n "${DOCKER_IPTABLES_LEGACY+x}" ]; then
		iptablesLegacy="$DOCKER_IPTABLES_LEGACY"
	elif (
		for f in /proc/net/ip_tables_names /proc/net/ip6_tables_names /proc/net/arp_tables_names; do
			if b="$(cat "$f" 2>/dev/null)" && [ -n "$b" ]; then
				exit 0
			fi
		done
		exit 1
	); then
		iptablesLegacy=1
	elif ! iptables -nL > /dev/null 2>&1; then
		modprobe nf_tables 2>/dev/null || :
		if ! iptables -nL > /dev/null 2>&1 && /usr/local/sbin/.iptables-legacy/iptables -nL > /dev/null 2>&1; then
			iptablesLegacy=1
		fi
	fi
	if [ -n "$iptablesLegacy" ]; then
		# Upstream's /usr/local/sbin/.iptables-legacy; the testbed image links Debian's *-legacy there.
		export PATH="/usr/local/sbin/.iptables-legacy:$PATH"
	fi
	iptables --version
else
	# Anything but dockerd goes through docker-entrypoint.sh, so that it gets DOCKER_HOST too.
	set -- docker-entrypoint.sh "$@"
fi

exec "$@"
