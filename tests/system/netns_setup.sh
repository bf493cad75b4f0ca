#!/bin/sh
# Install what the fault-injection tests (tests/system/netns.py) need on a Debian or
# Ubuntu machine: iproute2 (ip, tc) and nftables (packet loss and link cuts inside
# a namespace). Idempotent: does nothing when the tools are there. Skips quietly,
# exit 0, when not root or without apt-get: the tests then skip and say why.
set -u
missing=""
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v tc >/dev/null 2>&1 || case "$missing" in *iproute2*) ;; *) missing="$missing iproute2" ;; esac
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
[ -z "$missing" ] && exit 0
[ "$(id -u)" = 0 ] || exit 0
command -v apt-get >/dev/null 2>&1 || exit 0
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq $missing >/dev/null 2>&1; then
    # The package lists may be missing or stale on a fresh machine.
    apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $missing >/dev/null 2>&1 \
        || echo "netns_setup.sh: could not install$missing; fault-injection tests will skip" >&2
fi
exit 0
