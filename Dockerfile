# The operator image the chart runs (charts/plugboard, `image.repository`):
#   docker build -t ghcr.io/plugboard-dev/plugboard:0.1.0 .
# Two stages: a Rust builder, then a distroless runtime holding only the `plugboard` binary
# (glibc, CA certificates, a non-root user; no shell, no package manager).

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# `--no-default-features` leaves out `plugboard dev` (and the local control plane it builds).
# The cache mounts keep crates and build outputs between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plugboard --no-default-features --bin plugboard \
 && install -D -m 0755 target/release/plugboard /out/plugboard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/plugboard /usr/local/bin/plugboard
# The chart runs as this user too (runAsUser 65532), with a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/plugboard"]
CMD ["run"]
