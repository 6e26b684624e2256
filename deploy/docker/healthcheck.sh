#!/bin/bash
# The image's HEALTHCHECK: GET /livez from the herd in this container with
# bash's /dev/tcp, since the image has no curl (bash is Essential in Debian;
# curl would add libcurl, OpenSSL and CA certificates for one GET on
# loopback). Exits 0 on a 200, 1 otherwise; every step is bounded (connect to
# loopback fails at once when nothing listens, the read waits 5 s at most).
#
# The port is $HERD_HEALTH_PORT (8080, the image's default --port): set it
# too when you start herd on another port.
set -u
port=${HERD_HEALTH_PORT:-8080}
if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    echo "healthcheck: nothing listens on 127.0.0.1:$port"
    exit 1
fi
printf 'GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
if ! IFS= read -r -t 5 status <&3; then
    echo "healthcheck: no answer from 127.0.0.1:$port/livez within 5 s"
    exit 1
fi
status=${status%$'\r'}
case $status in
"HTTP/1."?" 200 "* | "HTTP/1."?" 200") exit 0 ;;
esac
echo "healthcheck: /livez answered: $status"
exit 1
