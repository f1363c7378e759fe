#!/usr/bin/env bash
# Builds the Go ttrpc interop/bench fixtures into OUTDIR:
#   ttrpc-echo-server  containerd ttrpc 1.1.1 server for instancepoller.testing.v1.Echo
#   ttrpc-echo-client  interop checks and bench client against any Echo server
#
#   Tests/Fixtures/go/build.sh OUTDIR
#
# Offline, GOPATH mode (GO111MODULE=off), against the Debian packages
# golang-go, golang-github-containerd-ttrpc-dev (+ gogo/protobuf, grpc
# status), protobuf-compiler and protoc-gen-gogo (/usr/share/gocode).
# Quiet on success; errors on stderr and a non-zero exit on failure.
# Does nothing if both binaries are newer than every input. Safe to run
# concurrently: each run builds in its own temp dir inside OUTDIR and
# renames the finished binaries into place.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
PROTO_ROOT="$REPO/proto"
PROTO="instancepoller/testing/v1/echo.proto"
BINARIES=(ttrpc-echo-server ttrpc-echo-client)

die() { echo "build.sh: $*" >&2; exit 1; }

[ -f "$PROTO_ROOT/$PROTO" ] || die "missing $PROTO_ROOT/$PROTO"
mkdir -p "$1" || die "cannot create $1"
OUTDIR="$(cd "$1" && pwd)"

# Inputs: every Go source here, this script, the proto.
inputs() {
    find "$HERE" -type f -name '*.go'
    echo "$HERE/build.sh"
    echo "$PROTO_ROOT/$PROTO"
}

up_to_date() {
    local bin input
    for bin in "${BINARIES[@]}"; do
        [ -x "$OUTDIR/$bin" ] || return 1
        while IFS= read -r input; do
            [ "$input" -nt "$OUTDIR/$bin" ] && return 1
        done < <(inputs)
    done
    return 0
}

up_to_date && exit 0

command -v go >/dev/null || die "go not found (apt-get install golang-go)"
command -v protoc >/dev/null || die "protoc not found (apt-get install protobuf-compiler)"
GOGO_PLUGIN="$(command -v protoc-gen-gogo || true)"
[ -n "$GOGO_PLUGIN" ] || die "protoc-gen-gogo not found (apt-get install gogoprotobuf)"
[ -d /usr/share/gocode/src/github.com/containerd/ttrpc ] ||
    die "containerd ttrpc sources missing (apt-get install golang-github-containerd-ttrpc-dev)"

# Temp dir inside OUTDIR so the final mv is a rename on one filesystem.
WORK="$(mktemp -d "$OUTDIR/.go-build.XXXXXX")" || die "cannot create a temp dir in $OUTDIR"
trap 'rm -rf "$WORK"' EXIT
GP="$WORK/gopath"
mkdir -p "$GP/src/instancepoller-fixtures"

# echo.proto's go_package is "instancepoller/testing/v1;testingv1", so the
# generated file lands in $GP/src/instancepoller/testing/v1.
protoc --plugin=protoc-gen-gogo="$GOGO_PLUGIN" -I "$PROTO_ROOT" \
    --gogo_out="$GP/src" "$PROTO_ROOT/$PROTO" ||
    die "protoc failed"

cp -R "$HERE/echo-server" "$HERE/echo-client" "$GP/src/instancepoller-fixtures/"

export GO111MODULE=off
export GOPATH="$GP:/usr/share/gocode"
export GOFLAGS=
GOCACHE="${GOCACHE:-${HOME:-/tmp}/.cache/go-build}"
export GOCACHE
mkdir -p "$GOCACHE"

(cd "$GP/src/instancepoller-fixtures" &&
    go build -o "$WORK/ttrpc-echo-server" ./echo-server &&
    go build -o "$WORK/ttrpc-echo-client" ./echo-client) ||
    die "go build failed"

for bin in "${BINARIES[@]}"; do
    mv -f "$WORK/$bin" "$OUTDIR/$bin" || die "cannot move $bin into $OUTDIR"
done
