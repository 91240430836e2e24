import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Several allotd controllers on a real 3-member etcd (docs/ha.md): one leads, the other waits; when the
/// leader is killed, the other leads within the lease's TTL with every acknowledged change.
@Suite(.serialized) struct HATests {
    static func configure(_ d: DaemonFixture, etcd: EtcdCluster, name: String) throws {
        let urls = etcd.urls.map { "\"\($0)\"" }.joined(separator: ", ")
        try
            (DaemonFixture.defaultPool
                + """

                [daemon]
                state_dir = "\(d.stateDir)"
                socket = "\(d.socket)"
                local_nodes = ["a*", "l*"]

                [ha]
                etcd = [\(urls)]
                cluster = "t"
                name = "\(name)"
                lease_ttl = "3s"

                """).write(to: d.config, atomically: true, encoding: .utf8)
    }

    /// Starts a controller that follows (a hot standby); it answers once it has read the log in etcd.
    static func follow(_ d: DaemonFixture) throws -> ChildProcess {
        try ChildProcess(
            Harness.binDir.appendingPathComponent("allotd").path,
            ["--config", d.config.path, "--log-level", "debug"],
            output: d.logPath
        )
    }

    /// Starts A and waits until it leads, then starts B to follow it.
    static func leadAndFollow(_ a: DaemonFixture, _ b: DaemonFixture) throws -> ChildProcess {
        try a.start()
        try #require(waitLeads(a) != nil, "A never led:\n\(a.daemonLog.suffix(2000))")
        return try follow(b)
    }

    /// What `status --json` says of the controller's role ("leader", "follower"), and who leads.
    static func role(_ d: DaemonFixture) -> (role: String, leader: String?)? {
        let r = d.ctl(["status", "--json"])
        guard r.status == 0, let o = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
            let log = o["log"] as? [String: Any], let role = log["role"] as? String
        else { return nil }
        return (role, log["leader"] as? String)
    }

    /// Waits until the controller leads; returns how long that took (nil: not within the time).
    @discardableResult
    static func waitLeads(_ d: DaemonFixture, timeout: Double = 15) -> Double? {
        let started = Date()
        while Date().timeIntervalSince(started) < timeout {
            if role(d)?.role == "leader" { return Date().timeIntervalSince(started) }
            usleep(20_000)
        }
        return nil
    }

