import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Services with real replicas: a small HTTP model server (python3's http.server) on the port allotd gives
/// each replica (issue 15).
@Suite struct ServiceTests {
    /// A replica: an HTTP server on $ALLOT_PORT that serves its working directory.
    static let server = ["sh", "-c", "exec python3 -m http.server --bind 127.0.0.1 \"$ALLOT_PORT\""]

    static func object(_ r: Harness.Output) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]) ?? [:]
    }

    static func endpoints(_ d: DaemonFixture, _ name: String) -> [[String: Any]] {
        object(d.ctl(["service", "endpoints", name, "--json"]))["endpoints"] as? [[String: Any]] ?? []
    }

    /// The HTTP status an endpoint answers GET / with, or nil.
    static func get(port: Int) -> Int? {
        let r = try? Harness.run(
            "/usr/bin/python3",
            [
                "-c",
                "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:\(port)/', timeout=2).status)",
            ],
            absolute: true
        )
        return r.flatMap { $0.status == 0 ? Int($0.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) : nil }
    }

    /// Waits until `check` holds; returns the seconds it took, or nil after `timeout`.
    static func until(_ timeout: Double, _ check: () -> Bool) -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            if check() { return Date().timeIntervalSince(start) }
            usleep(50_000)
        }
        return nil
    }

    @Test func readyReplicasAreEndpointsAndAKilledOneIsReplaced() throws {
        let d = try DaemonFixture()
        let create = d.ctl(
            [
                "service", "create", "--gpus", "0.5", "--replicas", "2", "--ready", "http:/", "--workdir", "/tmp",
                "web", "--",
            ]
                + Self.server
        )
        #expect(create.status == 0, "\(create.stderr)")
        let ready = Self.until(20) { Self.endpoints(d, "web").count == 2 }
        try #require(ready != nil, "\(d.ctl(["service", "show", "web"]).stdout)\n\(d.daemonLog.suffix(2000))")
        // Each endpoint is a replica answering on its own port.
        let ports = Self.endpoints(d, "web").compactMap { $0["port"] as? Int }
        #expect(Set(ports).count == 2, "\(ports)")
        for p in ports { #expect(Self.get(port: p) == 200, "port \(p)") }
        // A replica's job says which service it serves.
        let first = try #require(Self.endpoints(d, "web").first?["job"] as? Int)
        #expect(d.job(first)?["service"] as? String == "web")

        // Its server dies: a new replica replaces it and is ready within its back-off (1 s) plus its start.
        let pid = try #require(d.recordedPID(first, "pid"))
        kill(pid, SIGKILL)
        let back = Self.until(20) {
            let e = Self.endpoints(d, "web")
            return e.count == 2 && !e.contains { $0["job"] as? Int == first }
        }
        try #require(back != nil, "\(d.ctl(["service", "show", "web"]).stdout)")
        print("replica killed → replacement ready in \(String(format: "%.2f", back!)) s")
        #expect(back! < 10)
        let show = Self.object(d.ctl(["service", "show", "web", "--json"]))
        #expect((show["last_crash"] as? String ?? "").contains("replica \(first)"), "\(show)")
        #expect(d.state(first) == "failed")
    }

    @Test func aCrashLoopBacksOffAndSaysWhy() throws {
        let d = try DaemonFixture()
        #expect(d.ctl(["service", "create", "--workdir", "/tmp", "broken", "--", "sh", "-c", "exit 3"]).status == 0)
        // 1 s, 2 s, 4 s … between replacements: in 6 s no more than five replicas start.
        sleep(6)
        let show = Self.object(d.ctl(["service", "show", "broken", "--json"]))
        let crashes = show["crashes"] as? Int ?? 0
        #expect(crashes >= 2, "\(show)")
        #expect((show["last_crash"] as? String ?? "").contains("exit code 3"), "\(show)")
        let jobs =
            (try? JSONSerialization.jsonObject(with: Data(d.ctl(["ls", "-a", "--json"]).stdout.utf8)) as? [Any])?
            .count ?? 0
        #expect((2...5).contains(jobs), "\(jobs) replicas started in 6 s")
        let text = d.ctl(["service", "show", "broken"]).stdout
        #expect(text.contains("in a row; last: replica") && text.contains("exit code 3"), "\(text)")
    }

    @Test func servicesSurviveASIGKILLOfAllotdWithoutDuplicates() throws {
        let d = try DaemonFixture()
        #expect(
            d.ctl(
                ["service", "create", "--replicas", "2", "--ready", "tcp", "--workdir", "/tmp", "api", "--"]
                    + Self.server
            )
            .status == 0
        )
        try #require(Self.until(20) { Self.endpoints(d, "api").count == 2 } != nil)
        let before = Set(Self.endpoints(d, "api").compactMap { $0["job"] as? Int })
        _ = d.stop(signal: SIGKILL)
        try d.start()
        // The same replicas, adopted, ready again; no third one.
        let again = Self.until(20) { Set(Self.endpoints(d, "api").compactMap { $0["job"] as? Int }) == before }
        #expect(again != nil, "\(d.ctl(["service", "show", "api"]).stdout)")
        let jobs =
            (try? JSONSerialization.jsonObject(with: Data(d.ctl(["ls", "-a", "--json"]).stdout.utf8)) as? [Any])?
            .count
        #expect(jobs == 2)
        for p in Self.endpoints(d, "api").compactMap({ $0["port"] as? Int }) { #expect(Self.get(port: p) == 200) }
        // What its replicas cost, by service.
        let cost = d.ctl(["cost", "--by", "service", "--json"])
        #expect(cost.status == 0 && cost.stdout.contains("\"key\" : \"api\""), "\(cost.stdout)\(cost.stderr)")
    }

    @Test func scaleUpDownAndDelete() throws {
        let d = try DaemonFixture()
        // An exec check: the command runs with the replica's port.
        let create = d.ctl(
            [
                "service", "create", "--ready", "exec:test -n \"$ALLOT_PORT\"", "--workdir", "/tmp", "svc", "--",
                "sleep", "300",
            ]
        )
        #expect(create.status == 0, "\(create.stderr)")
        let members = {
            (Self.object(d.ctl(["service", "show", "svc", "--json"]))["members"] as? [[String: Any]]) ?? []
        }
        let ready = { members().filter { $0["ready"] as? Bool == true }.count }
        #expect(Self.until(10) { ready() == 1 } != nil, "\(members())")
        let up = d.ctl(["service", "scale", "svc", "3"])
        #expect(up.status == 0 && up.stdout.contains("3 replicas wanted (1...3)"), "\(up.stdout)\(up.stderr)")
        #expect(Self.until(10) { ready() == 3 } != nil, "\(members())")
        // Down to one: the newest go first.
        #expect(d.ctl(["service", "scale", "svc", "1"]).status == 0)
        #expect(Self.until(10) { members().count == 1 } != nil, "\(members())")
        #expect(members().first?["id"] as? Int == 1, "\(members())")
        let ls = d.ctl(["service", "ls"]).stdout
        #expect(ls.contains("svc") && ls.contains("scaled to 1 by"), "\(ls)")
        // Delete: its replicas are cancelled, the service is gone.
        let del = d.ctl(["service", "delete", "svc"])
        #expect(del.status == 0 && del.stdout.contains("1 replica cancelled"), "\(del.stdout)\(del.stderr)")
        _ = try d.wait(1, for: "cancelled")
        let gone = d.ctl(["service", "show", "svc"])
        #expect(gone.status == 3 && gone.stderr.contains("no service svc"), "\(gone.stderr)")
    }

    @Test func aReplicaFailingItsLivenessCheckIsRestarted() throws {
        let d = try DaemonFixture()
        #expect(
            d.ctl(
                ["service", "create", "--live", "http:/missing", "--grace", "1s", "--workdir", "/tmp", "sick", "--"]
                    + Self.server
            ).status == 0
        )
        // Three failed checks a second apart, then a stop within its grace and a new run of the same job.
        let restarted = Self.until(20) { (d.job(1)?["earlier_runs"] as? [Any])?.isEmpty == false }
        #expect(restarted != nil, "\(d.job(1) ?? [:])\n\(d.daemonLog.suffix(1500))")
        #expect(d.daemonLog.contains("its liveness check failed 3 times in a row: GET /missing answered 404"))
    }

    @Test func badServicesAreRefusedWithTheReason() throws {
        let d = try DaemonFixture()
        let cases: [([String], String)] = [
            (["bad name!", "--", "true"], "cannot name a service"),
            (["--ready", "http:health", "s1", "--", "true"], "--ready: \"http:health\": an HTTP check takes a path"),
            (["--ready", "grpc", "s1", "--", "true"], "is not a check"),
            (["--port", "70000", "s1", "--", "true"], "--port: expected auto or a port"),
            (["s1", "--gpus", "2", "--", "true"], "options go before NAME"),
            (["--min", "3", "--max", "2", "s1", "--", "true"], "must be at least 1 and at least the fewest"),
            (["--gpus", "64", "s1", "--", "true"], "could never start"),
            (["--array", "1-3", "s1", "--", "true"], "takes none of --file, --array"),
        ]
        for (args, message) in cases {
            let r = d.ctl(["service", "create", "--workdir", "/tmp"] + args)
            #expect(r.status != 0 && r.stderr.contains(message), "\(args): \(r.status) \(r.stderr)")
        }
        #expect(d.ctl(["service", "create", "--workdir", "/tmp", "s1", "--", "sleep", "100"]).status == 0)
        let twice = d.ctl(["service", "create", "--workdir", "/tmp", "s1", "--", "sleep", "100"])
        #expect(twice.status == 1 && twice.stderr.contains("service s1 already exists"), "\(twice.stderr)")
        let scale = d.ctl(["service", "scale", "nope", "2"])
        #expect(scale.status == 3 && scale.stderr.contains("no service nope (services: s1)"), "\(scale.stderr)")
    }

    @Test(.enabled(if: getuid() == 0, "needs root to create users"))
    func onlyItsOwnerAndAdminsChangeAService() throws {
        try PermissionTests.ensureUsers()
        let (alice, bob) = (PermissionTests.users[0], PermissionTests.users[1])
        let d = try DaemonFixture()
        let made = d.ctl(["service", "create", "--workdir", "/tmp", "mine", "--", "sleep", "100"], as: alice)
        #expect(made.status == 0, "\(made.stderr)")
        let theirs = d.ctl(["service", "scale", "mine", "2"], as: bob)
        #expect(theirs.status == 4 && theirs.stderr.contains("only they and admins may scale it"), "\(theirs.stderr)")
        #expect(d.ctl(["service", "delete", "mine"], as: bob).status == 4)
        #expect(d.ctl(["service", "scale", "mine", "2"]).status == 0)
        #expect(d.ctl(["service", "delete", "mine"], as: alice).status == 0)
    }

    static func wanted(_ d: DaemonFixture, _ name: String) -> Int {
        object(d.ctl(["service", "show", name, "--json"]))["replicas"] as? Int ?? -1
    }

    /// Demand pushed by a router: a burst scales up at once, a quiet spell back down after the window.
    @Test func pushedDemandScalesAServiceUpAndDown() throws {
        let d = try DaemonFixture()
        let create = d.ctl(
            [
                "service", "create", "--gpus", "0.25", "--min", "1", "--max", "4", "--autoscale",
                "target=2,window=3s,panic-window=1s", "--workdir", "/tmp", "auto", "--", "sleep", "300",
            ]
        )
        #expect(create.status == 0, "\(create.stderr)")
        let up = Self.until(10) {
            _ = d.ctl(["service", "demand", "auto", "7"])
            return Self.wanted(d, "auto") == 4
        }
        #expect(up != nil, "\(d.ctl(["service", "show", "auto"]).stdout)")
        print("demand 7 → 4 replicas wanted in \(String(format: "%.2f", up ?? -1)) s")
        let show = Self.object(d.ctl(["service", "show", "auto", "--json"]))
        #expect((show["scale_reason"] as? String ?? "").contains("a burst"), "\(show)")
        #expect(
            Self.until(10) {
                (Self.object(d.ctl(["service", "show", "auto", "--json"]))["members"] as? [Any])?.count == 4
            } != nil
        )
        let down = Self.until(20) {
            _ = d.ctl(["service", "demand", "auto", "1"])
            return Self.wanted(d, "auto") == 1
        }
        #expect(down != nil, "\(d.ctl(["service", "show", "auto"]).stdout)")
        // Sized by its autoscaler: a fixed size is refused, new bounds are taken.
        let fixed = d.ctl(["service", "scale", "auto", "3"])
        #expect(fixed.status == 1 && fixed.stderr.contains("give it bounds with --min and --max"), "\(fixed.stderr)")
        let bounds = d.ctl(["service", "scale", "auto", "--min", "2", "--max", "3"])
        #expect(
            bounds.status == 0 && bounds.stdout.contains("2 replicas wanted (2...3)"),
            "\(bounds.stdout)\(bounds.stderr)"
        )
        // Demand for a service that does not autoscale is refused.
        #expect(d.ctl(["service", "create", "--workdir", "/tmp", "fixed", "--", "sleep", "300"]).status == 0)
        let refused = d.ctl(["service", "demand", "fixed", "3"])
        #expect(refused.status == 1 && refused.stderr.contains("does not autoscale"), "\(refused.stderr)")
    }

    /// The replicas' own Prometheus metrics (vLLM's series) scale the service up, and down when they fall.
    @Test func scrapedMetricsScaleAServiceUpAndDown() throws {
        let d = try DaemonFixture()
        let load = d.dir.appendingPathComponent("load")
        try "12\n".write(to: load, atomically: true, encoding: .utf8)
        let server = d.dir.appendingPathComponent("server.py")
        try """
        import http.server, os, sys
        LOAD = sys.argv[1]
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/metrics":
                    n = open(LOAD).read().strip()
                    body = ("# TYPE vllm:num_requests_running gauge\\n"
                            'vllm:num_requests_running{model_name="m"} %s\\n'
                            "vllm:num_requests_waiting 0\\nother_metric 99\\n" % n).encode()
                else:
                    body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *a):
                pass
        http.server.HTTPServer(("127.0.0.1", int(os.environ["ALLOT_PORT"])), H).serve_forever()

        """.write(to: server, atomically: true, encoding: .utf8)
        chmod(d.dir.path, 0o755)
        let create = d.ctl(
            [
                "service", "create", "--gpus", "0.25", "--min", "1", "--max", "3", "--ready", "http:/",
                "--autoscale", "target=4,window=3s,panic-window=2s,metrics=/metrics", "--workdir", d.dir.path,
                "scraped", "--", "python3", server.path, load.path,
            ]
        )
        #expect(create.status == 0, "\(create.stderr)")
        // One replica says 12 in flight against a target of 4: three.
        let up = Self.until(20) { Self.wanted(d, "scraped") == 3 }
        #expect(up != nil, "\(d.ctl(["service", "show", "scraped"]).stdout)\n\(d.daemonLog.suffix(1500))")
        let load12 = Self.object(d.ctl(["service", "show", "scraped", "--json"]))["load"] as? Double ?? 0
        #expect(load12 >= 12, "load \(load12)")
        // Quiet: back to one after the window and the burst's hold.
        try "0\n".write(to: load, atomically: true, encoding: .utf8)
        let down = Self.until(30) { Self.wanted(d, "scraped") == 1 }
        #expect(down != nil, "\(d.ctl(["service", "show", "scraped"]).stdout)")
    }

    /// Scaling a service up takes back GPUs lent to training: the borrower is stopped within the loan's
    /// notice (loan_grace), and the replicas serve on them right after.
    @Test func scaleUpReclaimsALoanWithinItsNotice() throws {
        let d = try DaemonFixture(
            pool: DaemonFixture.defaultPool + "[[inference_reserve]]\ngpu_model = \"L4\"\ngpus = 2\n"
        )
        let create = d.ctl(
            [
                "service", "create", "--gpus", "1", "--gpu-model", "L4", "--replicas", "0", "--max", "2", "--ready",
                "http:/", "--workdir", "/tmp", "web", "--",
            ] + Self.server
        )
        #expect(create.status == 0, "\(create.stderr)")
        // Training borrows both reserved L4s while the service has no replica; it ignores SIGTERM, so it
        // holds them until its notice ends. It is told what it borrows and how often to checkpoint.
        let told = d.dir.appendingPathComponent("loan-env").path
        let borrower = try d.submit(
            [
                "--gpus", "2", "--gpu-model", "L4", "--", "sh", "-c",
                "echo \"$ALLOT_LOANS $ALLOT_CHECKPOINT_EVERY\" > \(told); trap '' TERM; sleep 300",
            ]
        )
        try d.wait(borrower, for: "running")
        let lent = d.job(borrower)?["loans"] as? [String] ?? []
        #expect(!lent.isEmpty, "\(d.job(borrower) ?? [:])")
        var env: String?
        _ = Self.until(5) {
            env = try? String(contentsOfFile: told, encoding: .utf8)
            return env?.hasSuffix("\n") == true
        }
        #expect(env == "reserve:L4 600\n", "the borrower's environment: \(env ?? "none")")
        let asked = Date()
        #expect(d.ctl(["service", "scale", "web", "2"]).status == 0)
        let stopped = Self.until(10) { d.state(borrower) != "running" && d.state(borrower) != "stopping" }
        let served = Self.until(20) { Self.endpoints(d, "web").count == 2 }
        try #require(served != nil, "\(d.ctl(["service", "show", "web"]).stdout)\n\(d.daemonLog.suffix(2000))")
        let reclaimed = stopped.map { _ in Date().timeIntervalSince(asked) }
        // The notice is 1 s: given in full, and no more (the stop is seen by polling every 50 ms, through
        // allotctl).
        #expect(
            stopped != nil && stopped! >= 0.9 && stopped! < 1 + 1.5,
            "borrower stopped after \(String(describing: stopped)) s"
        )
        #expect(d.state(borrower) == "pending", "a reclaimed loan requeues the borrower: \(d.state(borrower) ?? "-")")
        let history = d.ctl(["show", String(borrower)]).stdout
        #expect(history.lowercased().contains("reclaim") || history.contains("inference reserve"), "\(history)")
        print(
            "scale-up: borrower stopped \(String(format: "%.2f", stopped ?? -1)) s, 2 replicas ready \(String(format: "%.2f", Date().timeIntervalSince(asked))) s after `service scale` (\(reclaimed.map { String(format: "%.2f", $0) } ?? "-"))"
        )
    }

    /// `service update`: a new version replaces the replicas one at a time, never fewer ready than wanted;
    /// a version that never becomes ready stops the rollout and the old replicas keep serving.
    @Test func aRollingUpdateKeepsEveryReplicaServingAndABrokenVersionStops() throws {
        let d = try DaemonFixture()
        func define(_ verb: String, _ command: String) -> Harness.Output {
            d.ctl(
                [
                    "service", verb, "--gpus", "0.25", "--replicas", "2", "--ready", "http:/", "--workdir", "/tmp",
                    "web",
                    "--", "sh", "-c", command + "; exec python3 -m http.server --bind 127.0.0.1 \"$ALLOT_PORT\"",
                ]
            )
        }
        #expect(define("create", "echo v1").status == 0)
        try #require(Self.until(20) { Self.endpoints(d, "web").count == 2 } != nil)
        let v1 = Set(Self.endpoints(d, "web").compactMap { $0["job"] as? Int })
        let update = define("update", "echo v2")
        #expect(
            update.status == 0 && update.stdout.contains("rollout: rolling to version 2"),
            "\(update.stdout)\(update.stderr)"
        )
        // Probed all along: at least two ready endpoints, each answering, until both are new.
        var fewest = Int.max
        var seen: [String] = []
        let rolled = Self.until(30) {
            let e = Self.endpoints(d, "web")
            let line = e.map { "\($0["job"] ?? "?")" }.sorted().joined(separator: ",")
            if seen.last != line { seen.append(line) }
            fewest = min(fewest, e.count)
            let jobs = Set(e.compactMap { $0["job"] as? Int })
            return e.count == 2 && jobs.isDisjoint(with: v1)
        }
        #expect(rolled != nil, "\(d.ctl(["service", "show", "web"]).stdout)")
        #expect(fewest >= 2, "only \(fewest) ready during the rollout: \(seen)\n\(d.daemonLog.suffix(3000))")
        for p in Self.endpoints(d, "web").compactMap({ $0["port"] as? Int }) { #expect(Self.get(port: p) == 200) }
        let show = Self.object(d.ctl(["service", "show", "web", "--json"]))
        #expect(show["generation"] as? Int == 2 && show["rollout"] == nil, "\(show)")
        // A broken version: its replicas exit at once; after three crashes the rollout stops.
        let v2 = Set(Self.endpoints(d, "web").compactMap { $0["job"] as? Int })
        #expect(define("update", "exit 7").status == 0)
        let stopped = Self.until(30) {
            (Self.object(d.ctl(["service", "show", "web", "--json"]))["rollout"] as? String ?? "").hasPrefix("stopped")
        }
        #expect(stopped != nil, "\(d.ctl(["service", "show", "web"]).stdout)")
        let why = Self.object(d.ctl(["service", "show", "web", "--json"]))["rollout"] as? String ?? ""
        #expect(why.contains("version 3 never became ready") && why.contains("exit code 7"), "\(why)")
        #expect(Set(Self.endpoints(d, "web").compactMap { $0["job"] as? Int }) == v2)
    }
}
