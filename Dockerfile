# calico-libnetwork image: the daemon, calicoctl, and iptables (both back
# ends, behind a wrapper that picks the host's) on an empty base. It is also
# the managed plugin's root file system (make plugin).
#
# Two ways to build it:
#
#   make image
#       From the static binaries `make build` made and this machine's
#       iptables (scripts/image-rootfs.sh stages build/image/rootfs); needs
#       no registry. It builds the first stage only:
#       docker build --target prebuilt .
#
#   docker buildx build -t calico-libnetwork \
#       --build-arg VERSION=$(git describe --tags --always --dirty) \
#       --build-arg COMMIT=$(git rev-parse --short HEAD) .
#       From source, in golang and Debian stages pulled from a registry.
#       (The legacy builder, DOCKER_BUILDKIT=0, builds every stage up to the
#       target, which is why `prebuilt` comes first and needs build/image/rootfs;
#       with it run `make image-rootfs` first or use BuildKit.)

# ---- from binaries built on the host --------------------------------------
FROM scratch AS prebuilt
COPY build/image/rootfs/ /
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="calico-libnetwork" \
      org.opencontainers.image.description="Calico-style layer-3 Docker network (calico) and IPAM (calico-ipam) drivers" \
      org.opencontainers.image.source="https://github.com/calico-libnetwork/calico-libnetwork" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/calico-libnetwork"]

# ---- from source -----------------------------------------------------------
FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
RUN rm -rf bin build \
 && make build image-rootfs VERSION="${VERSION}" COMMIT="${COMMIT}" DATE="${DATE}"

FROM scratch
COPY --from=build /src/build/image/rootfs/ /
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="calico-libnetwork" \
      org.opencontainers.image.description="Calico-style layer-3 Docker network (calico) and IPAM (calico-ipam) drivers" \
      org.opencontainers.image.source="https://github.com/calico-libnetwork/calico-libnetwork" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/calico-libnetwork"]
