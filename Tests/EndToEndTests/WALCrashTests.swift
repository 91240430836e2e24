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
