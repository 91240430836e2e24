import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Node selection, nice and notifications (webhooks and mail), through the real allotd and allotctl.
@Suite(.serialized) struct SelectionNoticeTests {
    /// Two A100 nodes with labels and an L4 node.
    static let pool = """
        [scheduler]
        default_grace = "2s"
        interval = "1s"

        [preemption]
        min_runtime = "0s"

        [[gpu_model]]
        name = "A100"
        memory_gib = 80
        price_per_hour = 2.0
        speed = 1.0

        [[gpu_model]]
        name = "L4"
        memory_gib = 24
        price_per_hour = 0.5
        speed = 0.25

        [[node]]
        name = "a1"
        gpu_model = "A100"
        gpus = 2
        labels = { ib = "true", zone = "a" }

        [[node]]
        name = "a2"
        gpu_model = "A100"
        gpus = 2
        labels = { zone = "b", nvme = "true" }

        [[node]]
        name = "l1"
        gpu_model = "L4"
        gpus = 2

        """

    func node(_ d: DaemonFixture, _ id: Int) throws -> String {
        try d.wait(id, for: "running")
        return d.job(id)?["node"] as? String ?? "?"
    }

    /// `--nodelist`, `--exclude` and `--constraint` choose the nodes a job may use; unknown nodes and
    /// selections no node meets are refused with the reason; `update` changes a waiting job's selection.
    @Test func nodeSelectionChoosesTheNodes() throws {
        let d = try DaemonFixture(pool: Self.pool)
        let onA2 = try d.submit(["-w", "a2", "--", "sleep", "30"])
        #expect(try node(d, onA2) == "a2")
        let notA1 = try d.submit(["--exclude", "a1,a2", "--", "sleep", "30"])
        #expect(try node(d, notA1) == "l1")
        let ib = try d.submit(["-C", "ib", "--", "sleep", "30"])
        #expect(try node(d, ib) == "a1")
        // Hostlists and alternatives; the selection is shown as given.
        let zoneB = try d.submit(["--constraint", "zone=b|nvme", "--nodelist", "a[1-2]", "--", "sleep", "30"])
        #expect(try node(d, zoneB) == "a2")
        let shown = d.ctl(["show", String(zoneB)]).stdout
        #expect(shown.contains("nodelist") && shown.contains("a[1-2]") && shown.contains("zone=b|nvme"), "\(shown)")
        // a2 is full now: a job for it waits, and says which nodes it may use.
        let waits = try d.submit(["-w", "a2", "--", "sleep", "30"])
        usleep(1_500_000)
        #expect(d.state(waits) == "pending")
        let why = d.ctl(["why", String(waits)]).stdout
        #expect(why.contains("nodes it may use (nodes a2): 1 of 3"), "\(why)")
        // Moved to a node with room by update.
        let u = d.ctl(["update", String(waits), "--nodelist", "", "--constraint", "ib"])
        #expect(u.status == 0, "\(u.stderr)")
        #expect(try node(d, waits) == "a1")
        // Refused with the reason: an unknown node, a label no node has, both listed and excluded.
        let unknown = d.ctl(["submit", "-w", "a3", "--", "true"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no node \"a3\"") && unknown.stderr.contains("a[1-2]"))
        let noLabel = d.ctl(["submit", "-C", "infiniband", "--", "true"])
        #expect(noLabel.status != 0 && noLabel.stderr.contains("could never start"), "\(noLabel.stderr)")
        let both = d.ctl(["submit", "-w", "a1", "-x", "a1", "--", "true"])
        #expect(both.status != 0 && both.stderr.contains("both"), "\(both.stderr)")
        let badExpr = d.ctl(["submit", "-C", "ib&&zone", "--", "true"])
        #expect(badExpr.status != 0 && badExpr.stderr.contains("empty term"), "\(badExpr.stderr)")
        // Too big for the nodes it may use, though not for the pool.
        let tooBig = d.ctl(["submit", "--gpus", "3", "-w", "a1", "--", "true"])
        #expect(tooBig.status != 0 && tooBig.stderr.contains("could never start"), "\(tooBig.stderr)")
        // The same in #SBATCH lines.
        let script = d.dir.appendingPathComponent("sel.sh")
        try "#!/bin/sh\n#SBATCH -C zone=b -x a1\n#SBATCH --nice=10\nsleep 30\n".write(
            to: script,
            atomically: true,
            encoding: .utf8
        )
        let fromScript = try d.submit([script.path])
        let job = try #require(d.job(fromScript))
        #expect(job["constraint"] as? String == "zone=b" && job["exclude"] as? String == "a1")
        #expect(job["nice"] as? Int == 10)
        _ = d.ctl(["cancel", String(onA2), String(notA1), String(ib), String(zoneB), String(waits), String(fromScript)])
    }

