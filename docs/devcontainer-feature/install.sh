#!/bin/sh
# devcontainer feature `hostproxy-tools` (SPEC.md 12): the static container tools for this
# image's architecture into /usr/local/bin, from the release's tools archive, checked
# against SHA256SUMS first; nothing is installed when a check fails. Options arrive as
# DOWNLOADURL and VERSION (the devcontainer CLI upper-cases option names).
set -eu

die() {
    echo "hostproxy-tools feature: $*" >&2
    exit 1
}

VERSION="${VERSION:-@VERSION@}"
BASE="${DOWNLOADURL:-}"
[ -n "$BASE" ] || die "set the feature's downloadUrl option to the folder holding SHA256SUMS and hostproxy-tools-$VERSION-*-linux.tar.gz"
BASE="${BASE%/}"
DEST="${HOSTPROXY_TOOLS_DIR:-/usr/local/bin}"

case "$(uname -m)" in
    x86_64 | amd64) ARCH=x86_64 ;;
    aarch64 | arm64) ARCH=aarch64 ;;
    *) die "no container tools for $(uname -m)" ;;
esac
ARCHIVE="hostproxy-tools-$VERSION-$ARCH-linux.tar.gz"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT INT TERM

fetch() {
    case "$1" in
        # A local folder (an offline install, a test): copied, no downloader needed.
        file://*) cp "${1#file://}" "$2"; return ;;
    esac
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    else
        die "neither curl nor wget is in the image"
    fi
}

fetch "$BASE/SHA256SUMS" "$TMP/SHA256SUMS" || die "cannot download $BASE/SHA256SUMS"
fetch "$BASE/$ARCHIVE" "$TMP/$ARCHIVE" || die "cannot download $BASE/$ARCHIVE"
WANT="$(awk -v f="$ARCHIVE" '$2 == f || $2 == "*" f { print $1 }' "$TMP/SHA256SUMS")"
[ -n "$WANT" ] || die "SHA256SUMS lists no $ARCHIVE: nothing installed"
GOT="$(sha256sum "$TMP/$ARCHIVE" | cut -d' ' -f1)"
[ "$WANT" = "$GOT" ] || die "$ARCHIVE does not match SHA256SUMS: nothing installed"

tar -xzf "$TMP/$ARCHIVE" -C "$TMP"
mkdir -p "$DEST"
for tool in host-open host-notify callback-forwarder git-credential-clawker \
    docker-credential-clawker ssh-agent-proxy clawker-socket-server; do
    [ -f "$TMP/$ARCH/$tool" ] || die "$ARCHIVE holds no $tool"
done
for tool in host-open host-notify callback-forwarder git-credential-clawker \
    docker-credential-clawker ssh-agent-proxy clawker-socket-server; do
    rm -f "$DEST/.$tool.new"
    cp "$TMP/$ARCH/$tool" "$DEST/.$tool.new"
    chmod 555 "$DEST/.$tool.new"
    mv -f "$DEST/.$tool.new" "$DEST/$tool"
done
echo "hostproxy-tools feature: installed the $VERSION container tools ($ARCH) into $DEST"
