import Foundation
import Testing

/// Migration at checkpoints with the real allotd (issue 17): a training job started on an L4 because the
/// A100s were busy moves to the A100s when they free — it gets the notice (SIGTERM), stops, and starts again
/// there; `why` and its earlier runs say why it moved.
@Suite(.serialized) struct MoveTests {
    @Test func aJobOnASlowGPUMovesToTheFasterOneWhenItFrees() throws {
        let d = try DaemonFixture()
        let blocker = try d.submit(["--gpus", "2", "--gpu-model", "A100", "--", "sleep", "300"])
        let blocker2 = try d.submit(["--gpus", "2", "--gpu-model", "A100", "--", "sleep", "300"])
        try d.wait(blocker, for: "running")
        try d.wait(blocker2, for: "running")
        // Records each run's node and GPUs, and the notice, as a job restarting from its checkpoint would.
        let record = d.dir.appendingPathComponent("runs.txt").path
        let script = """
            echo "start $ALLOT_RUN $ALLOT_NODE $ALLOT_GPUS" >> \(record)
            trap 'echo "notice $ALLOT_RUN" >> \(record); exit 143' TERM
            sleep 600 & wait
            """
        let mover = try d.submit(["--gpus", "2", "--estimate", "2h", "--", "sh", "-c", script])
        try d.wait(mover, for: "running")
        #expect(d.job(mover)?["node"] as? String == "l1", "\(d.job(mover) ?? [:])")
        _ = d.ctl(["cancel", String(blocker)])
        // It moves: a second run, on the A100 node.
        var run2 = false
        for _ in 0..<300 where !run2 {
            usleep(50_000)
            run2 = ((try? String(contentsOfFile: record, encoding: .utf8)) ?? "").contains("start 2 a1")
        }
        let log = (try? String(contentsOfFile: record, encoding: .utf8)) ?? ""
        #expect(run2, "\(log)\n\(d.daemonLog.suffix(2000))")
        #expect(log.hasPrefix("start 1 l1") && log.contains("notice 1"), "\(log)")
        try d.wait(mover, for: "running")
        let job = try #require(d.job(mover))
        let earlier = try #require(job["earlier_runs"] as? [[String: Any]], "\(job)")
        #expect(earlier.first?["gpu_model"] as? String == "L4", "\(earlier)")
        #expect((earlier.first?["ended"] as? String)?.contains("moved to faster GPUs that came free") == true)
        let why = d.ctl(["why", String(mover)]).stdout
        #expect(why.contains("running on a1") && why.contains("moved to faster GPUs 1 time(s) in a row"), "\(why)")
        _ = d.ctl(["cancel", String(mover), String(blocker2)])
    }
}

/// Elastic jobs with the real allotd: a job that records each allocation it sees grows when GPUs free up
/// and shrinks when an inference job arrives, told each time by its notice and `ALLOT_RESIZE_FILE`.
@Suite(.serialized) struct ElasticEndToEndTests {
    /// An elastic job of 1 to 4 A100s that records in `record` each start (run, GPUs, nodes) and each notice
    /// it finds in its `ALLOT_RESIZE_FILE` when told to stop.
    static func recordingJob(_ record: String) -> [String] {
        let script = """
            echo "start $ALLOT_RUN $ALLOT_GPUS $ALLOT_NODES" >> \(record)
            trap 'echo "notice $ALLOT_RUN $(tr "\\n" " " < "$ALLOT_RESIZE_FILE")" >> \(record); exit 143' TERM
            sleep 600 & wait
            """
        return ["--gpus", "1-4", "--gpu-model", "A100", "--estimate", "2h", "--", "sh", "-c", script]
    }

    /// Whether `text` appears in the file within 15 s.
    static func eventuallyContains(_ record: String, _ text: String) -> Bool {
        for _ in 0..<300 {
            if ((try? String(contentsOfFile: record, encoding: .utf8)) ?? "").contains(text) { return true }
            usleep(50_000)
        }
        return false
    }

    @Test func anElasticJobGrowsWhenGPUsFreeAndShrinksForInference() throws {
        let d = try DaemonFixture()
        let blocker = try d.submit(["--gpus", "2", "--gpu-model", "A100", "--", "sleep", "300"])
        try d.wait(blocker, for: "running")
        let record = d.dir.appendingPathComponent("elastic.txt").path
        let job = try d.submit(Self.recordingJob(record))
        func seen(_ text: String) -> Bool { Self.eventuallyContains(record, text) }
        #expect(seen("start 1 2 a1:"), "\(d.daemonLog.suffix(2000))")
        let why = d.ctl(["why", String(job)]).stdout
        #expect(why.contains("elastic: 1-4 GPUs, now 2"), "\(why)")
        let object = try #require(d.job(job))
        #expect(object["max_gpus"] as? Int == 4 && object["gpus_now"] as? Int == 2, "\(object)")
        #expect(d.ctl(["ls"]).stdout.contains("1-4 (2)"), "\(d.ctl(["ls"]).stdout)")
        _ = d.ctl(["cancel", String(blocker)])
        #expect(seen("start 2 4 a1:0-3"), "\((try? String(contentsOfFile: record, encoding: .utf8)) ?? "")")
        #expect(seen("notice 1 ALLOT_GPUS=4 ALLOT_NODES=a1:0-3 ALLOT_GPU_MODEL=A100"))
        let serve = try d.submit(["--kind", "inference", "--gpus", "2", "--gpu-model", "A100", "--", "sleep", "300"])
        try d.wait(serve, for: "running", timeout: 30)
        #expect(seen("start 3 2 a1:"), "\((try? String(contentsOfFile: record, encoding: .utf8)) ?? "")")
        let log = (try? String(contentsOfFile: record, encoding: .utf8)) ?? ""
        #expect(log.contains("notice 2 ALLOT_GPUS=2") && log.contains("shrinks to 2 GPUs for job \(serve)"), "\(log)")
        try d.wait(job, for: "running")
        #expect(d.job(serve)?["state"] as? String == "running")
        _ = d.ctl(["cancel", String(job), String(serve)])
    }

