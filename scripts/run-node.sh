#!/bin/sh
# `make run`: start the node on the embedded default, with a fresh data
# directory on first run, and say where it listens and how to get a key.
set -eu
penin=$1
data=$2
port=${PENIN_SERVER__PORT:-8080}

if [ ! -f "$data/ledger.db" ]; then
  "$penin" ledger init --data-dir "$data"
fi
cat <<MSG
PENIN-Ω node: http://127.0.0.1:$port  (data in $data, API docs at /docs)
Get an admin key in another terminal:
  .venv/bin/penin keys create --data-dir $data --scope admin
Then:  curl -H "Authorization: Bearer <token>" http://127.0.0.1:$port/v1/ledger/records
Stop with Ctrl-C (the node drains in-flight requests and flushes the ledger).
MSG
exec "$penin" serve --data-dir "$data" --port "$port"
