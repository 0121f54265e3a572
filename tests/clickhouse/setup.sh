#!/usr/bin/env bash
# Installs chfront's Python packages (tests/clickhouse/requirements.txt, all pinned) into a venv.
#   tests/clickhouse/setup.sh            -> the repository's .venv (created if missing)
#   tests/clickhouse/setup.sh PATH       -> the venv at PATH (created if missing)
# Idempotent: does nothing when the venv already has this requirements.txt installed.
# Needs python3 with the venv module (Debian: python3-venv, installed here if missing) and PyPI.
# Run it after tests/setup.sh, which recreates .venv whenever tests/requirements.txt changes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/.venv}"
req="$here/requirements.txt"
stamp="$venv/.chfront-requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$venv/bin/python" -c 'import chdb, lz4.block, zstandard, clickhouse_cityhash.cityhash' 2>/dev/null; then
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "setup: python3 venv module missing; installing python3-venv" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv
  fi
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
"$venv/bin/python" -c 'import chdb; chdb.connect(":memory:").query("SELECT 1", "CSV")' >/dev/null
echo "$want" > "$stamp"
echo "setup: chfront packages ready in $venv"
