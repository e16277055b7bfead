# The init-container image (SPEC.md 12): the static container tools and nothing else. Its
# one job: `clawker-socket-server install DIR` copies itself and the tools into DIR, a
# volume (a Kubernetes emptyDir) that a stock container mounts; the daemon then attaches
# that container with `--via 'kubectl exec -i POD -c CONTAINER -- DIR/clawker-socket-server'`.
#
# Build from the output of `cargo xtask dist` (amd64 and arm64 name its two folders):
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -f docs/init-image.Dockerfile -t hostproxy-tools target/dist
FROM scratch
ARG TARGETARCH
COPY ${TARGETARCH}/ /opt/hostproxy/bin/
ENTRYPOINT ["/opt/hostproxy/bin/clawker-socket-server", "install"]
CMD ["/hostproxy"]
