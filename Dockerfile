# The image the pods of `kiln export argo` run: the release binary and nothing else.
#
#   docker build -t registry.example.com/kiln:0.1 .
#
# Build stage: the workspace in release mode (CPU build; for GPU pods build
# FROM an nvidia/cuda devel image with `--features cuda` instead).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kiln

# Run stage: a slim Debian (glibc, CA certificates for the object store's
# HTTPS), a non-root user, the binary.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin kiln
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
USER 10001:10001
WORKDIR /home/kiln
# Pods fetch the pipeline and its files into a temporary folder; the data
# folder of a fetched pipeline is fetched there too.
ENV TMPDIR=/tmp
ENTRYPOINT []
CMD ["kiln", "--help"]
