#!/bin/sh
# Run an agent container wired to the hostproxy daemon on this host.
#
#   examples/run.sh IMAGE [COMMAND...]
#
# Starts the daemon if needed (listening on Docker's bridge gateway too, so containers on
# native Linux Docker reach it), issues a token scoped to this one container (revoked when
# it stops), mounts it read-only, and passes the flags a container needs. Inside, run
# `ssh-agent-proxy --socket "$SSH_AUTH_SOCK" &` for SSH.
#
# The container never gets your own token (hostproxy.token), which can do everything for
# every container. Widen or narrow SCOPES as the agent needs (see README, "Scoped tokens").
set -eu
image=${1:?usage: examples/run.sh IMAGE [COMMAND...]}
shift
hostproxy=${HOSTPROXY:-hostproxy}
port=${CLAWKER_HOST_PROXY_PORT:-18374}
name=${CONTAINER_NAME:-agent-$$}
scopes=${SCOPES:-open callback git:* ssh}

"$hostproxy" start --port "$port" -- --listen-docker-bridge >&2

token_file=$(mktemp)
chmod 600 "$token_file"
cleanup() { rm -f "$token_file"; "$hostproxy" token revoke "run-$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
allow=""
for s in $scopes; do allow="$allow --allow $s"; done
# shellcheck disable=SC2086 # one --allow per scope
"$hostproxy" token issue --name "run-$name" --container "$name" $allow > "$token_file"

docker run --rm -i --name "$name" \
  --add-host host.docker.internal:host-gateway \
  -e CLAWKER_HOST_PROXY="http://host.docker.internal:$port" \
  -v "$token_file:/run/secrets/clawker-token:ro" \
  -e CLAWKER_HOST_PROXY_TOKEN_FILE=/run/secrets/clawker-token \
  --label dev.clawker.managed=true --label dev.clawker.purpose=agent \
  "$image" "$@"
