import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real allotd on a temp dir, driven by the real allotctl; jobs are real processes.
@Suite(.serialized) struct DaemonTests {
    @Test func submitListShowWhyHoldReleaseCancel() throws {
        let d = try DaemonFixture()
        let a = try d.submit(["--gpus", "2", "--name", "first", "--", "sleep", "30"])
        try d.wait(a, for: "running")
        // A held job waits; released, it runs.
        let h = try d.submit(["--hold", "--", "sleep", "30"])
        #expect(d.state(h) == "held")
        let ls = d.ctl(["ls"])
        #expect(ls.status == 0)
        #expect(ls.stdout.contains("first") && ls.stdout.contains("held"))
        let lsJSON =
            try JSONSerialization.jsonObject(with: Data(d.ctl(["ls", "--json"]).stdout.utf8)) as! [[String: Any]]
        #expect(lsJSON.count == 2)
        for key in [
            "id", "name", "state", "kind", "class", "tenant", "uid", "user", "gpus", "gpu_model", "node", "gpu_indices",
            "submit_time", "cost_usd",
        ] {
            #expect(lsJSON[0][key] != nil, "ls --json lacks \(key)")
        }
        let shown = try #require(d.job(a))
        #expect(shown["node"] as? String == "a1")
        #expect(shown["gpu_model"] as? String == "A100")
        #expect((shown["gpu_indices"] as? [[String: Any]])?.first?["gpus"] as? [Int] == [0, 1])
        let why = d.ctl(["why", String(h)])
        #expect(why.status == 0 && why.stdout.contains("held"))
        #expect(d.ctl(["release", String(h)]).status == 0)
        try d.wait(h, for: "running")
        // Cancel: the running job gets SIGTERM and ends cancelled.
        let c = d.ctl(["cancel", String(a), String(h)])
        #expect(c.status == 0, "\(c.stderr)")
        try d.wait(a, for: "cancelled")
        try d.wait(h, for: "cancelled")
        #expect(d.ctl(["ls"]).stdout.split(separator: "\n").count == 1)  // only the header
        #expect(d.ctl(["ls", "--all"]).stdout.contains("cancelled"))
        // Not found, bad usage.
        #expect(d.ctl(["show", "9999"]).status == 3)
        #expect(d.ctl(["cancel", "9999"]).status == 3)
        #expect(d.ctl(["submit", "--gpus", "-2", "--", "true"]).status == 2)
        #expect(d.ctl(["submit", "--walltime", "soon", "--", "true"]).status == 2)
        let never = d.ctl(["submit", "--gpus", "64", "--", "true"])
        #expect(never.status == 1 && never.stderr.contains("never start"), "\(never.stderr)")
        #expect(d.ctl(["release", String(a)]).status == 1)
        #expect(d.stop() == 0)
    }

    @Test func jobsRunWithTheirGPUsAndTheirExitStatusIsRecorded() throws {
        let d = try DaemonFixture()
        let ok = try d.submit([
            "--gpus", "2", "--env", "GREETING=hello", "--", "sh", "-c",
            "echo \"$GREETING gpus=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES job=$ALLOT_JOB_ID\"",
        ])
        try d.wait(ok, for: "completed")
        let logs = d.ctl(["logs", String(ok)])
        #expect(logs.status == 0)
        #expect(logs.stdout == "hello gpus=0,1 nv=0,1 job=\(ok)\n", "\(logs.stdout)")
        let bad = try d.submit(["--", "sh", "-c", "echo oops >&2; exit 3"])
        try d.wait(bad, for: "failed")
        #expect(d.job(bad)?["exit_code"] as? Int == 3)
        #expect(d.ctl(["logs", String(bad)]).stdout == "oops\n")
        let missing = try d.submit(["--", "/nonexistent/program"])
        try d.wait(missing, for: "failed")
        let follow = try d.submit(["--", "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.3; done"])
        let f = d.ctl(["logs", "-f", String(follow)])
        #expect(f.status == 0)
        #expect(f.stdout == "line 1\nline 2\nline 3\n", "\(f.stdout)")
        #expect(d.state(follow) == "completed")
    }

