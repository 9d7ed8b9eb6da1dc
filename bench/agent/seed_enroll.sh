#!/usr/bin/env bash
# The seed's steps 10-11 as a person's shell loop, one device after the other:
# a software RSA key, a CSR with CN = thing name, a certificate from the CA
# with `openssl x509 -req`, the device+CA chain file, then `mosquitto_pub`
# until AWS IoT (here iot-sim) accepts it. The first connect is dropped by
# JITR; the loop sleeps 1 s between tries, as a hand-written script would
# (and AWS allows one CONNECT per second per client id anyway).
#
#   seed_enroll.sh WORKDIR CA_PEM CA_KEY ROOT_CA HOST PORT FIRST COUNT [DEADLINE]
#
# Devices are named seed-NNNN from FIRST. DEADLINE (epoch seconds, optional):
# no new device is started after it. One line per enrolled device on stdout,
# the thing name, the connect tries and five $EPOCHREALTIME stamps (before
# genrsa, req, x509, mosquitto_pub, and after the accepted connect); the
# caller computes the spans so the loop spawns nothing but the seed's tools:
#   seed-0001 2 1764258000.123456 1764258000.345678 ...
# Exit status non-zero when a device did not get through in MAX_TRIES.
set -u

workdir=$1 ca_pem=$2 ca_key=$3 root_ca=$4 host=$5 port=$6 first=$7 count=$8
deadline=${9:-0}
max_tries=${MAX_TRIES:-30}

for ((i = first; i < first + count; i++)); do
  if [[ $deadline != 0 ]] && (( ${EPOCHREALTIME%.*} >= deadline )); then
    break
  fi
  thing=$(printf 'seed-%04d' "$i")
  dir=$workdir/$thing
  mkdir -p "$dir" && cd "$dir" || exit 2

  t0=$EPOCHREALTIME
  openssl genrsa -out deviceCert.key 2048 2>/dev/null || exit 3
  t1=$EPOCHREALTIME
  openssl req -new -key deviceCert.key -out deviceCert.csr -subj "/CN=$thing" || exit 3
  t2=$EPOCHREALTIME
  openssl x509 -req -in deviceCert.csr -CA "$ca_pem" -CAkey "$ca_key" -CAcreateserial \
    -out deviceCert.crt -days 365 -sha256 2>/dev/null || exit 3
  cat deviceCert.crt "$ca_pem" > deviceCertAndCACert.crt
  t3=$EPOCHREALTIME

  tries=1
  until mosquitto_pub --cafile "$root_ca" --cert deviceCertAndCACert.crt --key deviceCert.key \
      -h "$host" -p "$port" -q 1 -t "dt/$thing/hello" -i "$thing" --tls-version tlsv1.2 \
      -m Hello >>mosquitto_pub.log 2>&1; do
    if ((tries >= max_tries)); then
      echo "$thing: not accepted after $tries tries" >&2
      exit 4
    fi
    tries=$((tries + 1))
    sleep 1
  done
  t4=$EPOCHREALTIME

  echo "$thing $tries $t0 $t1 $t2 $t3 $t4"
done
