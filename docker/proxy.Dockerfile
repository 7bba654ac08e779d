# syntax=docker/dockerfile:1
# The proxy image: the `sluice` binary (crate `sluice`, proxy/) on distroless
# (glibc, no shell, user 65532), as charts/sluice runs it:
#   sluice run --controller URL --controller-token-file PATH --listen 0.0.0.0:1975 --admin 0.0.0.0:1976
# Build from the repository's root (BuildKit):
#   docker build -f docker/proxy.Dockerfile -t sluice:0.1.0 .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches speed up rebuilds; the binary is copied out
# of the cache mount so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice --bin sluice \
    && cp target/release/sluice /usr/local/bin/sluice

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
USER 65532:65532
# Data plane and admin (/healthz, /readyz, /metrics).
EXPOSE 1975 1976
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "--listen", "0.0.0.0:1975", "--admin", "0.0.0.0:1976"]
