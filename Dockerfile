# sidecrypt container image: a cgo build (PKCS#11 modules are loaded with
# dlopen) on Debian, copied into a small Debian runtime that runs as a
# non-root user. Build: docker build -t sidecrypt .
# Every step below is the same command `make build` and scripts/deps.sh run
# on a Debian bookworm machine.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Module downloads first, so that a code change does not refetch them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/sidecrypt ./cmd/sidecrypt \
 && /out/sidecrypt version

FROM debian:bookworm-slim
# ca-certificates: verifying HTTPS upstreams and etcd. Nothing else: the
# HSM vendor's PKCS#11 module is mounted into the container at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sidecrypt \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sidecrypt --create-home --shell /usr/sbin/nologin sidecrypt \
 && chmod 0700 /var/lib/sidecrypt
COPY --from=build /out/sidecrypt /usr/local/bin/sidecrypt
USER 10001:10001
WORKDIR /var/lib/sidecrypt
# Inside a pod the app reaches the sidecar over the pod's loopback, so the
# proxy listener can stay on 127.0.0.1 there; set SIDECRYPT_LISTEN to
# 0.0.0.0:8080 only when the app runs in another container network.
ENV SIDECRYPT_KEYSTORE=/var/lib/sidecrypt/keys.db \
    SIDECRYPT_LOG_FORMAT=json
VOLUME ["/var/lib/sidecrypt"]
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/sidecrypt"]
CMD ["serve"]
