#!/usr/bin/env bash
# Installs Debian's prometheus-alertmanager (the real Alertmanager the alert tests post to) unless it
# is already there; the tests start it themselves on loopback with their own config, so the Debian
# service is not needed (policy-rc.d keeps it from starting, and it is stopped if it did).
set -euo pipefail
if command -v prometheus-alertmanager >/dev/null 2>&1; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends prometheus-alertmanager
echo "setup: $(prometheus-alertmanager --version 2>&1 | head -1)"
