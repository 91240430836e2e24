#!/usr/bin/env bash
# Makes sure what allot builds with (and, with --test, tests with) is installed on Debian/Ubuntu.
# As root it installs missing packages with apt-get; otherwise it prints the command to run.
set -euo pipefail

# Swift comes from swift.org (/opt/swift here); everything else from Debian. libsystemd-dev: allotd talks to
# systemd (sd_notify, socket activation, the journal) through libsystemd. For the tests: tmux drives
# `allotctl top`, headless chromium looks at `simulate --report` pages, the package test builds .debs
# (scripts/make-deb.sh: strip, readelf, chrpath, file) and installs them with apt-get, and the etcd tests
# start a 3-member etcd of their own on loopback (etcd-server; docs/ha.md).
packages=(git pkg-config libstdc++-12-dev libsystemd-dev)
if [ "${1:-}" = --test ]; then
    packages+=(tmux chromium binutils chrpath file init-system-helpers etcd-server)
fi

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        echo "swift is not on PATH; run: export PATH=/opt/swift/usr/bin:\$PATH" >&2
    else
        echo "swift is missing: install the Swift 6.3 toolchain from https://swift.org/install/linux/" >&2
    fi
    exit 1
fi

command -v dpkg-query >/dev/null 2>&1 || exit 0  # not Debian: trust the toolchain's own requirements

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # Debian's etcd-server starts a system etcd on 2379; the tests need only the binary.
    if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now etcd.service >/dev/null 2>&1 &&
            echo "stopped and disabled etcd.service (the tests start their own etcd members)" >&2
    fi
else
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
