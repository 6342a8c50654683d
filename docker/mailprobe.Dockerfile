# mailprobe CLI. Build from the repository root:
#   docker build -f docker/mailprobe.Dockerfile -t mailprobe .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mailprobe \
    && install -m 0755 target/release/mailprobe /usr/local/bin/mailprobe

FROM debian:bookworm-slim
# TLS is rustls with compiled-in webpki roots: no OpenSSL or CA bundle needed.
COPY --from=build /usr/local/bin/mailprobe /usr/local/bin/mailprobe
ENTRYPOINT ["mailprobe"]
