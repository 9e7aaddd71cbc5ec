# sidecrypt container image: a cgo build (PKCS#11 modules are loaded with
# dlopen) on Debian, copied into a small Debian runtime that runs as a
# non-root user. Build: docker build -t sidecrypt .
# The build stage's command is the one internal/doctest runs to build the
# binary its tests use, so it is checked by make test without a Docker
# engine; the runtime stage's are plain Debian ones.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Module downloads first, so that a code change does not refetch them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sidecrypt ./cmd/sidecrypt && /out/sidecrypt version

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
# The proxy listens on every address of the container: outside one,
# 127.0.0.1 is the container's own loopback, which `docker run -p
# 8080:8080` cannot reach. Publish it only where the application is
# (-p 127.0.0.1:8080:8080, or a network only the application shares); in
# a Kubernetes pod, set SIDECRYPT_LISTEN=127.0.0.1:8080 (the pod's
# loopback, shared with the application).
#
# The admin listener stays on the container's loopback: the HEALTHCHECK
# runs inside the container, and /healthz, /readyz and /metrics need no
# credential there. Set SIDECRYPT_ADMIN_LISTEN=0.0.0.0:8081 (and publish
# 8081) for a Prometheus or a probe outside; the admin API itself then
# still needs credentials, and tokens need TLS on it.
ENV SIDECRYPT_LISTEN=0.0.0.0:8080 \
    SIDECRYPT_ADMIN_LISTEN=127.0.0.1:8081 \
    SIDECRYPT_KEYSTORE=/var/lib/sidecrypt/keys.db \
    SIDECRYPT_LOG_FORMAT=json
VOLUME ["/var/lib/sidecrypt"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/sidecrypt", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sidecrypt"]
CMD ["serve"]
