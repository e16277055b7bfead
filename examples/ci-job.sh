#!/bin/sh
# A CI job that proves an agent image is wired to hostproxy right, with mock-proxy standing
# in for the host daemon: no daemon, no keys, no browser (docs/ci.md).
#
#   examples/ci-job.sh AGENT_IMAGE [MOCK_IMAGE]
#
# AGENT_IMAGE is the image under test: the hostproxy tools on PATH, BROWSER=host-open,
# git's credential.helper = clawker (examples/Dockerfile does all three), and a shell, git,
# ssh-add and busybox-style httpd for the checks below. MOCK_IMAGE is mock-proxy's image
# (examples/mock-proxy.Dockerfile; default hostproxy-mock). EXTRA_RUN_ARGS adds flags to
# the image's `docker run` (say, -v /usr:/usr:ro for tools the image lacks). WAIT is how
# many seconds the login may take (default 30).
#
# Exit 0 when every part works; otherwise 1, with a line saying which part is missing.
set -eu
image=${1:?usage: examples/ci-job.sh AGENT_IMAGE [MOCK_IMAGE]}
mock_image=${2:-hostproxy-mock}
id=$$
net=hp-ci-$id
mock=hp-mock-$id
token=ci-token-$id

docker network create "$net" >/dev/null
cleanup() {
  docker rm -f "$mock" >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The mock answers as host.docker.internal on the job's network, so the image reaches it
# with its default CLAWKER_HOST_PROXY, unchanged.
docker run -d --name "$mock" --network "$net" --network-alias host.docker.internal \
  "$mock_image" --token "$token" >/dev/null
m() { docker exec "$mock" /mock-proxy "$@" --url http://127.0.0.1:18374; }
m ready
m put-credential --host github.com --username ci-user --password ci-pass

# The redirect a provider would send, once a forwarder in the image waits for it.
m callback --query 'code=ci-code&state=ci-state' --wait "${WAIT:-30}" >/dev/null &
callback=$!

# shellcheck disable=SC2086 # EXTRA_RUN_ARGS is a list of flags
out=$(docker run --rm --network "$net" -e CLAWKER_HOST_PROXY_TOKEN="$token" ${EXTRA_RUN_ARGS:-} \
  "$image" sh -c '
    # What a CLI does: open a page, ask git for a credential, use the agent, log in.
    "$BROWSER" https://example.com/ci-check >/dev/null 2>&1
    printf "protocol=https\nhost=github.com\n\n" | GIT_TERMINAL_PROMPT=0 git credential fill 2>/dev/null
    ssh-agent-proxy --socket /tmp/ci-agent.sock >/dev/null 2>&1 &
    i=0; while [ ! -S /tmp/ci-agent.sock ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    SSH_AUTH_SOCK=/tmp/ci-agent.sock ssh-add -l >/dev/null 2>&1
    mkdir -p /tmp/www/cgi-bin
    printf "#!/bin/sh\necho \"\$QUERY_STRING\" > /tmp/login\nprintf \"Content-Type: text/plain\r\n\r\nok\"\n" > /tmp/www/cgi-bin/cb
    chmod +x /tmp/www/cgi-bin/cb
    httpd -p 8765 -h /tmp/www
    "$BROWSER" "https://auth.example.com/authorize?client_id=ci&redirect_uri=http%3A%2F%2Flocalhost%3A8765%2Fcgi-bin%2Fcb&state=ci-state" >/dev/null 2>&1
    i=0; while [ ! -s /tmp/login ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    echo "login=$(cat /tmp/login 2>/dev/null)"
  ' || true)

failed=0
check() { m expect --wait 5 "$@" || failed=1; }
check --route /open/url --at-least 1
check --route /git/credential --at-least 1
check --route /ssh/agent --at-least 1
check --route /callback/register --count 1
if ! printf '%s\n' "$out" | grep -qx 'password=ci-pass'; then
  echo "ci-job: git credential fill in the image did not return the mock's credential: is git's credential.helper = clawker?" >&2
  failed=1
fi
wait "$callback" || failed=1
if ! printf '%s\n' "$out" | grep -qx 'login=code=ci-code&state=ci-state'; then
  echo "ci-job: the OAuth redirect never reached the image's local server: is BROWSER=host-open, with callback-forwarder beside it?" >&2
  failed=1
fi
[ "$failed" = 0 ] && echo "ci-job: the image is wired right"
exit "$failed"
