import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A NOTIFY_SOCKET of the test's own, as systemd would give allotd: what allotd says, with when.
final class NotifyListener: Sendable {
    let path: String
    private let fd: Int32
    private let messages = Mutex<[(at: Double, text: String)]>([])
    private let stopped = Mutex(false)

    init(directory: String) throws {
        path = directory + "/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw FixtureError("socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in bytes.enumerated() { buf[i] = b }
            buf[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else { throw FixtureError("bind \(path): \(String(cString: strerror(errno)))") }
        chmod(path, 0o777)
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while !stopped.withLock({ $0 }) {
                let n = recv(fd, &buffer, buffer.count, 0)
                guard n > 0 else { continue }
                let text = String(decoding: buffer[0..<n], as: UTF8.self)
                messages.withLock { $0.append((Date().timeIntervalSince1970, text)) }
            }
        }
        thread.start()
    }

    deinit {
        stopped.withLock { $0 = true }
        usleep(150_000)
        close(fd)
        unlink(path)
    }

    var all: [(at: Double, text: String)] { messages.withLock { $0 } }

    /// The messages holding a line, with when.
    func with(_ line: String) -> [(at: Double, text: String)] {
        all.filter { $0.text.split(separator: "\n").contains { $0 == line || $0.hasPrefix(line) } }
    }

    /// Waits (up to `timeout` s) for a message with the line.
    @discardableResult
    func wait(for line: String, after: Double = 0, timeout: Double = 10) throws -> (at: Double, text: String) {
        let deadline = Date().timeIntervalSince1970 + timeout
        while Date().timeIntervalSince1970 < deadline {
            if let m = with(line).first(where: { $0.at >= after }) { return m }
            usleep(20_000)
        }
        throw FixtureError("no \(line) within \(timeout) s; got: \(all.map(\.text))")
    }
}

/// allotd as a `Type=notify` service, without systemd: the test plays the service manager.
@Suite(.serialized) struct SystemdNotifyTests {
    @Test func readyComesOnceTheSocketAnswersThenStatusWatchdogReloadingAndStopping() throws {
        let d = try DaemonFixture(start: false)
        let notify = try NotifyListener(directory: d.dir.path)
        d.environment = ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"]
        try d.start()
        let ready = try notify.wait(for: "READY=1")
        // READY came after the socket was bound and recovery done: the socket answered right away.
        #expect(ready.text.contains("STATUS=0 running, 0 pending, 0/6 GPUs busy"), "\(ready.text)")
        #expect(d.ctl(["status"]).status == 0)
        // STATUS follows the pool.
        let j = try d.submit(["--gpus", "2", "--", "sleep", "30"])
        try d.wait(j, for: "running")
        try notify.wait(for: "STATUS=1 running, 0 pending, 2/6 GPUs busy", timeout: 6)
        // WATCHDOG=1 at half of WATCHDOG_USEC (1 s), from the engine's loop.
        let start = Date().timeIntervalSince1970
        usleep(2_600_000)
        let pings = notify.with("WATCHDOG=1").filter { $0.at >= start }.map(\.at)
        #expect(pings.count >= 3 && pings.count <= 7, "\(pings.count) pings in 2.6 s")
        for (a, b) in zip(pings, pings.dropFirst()) { #expect(b - a < 0.9, "a gap of \(b - a) s between pings") }
        // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
        let before = Date().timeIntervalSince1970
        d.signal(SIGHUP)
        let reloading = try notify.wait(for: "RELOADING=1", after: before)
        #expect(reloading.text.contains("MONOTONIC_USEC="), "\(reloading.text)")
        let again = try notify.wait(for: "READY=1", after: reloading.at)
        #expect(again.at >= reloading.at)
        // `allotctl reload` does the same.
        let before2 = Date().timeIntervalSince1970
        #expect(d.ctl(["reload"]).status == 0)
        try notify.wait(for: "RELOADING=1", after: before2)
        // SIGTERM: STOPPING=1.
        #expect(d.stop() == 0)
        try notify.wait(for: "STOPPING=1")
        d.killJobs()
    }

    @Test func aFailedStartSaysWhyWithERRNO() throws {
        let d = try DaemonFixture(start: false)
        try d.writeConfig(pool: DaemonFixture.defaultPool.replacingOccurrences(of: "gpus = 4", with: "gpus = \"four\""))
        let notify = try NotifyListener(directory: d.dir.path)
        d.environment = ["NOTIFY_SOCKET": notify.path]
        #expect(throws: (any Error).self) { try d.start() }
        let m = try notify.wait(for: "ERRNO=")
        #expect(m.text.contains("ERRNO=22"), "\(m.text)")
        #expect(m.text.contains("STATUS=failed to start") && m.text.contains("gpus"), "\(m.text)")
        #expect(notify.with("READY=1").isEmpty)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-socket-activate")))
    func socketActivationStartsAllotdOnTheFirstConnection() throws {
        let d = try DaemonFixture(start: false)
        let process = try ChildProcess(
            "/usr/bin/systemd-socket-activate",
            ["-l", d.socket, Harness.binDir.appendingPathComponent("allotd").path, "--config", d.config.path],
            output: d.logPath
        )
        defer {
            process.signal(SIGTERM)
            _ = process.wait()
        }
        // Nothing runs allotd yet; the socket is systemd-socket-activate's.
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: d.socket) { usleep(20_000) }
        #expect(!d.daemonLog.contains("Recovered"))
        // The first allotctl call starts it and is answered on the passed socket.
        var status = d.ctl(["status", "--json"])
        for _ in 0..<100 where status.status != 0 {
            usleep(50_000)
            status = d.ctl(["status", "--json"])
        }
        #expect(status.status == 0, "\(status.stderr)\n\(d.daemonLog)")
        #expect(d.daemonLog.contains("Socket passed by systemd"), "\(d.daemonLog)")
        let j = try d.submit(["--", "true"])
        try d.wait(j, for: "completed")
    }
}
