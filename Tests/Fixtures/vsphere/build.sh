#!/usr/bin/env bash
# Builds the vCenter simulator fixture into OUTDIR:
#   vcsim  govmomi's simulator (VPX model) set up for the vsphere backend's
#          tests; see vcsim/vcsim.go for what it creates and prints
#
#   Tests/Fixtures/vsphere/build.sh OUTDIR
#
# Offline, GOPATH mode (GO111MODULE=off), against the Debian packages
# golang-go and golang-github-vmware-govmomi-dev (/usr/share/gocode).
# Quiet on success; errors on stderr and a non-zero exit on failure.
# Does nothing if the binary is newer than every input. Safe to run
# concurrently: each run builds in its own temp dir inside OUTDIR and
# renames the finished binary into place.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BINARY=vcsim

die() { echo "build.sh: $*" >&2; exit 1; }

mkdir -p "$1" || die "cannot create $1"
OUTDIR="$(cd "$1" && pwd)"

# Inputs: every Go source here, this script.
inputs() {
    find "$HERE" -type f -name '*.go'
    echo "$HERE/build.sh"
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

command -v go >/dev/null || die "go not found (apt-get install golang-go)"
[ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] ||
    die "govmomi sources missing (apt-get install golang-github-vmware-govmomi-dev)"

# Temp dir inside OUTDIR so the final mv is a rename on one filesystem.
WORK="$(mktemp -d "$OUTDIR/.go-build.XXXXXX")" || die "cannot create a temp dir in $OUTDIR"
trap 'rm -rf "$WORK"' EXIT
GP="$WORK/gopath"
mkdir -p "$GP/src/instancepoller-vcsim"
cp -R "$HERE/vcsim" "$GP/src/instancepoller-vcsim/"

export GO111MODULE=off
export GOPATH="$GP:/usr/share/gocode"
export GOFLAGS=
GOCACHE="${GOCACHE:-${HOME:-/tmp}/.cache/go-build}"
export GOCACHE
mkdir -p "$GOCACHE"

(cd "$GP/src/instancepoller-vcsim" && go build -o "$WORK/$BINARY" ./vcsim) || die "go build failed"

mv -f "$WORK/$BINARY" "$OUTDIR/$BINARY" || die "cannot move $BINARY into $OUTDIR"
