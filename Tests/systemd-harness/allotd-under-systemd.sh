#!/bin/bash
# allotd under a real systemd: boots a throwaway systemd as PID 1 in private namespaces (boot-systemd.sh),
# installs the project's units pointing at the built binaries, and checks what a sysadmin relies on.
# Usage (root): allotd-under-systemd.sh BINDIR
# Prints "ok - …" / "not ok - …" lines; exits 1 if any check failed, 77 if systemd cannot boot here.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:?usage: allotd-under-systemd.sh BINDIR}
[ "$(id -u)" = 0 ] || { echo "skip: needs root"; exit 77; }
[ -x /lib/systemd/systemd ] || { echo "skip: systemd is not installed"; exit 77; }

boot=$("$HERE/boot-systemd.sh" 2>/tmp/allot-sd-boot.err) || { echo "skip: systemd did not boot: $(tail -3 /tmp/allot-sd-boot.err)"; exit 77; }
eval "$boot"
trap 'SD_STOP_FAST=1 "$HERE/stop-systemd.sh" "$SD_STATE" >/dev/null 2>&1' EXIT
echo "# systemd booted in ${SD_BOOT_MS} ms (pid $SD_PID)"

failed=0
ok() { echo "ok - $1"; }
nok() { echo "not ok - $1"; failed=1; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else nok "$name"; fi; }
SOCK=$SD_RUN/allot/allotd.sock
ctl() { ALLOT_SOCKET=$SOCK "$BIN/allotctl" "$@"; }
journal() { journalctl -D "$SD_RUN/log/journal" --no-pager "$@" 2>/dev/null; }
prop() { $SD_CTL show -p "$1" --value allotd.service; }

# The config: a small pool whose nodes this allotd runs.
mkdir -p "$SD_ROOT/etc/allot"
cp "$HERE/test-pool.toml" "$SD_ROOT/etc/allot/allotd.toml"
# The binaries, where the namespace sees them (its /tmp and /run are its own; a build under /tmp would be
# invisible there): its private /tmp, written through /proc/PID/root.
mkdir -p "$SD_ROOT/tmp/allot-bin"
cp "$BIN/allotd" "$BIN/allotctl" "$BIN/allot-supervise" "$SD_ROOT/tmp/allot-bin/"
# The units, as make install writes them, with a short watchdog for the test.
UNITS=$SD_RUN/systemd/system
sed -e "s|@BINDIR@|/tmp/allot-bin|g" -e "s|@SYSCONFDIR@|/etc|g" -e "s|@DOCDIR@|$ROOT/docs|g" \
    "$ROOT/systemd/allotd.service.in" >"$UNITS/allotd.service"
cp "$ROOT/systemd/allotd.socket" "$UNITS/"
mkdir -p "$UNITS/allotd.service.d"
printf '[Service]\nWatchdogSec=2s\nTimeoutAbortSec=2s\nRestartSec=1s\n' >"$UNITS/allotd.service.d/test.conf"
$SD_CTL daemon-reload

# systemctl start returns once allotd has sent READY=1, so the socket answers at once.
t0=$(date +%s%N)
$SD_CTL start allotd.service
t1=$(date +%s%N)
echo "# systemctl start took $(( (t1 - t0) / 1000000 )) ms"
check "start: active after systemctl start" test "$(prop ActiveState)" = active
check "start: the socket answers as soon as start returns" ctl status
check "status text: STATUS= shows in systemctl status" bash -c "$SD_CTL status allotd.service | grep -q 'Status: \"0 running, 0 pending, 0/4 GPUs busy'"

# Jobs, and the journal's structured fields.
job=$(ctl submit --gpus 2 --workdir / -- sh -c 'sleep 4; echo survived')
sleep 1
check "journal: ALLOT_JOB_ID=$job finds the job's entries" bash -c "journalctl -D '$SD_RUN/log/journal' --no-pager ALLOT_JOB_ID=$job -o cat | grep -q 'Job started'"
check "journal: entries carry PRIORITY and CODE_FILE" bash -c "journalctl -D '$SD_RUN/log/journal' --no-pager ALLOT_JOB_ID=$job -o verbose | grep -q 'CODE_FILE=.*Executor.swift'"
for _ in $(seq 1 50); do prop StatusText | grep -q '1 running' && break; sleep 0.1; done
check "status text follows the pool" bash -c "$SD_CTL show -p StatusText --value allotd.service | grep -q '1 running, 0 pending, 2/4 GPUs busy'"

# Jobs survive systemctl restart allotd (KillMode=process).
pid1=$(prop MainPID)
$SD_CTL restart allotd.service
pid2=$(prop MainPID)
check "restart: a new allotd" test "$pid1" != "$pid2"
check "restart: the job is still running after the restart" bash -c "ALLOT_SOCKET='$SOCK' '$BIN/allotctl' show $job --json | grep -q '\"state\" *: *\"running\"'"
for _ in $(seq 1 60); do ctl show "$job" --json | grep -q '"completed"' && break; sleep 0.2; done
check "restart: the job completes, adopted by the new allotd" bash -c "ALLOT_SOCKET='$SOCK' '$BIN/allotctl' logs $job | grep -qx survived"

# systemctl reload: SIGHUP; RELOADING=1 then READY=1.
$SD_CTL reload allotd.service
sleep 0.5
check "reload: still active" test "$(prop ActiveState)" = active
check "reload: allotd reloaded its configuration" bash -c "journalctl -D '$SD_RUN/log/journal' --no-pager -u allotd.service -o cat | grep -q 'Configuration reloaded'"

# A hung scheduler (the process stopped: no WATCHDOG=1) is killed by the watchdog and restarted.
restarts=$(prop NRestarts)
pid=$(prop MainPID)
if [ "${pid:-0}" -gt 1 ]; then
    $SD_EXEC kill -STOP "$pid"   # MainPID is a pid of the namespace
else
    echo "# no main process to stop (MainPID=$pid, $(prop ActiveState))"
fi
for _ in $(seq 1 80); do [ "$(prop MainPID)" != "$pid" ] && [ "$(prop ActiveState)" = active ] && break; sleep 0.1; done
check "watchdog: a stopped allotd is killed and restarted" test "$(prop NRestarts)" -gt "$restarts"
check "watchdog: systemd says why" bash -c "journalctl -D '$SD_RUN/log/journal' --no-pager -u allotd.service -o cat | grep -q 'Watchdog timeout'"
check "watchdog: the new allotd answers" ctl status

# Socket activation: allotd stopped, the socket unit listening; the first allotctl call starts it.
$SD_CTL stop allotd.service
$SD_CTL start allotd.socket
check "socket: allotd is not running" test "$(prop ActiveState)" != active
check "socket: the first call is answered" ctl status
check "socket: allotd was started by it" test "$(prop ActiveState)" = active
check "socket: allotd took the passed socket" bash -c "journalctl -D '$SD_RUN/log/journal' --no-pager -u allotd.service -o cat | grep -q 'Socket passed by systemd'"

# Stopping: STOPPING=1, exit 0.
$SD_CTL stop allotd.service allotd.socket
check "stop: inactive, not failed" test "$(prop ActiveState)" = inactive

if [ $failed != 0 ]; then
    echo "# journal of allotd.service:"
    journal -u allotd.service -o cat | tail -40 | sed 's/^/#   /'
fi
exit $failed