    @Test func preemptionSendsSIGTERMThenSIGKILLAfterTheGrace() throws {
        let d = try DaemonFixture()
        // A training job that ignores SIGTERM holds all four A100s.
        let script = "trap 'echo got TERM' TERM; echo started; while true; do sleep 0.1; done"
        let t = try d.submit(["--gpus", "4", "--gpu-model", "A100", "--grace", "1s", "--", "sh", "-c", script])
        try d.wait(t, for: "running")
        usleep(300_000)
        // An inference job that needs them preempts it.
        let i = try d.submit(["--gpus", "4", "--gpu-model", "A100", "--kind", "inference", "--", "sleep", "30"])
        let took = try d.wait(i, for: "running", timeout: 15)
        #expect(took >= 0.8, "the preemptor started before the victim's grace ran out")
        #expect(d.state(t) == "pending")
        let log = d.ctl(["logs", String(t)]).stdout
        #expect(log.contains("started") && log.contains("got TERM"), "\(log)")
        let why = d.ctl(["why", String(t)]).stdout
        #expect(why.contains("pending"))
    }

    @Test func walltimeIsEnforced() throws {
        let d = try DaemonFixture()
        let j = try d.submit(["--walltime", "1s", "--grace", "1s", "--", "sleep", "60"])
        let took = try d.wait(j, for: "timed_out", timeout: 15)
        #expect(took < 8)
        #expect((d.job(j)?["reason"] as? String)?.contains("walltime") == true)
    }

