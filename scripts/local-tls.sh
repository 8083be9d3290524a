#!/usr/bin/env bash
# Makes a local certificate authority and a gateway certificate signed by it, for
# trying TLS on this machine (scripts/run-local.sh with CHAT_MEMORY_TLS=1) and for
# the CLI's TLS test. Idempotent: existing files are kept.
#
#   scripts/local-tls.sh DIR
#
# DIR/ca.crt         the CA clients trust (chat-memory --ca-cert, grpcurl -cacert)
# DIR/ca.key         its key (only needed to sign more certificates)
# DIR/gateway.crt    the gateway's certificate for localhost and 127.0.0.1
# DIR/gateway.key    its key
#
# Why a CA and a separate server certificate, not one self-signed certificate:
# `openssl req -x509` marks its certificate as a CA (basicConstraints CA:TRUE),
# and rustls (the CLI, the benchmarks, every Rust client here) refuses a CA
# certificate presented as a server's (CaUsedAsEndEntity), although OpenSSL and
# grpcio accept it. The server certificate below is CA:FALSE, for serverAuth.
set -euo pipefail

DIR=${1:?usage: scripts/local-tls.sh DIR}
mkdir -p "$DIR"
if [ -f "$DIR/ca.crt" ] && [ -f "$DIR/gateway.crt" ] && [ -f "$DIR/gateway.key" ]; then
  exit 0
fi

(
  umask 077
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=chat-memory local CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$DIR/ca.key" -out "$DIR/ca.crt" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$DIR/gateway.key" -out "$DIR/gateway.csr" 2>/dev/null
  cat >"$DIR/gateway.ext" <<'EXT'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
EXT
  openssl x509 -req -in "$DIR/gateway.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
    -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -days 365 \
    -extfile "$DIR/gateway.ext" -out "$DIR/gateway.crt" 2>/dev/null
  rm -f "$DIR/gateway.csr" "$DIR/gateway.ext"
  # Certificates are public; only the keys stay private.
  chmod 644 "$DIR/ca.crt" "$DIR/gateway.crt"
)