    /// GPUs an elastic job grew into go back to a training job of its class that arrives later: the elastic
    /// job is told so in its notice and starts again on fewer.
    @Test func anElasticJobGivesBackWhatItGrewIntoToAJobOfItsClass() throws {
        let d = try DaemonFixture()
        let record = d.dir.appendingPathComponent("elastic.txt").path
        let job = try d.submit(Self.recordingJob(record))
        func seen(_ text: String) -> Bool { Self.eventuallyContains(record, text) }
        #expect(seen("start 1 4 a1:0-3"), "\(d.daemonLog.suffix(2000))")
        let rigid = try d.submit(["--gpus", "2", "--gpu-model", "A100", "--", "sleep", "300"])
        try d.wait(rigid, for: "running", timeout: 30)
        #expect(seen("start 2 2 a1:"), "\((try? String(contentsOfFile: record, encoding: .utf8)) ?? "")")
        let log = (try? String(contentsOfFile: record, encoding: .utf8)) ?? ""
        #expect(
            log.contains("notice 1 ALLOT_GPUS=2")
                && log.contains("gives back GPUs it grew into: shrinks to 2 GPUs for job \(rigid)"),
            "\(log)"
        )
        try d.wait(job, for: "running")
        _ = d.ctl(["cancel", String(job), String(rigid)])
    }
}

/// A training job's own speeds per GPU model with the real allotd and allotctl: an application that runs
/// as fast on an L4 as on an A100 (`--speed L4=1`) is placed where it is cheapest per unit of work, the L4,
/// where one at the pool's speeds takes the A100; `show` says its speeds; bad ones are refused by name.
@Suite(.serialized) struct SpeedEndToEndTests {
    @Test func aJobWithItsOwnSpeedsIsPlacedByThemAndBadOnesAreRefused() throws {
        let d = try DaemonFixture()
        let own = try d.submit(["--gpus", "2", "--speed", "l4=1,A100=1", "--estimate", "1h", "--", "sleep", "300"])
        let plain = try d.submit(["--gpus", "2", "--estimate", "1h", "--", "sleep", "300"])
        try d.wait(own, for: "running")
        try d.wait(plain, for: "running")
        #expect(d.job(own)?["node"] as? String == "l1", "\(d.job(own) ?? [:])")
        #expect(d.job(plain)?["node"] as? String == "a1", "\(d.job(plain) ?? [:])")
        #expect(
            (d.job(own)?["speeds"] as? [String: Double]) == ["L4": 1, "A100": 1],
            "model names as the pool spells them"
        )
        let show = d.ctl(["show", String(own)]).stdout
        #expect(show.contains("A100=1,L4=1"), "\(show)")
        let why = d.ctl(["why", String(own)]).stdout
        #expect(why.contains("expected run time 1h"), "\(why)")
        let unknown = d.ctl(["submit", "--speed", "H100=3", "--", "true"])
        #expect(
            unknown.status != 0 && unknown.stderr.contains("speed: the pool has no GPU model \"H100\"")
                && unknown.stderr.contains("A100, L4"),
            "\(unknown.stderr)"
        )
        let bad = d.ctl(["submit", "--speed", "A100=fast", "--", "true"])
        #expect(bad.status != 0 && bad.stderr.contains("the speed on A100 must be a number above 0"), "\(bad.stderr)")
        let serving = d.ctl(["submit", "--kind", "inference", "--speed", "A100=2", "--", "true"])
        #expect(serving.status != 0 && serving.stderr.contains("for training jobs"), "\(serving.stderr)")
        // A waiting job's speeds may change (\"\" gives back the pool's); a running job's may not.
        let held = try d.submit(["--hold", "--speed", "A100=2", "--", "true"])
        let up = d.ctl(["update", String(held), "--speed", "l4=3"])
        #expect(up.status == 0, "\(up.stderr)")
        #expect((d.job(held)?["speeds"] as? [String: Double]) == ["L4": 3], "\(d.job(held) ?? [:])")
        #expect(d.ctl(["update", String(held), "--speed", ""]).status == 0)
        #expect(d.job(held)?["speeds"] == nil, "\(d.job(held) ?? [:])")
        let running = d.ctl(["update", String(own), "--speed", "A100=2"])
        #expect(
            running.status != 0 && running.stderr.contains("only a waiting job's speed may change"),
            "\(running.stderr)"
        )
        _ = d.ctl(["cancel", String(own), String(plain), String(held)])
    }
}