    /// A nice job goes after a job submitted later; only admins may raise a job's priority.
    @Test func niceLowersPriority() throws {
        let d = try DaemonFixture(pool: Self.pool)
        let blocker = try d.submit(["--gpus", "2", "-w", "l1", "--", "sleep", "2"])
        try d.wait(blocker, for: "running")
        let nice = try d.submit(["--nice", "1000", "-w", "l1", "--gpus", "2", "--", "sleep", "30"])
        usleep(100_000)
        let plain = try d.submit(["-w", "l1", "--gpus", "2", "--", "sleep", "30"])
        #expect(d.ctl(["why", String(nice)]).stdout.contains("nice 1000"))
        try d.wait(plain, for: "running", timeout: 30)
        #expect(d.state(nice) == "pending")
        // A user may lower their job's priority, not raise it.
        let denied = d.ctl(["update", String(nice), "--nice", "-5"], as: "nobody")
        #expect(denied.status != 0)
        let refused = d.ctl(["submit", "--nice", "-5", "--", "true"], as: "nobody")
        #expect(refused.status != 0 && refused.stderr.contains("only admins"), "\(refused.stderr)")
        #expect(d.ctl(["update", String(nice), "--nice", "-100"]).status == 0)
        #expect(d.job(nice)?["nice"] as? Int == -100)
        _ = d.ctl(["cancel", String(nice), String(plain)])
    }

    /// A webhook receiver that fails its first answers gets each notice once it answers 2xx (begin and end;
    /// fail for a failed job), each with its id; a tenant's default webhook serves jobs that name none; a
    /// mail goes through the configured sendmail.
    @Test func webhooksAndMailAreDeliveredOnceAfterRetries() throws {
        let receiver = try WebhookReceiver(failFirst: 3)
        let mails = FileManager.default.temporaryDirectory.appendingPathComponent("mails-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: mails, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: mails) }
        let sendmail = mails.appendingPathComponent("sendmail")
        try "#!/bin/sh\ncat > \"\(mails.path)/mail-$$-$(date +%s%N)\"\n".write(
            to: sendmail,
            atomically: true,
            encoding: .utf8
        )
        chmod(sendmail.path, 0o755)
        let pool =
            Self.pool + """

                [[tenant]]
                name = "ops"
                users = ["*"]
                notify = "http://127.0.0.1:\(receiver.port)/tenant"

                """
        let d = try DaemonFixture(pool: pool, daemon: "sendmail = \"\(sendmail.path)\"")
        let url = "http://127.0.0.1:\(receiver.port)/hook"
        let ok = try d.submit(["--notify", url, "--mail-user", "ops@example.org", "--", "true"])
        let bad = try d.submit(["--notify", url, "--", "sh", "-c", "exit 3"])
        let tenants = try d.submit(["--tenant", "ops", "--mail-type", "end", "--", "true"])
        try d.wait(ok, for: "completed")
        try d.wait(bad, for: "failed")
        try d.wait(tenants, for: "completed")
        // Retries: 0.5 s, 1 s, 2 s … until the receiver answers.
        let deadline = Date().addingTimeInterval(30)
        var got: [String: [String: Any]] = [:]
        while Date() < deadline {
            got = receiver.delivered
            if got.count >= 6 { break }
            usleep(100_000)
        }
        let expected = [
            "\(ok).1.begin", "\(ok).1.end", "\(bad).1.begin", "\(bad).1.end", "\(bad).1.fail", "\(tenants).1.end",
        ]
        #expect(Set(got.keys) == Set(expected), "\(got.keys.sorted()) \(d.daemonLog.suffix(2000))")
        #expect(receiver.failures == 3, "the first three tries were refused")
        #expect(receiver.duplicates.isEmpty, "each notice is answered 2xx once: \(receiver.duplicates)")
        #expect(receiver.paths["\(tenants).1.end"] == "/tenant" && receiver.paths["\(ok).1.end"] == "/hook")
        let end = try #require(got["\(bad).1.end"])
        #expect(end["event"] as? String == "end")
        let job = try #require(end["job"] as? [String: Any])
        #expect(job["state"] as? String == "failed" && job["exit_code"] as? Int == 3, "\(job)")
        // The order of one destination is kept: a job's begin before its end.
        #expect(receiver.order.firstIndex(of: "\(ok).1.begin")! < receiver.order.firstIndex(of: "\(ok).1.end")!)
        // Mail: begin and end of the first job.
        var texts: [String] = []
        while Date() < deadline {
            texts = ((try? FileManager.default.contentsOfDirectory(atPath: mails.path)) ?? [])
                .filter { $0.hasPrefix("mail-") }
                .compactMap { try? String(contentsOfFile: mails.appendingPathComponent($0).path, encoding: .utf8) }
            if texts.count >= 2 { break }
            usleep(100_000)
        }
        #expect(texts.count == 2, "\(texts)")
        #expect(texts.allSatisfy { $0.contains("To: ops@example.org") && $0.contains("allot job \(ok)") })
        #expect(texts.contains { $0.contains("ended, completed") })
        // Bad addresses are refused at submit.
        let badURL = d.ctl(["submit", "--notify", "https://example.org/x", "--", "true"])
        #expect(badURL.status != 0 && badURL.stderr.contains("http://"), "\(badURL.stderr)")
        let badType = d.ctl(["submit", "--mail-user", "a@b", "--mail-type", "time_limit", "--", "true"])
        #expect(badType.status != 0 && badType.stderr.contains("time_limit"), "\(badType.stderr)")
    }

    /// Notices whose receiver is down when allotd is killed are sent after it restarts, in order, once.
    @Test func noticesNotYetDeliveredAreSentAfterARestart() throws {
        let receiver = try WebhookReceiver(failFirst: 1_000_000)
        let d = try DaemonFixture(pool: Self.pool)
        let url = "http://127.0.0.1:\(receiver.port)/hook"
        let j = try d.submit(["--notify", url, "--", "true"])
        try d.wait(j, for: "completed")
        let deadline = Date().addingTimeInterval(20)
        while receiver.failures < 2 && Date() < deadline { usleep(50_000) }
        #expect(receiver.failures >= 2, "allotd tried and was refused")
        let spool = d.stateDir + "/notices"
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).count == 2, "begin and end wait")
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        receiver.answerFromNowOn()
        try d.start()
        while receiver.delivered.count < 2 && Date() < deadline { usleep(50_000) }
        #expect(receiver.order == ["\(j).1.begin", "\(j).1.end"], "\(receiver.order) \(d.daemonLog.suffix(2000))")
        #expect(receiver.duplicates.isEmpty)
        #expect(d.daemonLog.contains("Job notices left by the last run"))
        while ((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).count > 0 && Date() < deadline {
            usleep(50_000)
        }
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).isEmpty, "delivered: spool empty")
    }
}

