#!/usr/bin/env bash
# Builds the Go ttrpc interop/bench fixtures into OUTDIR:
#   ttrpc-echo-server  containerd ttrpc 1.1.1 server for instancepoller.testing.v1.Echo
#   ttrpc-echo-client  interop checks and bench client against any Echo server
#   ttrpc-provider-client  calls every method of instancepoller.provider.v1.Provider
#                          on a shim and prints the answers as one JSON document,
#                          or benches Health (-bench-health)
#   ttrpc-provider-server  Health of instancepoller.provider.v1.Provider, for the bench
# (benchloop and serveunix are packages the clients and the servers share.)
#
#   Tests/Fixtures/go/build.sh OUTDIR
#
# Offline, GOPATH mode (GO111MODULE=off), against the Debian packages
# golang-go, golang-github-containerd-ttrpc-dev (+ gogo/protobuf, grpc
# status), protobuf-compiler and protoc-gen-gogo (/usr/share/gocode).
# Quiet on success; errors on stderr and a non-zero exit on failure.
# Does nothing if all binaries are newer than every input. Safe to run
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
PROTOS=(instancepoller/testing/v1/echo.proto instancepoller/provider/v1/provider.proto)
BINARIES=(ttrpc-echo-server ttrpc-echo-client ttrpc-provider-client ttrpc-provider-server)

die() { echo "build.sh: $*" >&2; exit 1; }

for proto in "${PROTOS[@]}"; do
    [ -f "$PROTO_ROOT/$proto" ] || die "missing $PROTO_ROOT/$proto"
done
mkdir -p "$1" || die "cannot create $1"
OUTDIR="$(cd "$1" && pwd)"

# Inputs: every Go source here, this script, the protos.
inputs() {
    find "$HERE" -type f -name '*.go'
    echo "$HERE/build.sh"
    for proto in "${PROTOS[@]}"; do echo "$PROTO_ROOT/$proto"; done
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

# The go_package options ("instancepoller/testing/v1;testingv1",
# "instancepoller/provider/v1;providerv1") put the generated files in
# $GP/src/instancepoller/testing/v1 and $GP/src/instancepoller/provider/v1.
# One protoc run per file: protoc-gen-gogo wants one Go package per run.
for proto in "${PROTOS[@]}"; do
    protoc --plugin=protoc-gen-gogo="$GOGO_PLUGIN" -I "$PROTO_ROOT" \
        --gogo_out="$GP/src" "$PROTO_ROOT/$proto" ||
        die "protoc failed on $proto"
done

cp -R "$HERE/benchloop" "$HERE/serveunix" "$HERE/echo-server" "$HERE/echo-client" "$HERE/provider-client" \
    "$HERE/provider-server" "$GP/src/instancepoller-fixtures/"

export GO111MODULE=off
export GOPATH="$GP:/usr/share/gocode"
export GOFLAGS=
GOCACHE="${GOCACHE:-${HOME:-/tmp}/.cache/go-build}"
export GOCACHE
mkdir -p "$GOCACHE"

(cd "$GP/src/instancepoller-fixtures" &&
    go build -o "$WORK/ttrpc-echo-server" ./echo-server &&
    go build -o "$WORK/ttrpc-echo-client" ./echo-client &&
    go build -o "$WORK/ttrpc-provider-client" ./provider-client &&
    go build -o "$WORK/ttrpc-provider-server" ./provider-server) ||
    die "go build failed"

for bin in "${BINARIES[@]}"; do
    mv -f "$WORK/$bin" "$OUTDIR/$bin" || die "cannot move $bin into $OUTDIR"
done
