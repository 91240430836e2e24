import AllotCore
import AllotProtocol
import AllotSystemd
import Foundation
import Logging

/// allotd's side of `Type=notify`: READY once recovered and listening, STATUS kept current, WATCHDOG pings
/// from the engine's own loop (so a hung scheduler stops them), RELOADING around reloads, STOPPING.
struct ServiceNotifier {
    /// Whether READY=1 was sent.
    var ready = false
    var lastStatus = ""
    var lastStatusAt = 0.0
    /// Half of WATCHDOG_USEC; nil: no watchdog.
    let watchdogInterval: Double? = Systemd.watchdogInterval()
    var lastPing = 0.0
    let enabled = Systemd.isNotifying
}

extension Engine {
    /// One line for `systemctl status`: "42 running, 118 pending, 60/64 GPUs busy, 3 lent to training".
    func statusLine() -> String {
        let counts = gpuCounts().values
        let total = counts.reduce(0) { $0 + $1.total }
        let busy = counts.reduce(0) { $0 + $1.used }
        let lent = counts.reduce(0) { $0 + $1.lent }
        let running = state.activeJobs.count { state.jobs[$0]?.state.holdsGPUs == true }
        var line = "\(running) running, \(state.pendingJobs.count) pending, \(busy)/\(total) GPUs busy"
        if lent > 0 { line += ", \(lent) lent" }
        if let following {
            line = "following \(following.leader ?? "(no leader now)"): \(line)"
        } else if failure != nil {
            line += "; the write-ahead log failed: read-only"
        }
        return line
    }

    /// The control socket is listening and recovery is done (the engine serves commands only after its
    /// start-up): tell systemd.
    func listening() {
        guard !notifier.ready else { return }
        notifier.ready = true
        let line = statusLine()
        notifier.lastStatus = line
        notifier.lastStatusAt = Self.now
        if Systemd.ready(status: line) {
            logger.info("Told systemd: ready", metadata: ["status": "\(line)"])
        } else {
            logger.info("Ready", metadata: ["status": "\(line)"])
        }
    }

    /// From the tick: the watchdog ping and, every 2 s when it changed, the status line.
    func notifyTick(now: Double) {
        guard notifier.enabled, notifier.ready else { return }
        if let interval = notifier.watchdogInterval, now - notifier.lastPing >= interval {
            Systemd.notify("WATCHDOG=1")
            notifier.lastPing = now
        }
        if now - notifier.lastStatusAt >= 2 {
            notifier.lastStatusAt = now
            let line = statusLine()
            if line != notifier.lastStatus {
                notifier.lastStatus = line
                Systemd.notify("STATUS=\(line)")
            }
        }
    }

    func notifyReloading() {
        guard notifier.enabled, notifier.ready else { return }
        Systemd.reloading()
    }

    func notifyReloaded() {
        guard notifier.enabled, notifier.ready else { return }
        let line = statusLine()
        notifier.lastStatus = line
        Systemd.notify("READY=1", "STATUS=\(line)")
    }
}