/// A small HTTP server on loopback: records each POST's JSON by its notice id; answers 500 to the first
/// `failFirst` requests, then 200.
final class WebhookReceiver: @unchecked Sendable {
    let port: Int
    private let fd: Int32
    private let lock = NSLock()
    private var _delivered: [String: [String: Any]] = [:]
    private var _paths: [String: String] = [:]
    private var _order: [String] = []
    private var _duplicates: [String] = []
    private var _failures = 0
    private var failLeft: Int

    var delivered: [String: [String: Any]] { lock.withLock { _delivered } }
    var paths: [String: String] { lock.withLock { _paths } }
    var order: [String] { lock.withLock { _order } }
    var duplicates: [String] { lock.withLock { _duplicates } }
    var failures: Int { lock.withLock { _failures } }
    /// From now on every request is answered 200.
    func answerFromNowOn() { lock.withLock { failLeft = 0 } }

    init(failFirst: Int) throws {
        failLeft = failFirst
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            port = 0
            throw FixtureError("webhook receiver: bind failed")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        port = Int(UInt16(bigEndian: addr.sin_port))
        let t = Thread { [self] in self.serve() }
        t.start()
    }

    deinit { close(fd) }

    private func serve() {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 { return }
            handle(c)
            close(c)
        }
    }

    private func handle(_ c: Int32) {
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        var headerEnd: Int?
        var length = 0
        while true {
            let n = read(c, &buf, buf.count)
            if n <= 0 { return }
            data += buf[0..<n]
            if headerEnd == nil, let r = findHeaderEnd(data) {
                headerEnd = r
                let head = String(decoding: data[0..<r], as: UTF8.self).lowercased()
                for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
            if let h = headerEnd, data.count >= h + 4 + length { break }
        }
        let h = headerEnd!
        let requestLine = String(decoding: data[0..<h], as: UTF8.self).split(separator: "\r\n").first ?? ""
        let path = requestLine.split(separator: " ").dropFirst().first.map(String.init) ?? ""
        let body = Data(data[(h + 4)..<(h + 4 + length)])
        let fail: Bool = lock.withLock {
            if failLeft > 0 {
                failLeft -= 1
                _failures += 1
                return true
            }
            return false
        }
        let answer =
            fail
            ? "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            : "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        if !fail, let json = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
            let id = json["notice"] as? String
        {
            lock.withLock {
                if _delivered[id] != nil { _duplicates.append(id) }
                _delivered[id] = json
                _paths[id] = path
                _order.append(id)
            }
        }
        _ = answer.withCString { write(c, $0, strlen($0)) }
    }

    private func findHeaderEnd(_ d: [UInt8]) -> Int? {
        guard d.count >= 4 else { return nil }
        for i in 0...(d.count - 4) where d[i] == 13 && d[i + 1] == 10 && d[i + 2] == 13 && d[i + 3] == 10 {
            return i
        }
        return nil
    }
}
