# syntax=docker/dockerfile:1
# The sluice container image: `docker build -t sluice:0.1.0 .` from the repository root.
# Stage 1 builds the release binary; stage 2 is a small Debian runtime with only that binary, run as a
# non-root user. The Helm chart (helm/sluice) runs it with a read-only root filesystem.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# librdkafka (the Kafka exporter) is built from source by rdkafka-sys: it needs a C toolchain, make,
# perl and zlib headers, which the rust:*-bookworm image already has.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice \
 && install -D -m 0755 target/release/sluice /out/sluice

FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sluice --no-create-home --shell /usr/sbin/nologin sluice \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/sluice /etc/sluice
COPY --from=builder /out/sluice /usr/local/bin/sluice
# The build check: the binary starts and its shared libraries are all present in this image.
RUN sluice --version
USER 10001:10001
WORKDIR /var/lib/sluice
# OTLP gRPC, OTLP HTTP, admin (/healthz /readyz /metrics /status).
EXPOSE 4317 4318 13133
ENTRYPOINT ["/usr/local/bin/sluice"]
