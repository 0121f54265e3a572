#!/usr/bin/env bash
# Sets up everything the tests need and runs all of them: formatting, clippy, the release build,
# Rust unit and end-to-end tests, and the end-to-end tests with the OpenTelemetry Python SDK.
# Works on a fresh Debian machine with the Rust toolchain; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

step "toolchain components"
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build --release"
cargo build --workspace --release --locked
export SLUICE_BIN="$PWD/target/release/sluice"

step "benchmarks compile and run once (criterion --test mode)"
cargo bench --workspace --locked -- --test

step "Python test environment (OpenTelemetry SDK, chDB for a real ClickHouse engine; from PyPI)"
bash tests/setup.sh

step "Browser and terminal tools for the status page and sluice top tests (Debian chromium + tmux, playwright-core from npm)"
bash tests/browser/setup.sh

step "Kafka broker for the Kafka exporter tests and benchmark (tansu from crates.io, built once per machine)"
bash tests/kafka/setup.sh

step "cargo test (unit + Rust end-to-end against $SLUICE_BIN)"
cargo test --workspace --locked

step "end-to-end tests with the OpenTelemetry Python SDK (and chfront's own tests)"
.venv/bin/python -m pytest -q -p no:cacheprovider

step "benchmarks with running services, once each (quick mode)"
.venv/bin/python bench/clickhouse_rows.py --quick
.venv/bin/python bench/run.py --quick

step "all tests passed"
