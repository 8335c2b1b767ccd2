# syntax=docker/dockerfile:1
# One image with both binaries; docker-compose.yml picks one with `command`.

FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target folder between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin api-gateway --bin log-consumer \
 && mkdir -p /out/bin /out/migrations \
 && cp target/release/api-gateway target/release/log-consumer /out/bin/ \
 && if [ -d migrations ]; then cp -r migrations/. /out/migrations/; fi

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app app
COPY --from=builder /out/bin/ /usr/local/bin/
# log-consumer applies migrations/ at start (relative to its working directory).
COPY --from=builder /out/migrations/ /app/migrations/
WORKDIR /app
USER app
ENV LOG_FORMAT=json RUST_LOG=info
EXPOSE 8080 8081
CMD ["api-gateway"]
