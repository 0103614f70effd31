#!/usr/bin/env bash
# Makes a throwaway development PKI for trying Sluice's tls and wss listeners:
# a CA, a server certificate for localhost/127.0.0.1 and one client certificate.
# Never use these in production.
#   usage: examples/make-dev-certs.sh [DIR] [CLIENT_CN]     (default: examples/certs, device-1)
set -euo pipefail
dir=${1:-"$(dirname "$0")/certs"}
client_cn=${2:-device-1}
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca.key
openssl req -x509 -new -key ca.key -subj "/CN=Sluice dev CA" -days 30 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt

issue() { # name cn extendedKeyUsage [subjectAltName]
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$3"
    if [[ -n ${4:-} ]]; then echo "subjectAltName=$4"; fi
  } >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

issue server localhost serverAuth "DNS:localhost,IP:127.0.0.1,IP:::1"
issue client "$client_cn" clientAuth
chmod 600 ./*.key
echo "development certificates written to $dir"
