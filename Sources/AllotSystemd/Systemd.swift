import CSystemd
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What allotd uses of systemd, through libsystemd: readiness and status notifications, the watchdog,
/// socket activation. Every call is harmless where systemd is absent (no `NOTIFY_SOCKET`, no
/// `LISTEN_FDS`, no `WATCHDOG_USEC`).
public enum Systemd {
    /// Sends a notification (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `RELOADING=1`, `STOPPING=1`, `ERRNO=…`),
    /// lines joined with newlines.
    /// - Returns: whether it was sent (false where there is no `NOTIFY_SOCKET`).
    @discardableResult
    public static func notify(_ assignments: String...) -> Bool {
        sd_notify(0, assignments.joined(separator: "\n")) > 0
    }

    /// Whether the service manager listens for notifications.
    public static var isNotifying: Bool { ProcessInfo.processInfo.environment["NOTIFY_SOCKET"] != nil }

    /// `READY=1` with a status line.
    /// - Returns: whether systemd was told (false where it does not listen).
    @discardableResult
    public static func ready(status: String) -> Bool { notify("READY=1", "STATUS=\(status)") }

    /// `RELOADING=1` with the monotonic time systemd wants with it (`MONOTONIC_USEC`).
    public static func reloading() {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let usec = UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
        notify("RELOADING=1", "MONOTONIC_USEC=\(usec)", "STATUS=reloading the configuration")
    }

    /// How often the watchdog must be pinged (half of `WATCHDOG_USEC`, as systemd advises), or nil when
    /// there is no watchdog for this process.
    public static func watchdogInterval() -> Double? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return Double(usec) / 1_000_000 / 2
    }

    /// The listening sockets systemd passed (socket activation): their descriptors, from 3 on. The
    /// environment variables are left for children to ignore (they name our pid).
    public static func listenFDs() -> [Int32] {
        let n = sd_listen_fds(0)
        guard n > 0 else { return [] }
        return (0..<n).map { SD_LISTEN_FDS_START + $0 }
    }

    /// Whether standard error is the journal (systemd sets `JOURNAL_STREAM` to its device and inode).
    public static var stderrIsJournal: Bool {
        guard let value = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    /// Writes one structured entry to the journal: `fields` are `NAME=value` strings (names upper case).
    /// - Returns: false when the journal refused it.
    @discardableResult
    public static func journal(_ fields: [String]) -> Bool {
        // Copies that live until the call returns (a field may hold newlines, so no C strings).
        var iovecs: [iovec] = []
        iovecs.reserveCapacity(fields.count)
        defer { for v in iovecs { free(v.iov_base) } }
        for f in fields {
            let bytes = Array(f.utf8)
            guard let p = malloc(max(1, bytes.count)) else { return false }
            bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            iovecs.append(iovec(iov_base: p, iov_len: bytes.count))
        }
        return sd_journal_sendv(iovecs, Int32(iovecs.count)) == 0
    }
}
