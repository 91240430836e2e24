import AllotCore
import AllotWAL
import Foundation
import Testing

/// Durability with real processes: a writer appending in a loop is killed with SIGKILL at random moments,
/// many times over one state directory; every append it acknowledged must be found after recovery, in order,
/// with no gaps.
@Suite struct WALCrashTests {
    @Test(arguments: [WriteAheadLog.SyncPolicy.batch, .always])
    func killedWritersNeverLoseAcknowledgedAppends(sync: WriteAheadLog.SyncPolicy) throws {
        try Harness.withTempDir { tmp in
            let dir = tmp.appendingPathComponent("state").path
            var everAcked: UInt64 = 0
            var kills = 0
            for round in 0..<25 {
                let acksFile = tmp.appendingPathComponent("acks-\(round)")
                FileManager.default.createFile(atPath: acksFile.path, contents: nil)
                let out = try FileHandle(forWritingTo: acksFile)
                let p = Process()
                p.executableURL = Harness.binDir.appendingPathComponent("allotd")
                // Small segments so that kills also land around segment roll-overs.
                p.arguments = [
                    "wal", "load", dir, "--writers", "16", "--sync", sync.rawValue, "--segment-size", "65536",
                    "--print-acks",
                ]
                p.standardOutput = out
                p.standardError = FileHandle.nullDevice
                try p.run()
                usleep(UInt32.random(in: 30_000...250_000))
                if p.isRunning {
                    kill(p.processIdentifier, SIGKILL)
                    kills += 1
                }
                p.waitUntilExit()
                try out.close()
                let acked = try String(contentsOf: acksFile, encoding: .utf8).split(separator: "\n").compactMap {
                    UInt64($0)
                }
                everAcked = max(everAcked, acked.max() ?? 0)

                var options = WriteAheadLog.Options()
                options.sync = .never
                let (log, report) = try WriteAheadLog.open(directory: dir, options: options)
                log.close()
                // Every acknowledged append is there; LSNs and job ids run 1...lastLSN without a gap (recovery
                // checks the LSN sequence; the ids were handed out in LSN order).
                #expect(
                    report.lastLSN >= everAcked,
                    "round \(round): acknowledged LSN \(everAcked), recovered up to \(report.lastLSN)"
                )
                #expect(report.state.jobs.count == Int(report.lastLSN))
                #expect(
                    report.state.jobs.keys.map(\.rawValue).sorted()
                        == Array(1...max(1, report.lastLSN)).filter { $0 <= report.lastLSN }
                )
                if let torn = report.tornTail { #expect(torn.lsn > everAcked) }
            }
            #expect(kills >= 20, "the writer must be killed mid-run, not exit on its own")
            #expect(everAcked > 100, "the writer must get appends acknowledged between kills")
        }
    }
}

/// allotd and the simulator take the same decisions for the same inputs: the controller's inputs recorded by
/// a real daemon, replayed through a fresh controller (the path the simulators drive), give the daemon's log.
@Suite struct ControllerReplayTests {
    struct Line: Decodable {
        var at: ClockReading
        var input: Controller.Input
    }

    @Test func theDaemonsRecordedInputsReplayedThroughAControllerGiveItsLogsEventsAgain() throws {
        let d = try DaemonFixture(start: false)
        let inputs = d.dir.appendingPathComponent("inputs.jsonl").path
        d.extraArguments = ["--record-inputs", inputs]
        try d.start()
        let done = try d.submit(["--", "true"])
        let failed = try d.submit(["--", "sh", "-c", "exit 3"])
        let cancelled = try d.submit(["--grace", "1s", "--", "sleep", "30"])
        let timedOut = try d.submit(["--walltime", "2s", "--grace", "1s", "--", "sleep", "30"])
        let held = try d.submit(["--hold", "--", "true"])
        try d.wait(done, for: "completed")
        try d.wait(failed, for: "failed")
        try d.wait(cancelled, for: "running")
        #expect(d.ctl(["cancel", String(cancelled)]).status == 0)
        #expect(d.ctl(["release", String(held)]).status == 0)
        try d.wait(cancelled, for: "cancelled")
        try d.wait(held, for: "completed")
        try d.wait(timedOut, for: "timed_out", timeout: 30)
        #expect(d.stop() == 0)

        var logged: [Event] = []
        _ = try WALInspector.walk(directory: d.stateDir) { logged.append($0.event) }
        let text = try String(contentsOfFile: inputs, encoding: .utf8)
        var controller = Controller(state: ClusterState())
        var replayed: [Event] = []
        let decoder = JSONDecoder()
        for line in text.split(separator: "\n") {
            let l = try decoder.decode(Line.self, from: Data(line.utf8))
            replayed += controller.step(l.input, at: l.at).events
        }
        #expect(logged.count > 20, "\(logged.count) events")
        #expect(replayed == logged)
        if replayed != logged,
            let i = replayed.indices.first(where: { $0 >= logged.count || replayed[$0] != logged[$0] })
        {
            Issue.record("first difference at event \(i): replayed \(replayed[i]) logged \(logged[i])")
        }
        #expect(controller.state.jobs[JobID(UInt64(timedOut))]?.state == .timedOut)
    }
}
