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
