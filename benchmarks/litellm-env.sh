#!/bin/sh
# Creates benchmarks/.litellm-venv with LiteLLM's proxy, for router_bench.py only.
# It is never a dependency of PENIN-Ω: it lives in its own virtualenv, outside
# pyproject.toml, and the benchmark skips LiteLLM when it is absent.
set -eu

LITELLM_VERSION=1.108.0
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${1:-$HERE/.litellm-venv}
PYTHON=${PYTHON:-python3}

if [ -x "$VENV/bin/litellm" ] && "$VENV/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')"
then
    echo "litellm $LITELLM_VERSION already in $VENV"
    exit 0
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "litellm[proxy]==$LITELLM_VERSION"
echo "litellm $LITELLM_VERSION installed in $VENV"
