import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a new operator ran into (issue 12), each checked the way they met it: with the real binaries.
@Suite struct NewUserTests {
    /// A second allotd pointed at a live daemon's socket refuses to start, and leaves the socket alone.
    @Test func aSecondDaemonCannotTakeOverALiveSocket() throws {
        let d = try DaemonFixture()
        let other = d.dir.appendingPathComponent("state2").path
        let second = try Harness.run(
            "allotd",
            ["--config", d.config.path, "--state-dir", other, "--socket", d.socket]
        )
        #expect(second.status != 0)
        #expect(second.stderr.contains("another allotd is already serving \(d.socket)"), "\(second.stderr)")
        // The first daemon still answers on its socket.
        #expect(d.ctl(["status"]).status == 0)
        // A file that is not a socket is not replaced either.
        let plain = d.dir.appendingPathComponent("plain").path
        FileManager.default.createFile(atPath: plain, contents: Data("keep".utf8))
        let third = try Harness.run("allotd", ["--config", d.config.path, "--state-dir", other, "--socket", plain])
        #expect(third.status != 0)
        #expect(third.stderr.contains("is not a socket"), "\(third.stderr)")
        #expect((try? String(contentsOfFile: plain, encoding: .utf8)) == "keep")
    }

    /// A daemon removes at stop only the socket file it bound, not one another daemon has put there since.
    @Test func aDaemonRemovesOnlyTheSocketItBound() throws {
        let d = try DaemonFixture()
        let moved = d.dir.appendingPathComponent("moved.sock").path
        #expect(rename(d.socket, moved) == 0)
        // A second daemon (its own state) takes the now free path.
        let e = try DaemonFixture(start: false)
        try e.writeConfig(pool: DaemonFixture.defaultPool, daemon: "")
        let text = try String(contentsOf: e.config, encoding: .utf8).replacingOccurrences(of: e.socket, with: d.socket)
        try text.write(to: e.config, atomically: true, encoding: .utf8)
        let p = try ChildProcess(
            Harness.binDir.appendingPathComponent("allotd").path,
            ["--config", e.config.path],
            output: e.logPath
        )
        defer {
            p.signal(SIGKILL)
            _ = p.wait()
        }
        var up = false
        for _ in 0..<300 where !up {
            usleep(20_000)
            up = d.ctl(["status"]).status == 0 && d.ctl(["nodes", "--json"]).stdout.contains("a1")
        }
        #expect(up, "\(e.daemonLog)")
        // The first daemon stops: the socket at the path is not its own, and stays.
        #expect(d.stop() == 0)
        var st = stat()
        #expect(lstat(d.socket, &st) == 0, "the first daemon removed the second one's socket")
        #expect(d.ctl(["status"]).status == 0)
        p.signal(SIGTERM)
        _ = p.wait()
        // The second removes its own.
        #expect(lstat(d.socket, &st) != 0)
    }

    /// A job that ended while allotd was down ran until its supervisor says, not until it was seen.
    @Test func aJobThatEndedWhileTheDaemonWasDownIsChargedUntilItsRealEnd() throws {
        let d = try DaemonFixture()
        let j = try d.submit(["--", "sleep", "1"])
        try d.wait(j, for: "running")
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        sleep(4)
        try d.start()
        try d.wait(j, for: "completed")
        let job = try #require(d.job(j))
        let start = try #require((job["start_time"] as? String).flatMap(Self.epoch))
        let end = try #require((job["end_time"] as? String).flatMap(Self.epoch))
        #expect(end - start <= 2, "ran \(end - start) s for a sleep 1: \(job)")
        // Billed for that time only: 1 A100 at $2/h for about a second.
        let cost = try #require(job["cost_usd"] as? Double)
        #expect(cost < 2.0 * 2.5 / 3600, "cost \(cost)")
    }

    static func epoch(_ s: String) -> Double? {
        let f = ISO8601DateFormatter()
        return f.date(from: s)?.timeIntervalSince1970
    }
}
