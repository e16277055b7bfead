#!/bin/sh
# Run an agent container wired to the hostproxy daemon on this host.
#
#   examples/run.sh IMAGE [COMMAND...]
#
# Starts the daemon if needed (listening on Docker's bridge gateway too, so containers on
# native Linux Docker reach it), mounts the token read-only, and passes the flags a
# container needs. Inside, run `ssh-agent-proxy --socket "$SSH_AUTH_SOCK" &` for SSH.
set -eu
image=${1:?usage: examples/run.sh IMAGE [COMMAND...]}
shift
hostproxy=${HOSTPROXY:-hostproxy}
port=${CLAWKER_HOST_PROXY_PORT:-18374}

"$hostproxy" start --port "$port" -- --listen-docker-bridge >&2
token_file=$("$hostproxy" token >/dev/null && echo "${CLAWKER_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/clawker}/hostproxy.token")

exec docker run --rm -i \
  --add-host host.docker.internal:host-gateway \
  -e CLAWKER_HOST_PROXY="http://host.docker.internal:$port" \
  -v "$token_file:/run/secrets/clawker-token:ro" \
  -e CLAWKER_HOST_PROXY_TOKEN_FILE=/run/secrets/clawker-token \
  --label dev.clawker.managed=true --label dev.clawker.purpose=agent \
  "$image" "$@"