    /// A submit with a request id, sent again (a retry after a lost answer), gets the job the first made —
    /// also after a SIGKILL and restart of allotd — and a bad id is refused naming it.
    @Test func aSubmitSentAgainWithItsRequestIDMakesNothingTwice() throws {
        let d = try DaemonFixture()
        let first = try d.submit(["--hold", "--request-id", "nightly-2026-12-04", "--", "true"])
        #expect(try d.submit(["--hold", "--request-id", "nightly-2026-12-04", "--", "true"]) == first)
        let other = try d.submit(["--hold", "--request-id", "nightly-2026-12-05", "--", "true"])
        #expect(other == first + 1)
        let lines = (0..<3).map { #"{"command": ["true"], "hold": true, "name": "f\#($0)"}"# }.joined(separator: "\n")
        let file = d.ctl(["submit", "--file", "-", "--request-id", "batch-1"], stdin: lines + "\n")
        #expect(file.status == 0, "\(file.stderr)")
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        try d.start()
        #expect(try d.submit(["--hold", "--request-id", "nightly-2026-12-04", "--", "true"]) == first)
        let again = d.ctl(["submit", "--file", "-", "--request-id", "batch-1"], stdin: lines + "\n")
        #expect(again.status == 0 && again.stdout == file.stdout, "\(again.stdout) vs \(file.stdout)")
        let all = d.ctl(["ls", "--all", "--json"])
        let jobs = (try? JSONSerialization.jsonObject(with: Data(all.stdout.utf8)) as? [[String: Any]]) ?? []
        #expect(jobs.count == 5, "\(all.stdout)")
        let bad = d.ctl(["submit", "--request-id", "has space", "--", "true"])
        #expect(bad.status != 0 && bad.stderr.contains("request_id"), "\(bad.stderr)")
    }

    @Test func killedDaemonLosesNoAcknowledgedJobAndAdoptsRunningOnes() throws {
        let d = try DaemonFixture()
        let running = try d.submit(["--", "sh", "-c", "sleep 2; echo done"])
        try d.wait(running, for: "running")
        // Acknowledged submits: bulk and one by one, some too big to start.
        let lines = (0..<500).map {
            #"{"command": ["true"], "gpus": 4, "gpu_model": "A100", "hold": true, "name": "bulk\#($0)"}"#
        }
        let bulk = d.ctl(["submit", "--file", "-"], stdin: lines.joined(separator: "\n") + "\n")
        #expect(bulk.status == 0, "\(bulk.stderr)")
        let ids = bulk.stdout.split(separator: "\n").compactMap { Int($0) }
        #expect(ids.count == 500)
        var single: [Int] = []
        for _ in 0..<20 { single.append(try d.submit(["--hold", "--", "true"])) }
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        try d.start()
        for id in ids + single { #expect(d.state(id) == "held", "job \(id) lost after SIGKILL") }
        // The job kept running while allotd was down, and is seen to end.
        try d.wait(running, for: "completed", timeout: 20)
        #expect(d.ctl(["logs", String(running)]).stdout == "done\n")
        // A job that ended while allotd was down is recorded when it comes back.
        let quick = try d.submit(["--", "sh", "-c", "sleep 1; exit 4"])
        try d.wait(quick, for: "running")
        #expect(d.stop(signal: SIGKILL) == 128 + SIGKILL)
        sleep(2)
        try d.start()
        try d.wait(quick, for: "failed")
        #expect(d.job(quick)?["exit_code"] as? Int == 4)
    }

    @Test func gracefulStopKeepsJobsRunning() throws {
        let d = try DaemonFixture()
        let j = try d.submit(["--", "sh", "-c", "sleep 2; echo survived"])
        try d.wait(j, for: "running")
        #expect(d.stop() == 0)
        try d.start()
        #expect(d.state(j) == "running")
        try d.wait(j, for: "completed")
        #expect(d.ctl(["logs", String(j)]).stdout == "survived\n")
    }

    @Test func reloadTakesAGoodConfigAndRefusesABadOne() throws {
        let d = try DaemonFixture()
        // Good: a node added.
        try d.writeConfig(
            pool: DaemonFixture.defaultPool + "\n[[node]]\nname = \"a2\"\ngpu_model = \"A100\"\ngpus = 8\n"
        )
        let r = d.ctl(["reload"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("a2 added"))
        #expect(d.ctl(["nodes"]).stdout.contains("a2"))
        // Bad: refused with the key named; the pool is unchanged.
        try d.writeConfig(pool: DaemonFixture.defaultPool.replacingOccurrences(of: "gpus = 4", with: "gpus = -4"))
        let bad = d.ctl(["reload"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("gpus"), "\(bad.stderr)")
        let nodes =
            try JSONSerialization.jsonObject(with: Data(d.ctl(["nodes", "--json"]).stdout.utf8)) as! [[String: Any]]
        #expect(nodes.count == 3)
        // SIGHUP with the bad file: logged, refused, still serving.
        d.signal(SIGHUP)
        usleep(500_000)
        #expect(d.isRunning)
        #expect(d.ctl(["status"]).status == 0)
        #expect(d.daemonLog.contains("Reload refused"))
        // SIGHUP with a good file (a2 removed).
        try d.writeConfig(pool: DaemonFixture.defaultPool)
        d.signal(SIGHUP)
        var gone = false
        for _ in 0..<50 where !gone {
            usleep(100_000)
            gone = !d.ctl(["nodes"]).stdout.contains("a2")
        }
        #expect(gone)
    }

    @Test func badConfigAtStartExitsNamingTheKey() throws {
        let d = try DaemonFixture(start: false)
        try d.writeConfig(
            pool: DaemonFixture.defaultPool.replacingOccurrences(of: "speed = 0.25", with: "speed = \"fast\"")
        )
        let r = try Harness.run("allotd", ["--config", d.config.path])
        #expect(r.status == 1)
        #expect(r.stderr.contains("speed"), "\(r.stderr)")
    }

    @Test func malformedAndOversizedRequestsGetErrorsAndTheDaemonCarriesOn() throws {
        let d = try DaemonFixture()
        let c = try RawClient(path: d.socket)
        c.write("this is not json\n")
        #expect(c.readLine()?.contains("-32700") == true)
        c.write(#"{"jsonrpc":"2.0","id":7,"method":"nosuch","params":{}}"# + "\n")
        #expect(c.readLine()?.contains("-32601") == true)
        c.write(#"{"jsonrpc":"2.0","id":8,"method":"submit","params":{"job":{"command":"true"}}}"# + "\n")
        let typed = c.readLine() ?? ""
        #expect(typed.contains("-32602") && typed.contains("command"), "\(typed)")
        c.write(
            #"{"jsonrpc":"2.0","id":9,"method":"submit","params":{"job":{"command":["true"],"gpus":"many"}}}"# + "\n"
        )
        #expect(c.readLine()?.contains("gpus") == true)
        // An oversized line: error -32005, then the connection is closed.
        let o = try RawClient(path: d.socket)
        o.write([UInt8](repeating: UInt8(ascii: "x"), count: 2 << 20))
        let answer = o.readLine() ?? ""
        #expect(answer.contains("-32005"), "\(answer)")
        #expect(o.readLine() == nil)
        #expect(d.ctl(["status"]).status == 0)
    }

    @Test func aClientThatNeverReadsIsDisconnectedWithoutSlowingOthers() throws {
        let d = try DaemonFixture()
        let stuck = try RawClient(path: d.socket)
        stuck.write(#"{"jsonrpc":"2.0","id":1,"method":"watch","params":{}}"# + "\n")
        // Enough state changes to fill its socket and its 16 MiB queue: held submits in bulk.
        let lines = (0..<5000).map {
            #"{"command": ["true"], "hold": true, "name": "filler-\#($0)-\#(String(repeating: "x", count: 100))"}"#
        }
        let text = lines.joined(separator: "\n") + "\n"
        let start = Date()
        for _ in 0..<8 {
            let r = d.ctl(["submit", "--file", "-"], stdin: text)
            #expect(r.status == 0, "\(r.stderr)")
        }
        #expect(Date().timeIntervalSince(start) < 60)
        #expect(d.ctl(["status"]).status == 0)
        // It was cut off: reading now gets part of the 40,000 events, then the end of the stream.
        var events = 0
        while let line = stuck.readLine() {
            if line.contains("watch.event") { events += 1 }
        }
        #expect(events < 40_000, "the stuck client got every event: it was never disconnected")
        #expect(d.daemonLog.contains("allotd") && d.isRunning)
    }

    @Test func unreachableDaemonExits69NamingTheSocket() throws {
        let r = try Harness.run("allotctl", ["status", "--socket", "/tmp/allot-no-such.sock"])
        #expect(r.status == 69)
        #expect(r.stderr.contains("/tmp/allot-no-such.sock") && r.stderr.contains("systemctl"))
    }

    /// A socket that takes connections and never answers (a socket-activated allotd failing to start) must
    /// not hang allotctl: the lean submit and the full commands give up after ALLOT_TIMEOUT seconds, exit 69
    /// and say where to look.
    @Test func aDaemonThatNeverAnswersTimesOutWithExit69() throws {
        let path = "/tmp/allot-silent-\(getpid()).sock"
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer {
            close(fd)
            unlink(path)
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in path.utf8.enumerated() { buf[i] = b }
        }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(bound == 0 && listen(fd, 16) == 0)
        for args in [["submit", "--", "true"], ["ls"], ["submit", "--json", "--", "true"]] {
            let started = Date()
            let r = try Harness.run("allotctl", args, environment: ["ALLOT_SOCKET": path, "ALLOT_TIMEOUT": "1"])
            let took = Date().timeIntervalSince(started)
            #expect(r.status == 69, "\(args): \(r.stderr)")
            #expect(r.stderr.contains("did not answer within 1 s") && r.stderr.contains("journalctl"), "\(r.stderr)")
            #expect(took < 10, "\(args) took \(took) s")
        }
        let bad = try Harness.run(
            "allotctl",
            ["ls"],
            environment: ["ALLOT_SOCKET": "/tmp/allot-no-such.sock", "ALLOT_TIMEOUT": "soon"]
        )
        #expect(bad.stderr.contains("ALLOT_TIMEOUT=soon is not a number of seconds"), "\(bad.stderr)")
    }

    @Test func jobsOnNodesAllotdDoesNotRunAreReportedThroughTheProtocol() throws {
        let pool = DaemonFixture.defaultPool + "\n[[node]]\nname = \"remote-1\"\ngpu_model = \"A100\"\ngpus = 8\n"
        let d = try DaemonFixture(pool: pool)
        let j = try d.submit(["--gpus", "8", "--", "train"])
        try d.wait(j, for: "running")
        #expect(d.job(j)?["node"] as? String == "remote-1")
        let c = try RawClient(path: d.socket)
        c.write(#"{"jsonrpc":"2.0","id":1,"method":"job_finished","params":{"id":\#(j),"exit_code":0}}"# + "\n")
        #expect(c.readLine()?.contains("completed") == true)
        #expect(d.state(j) == "completed")
    }

    @Test func statusCostWatchAndAWhatIfFromTheLiveQueue() throws {
        let d = try DaemonFixture()
        // A watcher sees the changes as they happen.
        let watchOut = d.dir.appendingPathComponent("watch.jsonl").path
        let watcher = try ChildProcess(
            "/usr/bin/env",
            ["ALLOT_SOCKET=\(d.socket)", Harness.binDir.appendingPathComponent("allotctl").path, "watch", "--json"],
            output: watchOut
        )
        usleep(300_000)
        let j = try d.submit(["--gpus", "2", "--tenant", "research", "--", "sleep", "1"])
        try d.wait(j, for: "completed")
        let big = try d.submit(["--gpus", "4", "--gpu-model", "A100", "--estimate", "2h", "--", "sleep", "30"])
        try d.wait(big, for: "running")
        let queued = try d.submit(["--gpus", "4", "--gpu-model", "A100", "--estimate", "1h", "--", "true"])
        #expect(d.state(queued) == "pending")
        usleep(300_000)
        watcher.signal(SIGTERM)
        _ = watcher.wait()
        let events = (try String(contentsOfFile: watchOut, encoding: .utf8)).split(separator: "\n")
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let mine = events.filter { ($0["job"] as? [String: Any])?["id"] as? Int == j }.compactMap {
            $0["event"] as? String
        }
        #expect(mine == ["submitted", "started", "completed"], "\(mine)")

        let status =
            try JSONSerialization.jsonObject(with: Data(d.ctl(["status", "--json"]).stdout.utf8)) as! [String: Any]
        let a100 = (status["gpus"] as! [String: Any])["A100"] as! [String: Int]
        #expect(a100["total"] == 4 && a100["used"] == 4 && a100["free"] == 0)
        #expect(((status["queue"] as! [String: Any])["training"] as? [String: Int])?["training"] == 1)

        let cost =
            try JSONSerialization.jsonObject(with: Data(d.ctl(["cost", "--by", "tenant", "--json"]).stdout.utf8))
            as! [[String: Any]]
        let research = try #require(cost.first { $0["key"] as? String == "research" })
        #expect((research["gpu_hours"] as! Double) > 0)
        #expect(research["cost_usd"] != nil)
        let csv = d.ctl(["cost", "--by", "model", "--format", "csv"])
        #expect(csv.stdout.hasPrefix("model,gpu_hours,cost_usd\n") && csv.stdout.contains("A100,"))
        #expect(d.ctl(["cost", "--since", "yesterday"]).status == 0)
        #expect(d.ctl(["cost", "--since", "last tuesday"]).status == 2)

        // What if: the live queue on the live pool, and on a pool with a second A100 node.
        let live = d.ctl(["simulate", "--from-live", "--json"])
        #expect(live.status == 0, "\(live.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(live.stdout.utf8)) as! [String: Any]
        #expect(summary["jobs"] as? Int == 2)
        let bigger = d.dir.appendingPathComponent("bigger.toml")
        try (DaemonFixture.defaultPool + "\n[[node]]\nname = \"a2\"\ngpu_model = \"A100\"\ngpus = 4\n")
            .write(to: bigger, atomically: true, encoding: .utf8)
        let whatIf = d.ctl(["simulate", "--from-live", "--config", bigger.path])
        #expect(whatIf.status == 0, "\(whatIf.stderr)")
        #expect(whatIf.stdout.contains("2 jobs"))
    }
}
