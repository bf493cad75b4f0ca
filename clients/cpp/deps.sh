#!/bin/sh
# Install what the C++ client needs on a Debian or Ubuntu machine (JetPack 6 is
# Ubuntu 22.04): a C++17 compiler, CMake, pkg-config and the distribution's
# libzmq3-dev, libmsgpack-cxx-dev, liblz4-dev and libzstd-dev. Idempotent: does
# nothing when they are there. Exits 0 without installing when not root or
# without apt-get; `make cpp` then skips the build and the C++ tests say why.
set -u
missing=""
have_header() { [ -f "/usr/include/$1" ] || [ -f "/usr/local/include/$1" ]; }
command -v cmake >/dev/null 2>&1 || missing="$missing cmake"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
command -v c++ >/dev/null 2>&1 || missing="$missing g++"
have_header zmq.h || missing="$missing libzmq3-dev"
have_header msgpack.hpp || missing="$missing libmsgpack-cxx-dev"
have_header lz4frame.h || missing="$missing liblz4-dev"
have_header zstd.h || missing="$missing libzstd-dev"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "clients/cpp/deps.sh: missing$missing (not root or no apt-get); the C++ client will not be built" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq $missing >/dev/null 2>&1; then
    # The package lists may be missing or stale on a fresh machine.
    apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $missing >/dev/null 2>&1 \
        || echo "clients/cpp/deps.sh: could not install$missing; the C++ client will not be built" >&2
fi
exit 0
