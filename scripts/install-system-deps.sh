#!/bin/sh
# Install the Debian packages the tests and benchmarks need, only when missing.
# Each line: a command the tests run, then the package that provides it.
set -eu

needed=""
while read -r command package; do
  [ -z "$command" ] && continue
  command -v "$command" >/dev/null 2>&1 || needed="$needed $package"
done <<'LIST'
sqlite3 sqlite3
promtool prometheus
wrk wrk
redis-server redis-server
etcd etcd-server
etcdctl etcd-client
LIST

[ -z "$needed" ] && exit 0
echo "installing system packages:$needed"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $needed
