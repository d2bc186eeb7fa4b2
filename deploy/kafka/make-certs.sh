#!/usr/bin/env bash
# A private CA, a broker certificate and a client certificate for Kafka over TLS, in PEM.
#
#   deploy/kafka/make-certs.sh DIR [BROKER_NAME...]
#
# Writes to DIR: ca.pem (trust this), broker-keystore.pem (the broker's key + certificate,
# Kafka's PEM keystore), client.pem + client.key (a client certificate for mutual TLS), and
# public/ca.pem: a folder with no key in it, for clients that need only to trust the broker.
# The broker certificate is valid for 127.0.0.1, localhost and every BROKER_NAME given
# (e.g. `kafka` in docker compose). Keys are unencrypted: keep DIR private (mode 700).
# The test suite runs this at test time; nothing it writes is committed.
set -euo pipefail
dir=${1:?usage: make-certs.sh DIR [BROKER_NAME...]}
shift
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
san="IP:127.0.0.1,DNS:localhost"
for name in "$@"; do san="$san,DNS:$name"; done
days=30

openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days "$days" \
  -subj "/CN=modstream test CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

issue() {  # name subject extensions
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" \
    -days "$days" -extfile <(printf '%s\n' "$3") 2>/dev/null
  rm -f "$1.csr"
}
issue broker "/CN=broker" "subjectAltName=$san
extendedKeyUsage=serverAuth,clientAuth"
issue client "/CN=modstream-client" "extendedKeyUsage=clientAuth"

# Kafka's PEM keystore: the private key (PKCS#8) followed by the certificate chain.
openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker.pk8
cat broker.pk8 broker.pem ca.pem > broker-keystore.pem
rm -f broker.pk8 ca.srl
chmod 600 ./*.key broker-keystore.pem
mkdir -p public
cp ca.pem public/ca.pem
echo "certificates in $dir"