    @Test func theFollowerLeadsWhenTheLeaderIsKilledWithEveryAcknowledgedSubmit() throws {
        let etcd = try EtcdCluster()
        let a = try DaemonFixture(start: false)
        let b = try DaemonFixture(start: false)
        try Self.configure(a, etcd: etcd, name: "A")
        try Self.configure(b, etcd: etcd, name: "B")
        try a.start()
        try #require(Self.waitLeads(a) != nil, "\(a.daemonLog.suffix(2000))")
        #expect(a.daemonLog.contains("Leading"), "\(a.daemonLog.suffix(2000))")
        // B follows: a hot standby that answers reads and names the leader when asked for a change.
        let follower = try Self.follow(b)
        defer {
            follower.signal(SIGKILL)
            _ = follower.wait()
        }
        var acknowledged: [Int] = []
        for i in 0..<30 { acknowledged.append(try a.submit(["--hold", "--name", "j\(i)", "--", "sleep", "60"])) }
        let waiting = Date().addingTimeInterval(15)
        while Self.role(b) == nil && Date() < waiting { usleep(50_000) }
        let role = try #require(Self.role(b), "B does not answer:\n\(b.daemonLog.suffix(2000))")
        #expect(role.role == "follower" && role.leader == "A", "\(role)")
        let refused = b.ctl(["submit", "--hold", "--", "true"])
        #expect(refused.status != 0, "a follower acknowledged a submit: \(refused.stdout)")
        #expect(
            refused.stderr.contains("not the leader") && refused.stderr.contains("the leader is A"),
            "\(refused.stderr)"
        )
        // A change on the leader reaches the follower's reads within moments (it applies the log as it comes).
        let late = try a.submit(["--hold", "--name", "late", "--", "true"])
        acknowledged.append(late)
        let written = Date()
        var seen: Double?
        while Date().timeIntervalSince(written) < 10 {
            if b.ctl(["show", String(late), "--json"]).status == 0 {
                seen = Date().timeIntervalSince(written)
                break
            }
            usleep(10_000)
        }
        let applied = try #require(seen, "the follower never showed job \(late):\n\(b.daemonLog.suffix(2000))")
        // A submit whose answer a client did not see, sent again with its request id after the failover.
        let once = try a.submit(["--hold", "--request-id", "client-7", "--", "true"])
        acknowledged.append(once)
        #expect(b.ctl(["ls", "--all", "--json"]).stdout.contains("\"j29\""))
        a.stop(signal: SIGKILL)
        let led = try #require(Self.waitLeads(b), "B never led:\n\(b.daemonLog.suffix(3000))")
        // The issue's goal is 10 s to a new start; 2 s (the TTL) and a little when the machine is idle.
        #expect(led < 10, "B led \(led) s after the leader was killed (lease TTL 3 s)")
        // Every acknowledged submit is there, once.
        let ls = b.ctl(["ls", "--all", "--json"])
        let jobs = (try? JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [[String: Any]]) ?? []
        let ids = jobs.compactMap { $0["id"] as? Int }
        #expect(Set(acknowledged).isSubset(of: Set(ids)), "\(ids)")
        #expect(ids.count == Set(ids).count, "none twice")
        #expect(
            try b.submit(["--hold", "--request-id", "client-7", "--", "true"]) == once,
            "a retry makes nothing twice"
        )
        // B goes on from there: the next job takes the next id, and it is in etcd for whoever leads next.
        let next = try b.submit(["--hold", "--", "true"])
        #expect(next == (acknowledged.max() ?? 0) + 1)
        #expect(b.daemonLog.contains("Leading"))
        print(
            "ha: the follower showed a new job \(String(format: "%.3f", applied)) s after the leader acknowledged it; B led \(String(format: "%.2f", led)) s after kill -9 of the leader (lease TTL 3 s), \(acknowledged.count) acknowledged submits all there"
        )
    }

    /// A leader stopped on purpose (SIGTERM) revokes its lease: the follower leads at once, not after the
    /// lease's TTL (10 s here).
    @Test func aLeaderStoppedOnPurposeHandsOverAtOnce() throws {
        let etcd = try EtcdCluster()
        let a = try DaemonFixture(start: false)
        let b = try DaemonFixture(start: false)
        for (d, name) in [(a, "A"), (b, "B")] {
            try Self.configure(d, etcd: etcd, name: name)
            try String(contentsOf: d.config, encoding: .utf8).replacingOccurrences(
                of: "lease_ttl = \"3s\"",
                with: "lease_ttl = \"10s\""
            )
            .write(to: d.config, atomically: true, encoding: .utf8)
        }
        let follower = try Self.leadAndFollow(a, b)
        defer {
            follower.signal(SIGKILL)
            _ = follower.wait()
        }
        let id = try a.submit(["--hold", "--", "true"])
        let waiting = Date().addingTimeInterval(15)
        while Self.role(b)?.role != "follower" && Date() < waiting { usleep(20_000) }
        let stopping = Date()
        #expect(a.stop() == 0)
        let led = try #require(Self.waitLeads(b, timeout: 20), "B never led:\n\(b.daemonLog.suffix(3000))")
        let took = Date().timeIntervalSince(stopping)
        #expect(took < 6, "B led \(took) s after A stopped: the lease (10 s) ran out instead of going with A")
        #expect(a.daemonLog.contains("Left the election"))
        #expect(b.state(id) == "held")
        print(
            "ha: B led \(String(format: "%.2f", took)) s after A was stopped with SIGTERM (lease TTL 10 s; waited \(String(format: "%.2f", led)) s)"
        )
    }

    /// A leader stopped (SIGSTOP) past its lease is deposed: the other leads, and when the old one runs again
    /// it cannot write — its submit is refused, never acknowledged — and it stops.
    @Test func aLeaderStoppedPastItsLeaseCannotWriteWhenItRunsAgain() throws {
        let etcd = try EtcdCluster()
        let a = try DaemonFixture(start: false)
        let b = try DaemonFixture(start: false)
        try Self.configure(a, etcd: etcd, name: "A")
        try Self.configure(b, etcd: etcd, name: "B")
        let follower = try Self.leadAndFollow(a, b)
        defer {
            follower.signal(SIGKILL)
            _ = follower.wait()
        }
        let first = try a.submit(["--hold", "--", "true"])
        a.signal(SIGSTOP)
        try #require(Self.waitLeads(b) != nil, "B never led:\n\(b.daemonLog.suffix(3000))")
        let onB = try b.submit(["--hold", "--name", "on-b", "--", "true"])
        #expect(onB == first + 1)
        a.signal(SIGCONT)
        // The old leader's submit: refused (the fenced append fails), or it has already stopped.
        let late = a.ctl(["submit", "--hold", "--name", "late", "--", "true"])
        #expect(late.status != 0, "a deposed leader acknowledged a submit: \(late.stdout)")
        let deadline = Date().addingTimeInterval(10)
        while a.isRunning && Date() < deadline { usleep(50_000) }
        #expect(!a.isRunning, "the deposed leader stops")
        #expect(
            a.daemonLog.contains("Lost the lead") || a.daemonLog.contains("etcd did not take"),
            "\(a.daemonLog.suffix(2000))"
        )
        // B's log never saw the late job.
        let ls = b.ctl(["ls", "--all", "--json"])
        #expect(!ls.stdout.contains("\"late\""), "\(ls.stdout)")
        #expect(ls.stdout.contains("\"on-b\""))
    }

    /// A job on an agent's node keeps running when the leader is killed: the agent goes to the new leader,
    /// which adopts the run and records its end (one run, exit 0).
    @Test func jobsOnAgentsRunOnAcrossAFailoverAndAreAdopted() throws {
        let etcd = try EtcdCluster()
        let a = try DaemonFixture(start: false)
        let b = try DaemonFixture(start: false)
        let pki = a.dir.path + "/pki"
        try AgentTests.makePKI(pki, nodes: ["n1"])
        let (portA, portB) = (MetricsTests.freePort(), MetricsTests.freePort())
        let urls = etcd.urls.map { "\"\($0)\"" }.joined(separator: ", ")
        for (d, name, port) in [(a, "A", portA), (b, "B", portB)] {
            try
                (AgentTests.pool(port: port, pki: pki)
                    + """

                    [daemon]
                    state_dir = "\(d.stateDir)"
                    socket = "\(d.socket)"

                    [ha]
                    etcd = [\(urls)]
                    cluster = "t"
                    name = "\(name)"
                    lease_ttl = "3s"

                    """).write(to: d.config, atomically: true, encoding: .utf8)
        }
        let follower = try Self.leadAndFollow(a, b)
        defer {
            follower.signal(SIGKILL)
            _ = follower.wait()
        }
        let agent = try AgentTests.AgentProcess(
            node: "n1",
            port: portA,
            pki: pki,
            dir: a.dir.path,
            controller: "127.0.0.1:\(portA),127.0.0.1:\(portB)"
        )
        let id = try a.submit(["--gpus", "2", "--gpu-model", "A100", "--", "sleep", "6"])
        try a.wait(id, for: "running", timeout: 20)
        a.stop(signal: SIGKILL)
        // B leads, the agent finds it, and the run is adopted: still running, then ended by itself.
        try #require(Self.waitLeads(b) != nil, "B never led:\n\(b.daemonLog.suffix(3000))")
        #expect(b.state(id) == "running", "\(b.job(id) ?? [:])")
        try b.wait(id, for: "completed", timeout: 20)
        let job = b.job(id) ?? [:]
        #expect(job["exit_code"] as? Int == 0, "\(job)")
        #expect((job["earlier_runs"] as? [Any])?.isEmpty ?? true, "one run, not restarted: \(job)")
        #expect(agent.output.contains("127.0.0.1:\(portB)"), "the agent went to the new leader")
    }

    /// etcd loses its quorum: the leader refuses changes (nothing acknowledged that is not durable) and keeps
    /// answering reads; when etcd is back it restarts by itself (exit 75) and, started again, leads with
    /// every acknowledged change.
    @Test func losingEtcdsQuorumRefusesChangesKeepsReadsThenRecovers() throws {
        let etcd = try EtcdCluster()
        let a = try DaemonFixture(start: false)
        try Self.configure(a, etcd: etcd, name: "A")
        try a.start()
        try #require(Self.waitLeads(a) != nil, "\(a.daemonLog.suffix(2000))")
        let kept = try (0..<3).map { i in try a.submit(["--hold", "--name", "kept\(i)", "--", "true"]) }
        etcd.kill(1)
        etcd.kill(2)
        let refused = a.ctl(["submit", "--hold", "--name", "refused", "--", "true"])
        #expect(refused.status != 0, "acknowledged without a quorum: \(refused.stdout)")
        #expect(refused.stderr.contains("not made durable in etcd"), "\(refused.stderr)")
        let reads = a.ctl(["ls", "--all", "--json"])
        #expect(reads.status == 0, "reads go on: \(reads.stderr)")
        #expect(kept.allSatisfy { reads.stdout.contains("\"id\" : \($0)") || reads.stdout.contains("\"id\":\($0)") })
        try etcd.start(1)
        try etcd.start(2)
        try etcd.waitHealthy()
        let deadline = Date().addingTimeInterval(20)
        while a.isRunning && Date() < deadline { usleep(100_000) }
        #expect(!a.isRunning, "it restarts once etcd answers:\n\(a.daemonLog.suffix(1500))")
        #expect(a.daemonLog.contains("etcd answers again: restarting"))
        try a.start()
        try #require(Self.waitLeads(a) != nil, "\(a.daemonLog.suffix(2000))")
        let ls = a.ctl(["ls", "--all", "--json"])
        let jobs = (try? JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [[String: Any]]) ?? []
        #expect(Set(kept).isSubset(of: Set(jobs.compactMap { $0["id"] as? Int })), "\(ls.stdout)")
        // A submit refused for a lost quorum may still be committed when the quorum is back (etcd keeps the
        // proposal): its outcome is unknown to the client, which is why submits carry request ids. It is
        // either absent or there once, whole (held, as it was asked).
        let refusedJobs = jobs.filter { $0["name"] as? String == "refused" }
        #expect(
            refusedJobs.isEmpty || (refusedJobs.count == 1 && refusedJobs[0]["state"] as? String == "held"),
            "the refused submit is absent or whole: \(refusedJobs)"
        )
    }
}
