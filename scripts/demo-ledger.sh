#!/bin/sh
# `make run` until the HTTP node exists: a ledger you can watch work.
set -eu
penin=$1
data=$2

[ -f "$data/ledger.db" ] || "$penin" ledger init --data-dir "$data"
"$penin" ledger append --data-dir "$data" --type demo.run \
  --payload "{\"started_by\": \"make run\", \"user\": \"${USER:-unknown}\"}"
echo "--- last records"
"$penin" ledger tail --data-dir "$data" -n 5
echo "--- signed checkpoint"
"$penin" ledger checkpoint --data-dir "$data"
echo "--- verification"
"$penin" ledger verify --data-dir "$data"
echo "--- inclusion proof of the newest record"
seq=$(( $("$penin" ledger count --data-dir "$data") - 1 ))
"$penin" ledger prove --data-dir "$data" --seq "$seq"
