# syntax=docker/dockerfile:1
# The controller image: the `sluice-controller` binary (crate
# `sluice-controller`, controller/) on distroless (glibc, no shell, user
# 65532), as charts/sluice runs it:
#   sluice-controller --listen 0.0.0.0:7070 --admin 0.0.0.0:7071 --namespace NS --token-file PATH
# Build from the repository's root (BuildKit):
#   docker build -f docker/controller.Dockerfile -t sluice-controller:0.1.0 .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-controller --bin sluice-controller \
    && cp target/release/sluice-controller /usr/local/bin/sluice-controller

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/sluice-controller /usr/local/bin/sluice-controller
USER 65532:65532
# Config stream for the proxies, and admin (/healthz, /readyz, /metrics).
EXPOSE 7070 7071
ENTRYPOINT ["/usr/local/bin/sluice-controller"]
