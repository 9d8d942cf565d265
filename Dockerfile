# Multi-stage build: compile in the Rust image, ship the binary alone on a
# minimal base, running as an unprivileged user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY docs ./docs
COPY examples ./examples
COPY benches ./benches
RUN cargo build --release --locked --bin fleetwake && strip target/release/fleetwake

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/fleetwake /usr/local/bin/fleetwake
USER nonroot:nonroot
WORKDIR /home/nonroot
ENTRYPOINT ["/usr/local/bin/fleetwake"]
CMD ["--help"]
