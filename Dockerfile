# syntax=docker/dockerfile:1.7
#
# Image for tiktok-auth0-proxy: the proxy and, as the `sandbox` subcommand of the same binary, the
# TikTok stand-in used by the local cluster.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/tiktok-auth0-proxy:TAG .
#
# The builder always runs on the build machine's own architecture and cross-compiles, because
# compiling Rust under QEMU emulation is many times slower than a cross toolchain.

# The runtime's glibc must be at least as new as the builder's: keep both on the same Debian
# release when overriding either.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# The skeleton holds the manifests plus an empty stand-in for every Rust source file. It changes
# only when a manifest changes or a source file is added or removed, so the dependency build
# below stays cached while the project's own code changes.
FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS skeleton
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /context
COPY . .
RUN mkdir -p /skeleton \
    && find . \( -name Cargo.toml -o -name Cargo.lock \) -exec cp --parents {} /skeleton/ \; \
    && find . -name '*.rs' -print | while read -r rs; do \
         mkdir -p "/skeleton/$(dirname "$rs")"; \
         echo '#![allow(dead_code)] fn main() {}' > "/skeleton/$rs"; \
       done

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS builder
ARG TARGETARCH
# `release` for shipped images; the local Tilt loop passes `dev` for faster rebuilds.
ARG CARGO_PROFILE=release
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV CARGO_TARGET_DIR=/cargo-target
WORKDIR /src

# Cross compilers are only installed when the target differs from the build machine; `ring`
# compiles C and assembly, so it needs a C compiler for the target as well as a linker.
# Debian package versions are not pinned: the builder never ships, and pins of Debian point
# releases break as soon as the archive moves on.
# hadolint ignore=DL3008
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; gnu=x86_64-linux-gnu; \
             cross_gcc=gcc-x86-64-linux-gnu; cross_libc=libc6-dev-amd64-cross ;; \
      arm64) triple=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; \
             cross_gcc=gcc-aarch64-linux-gnu; cross_libc=libc6-dev-arm64-cross ;; \
      *) echo "unsupported TARGETARCH '$TARGETARCH' (amd64 and arm64 are)" >&2; exit 1 ;; \
    esac; \
    set -- ca-certificates; \
    if [ "$(dpkg --print-architecture)" != "$TARGETARCH" ]; then set -- "$@" "$cross_gcc" "$cross_libc"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends "$@"; \
    rm -rf /var/lib/apt/lists/*; \
    rustup target add "$triple"; \
    var=$(echo "$triple" | tr 'a-z-' 'A-Z_'); \
    low=$(echo "$triple" | tr '-' '_'); \
    { echo "export RUST_TRIPLE=$triple"; \
      if [ "$(dpkg --print-architecture)" != "$TARGETARCH" ]; then \
        echo "export CARGO_TARGET_${var}_LINKER=${gnu}-gcc"; \
        echo "export CC_${low}=${gnu}-gcc"; \
        echo "export AR_${low}=${gnu}-ar"; \
      fi; } > /usr/local/etc/rust-target.env

# Dependencies only: compiled against the skeleton, kept in the cache mount and in this layer.
COPY --from=skeleton /skeleton/ ./
RUN --mount=type=cache,target=/usr/local/cargo/registry,id=cargo-registry,sharing=locked \
    --mount=type=cache,target=/cargo-target,id=cargo-target-${TARGETARCH}-${CARGO_PROFILE},sharing=locked \
    . /usr/local/etc/rust-target.env \
    && cargo build --locked --profile "$CARGO_PROFILE" --target "$RUST_TRIPLE"

# The project itself. Every source file is touched because the context's files may carry
# modification times older than the skeleton build, and cargo would then keep the stand-ins.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,id=cargo-registry,sharing=locked \
    --mount=type=cache,target=/cargo-target,id=cargo-target-${TARGETARCH}-${CARGO_PROFILE},sharing=locked \
    . /usr/local/etc/rust-target.env \
    && find . -name '*.rs' -exec touch {} + \
    && cargo build --locked --profile "$CARGO_PROFILE" --target "$RUST_TRIPLE" \
         --bin tiktok-auth0-proxy \
    && profile_dir=$([ "$CARGO_PROFILE" = dev ] && echo debug || echo "$CARGO_PROFILE") \
    && mkdir -p /out \
    && cp "/cargo-target/$RUST_TRIPLE/$profile_dir/tiktok-auth0-proxy" /out/

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="tiktok-auth0-proxy" \
      org.opencontainers.image.description="Token proxy that lets Auth0 sign users in with TikTok" \
      org.opencontainers.image.licenses="Apache-2.0"
# The CA bundle comes from the builder so that any glibc runtime image works, including ones
# that ship without certificates; TikTok is only reached over TLS.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/tiktok-auth0-proxy /usr/local/bin/tiktok-auth0-proxy
# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd lookup. The process
# writes nothing to disk, so the image runs with a read-only root filesystem.
USER 65532:65532
# 8080: public listener (Auth0-facing). 9090: admin listener (/livez, /readyz, /metrics).
# The `sandbox` subcommand listens on 9400 instead; it is for local clusters only.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tiktok-auth0-proxy"]
CMD ["serve"]
