# An image holding only mock-proxy, for a CI job's service container (docs/ci.md).
#
#   cargo xtask dist        # or unpack a release tarball into target/dist/
#   docker build -f examples/mock-proxy.Dockerfile -t hostproxy-mock target/dist
#
# TARGETARCH (amd64 or arm64) picks the right static binary; `docker buildx build
# --platform linux/arm64` sets it. The mock listens on every address of its container,
# on port 18374; pass --token to enforce a token as the daemon does.
FROM scratch
ARG TARGETARCH=amd64
COPY ${TARGETARCH}/mock-proxy /mock-proxy
EXPOSE 18374
ENTRYPOINT ["/mock-proxy", "--listen", "0.0.0.0"]
