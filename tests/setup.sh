#!/usr/bin/env bash
# Installs everything the end-to-end tests need into ./.venv (idempotent; reinstalls only when
# tests/requirements.txt changed). Needs python3 with the venv module (Debian: python3-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  echo "setup: python3 venv module missing; installing python3-venv" >&2
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
echo "$want" > "$stamp"
echo "setup: python test environment ready in $venv"
