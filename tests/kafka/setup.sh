#!/usr/bin/env bash
# Installs tansu (an Apache Kafka-compatible broker written in Rust, from crates.io) for the Kafka
# exporter's tests and benchmark, unless it is already there. Prints the binary's path.
#
# It is cached outside the checkout (SLUICE_TOOLS, default ~/.cache/sluice-tools) so that later
# runs on the same machine skip the build; a fresh machine builds it once (~8-15 min on 2 cores).
# The build uses a light release profile (no LTO, opt-level 0): the tests need a correct broker,
# not a fast one.
set -euo pipefail
version=0.6.0
root="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}/tansu-$version"
bin="$root/bin/tansu"
if [ ! -x "$bin" ]; then
  echo "kafka setup: building tansu $version into $root (once per machine)" >&2
  CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
  CARGO_PROFILE_RELEASE_DEBUG=0 \
  CARGO_PROFILE_RELEASE_INCREMENTAL=false \
  CARGO_TARGET_DIR="${TMPDIR:-/tmp}/sluice-tansu-build" \
    cargo install tansu --version "$version" --locked --features dynostore --root "$root" --quiet >&2
  rm -rf "${TMPDIR:-/tmp}/sluice-tansu-build"
fi
echo "$bin"
