# One image for every cephdr role: `cephdr operator`, `cephdr agent` (needs the Ceph CLIs), `cephdr sync`.
# Build: docker build -t cephdr:dev .
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY e2e/Cargo.toml e2e/Cargo.toml
RUN mkdir -p src e2e/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs e2e/src/lib.rs \
 && cargo build --release --locked --bin cephdr && rm -rf src e2e/src
COPY src src
COPY e2e/src e2e/src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin cephdr && strip target/release/cephdr

FROM docker.io/library/debian:bookworm-slim
# ceph-common carries ceph, rbd and radosgw-admin (Pacific 16.2, as Debian 12 ships it).
RUN apt-get update && apt-get install -y --no-install-recommends ceph-common ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --no-create-home cephdr
COPY --from=build /src/target/release/cephdr /usr/local/bin/cephdr
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cephdr"]
CMD ["operator"]
