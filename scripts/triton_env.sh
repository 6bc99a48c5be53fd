#!/usr/bin/env bash
# Build the environment `sync-sdk serve` and tests/test_triton_server.py run in: a venv made from Debian's
# /usr/bin/python3.11 with this checkout installed editable and its `serve` extra (nvidia-pytriton, which
# ships tritonserver and its Python backend stub, and tritonclient).
#
# Why not the default python3: the stub in the nvidia-pytriton wheel loads the system's shared
# libpython3.11 (Debian's 3.11.2). Under pyenv's 3.11.7 (no shared libpython) it loads 3.11.2 against
# 3.11.7's standard library and the model fails to load. A venv of Debian's own python3.11 matches it.
#
#   bash scripts/triton_env.sh            # builds build/serve-venv (quick when it is already built)
#   build/serve-venv/bin/sync-sdk serve --model synthetic-tiny --media-root DIR
#   build/serve-venv/bin/python -m pytest -q tests/test_triton_server.py
#
# SYNC_SDK_SERVE_VENV: where the venv goes (default build/serve-venv, ignored by git).
# Installs python3.11, python3.11-venv and libpython3.11 with apt-get when they are missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SYNC_SDK_SERVE_VENV:-build/serve-venv}
BASE=/usr/bin/python3.11
PYTEST="pytest==9.0.3"  # the dev extra's pin: the tests run in this venv

have_base() {
  [ -x "$BASE" ] && "$BASE" -c 'import ensurepip, venv' 2>/dev/null \
    && ldconfig -p | grep -q 'libpython3\.11\.so\.1\.0'
}
if ! have_base; then
  echo "triton_env: installing Debian's python3.11, python3.11-venv and libpython3.11" >&2
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "triton_env: need $BASE with venv and libpython3.11.so.1.0; install python3.11-venv libpython3.11 as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3.11 python3.11-venv libpython3.11 >/dev/null
fi

# what the venv was built from: rebuilt when any of it changes (the code itself is installed editable)
stamp=$( { sha256sum setup.py "$0"; "$BASE" --version; pwd; } | sha256sum | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.built-from" 2>/dev/null)" = "$stamp" ]; then
  echo "triton_env: $VENV is up to date" >&2
  exit 0
fi
start=$(date +%s)
rm -rf "$VENV"
"$BASE" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[serve]' "$PYTEST"
"$VENV/bin/python" -c 'import pytriton, tritonclient.grpc, tritonclient.http, sync_sdk'
echo "$stamp" > "$VENV/.built-from"
echo "triton_env: built $VENV in $(( $(date +%s) - start )) s" >&2
