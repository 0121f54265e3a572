#!/usr/bin/env bash
# Sets up everything the tests need and runs all of them: formatting, clippy, the optimized build,
# Rust unit and end-to-end tests, the benches once each, the end-to-end tests with real clients
# (OpenTelemetry SDK, chDB-backed ClickHouse, a Kafka broker, the Helm chart), and the quick
# benchmark scenarios. Works on a fresh Debian machine with the Rust toolchain; .ci/run calls exactly
# this.
#
# On 2 cores the time goes to compiling. The Kafka broker (tansu, built from crates.io once per
# machine) compiles in the background at the lowest priority from the start, so it uses the CPU the
# foreground leaves idle (downloads, linking, the end-to-end tests) instead of adding its own
# minutes; the Kafka tests run last, once it is there. The downloads (PyPI, Debian, npm) run in the
# background while the workspace compiles. The workspace is compiled once, in the `ci`
# profile (release without LTO), for the binary, the tests and the benches' test mode alike.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }
mkdir -p target

step "system libraries for the build: OpenSSL headers and pkg-config (librdkafka's TLS; Debian)"
# Before any background job: they may call apt-get too, which takes a lock.
if ! pkg-config --exists openssl 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config
fi

step "Kafka broker (tansu from crates.io, once per machine): building in the background"
nice -n 19 bash tests/kafka/setup.sh > target/kafka-setup.log 2>&1 &
kafka_setup=$!

step "Python test environment (OpenTelemetry SDK, chDB, confluent-kafka, Pyroscope and Helm SDKs; PyPI) and browser and terminal tools (Debian chromium + tmux, playwright-core from npm), Alertmanager (Debian prometheus-alertmanager): in the background"
# One after the other: both may call apt-get, which takes a lock.
(bash tests/setup.sh && bash tests/browser/setup.sh && bash tests/alertmanager/setup.sh) > target/test-setup.log 2>&1 &
test_setup=$!

step "toolchain components"
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build --profile ci --all-targets (binary, tests, benches)"
cargo build --workspace --all-targets --locked --profile ci
export SLUICE_BIN="$PWD/target/ci/sluice"
export SLUICE_LOADGEN="$PWD/target/ci/sluice-loadgen"

step "cargo test (unit, Rust end-to-end against $SLUICE_BIN, criterion benches once each; fuzz targets 30 s each)"
SLUICE_FUZZ_SECONDS="${SLUICE_FUZZ_SECONDS:-30}" cargo test --workspace --all-targets --locked --profile ci

step "waiting for the Python environment and the browser tools"
if ! wait "$test_setup"; then
  cat target/test-setup.log >&2
  echo "test environment setup failed" >&2
  exit 1
fi
cat target/test-setup.log

step "end-to-end tests with real clients (all but Kafka), chfront's and the Helm chart's tests"
.venv/bin/python -m pytest -q -p no:cacheprovider --ignore=tests/e2e/test_kafka.py --ignore=tests/e2e/test_kafka_receiver.py

step "benchmarks with running services, once each (quick mode; Kafka's last)"
.venv/bin/python bench/clickhouse_rows.py --quick
.venv/bin/python bench/reload.py --quick

step "waiting for the Kafka broker build"
if ! wait "$kafka_setup"; then
  cat target/kafka-setup.log >&2
  echo "Kafka broker build failed" >&2
  exit 1
fi

step "Kafka end-to-end tests (tansu broker, confluent-kafka clients: the exporter, the receiver's consumer group) and the benchmark scenarios"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e/test_kafka.py tests/e2e/test_kafka_receiver.py
.venv/bin/python bench/run.py --quick

step "all tests passed"
