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

    /// Reload reports exactly what changed: nothing for an unchanged file, even with command-line overrides.
    @Test func reloadReportsExactlyWhatChanged() throws {
        let d = try DaemonFixture(start: false)
        // The file names other paths; the command line overrides them, as a new user did.
        let text = try String(contentsOf: d.config, encoding: .utf8)
            .replacingOccurrences(of: d.socket, with: d.dir.appendingPathComponent("file.sock").path)
            .replacingOccurrences(of: "state_dir = \"\(d.stateDir)\"", with: "state_dir = \"\(d.dir.path)/file-state\"")
        try text.write(to: d.config, atomically: true, encoding: .utf8)
        let p = try ChildProcess(
            Harness.binDir.appendingPathComponent("allotd").path,
            ["--config", d.config.path, "--state-dir", d.stateDir, "--socket", d.socket],
            output: d.logPath
        )
        defer {
            p.signal(SIGTERM)
            _ = p.wait()
        }
        var up = false
        for _ in 0..<500 where !up {
            usleep(20_000)
            up = d.ctl(["status"]).status == 0
        }
        try #require(up, "\(d.daemonLog)")
        let same = d.ctl(["reload"])
        #expect(same.status == 0, "\(same.stderr)")
        #expect(!same.stdout.contains("state_dir") && !same.stdout.contains("socket"), "\(same.stdout)")
        // One setting read at start changes: reported as old → new, and nothing else.
        try (text + "\n").replacingOccurrences(of: "[daemon]\n", with: "[daemon]\nmax_connections = 77\n")
            .write(to: d.config, atomically: true, encoding: .utf8)
        let changed = d.ctl(["reload"])
        #expect(changed.status == 0, "\(changed.stderr)")
        #expect(
            changed.stdout.contains("max_connections: 1024 → 77 (takes effect when allotd restarts)"),
            "\(changed.stdout)"
        )
        #expect(!changed.stdout.contains("state_dir") && !changed.stdout.contains("socket"), "\(changed.stdout)")
    }

    /// An admin replaces the example pool with theirs (other nodes, other models) and restarts or reloads:
    /// the new pool takes over. (Found by the package test: the models went before the nodes that used
    /// them, so allotd kept the example pool with "GPU model … is still used by node …".)
    @Test func aNewPoolWithOtherModelsReplacesTheOld() throws {
        let d = try DaemonFixture()
        let pool = { (model: String, node: String) in
            """
            [scheduler]
            default_grace = "2s"

            [[gpu_model]]
            name = "\(model)"
            memory_gib = 80
            price_per_hour = 2.0
            speed = 1.0

            [[node]]
            name = "\(node)"
            gpu_model = "\(model)"
            gpus = 2

            """
        }
        // By restart: allotd recovers the old pool from its log, then takes the file's.
        _ = d.stop()
        try d.writeConfig(pool: pool("H200", "a7"))
        try d.start()
        let restarted = d.ctl(["status"])
        #expect(restarted.stdout.contains("H200") && !restarted.stdout.contains("A100"), "\(restarted.stdout)")
        let id = try d.submit(["--gpus", "2", "--workdir", "/tmp", "--", "true"])
        _ = try d.wait(id, for: "completed")
        #expect((d.job(id)?["node"] as? String ?? "\(d.job(id) ?? [:])").contains("a7"), "\(d.job(id) ?? [:])")
        // By reload.
        try d.writeConfig(pool: pool("B200", "l7"))
        let reload = d.ctl(["reload"])
        #expect(reload.status == 0, "\(reload.stderr)")
        let reloaded = d.ctl(["status"])
        #expect(reloaded.stdout.contains("B200") && !reloaded.stdout.contains("H200"), "\(reloaded.stdout)")
    }

    /// Tenants are charged only by the users the configuration lets use them (issue 12, item 3).
    @Test(.enabled(if: getuid() == 0, "needs root to create users"))
    func onlyTheUsersATenantNamesMayChargeIt() throws {
        try PermissionTests.ensureUsers()
        let (alice, bob) = (PermissionTests.users[0], PermissionTests.users[1])
        let pool =
            DaemonFixture.defaultPool + """

                [[tenant]]
                name = "research"
                users = ["\(alice)"]

                [[tenant]]
                name = "ops"

                [accounts]
                default_tenant = "shared"
                user_defaults = { \(alice) = "research" }

                """
        let d = try DaemonFixture(pool: pool)
        let submit = ["--hold", "--workdir", "/tmp", "--", "true"]
        // alice: her default is research; she may also use shared and her own tenant.
        let a = try d.submit(submit, as: alice)
        #expect(d.job(a)?["tenant"] as? String == "research")
        _ = try d.submit(["--tenant", "shared"] + submit, as: alice)
        _ = try d.submit(["--tenant", alice] + submit, as: alice)
        // bob may not charge research or ops, and is told the rule and what he may use.
        let refused = d.ctl(["submit", "--tenant", "research"] + submit, as: bob)
        #expect(refused.status == 4, "\(refused.stdout)\(refused.stderr)")
        #expect(refused.stderr.contains("may not charge tenant research"), "\(refused.stderr)")
        #expect(refused.stderr.contains("users \(alice)"), "\(refused.stderr)")
        #expect(refused.stderr.contains("\(bob) may use \(bob), shared"), "\(refused.stderr)")
        #expect(d.ctl(["submit", "--tenant", "ops"] + submit, as: bob).status == 4)
        // Without a tenant bob goes to the default tenant; his own tenant is his too.
        let b = try d.submit(submit, as: bob)
        #expect(d.job(b)?["tenant"] as? String == "shared")
        _ = try d.submit(["--tenant", bob] + submit, as: bob)
        // A batch with one refused line is refused whole.
        let batch = d.ctl(
            ["submit", "--file", "-"],
            as: bob,
            stdin: #"{"command": ["true"], "hold": true}"# + "\n" + #"{"command": ["true"], "tenant": "research"}"#
                + "\n"
        )
        #expect(batch.status == 4, "\(batch.stderr)")
        #expect(batch.stderr.contains("-:2:"), "\(batch.stderr)")
        // Admins may use any tenant.
        _ = try d.submit(["--tenant", "ops"] + submit)
    }

    /// `submit --file` refuses what it does not understand, naming the line, and takes the command line's
    /// options as defaults for every line (issue 12, item 4).
    @Test func longRequestsAreSplitOrRefusedWithTheLimitNeverKilledBySIGPIPE() throws {
        let d = try DaemonFixture()
        // 6,000 jobs of 300-byte lines: 5,000 of them are more than allotd's 1 MiB request limit, so the file
        // goes in smaller batches, and every job is submitted.
        let name = String(repeating: "n", count: 250)
        let lines = (0..<6_000).map { "{\"command\": [\"true\"], \"hold\": true, \"name\": \"\(name)-\($0)\"}\n" }
        let many = d.ctl(["submit", "--file", "-"], stdin: lines.joined())
        #expect(many.status == 0, "\(many.stderr)")
        #expect(many.stdout.split(separator: "\n").count == 6_000)
        // One job longer than the limit (a daemon with a small one): refused with the limit named (from the
        // lean front and from the full command), not a death by SIGPIPE while still sending.
        let small = try DaemonFixture(daemon: "max_message_bytes = 65536\n")
        let huge = String(repeating: "x", count: 120_000)
        for extra in [[], ["--json"]] {
            let one = small.ctl(["submit", "--hold"] + extra + ["--", "echo", huge])
            #expect(one.status != 0 && one.status < 128, "\(one.status) \(one.stderr)")
            #expect(one.stderr.contains("max_message_bytes"), "\(one.stderr)")
        }
    }

    @Test func submitFileIsStrictAndTakesFlagsAsDefaults() throws {
        let d = try DaemonFixture()
        let unknown = d.ctl(
            ["submit", "--file", "-"],
            stdin: "# two jobs\n\n{\"command\": [\"true\"]}\n{\"command\": [\"true\"], \"gpu\": 2}\n"
        )
        #expect(unknown.status == 2, "\(unknown.stderr)")
        #expect(unknown.stderr.contains("-:4: unknown key \"gpu\" (did you mean \"gpus\"?)"), "\(unknown.stderr)")
        let comma = d.ctl(
            ["submit", "--file", "-"],
            stdin: "{\"command\": [\"echo\", \"a,}\"]}\n{\"command\": [\"true\"], \"gpus\": 2,}\n"
        )
        #expect(comma.status == 2, "\(comma.stderr)")
        #expect(comma.stderr.contains("-:2: a trailing comma at column"), "\(comma.stderr)")
        // Nothing was submitted by either.
        let none = d.ctl(["ls", "--all", "--json"])
        #expect(none.status == 0 && !none.stdout.contains("\"id\""), "\(none.stdout)\(none.stderr)")
        // Flags are defaults under every line; a line's own keys win; comments and blank lines are skipped.
        let ok = d.ctl(
            [
                "submit", "--file", "-", "--tenant", "team", "--gpus", "2", "--hold", "--env", "A=flag", "--env",
                "B=flag",
            ],
            stdin: """
                # defaults from the flags
                {"command": ["true"], "env": {"A": "line"}}

                {"command": ["true"], "gpus": 1, "tenant": "other", "hold": false}

                """
        )
        #expect(ok.status == 0, "\(ok.stderr)")
        let ids = ok.stdout.split(separator: "\n").compactMap { Int($0) }
        try #require(ids.count == 2, "\(ok.stdout)")
        let first = try #require(d.job(ids[0]))
        #expect(first["tenant"] as? String == "team")
        #expect(first["gpus"] as? Int == 2)
        #expect(first["state"] as? String == "held")
        let env = first["env"] as? [String: String]
        #expect(env?["A"] == "line" && env?["B"] == "flag", "\(first)")
        let second = try #require(d.job(ids[1]))
        #expect(second["tenant"] as? String == "other")
        #expect(second["gpus"] as? Int == 1)
        #expect(second["state"] as? String != "held")
    }

    /// A walltime no model can meet is a warning at submit, and in `why` (item 5); a max cost below any
    /// price the pool could ask is refused at submit, naming the cheapest placement (item 7).
    @Test func walltimesAndMaxCostsThePoolCannotMeetAreSaidAtSubmit() throws {
        let d = try DaemonFixture()
        // 2 hours of reference work, a 10-minute walltime: even the A100 (speed 1) needs 2h.
        let late = d.ctl(["submit", "--estimate", "2h", "--walltime", "10m", "--hold", "--", "true"])
        #expect(late.status == 0, "\(late.stderr)")
        #expect(
            late.stderr.contains(
                "allotctl: warning: no GPU model it may use can finish it within its walltime 10m: the fastest, A100"
            ),
            "\(late.stderr)"
        )
        let id = try #require(Int(late.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        // A submit answered with a warning is read, never sent again (the lean front's slow case).
        let all = try JSONSerialization.jsonObject(with: Data(d.ctl(["ls", "--all", "--json"]).stdout.utf8))
        #expect((all as? [Any])?.count == 1, "\(all)")
        #expect(d.ctl(["release", String(id)]).status == 0)
        // A walltime only the A100 meets: no warning, and it never lands on the L4.
        let fits = d.ctl(["submit", "--gpus", "2", "--walltime", "10m", "--", "sleep", "30"])
        #expect(fits.status == 0 && !fits.stderr.contains("warning"), "\(fits.stderr)")
        let fitsID = try #require(Int(fits.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        try d.wait(fitsID, for: "running")
        #expect(d.ctl(["show", String(fitsID)]).stdout.contains("A100"), "\(d.ctl(["show", String(fitsID)]).stdout)")
        // The cheapest placement for 1 GPU-hour of reference work on an L4: 4h at $0.50 = $2.00.
        let cheap = d.ctl(["submit", "--estimate", "1h", "--gpu-model", "L4", "--max-cost", "1.5", "--", "true"])
        #expect(cheap.status == 1, "\(cheap.stdout)")
        #expect(
            cheap.stderr.contains("its max cost $1.50 is below the cheapest placement it could ever have: 1×L4"),
            "\(cheap.stderr)"
        )
        #expect(cheap.stderr.contains("costs $2.00"), "\(cheap.stderr)")
        #expect(
            d.ctl(["submit", "--estimate", "1h", "--gpu-model", "L4", "--max-cost", "2", "--hold", "--", "true"]).status
                == 0
        )
    }

    /// `cost --json` keeps full precision (a one-second job does not cost $0), and rows by job carry names.
    @Test func costKeepsFullPrecisionAndNamesJobs() throws {
        let d = try DaemonFixture()
        let j = try d.submit(["--name", "tiny", "--", "sleep", "1"])
        try d.wait(j, for: "completed")
        let json = d.ctl(["cost", "--by", "job", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let rows = try #require(
            try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]],
            "\(json.stdout)"
        )
        let row = try #require(rows.first { $0["key"] as? String == String(j) }, "\(rows)")
        let usd = try #require(row["cost_usd"] as? Double)
        #expect(usd > 0 && usd < 0.01, "one second of one A100 at $2/h: \(usd)")
        #expect(row["name"] as? String == "tiny")
        let text = d.ctl(["cost", "--by", "job"])
        #expect(text.stdout.contains("NAME") && text.stdout.contains("tiny"), "\(text.stdout)")
        #expect((try #require(d.job(j)?["cost_usd"] as? Double)) > 0)
    }

    /// `logs -f` ends with a line saying how the job ended and exits as it did; `wait` does the same for
    /// scripts, for several jobs.
    @Test func logsFollowAndWaitExitAsTheJobDid() throws {
        let d = try DaemonFixture()
        let bad = try d.submit(["--", "sh", "-c", "echo out; sleep 1; exit 3"])
        let f = d.ctl(["logs", "-f", String(bad)])
        #expect(f.status == 3, "\(f.stdout)\(f.stderr)")
        #expect(f.stdout.contains("out"), "\(f.stdout)")
        #expect(f.stderr.contains("job \(bad) failed: exit code 3"), "\(f.stderr)")
        let good = try d.submit(["--", "sleep", "1"])
        let w = d.ctl(["wait", String(good)])
        #expect(w.status == 0, "\(w.stderr)")
        #expect(w.stdout.contains("job \(good) completed"), "\(w.stdout)")
        #expect(d.ctl(["logs", "-f", String(good)]).status == 0)
        // Several jobs: the first (in the order given) that did not complete decides.
        let killed = try d.submit(["--", "sh", "-c", "kill -9 $$"])
        let both = d.ctl(["wait", String(good), String(killed), String(bad)])
        #expect(both.status == 128 + 9, "\(both.stdout)\(both.stderr)")
        // A timeout while a job runs: 124, naming it.
        let long = try d.submit(["--", "sleep", "30"])
        let t = d.ctl(["wait", "--timeout", "1s", String(long)])
        #expect(t.status == 124 && t.stderr.contains("\(long)"), "\(t.stderr)")
        #expect(d.ctl(["cancel", String(long)]).status == 0)
        // Cancelled while running: stopped by SIGTERM.
        #expect(d.ctl(["wait", String(long)]).status == 128 + 15)
        let never = try d.submit(["--hold", "--", "true"])
        #expect(d.ctl(["cancel", String(never)]).status == 0)
        #expect(d.ctl(["wait", String(never)]).status == 1)
    }

    /// The command line as Slurm and systemctl users type it (issue 12, CLI friction).
    @Test func theCommandLineAnswersAsUsersExpect() throws {
        let d = try DaemonFixture()
        let negative = d.ctl(["submit", "--gpus", "-1", "--", "true"])
        #expect(
            negative.status == 2
                && negative.stderr.contains(
                    "--gpus: must be whole GPUs (1 to 65536), a share of one GPU (e.g. 0.25), or 0 for CPUs only, not -1"
                ),
            "\(negative.stderr)"
        )
        // Global options before the command.
        let ls = try Harness.run("allotctl", ["--socket", d.socket, "ls"])
        #expect(ls.status == 0, "\(ls.stderr)")
        // Elastic ranges: each mistake named.
        let backwards = d.ctl(["submit", "--gpus", "8-4", "--", "true"])
        #expect(backwards.status == 2 && backwards.stderr.contains("not 8-4"), "\(backwards.stderr)")
        let stray = d.ctl(["submit", "--gpus", "2", "--gpus-step", "2", "--", "true"])
        #expect(stray.status == 2 && stray.stderr.contains("--gpus-step is for an elastic job"), "\(stray.stderr)")
        let step = d.ctl(["submit", "--gpus", "4-16", "--gpus-step", "5", "--", "true"])
        #expect(step.status != 0 && step.stderr.contains("the GPU step 5"), "\(step.stderr)")
        let typo = try Harness.run("allotctl", ["sumbit", "--gpus", "2", "--", "true"])
        #expect(typo.status == 2 && typo.stderr.contains("did you mean \"submit\"?"), "\(typo.stderr)")
        let model = d.ctl(["submit", "--gpu-model", "A10", "--", "true"])
        #expect(model.status == 2, "\(model.stderr)")
        #expect(
            model.stderr.contains("no GPU model \"A10\"; did you mean \"A100\"? its models are A100, L4"),
            "\(model.stderr)"
        )
        let deadline = d.ctl(["submit", "--prefer", "deadline:tomorrow", "--", "true"])
        #expect(deadline.stderr.contains("e.g. deadline:2026-12-03T18:00:00Z"), "\(deadline.stderr)")
        // Slurm's time forms.
        let slurm = try d.submit(["--walltime", "1-00:00:00", "--estimate", "1:30:00", "--hold", "--", "true"])
        #expect(d.job(slurm)?["walltime_s"] as? Double == 86_400)
    }

    /// `allotd check-config` checks a file without starting anything; a misspelt table is named first.
    @Test func checkConfigNamesTheFirstRealProblem() throws {
        let d = try DaemonFixture(start: false)
        let ok = try Harness.run("allotd", ["check-config", d.config.path])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("valid") && ok.stdout.contains("A100 (4 GPUs"), "\(ok.stdout)")
        // The fixture runs every node's jobs here (local_nodes), and `--config` names the file as for allotd.
        let spelt = try Harness.run("allotd", ["check-config", "--config", d.config.path])
        #expect(spelt.status == 0 && spelt.stdout == ok.stdout, "\(spelt.stdout) \(spelt.stderr)")
        #expect(ok.stdout.contains(" run by allotd, 0 by agents)"), "\(ok.stdout)")
        let text = try String(contentsOf: d.config, encoding: .utf8)
        try text.replacingOccurrences(of: "[[node]]", with: "[[nodes]]").write(
            to: d.config,
            atomically: true,
            encoding: .utf8
        )
        let bad = try Harness.run("allotd", ["check-config", d.config.path])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("nodes: unknown key; did you mean \"node\"?"), "\(bad.stderr)")
        #expect(!FileManager.default.fileExists(atPath: d.stateDir), "check-config must not create the state")
        // allotd makes MIG instances through NVML: a MIG node without it is refused before anything starts
        // (the first node is an A100, whose MIG profiles allot knows).
        let first = try #require(text.range(of: "[[node]]"))
        try text.replacingCharacters(in: first, with: "[[node]]\nmig = \"dynamic\"").write(
            to: d.config,
            atomically: true,
            encoding: .utf8
        )
        let mig = try Harness.run("allotd", ["check-config", d.config.path])
        #expect(mig.status == 1 && mig.stderr.contains("add discover = \"nvml\""), "\(mig.stderr)")
        // Without systemd the daemon does not claim to have told it anything.
        try text.write(to: d.config, atomically: true, encoding: .utf8)
        try d.start()
        #expect(!d.daemonLog.contains("Told systemd"), "\(d.daemonLog)")
        // A MIG job on a pool without MIG is refused at submit, saying why.
        let job = d.ctl(["submit", "--mig", "1g.10gb", "--", "true"])
        #expect(job.status != 0 && job.stderr.contains("has MIG"), "\(job.stderr)")
        let both = d.ctl(["submit", "--mig", "1g.10gb", "--gpus", "2", "--", "true"])
        #expect(both.status == 2 && both.stderr.contains("--mig asks for one MIG instance"), "\(both.stderr)")
    }

    /// `show` on a requeued job gives its earlier run as history, not as if it were current.
    @Test func showGivesARequeuedJobsRunsAsHistory() throws {
        let d = try DaemonFixture()
        let train = try d.submit(["--gpus", "4", "--gpu-model", "A100", "--", "sleep", "60"])
        try d.wait(train, for: "running")
        let serve = try d.submit(["--kind", "inference", "--gpus", "4", "--gpu-model", "A100", "--", "sleep", "60"])
        try d.wait(serve, for: "running")
        let job = try #require(d.job(train))
        #expect(job["state"] as? String == "pending")
        #expect(job["start_time"] == nil && job["exit_code"] == nil, "\(job)")
        let runs = try #require(job["earlier_runs"] as? [[String: Any]], "\(job)")
        #expect(runs.count == 1)
        #expect((runs[0]["ended"] as? String)?.contains("preempted by job \(serve)") == true, "\(runs)")
        let text = d.ctl(["show", String(train)]).stdout
        #expect(text.contains("run 1") && text.contains("on a1[0-3]"), "\(text)")
        #expect(!text.contains("started"), "\(text)")
        _ = d.ctl(["cancel", String(train), String(serve)])
    }

    /// A running job reports its checkpoints (`allotctl checkpoint`): `show` gives the last one; a job that is
    /// not running cannot report one, and without ids the command needs to run inside a job.
    @Test func aRunningJobReportsItsCheckpoints() throws {
        let d = try DaemonFixture()
        let train = try d.submit(["--gpus", "2", "--", "sleep", "60"])
        try d.wait(train, for: "running")
        let r = d.ctl(["checkpoint", String(train)])
        #expect(r.status == 0 && r.stdout.contains("checkpoint recorded for \(train)"), "\(r.stdout)\(r.stderr)")
        let job = try #require(d.job(train))
        #expect(job["last_checkpoint"] is String, "\(job)")
        #expect(d.ctl(["show", String(train)]).stdout.contains("last checkpoint"))
        let held = try d.submit(["--hold", "--", "true"])
        let refused = d.ctl(["checkpoint", String(held)])
        #expect(refused.status != 0, "\(refused.stdout)")
        #expect(
            refused.stderr.contains("job \(held) is held: only a running job reports a checkpoint"),
            "\(refused.stderr)"
        )
        let bare = d.ctl(["checkpoint"])
        #expect(bare.status == 2 && bare.stderr.contains("ALLOT_JOB_ID is not set"), "\(bare.stderr)")
        _ = d.ctl(["cancel", String(train), String(held)])
    }

    /// A working directory that cannot be entered is refused at submit with the reason; one that goes away
    /// before the job starts fails it with the reason, not as "lost".
    @Test func aWorkdirIsCheckedAtSubmitAndItsFailureExplained() throws {
        let d = try DaemonFixture()
        let missing = d.ctl(["submit", "--workdir", "/nonexistent-allot", "--", "true"])
        #expect(missing.status == 2, "\(missing.stderr)")
        #expect(missing.stderr.contains("workdir: /nonexistent-allot does not exist"), "\(missing.stderr)")
        let file = d.dir.appendingPathComponent("afile").path
        FileManager.default.createFile(atPath: file, contents: Data())
        #expect(d.ctl(["submit", "--workdir", file, "--", "true"]).stderr.contains("is not a directory"))
        if getuid() == 0 {
            try PermissionTests.ensureUsers()
            let closed = d.dir.appendingPathComponent("closed").path
            try FileManager.default.createDirectory(atPath: closed, withIntermediateDirectories: true)
            chmod(closed, 0o700)
            let r = d.ctl(["submit", "--workdir", closed, "--", "true"], as: PermissionTests.users[1])
            #expect(r.status == 2 && r.stderr.contains("may not enter \(closed)"), "\(r.stderr)")
        }
        // Gone between submit and start: the job fails, saying why.
        let gone = d.dir.appendingPathComponent("gone").path
        try FileManager.default.createDirectory(atPath: gone, withIntermediateDirectories: true)
        let j = try d.submit(["--hold", "--workdir", gone, "--", "true"])
        try FileManager.default.removeItem(atPath: gone)
        #expect(d.ctl(["release", String(j)]).status == 0)
        var state = ""
        for _ in 0..<200 where !["failed", "completed", "cancelled"].contains(state) {
            usleep(50_000)
            state = d.state(j) ?? ""
        }
        let why = d.ctl(["why", String(j)]).stdout
        #expect(state == "failed", "\(d.job(j) ?? [:])\n\(why)")
        #expect(why.contains(gone) && !why.contains("lost"), "\(why)")
    }
}
