# syntax=docker/dockerfile:1
# meshproof's image: a static binary on distroless, as a non-root user.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t REGISTRY/meshproof:TAG .
#
# No image is built in this repository's CI (no Docker engine there):
# deploy/dockerfile_test.go parses this file with BuildKit's parser and
# replays the build stage's commands on the .dockerignore'd context.
# Pin both base images by digest in your own builds.

ARG GO_IMAGE=golang:1.26.8
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
# Dependencies first, so that a source change reuses this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Pure Go (the SQLite driver too): no cgo, so the binary needs no libc and
# runs on a base without one.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/meshproof ./cmd/meshproof
# The evidence directory, owned by the runtime user, so that a volume
# mounted there starts writable.
RUN mkdir -p /out/var/lib/meshproof

FROM ${RUNTIME_IMAGE}
# distroless/static carries CA certificates, time zones and /etc/passwd with
# the nonroot user (65532).
COPY --from=build /out/meshproof /meshproof
COPY --from=build --chown=65532:65532 /out/var/lib/meshproof /var/lib/meshproof
USER 65532:65532
VOLUME ["/var/lib/meshproof"]
# 9191: ext_authz gRPC. 8181: the evidence API, UI, metrics and probes; the
# default command below keeps it on loopback, because serve exposes it only
# with --api-token-file (or mTLS): the Kubernetes manifests give both.
EXPOSE 9191 8181
ENTRYPOINT ["/meshproof"]
CMD ["serve", "--grpc-addr=0.0.0.0:9191", "--store=sqlite:/var/lib/meshproof/evidence.db"]
