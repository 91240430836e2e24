#!/bin/bash
# The Debian package's life on a machine without the source tree, under a real systemd: install with
# apt-get, the service enabled and answering, an upgrade to a newer build that keeps the configuration, the
# state and a running job, remove (config and state kept), purge (both gone).
# Usage (root): package-lifecycle.sh BINDIR
# The package is built from BINDIR (the debug build, which loads the Swift runtime from the toolchain: the
# namespace keeps /opt/swift and hides the source tree) with `make deb-tree` and scripts/make-deb.sh, as
# `make deb` builds it from the release build. The namespace's /usr, /etc and /var are copy-on-write: what
# dpkg installs vanishes with it.
# Prints "ok - …" / "not ok - …" lines; exits 1 if any check failed, 77 if it cannot run here.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$(cd "${1:?usage: package-lifecycle.sh BINDIR}" && pwd)
[ "$(id -u)" = 0 ] || { echo "skip: needs root"; exit 77; }
[ -x /lib/systemd/systemd ] || { echo "skip: systemd is not installed"; exit 77; }
for tool in dpkg-deb apt-get deb-systemd-helper make; do
    command -v "$tool" >/dev/null || { echo "skip: $tool is not installed"; exit 77; }
done

work=$(mktemp -d /tmp/allot-pkg.XXXXXX)
SD_STATE=
cleanup() {
    [ -n "$SD_STATE" ] && SD_STOP_FAST=1 "$HERE/stop-systemd.sh" "$SD_STATE" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

failed=0
ok() { echo "ok - $1"; }
nok() { echo "not ok - $1"; failed=1; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else nok "$name"; fi; }

# Two builds of the package from one tree: the second is the newer version an upgrade installs.
t0=$(date +%s%N)
if ! make -s --no-print-directory -C "$ROOT" deb-tree STAGE="$work/stage" FROM="$BIN" GENERATED="$work/gen" \
    ALLOW_SWIFT_RUNTIME=1 >"$work/stage.log" 2>&1; then
    echo "not ok - make deb-tree"; sed 's/^/#   /' "$work/stage.log"; exit 1
fi
base=$(sed -n 's/^public let allotVersion = "\(.*\)"/\1/p' "$ROOT/Sources/AllotDaemon/AgentLink.swift")
old=$base+test1
new=$base+test2
for v in "$old" "$new"; do
    if ! ALLOW_SWIFT_RUNTIME=1 DEB_COMPRESS=none "$ROOT/scripts/make-deb.sh" "$work/stage" "$v" "$work/debs" \
        >"$work/deb.log" 2>&1; then
        echo "not ok - make-deb.sh $v"; sed 's/^/#   /' "$work/deb.log"; exit 1
    fi
done
arch=$(dpkg --print-architecture)
echo "# two packages built in $(( ($(date +%s%N) - t0) / 1000000 )) ms"

boot=$(SD_OVERLAY_USR=1 SD_HIDE="$ROOT" "$HERE/boot-systemd.sh" 2>"$work/boot.err") || {
    echo "skip: systemd did not boot: $(tail -3 "$work/boot.err")"; exit 77; }
eval "$boot"
echo "# systemd booted in ${SD_BOOT_MS} ms (pid $SD_PID)"
inside() { "$SD_EXEC" "$@"; }
ctl() { inside allotctl "$@"; }
prop() { $SD_CTL show -p "$1" --value allotd.service; }
apt() { inside env DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@" >>"$work/apt.log" 2>&1; }
pkgstatus() { inside dpkg-query -W -f='${db:Status-Status}' allot 2>/dev/null; }
# Docker's images forbid starting services from maintainer scripts (policy-rc.d exits 101); a machine that
# runs systemd has no such file.
inside rm -f /usr/sbin/policy-rc.d
mkdir -p "$SD_ROOT/tmp/debs"
cp "$work/debs"/*.deb "$SD_ROOT/tmp/debs/"

check "a machine without the build: no allotd, no source tree" \
    inside sh -c "! command -v allotd >/dev/null && ! test -e '$ROOT/Makefile'"

# Install.
check "install: apt-get install ./allot_${old}_$arch.deb" apt install "/tmp/debs/allot_${old}_$arch.deb"
check "install: the package is installed" test "$(pkgstatus)" = installed
check "install: allotd.service is enabled" test "$($SD_CTL is-enabled allotd.service)" = enabled
check "install: allotd.socket is enabled" test "$($SD_CTL is-enabled allotd.socket)" = enabled
check "install: allotd.service is running" test "$(prop ActiveState)" = active
check "install: allotctl status answers" ctl status >/dev/null
check "install: /etc/allot/allotd.toml is a conffile" \
    bash -c "'$SD_EXEC' dpkg-query -W -f='\${Conffiles}' allot | grep -q /etc/allot/allotd.toml"
check "install: sysusers made the admin group" inside sh -c "getent group allot >/dev/null"
check "install: tmpfiles made the log directory" inside test -d /var/lib/allot/logs
check "install: completions, copyright and changelog" inside test -s /usr/share/bash-completion/completions/allotctl \
    -a -s /usr/share/doc/allot/copyright -a -s /usr/share/doc/allot/changelog.gz

# The admin's configuration: one node this allotd runs. A job that finishes and one that runs on.
{ echo "# edited by the admin"; cat "$HERE/test-pool.toml"; } >"$SD_ROOT/etc/allot/allotd.toml"
$SD_CTL restart allotd.service
# On a loaded machine the restarted allotd may take a while to answer: wait for it (up to 30 s), and say
# what a submit answered when it fails.
for _ in $(seq 1 300); do ctl status >/dev/null 2>&1 && break; sleep 0.1; done
first=$(ctl submit --gpus 1 --workdir / -- echo first 2>"$work/submit.err") || sed 's/^/# submit: /' "$work/submit.err"
for _ in $(seq 1 300); do ctl show "$first" --json 2>/dev/null | grep -q '"completed"' && break; sleep 0.1; done
check "the admin's pool: a job completes" bash -c "'$SD_EXEC' allotctl show '$first' --json | grep -q '\"completed\"'"
ctl show "$first" >"$work/first.txt" 2>&1
# It runs until told to end (a file appears), not for a fixed time: an upgrade on a loaded machine took 9.8 s,
# and a 10 s job had already ended when the check below looked.
job=$(ctl submit --gpus 2 --workdir / -- sh -c 'while [ ! -e /tmp/allot-upgrade-done ]; do sleep 0.2; done
echo survived the upgrade' 2>"$work/submit.err") || sed 's/^/# submit: /' "$work/submit.err"
for _ in $(seq 1 300); do ctl show "$job" --json 2>/dev/null | grep -q '"running"' && break; sleep 0.1; done
check "a job runs before the upgrade" bash -c "'$SD_EXEC' allotctl show '$job' --json | grep -q '\"running\"'"

# Upgrade: allotd restarts on the new binary and adopts the running job; the admin's config stays.
pid1=$(prop MainPID)
t0=$(date +%s%N)
check "upgrade: apt-get install ./allot_${new}_$arch.deb" apt install "/tmp/debs/allot_${new}_$arch.deb"
echo "# upgrade took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
check "upgrade: the newer version is installed" test "$(inside dpkg-query -W -f='${Version}' allot)" = "$new"
check "upgrade: allotd restarted" test "$(prop MainPID)" != "$pid1"
check "upgrade: allotd is running" test "$(prop ActiveState)" = active
check "upgrade: the admin's configuration is kept" inside grep -q "edited by the admin" /etc/allot/allotd.toml
check "upgrade: the state is kept (the finished job is still known)" \
    bash -c "'$SD_EXEC' allotctl show '$first' --json | grep -q '\"completed\"'"
check "upgrade: the job still runs" bash -c "'$SD_EXEC' allotctl show '$job' --json | grep -q '\"running\"'"
inside touch /tmp/allot-upgrade-done
for _ in $(seq 1 150); do ctl show "$job" --json 2>/dev/null | grep -q '"completed"' && break; sleep 0.1; done
check "upgrade: the job completes, adopted by the new allotd" \
    bash -c "'$SD_EXEC' allotctl logs '$job' | grep -qx 'survived the upgrade'"
check "upgrade: in one run (not started again)" bash -c "'$SD_EXEC' allotctl show '$job' --json |
    python3 -c 'import json, sys; sys.exit(1 if json.load(sys.stdin).get(\"earlier_runs\") else 0)'"

# Remove: the programs go, the configuration and the state stay.
check "remove: apt-get remove allot" apt remove allot
check "remove: the package keeps only its config files" test "$(pkgstatus)" = config-files
check "remove: allotd is stopped" test "$(prop ActiveState)" != active
check "remove: the programs are gone" inside sh -c "! test -e /usr/bin/allotd && ! test -e /usr/bin/allotctl"
check "remove: the configuration is kept" inside grep -q "edited by the admin" /etc/allot/allotd.toml
check "remove: the state is kept" inside sh -c "ls /var/lib/allot | grep -q ."

# Purge: the configuration and the state go too.
check "purge: apt-get purge allot" apt purge allot
check "purge: the package is gone" test "$(pkgstatus)" != config-files -a "$(pkgstatus)" != installed
check "purge: /etc/allot is removed" inside sh -c "! test -e /etc/allot"
check "purge: /var/lib/allot is removed" inside sh -c "! test -e /var/lib/allot"

if [ $failed != 0 ]; then
    echo "# the first job, after it ran:"
    sed 's/^/#   /' "$work/first.txt"
    echo "# apt-get:"
    tail -40 "$work/apt.log" | sed 's/^/#   /'
    echo "# journal of allotd.service:"
    journalctl -D "$SD_RUN/log/journal" --no-pager -u allotd.service -o cat 2>/dev/null | tail -30 | sed 's/^/#   /'
fi
exit $failed
