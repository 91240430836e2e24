import Foundation
import Testing

/// `allotd wal dump|verify|repair` on real logs written by `allotd wal load`.
@Suite struct WALCommandTests {
    func makeLog(_ dir: String, count: Int = 60) throws {
        let r = try Harness.run(
            "allotd",
            ["wal", "load", dir, "--writers", "4", "--count", "\(count)", "--sync", "always"]
        )
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("\(count) durable appends"))
    }

    func segment(_ dir: String) throws -> String {
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/wal").filter { $0.hasSuffix(".wal") }
            .sorted()
        return dir + "/wal/" + names[0]
    }

    @Test func verifyAndDumpACleanLog() throws {
        try Harness.withTempDir { tmp in
            let dir = tmp.appendingPathComponent("s").path
            try makeLog(dir)
            let v = try Harness.run("allotd", ["wal", "verify", dir])
            #expect(v.status == 0)
            #expect(v.stdout.contains("records up to LSN 60; 60 replayed from the start; 60 jobs"))
            let d = try Harness.run("allotd", ["wal", "dump", dir])
            #expect(d.status == 0)
            let lines = d.stdout.split(separator: "\n")
            #expect(lines.count == 60)
            let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
            #expect(first["lsn"] as? Int == 1)
            #expect(first["offset"] as? Int == 32)
            #expect((first["segment"] as? String)?.hasPrefix("wal/0000000000000001-") == true)
            let event = first["event"] as! [String: Any]
            #expect((event["body"] as! [String: Any])["jobSubmitted"] != nil)
        }
    }

    @Test func verifyExitsOneForATornTailAndTwoForDamage() throws {
        try Harness.withTempDir { tmp in
            let dir = tmp.appendingPathComponent("s").path
            try makeLog(dir)
            let path = try segment(dir)
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).intValue
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try h.truncate(atOffset: UInt64(size - 5))
            try h.close()
            let torn = try Harness.run("allotd", ["wal", "verify", dir])
            #expect(torn.status == 1)
            #expect(torn.stdout.contains("torn tail: the record with LSN 60"))
            #expect(torn.stdout.contains("would cut the last"))

            // Damage record 10's payload: valid records follow, so recovery would stop.
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            bytes[32 + 9 * ((size - 32) / 60) + 30] ^= 0x40
            try bytes.write(to: URL(fileURLWithPath: path))
            let bad = try Harness.run("allotd", ["wal", "verify", dir])
            #expect(bad.status == 2)
            #expect(bad.stdout.contains("damaged: record LSN 10 in wal/"))
            #expect(bad.stdout.contains("Start with --repair"))
            let dump = try Harness.run("allotd", ["wal", "dump", dir])
            #expect(dump.status == 2)
            #expect(dump.stdout.split(separator: "\n").count == 9)
            #expect(dump.stderr.contains("the record with LSN 10 fails its checksum"))

            let repair = try Harness.run("allotd", ["wal", "repair", dir, "--yes"])
            #expect(repair.status == 0, "\(repair.stdout)\(repair.stderr)")
            #expect(repair.stdout.contains("repair: cut the log at LSN 10"))
            #expect(repair.stdout.contains("repaired: the log now ends at LSN 9"))
            let after = try Harness.run("allotd", ["wal", "verify", dir])
            #expect(after.status == 0)
        }
    }

    @Test func repairOfAnIntactLogChangesNothing() throws {
        try Harness.withTempDir { tmp in
            let dir = tmp.appendingPathComponent("s").path
            try makeLog(dir, count: 5)
            let r = try Harness.run("allotd", ["wal", "repair", dir, "--yes"])
            #expect(r.status == 0)
            #expect(r.stdout.contains("nothing to repair"))
        }
    }

    @Test func secondWriterOnOneDirectoryIsRefused() throws {
        try Harness.withTempDir { tmp in
            let dir = tmp.appendingPathComponent("s").path
            let first = Process()
            first.executableURL = Harness.binDir.appendingPathComponent("allotd")
            first.arguments = ["wal", "load", dir, "--writers", "1", "--seconds", "5", "--sync", "never"]
            first.standardError = FileHandle.nullDevice
            try first.run()
            defer {
                first.terminate()
                first.waitUntilExit()
            }
            // Wait until it holds the lock.
            for _ in 0..<100 where !FileManager.default.fileExists(atPath: dir + "/wal") { usleep(20_000) }
            usleep(100_000)
            let second = try Harness.run("allotd", ["wal", "load", dir, "--count", "1"])
            #expect(second.status == 2)
            #expect(second.stderr.contains("state directory \(dir) is in use by allotd pid \(first.processIdentifier)"))
        }
    }
}
