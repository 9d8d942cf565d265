# fleetwake: the binary alone on a distroless base, as an unprivileged user.
# Build:  docker build --build-arg FLEETWAKE_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" -t fleetwake .
# Run:    docs/DEPLOYMENT.md ("Docker"): config and secrets are mounted, never baked in.
# scripts/check-docker-context builds this file's build stage from its own
# context in CI (no Docker daemon there), reading the COPY and RUN lines below.

FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own: the manifest, the lock file and
# the build script, with empty targets, so that a change under src/ rebuilds
# fleetwake only, not every crate.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches examples \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && echo 'fn main() {}' > examples/own_queue.rs \
    && cargo build --release --locked --bin fleetwake \
    && rm -rf src

# Then the code, and the two documents it compiles in.
COPY src ./src
COPY docs/openapi.json docs/wake-request.v1.schema.json ./docs/
ARG FLEETWAKE_GIT_COMMIT=unknown
ENV FLEETWAKE_GIT_COMMIT=${FLEETWAKE_GIT_COMMIT}
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin fleetwake \
    && strip target/release/fleetwake \
    && ./target/release/fleetwake --version

FROM gcr.io/distroless/cc-debian12:nonroot
ARG FLEETWAKE_GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="fleetwake" \
      org.opencontainers.image.description="Wake Windows devices for MDM through WNS raw push, at fleet scale" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.source="https://github.com/fleetwake/fleetwake" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${FLEETWAKE_GIT_COMMIT}"
COPY --from=build /src/target/release/fleetwake /usr/local/bin/fleetwake
# The distroless "nonroot" user (uid and gid 65532), numeric so that the
# runtime can check it without the image's passwd file.
USER 65532:65532
WORKDIR /home/nonroot
# `serve` listens here when its config says `listen = "0.0.0.0:8080"`;
# `consume` serves /healthz on its `[consume] listen` (9185 in the docs).
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/fleetwake", "healthcheck", "--addr", "127.0.0.1:8080", "--path", "/healthz"]
ENTRYPOINT ["/usr/local/bin/fleetwake"]
CMD ["--help"]
