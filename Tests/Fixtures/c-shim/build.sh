#!/usr/bin/env bash
# Builds the C provider shim fixture into OUTDIR/c-shim:
#   c-shim  instancepoller.provider.v1.Provider over hand-written ttrpc framing
#           and protobuf-c, following the shim process contract (proto/PROTOCOL.md)
#
#   Tests/Fixtures/c-shim/build.sh OUTDIR
#
# Generates the protobuf-c code at build time (it is not committed) from the
# repository's proto files, plus google/protobuf/any.proto from /usr/include
# (status.proto imports it), against the Debian packages protobuf-c-compiler,
# libprotobuf-c-dev and gcc.
# Quiet on success; errors on stderr and a non-zero exit on failure.
# Does nothing if the binary is newer than every input. Safe to run
# concurrently: each run builds in its own temp dir inside OUTDIR and renames
# the finished binary into place.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
PROTO_ROOT="$REPO/proto"
PROTOS=(ttrpc/ttrpc.proto google/rpc/status.proto instancepoller/provider/v1/provider.proto)
SYSTEM_PROTO_ROOT=/usr/include
ANY_PROTO=google/protobuf/any.proto
BINARY=c-shim

die() { echo "build.sh: $*" >&2; exit 1; }

for proto in "${PROTOS[@]}"; do
    [ -f "$PROTO_ROOT/$proto" ] || die "missing $PROTO_ROOT/$proto"
done
[ -f "$SYSTEM_PROTO_ROOT/$ANY_PROTO" ] ||
    die "missing $SYSTEM_PROTO_ROOT/$ANY_PROTO (apt-get install protobuf-compiler)"
mkdir -p "$1" || die "cannot create $1"
OUTDIR="$(cd "$1" && pwd)"

# Inputs: the C source, this script, the protos.
inputs() {
    find "$HERE" -type f -name '*.c'
    echo "$HERE/build.sh"
    for proto in "${PROTOS[@]}"; do echo "$PROTO_ROOT/$proto"; done
    echo "$SYSTEM_PROTO_ROOT/$ANY_PROTO"
}

up_to_date() {
    local input
    [ -x "$OUTDIR/$BINARY" ] || return 1
    while IFS= read -r input; do
        [ "$input" -nt "$OUTDIR/$BINARY" ] && return 1
    done < <(inputs)
    return 0
}

up_to_date && exit 0

command -v gcc >/dev/null || die "gcc not found (apt-get install gcc)"
command -v protoc-c >/dev/null || die "protoc-c not found (apt-get install protobuf-c-compiler)"
[ -f /usr/include/protobuf-c/protobuf-c.h ] || die "protobuf-c headers missing (apt-get install libprotobuf-c-dev)"

# Temp dir inside OUTDIR so the final mv is a rename on one filesystem.
WORK="$(mktemp -d "$OUTDIR/.c-shim-build.XXXXXX")" || die "cannot create a temp dir in $OUTDIR"
trap 'rm -rf "$WORK"' EXIT
GEN="$WORK/gen"
mkdir -p "$GEN"

# The repository's proto root comes first: its google/rpc/status.proto is the
# one to use. any.proto is found in /usr/include.
protoc-c -I "$PROTO_ROOT" -I "$SYSTEM_PROTO_ROOT" --c_out="$GEN" \
    "${PROTOS[@]/#/$PROTO_ROOT/}" "$SYSTEM_PROTO_ROOT/$ANY_PROTO" ||
    die "protoc-c failed"

SOURCES=("$HERE/c_shim.c")
while IFS= read -r generated; do SOURCES+=("$generated"); done < <(find "$GEN" -name '*.pb-c.c' | sort)

gcc -std=c11 -O2 -Wall -Wextra -I "$GEN" -o "$WORK/$BINARY" "${SOURCES[@]}" -lprotobuf-c ||
    die "gcc failed"

mv -f "$WORK/$BINARY" "$OUTDIR/$BINARY" || die "cannot move $BINARY into $OUTDIR"
