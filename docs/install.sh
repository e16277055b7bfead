#!/bin/sh
# hostproxy installer (SPEC.md 12): picks the release archive for this machine by
# `uname -sm`, checks its SHA-256 against SHA256SUMS, and installs hostproxy (which carries
# the container tools), its man pages and completions. Nothing is installed when a check
# fails.
#
#   HOSTPROXY_DOWNLOAD_URL=https://…/releases/vX sh install.sh [--prefix DIR]
#
# HOSTPROXY_DOWNLOAD_URL: the folder holding SHA256SUMS and the archives (http(s):// or
# file://). --prefix: where to install (default ~/.local: ~/.local/bin/hostproxy).
set -eu

VERSION="@VERSION@"
PREFIX="${HOME:-}/.local"

die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX="$2"; shift 2 ;;
        --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

BASE="${HOSTPROXY_DOWNLOAD_URL:-}"
[ -n "$BASE" ] || die "set HOSTPROXY_DOWNLOAD_URL to the folder holding SHA256SUMS and the hostproxy-$VERSION-*.tar.gz archives"
BASE="${BASE%/}"

case "$(uname -s) $(uname -m)" in
    "Linux x86_64" | "Linux amd64") TARGET=x86_64-unknown-linux-musl ;;
    "Linux aarch64" | "Linux arm64") TARGET=aarch64-unknown-linux-musl ;;
    "Darwin arm64") TARGET=aarch64-apple-darwin ;;
    "Darwin x86_64") TARGET=x86_64-apple-darwin ;;
    *) die "no hostproxy build for $(uname -sm)" ;;
esac
ARCHIVE="hostproxy-$VERSION-$TARGET.tar.gz"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT INT TERM

fetch() {
    case "$1" in
        # A local folder (an offline install, a test): copied, no downloader needed.
        file://*) cp "${1#file://}" "$2"; return ;;
    esac
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --proto '=https,http,file' -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    else
        die "neither curl nor wget is installed"
    fi
}

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        die "neither sha256sum nor shasum is installed: cannot check the download"
    fi
}

fetch "$BASE/SHA256SUMS" "$TMP/SHA256SUMS" || die "cannot download $BASE/SHA256SUMS"
fetch "$BASE/$ARCHIVE" "$TMP/$ARCHIVE" || die "cannot download $BASE/$ARCHIVE"
WANT="$(awk -v f="$ARCHIVE" '$2 == f || $2 == "*" f { print $1 }' "$TMP/SHA256SUMS")"
[ -n "$WANT" ] || die "SHA256SUMS lists no $ARCHIVE: nothing installed"
GOT="$(sha256 "$TMP/$ARCHIVE")"
[ "$WANT" = "$GOT" ] || die "$ARCHIVE does not match SHA256SUMS (expected $WANT, got $GOT): nothing installed"

tar -xzf "$TMP/$ARCHIVE" -C "$TMP"
SRC="$TMP/hostproxy-$VERSION-$TARGET"
[ -x "$SRC/hostproxy" ] || die "$ARCHIVE holds no hostproxy: nothing installed"

mkdir -p "$PREFIX/bin" "$PREFIX/share/man/man1" \
    "$PREFIX/share/bash-completion/completions" \
    "$PREFIX/share/zsh/site-functions" \
    "$PREFIX/share/fish/vendor_completions.d"
# Into place by rename, so a running hostproxy is never overwritten in the middle.
# (A symlink at the temporary name is removed, never written through.)
rm -f "$PREFIX/bin/.hostproxy.new"
cp "$SRC/hostproxy" "$PREFIX/bin/.hostproxy.new"
chmod 755 "$PREFIX/bin/.hostproxy.new"
mv -f "$PREFIX/bin/.hostproxy.new" "$PREFIX/bin/hostproxy"
cp "$SRC"/man/*.1 "$PREFIX/share/man/man1/" 2>/dev/null || true
cp "$SRC/completions/bash/hostproxy.bash" "$PREFIX/share/bash-completion/completions/hostproxy" 2>/dev/null || true
cp "$SRC/completions/zsh/_hostproxy" "$PREFIX/share/zsh/site-functions/" 2>/dev/null || true
cp "$SRC/completions/fish/hostproxy.fish" "$PREFIX/share/fish/vendor_completions.d/" 2>/dev/null || true

echo "installed hostproxy $VERSION ($TARGET) to $PREFIX/bin/hostproxy"
case ":${PATH:-}:" in
    *":$PREFIX/bin:"*) ;;
    *) echo "add $PREFIX/bin to your PATH" ;;
esac
