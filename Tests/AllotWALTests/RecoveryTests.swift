import AllotCore
import Foundation
import Testing

@testable import AllotWAL

@Suite struct RecoveryTests {
    /// Writes events one append (and one sync) at a time, closes, and returns the final state.
    @discardableResult
    func write(_ dir: String, _ events: [Event], options: WriteAheadLog.Options = .test()) throws -> ClusterState {
        let (log, report) = try WriteAheadLog.open(directory: dir, options: options)
        var state = report.state
        for e in events {
            try log.appendBlocking([e])
            try state.apply(e)
        }
        log.close()
        return state
    }

    @Test func reopeningReplaysEverything() throws {
        try withTempDir { dir in
            let state = try write(dir, Sample.events)
            let (log, report) = try WriteAheadLog.open(directory: dir, options: .test())
            defer { log.close() }
            #expect(report.state == state)
            #expect(report.lastLSN == UInt64(Sample.events.count))
            #expect(report.replayed == Sample.events.count)
            #expect(report.notes.isEmpty)
            #expect(
                try log.appendBlocking([Event(time: Instant(seconds: 1_900_000_000), .clockTick)])
                    == UInt64(Sample.events.count + 1)
            )
        }
    }

    @Test func concurrentAppendsShareSyncsAndGetGaplessLSNs() async throws {
        try await withTempDirAsync { dir in
            let (log, _) = try WriteAheadLog.open(directory: dir, options: .test(.batch))
            let lsns = try await withThrowingTaskGroup(of: UInt64.self) { group in
                for i in 1...300 {
                    group.addTask { try await log.append(Event(time: Instant(seconds: Double(i)), .clockTick)) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(lsns.sorted() == Array(1...300))
            #expect(log.durableLSN == 300)
            log.close()
            let (again, report) = try WriteAheadLog.open(directory: dir, options: .test())
            again.close()
            #expect(report.lastLSN == 300)
        }
    }

    @Test(arguments: WriteAheadLog.SyncPolicy.allCases)
    func everyPolicyKeepsWhatItAcknowledged(policy: WriteAheadLog.SyncPolicy) async throws {
        try await withTempDirAsync { dir in
            let (log, _) = try WriteAheadLog.open(directory: dir, options: .test(policy))
            for i in 1...50 { try await log.append(Sample.submit(UInt64(i))) }
            log.close()
            let (again, report) = try WriteAheadLog.open(directory: dir, options: .test(policy))
            again.close()
            #expect(report.state.jobs.count == 50)
        }
    }

    @Test func segmentsRollOverAndReplayInOrder() throws {
        try withTempDir { dir in
            let events = (1...400).map { Sample.submit(UInt64($0)) }
            let state = try write(dir, events, options: .test(.never, segmentSize: 4096))
            let segments = try segmentPaths(dir)
            #expect(segments.count > 5)
            let (log, report) = try WriteAheadLog.open(directory: dir, options: .test(.never, segmentSize: 4096))
            log.close()
            #expect(report.state == state)
            #expect(report.lastLSN == 400)
        }
    }

    @Test func snapshotsShortenReplayAndOldFilesGo() throws {
        try withTempDir { dir in
            var options = WriteAheadLog.Options.test(.never, segmentSize: 2048)
            options.snapshotEveryRecords = 100
            let (log, _) = try WriteAheadLog.open(directory: dir, options: options)
            var state = ClusterState()
            for i in 1...350 {
                let e = Sample.submit(UInt64(i))
                try log.appendBlocking([e])
                try state.apply(e)
                if log.snapshotDue { try log.writeSnapshot(state, at: log.lastLSN) }
            }
            log.close()
            let snaps = try FileManager.default.contentsOfDirectory(atPath: dir + "/snap").sorted()
            #expect(snaps == [WALFormat.snapshotName(lsn: 200), WALFormat.snapshotName(lsn: 300)])
            // Segments wholly before LSN 200 (the older kept snapshot) are gone.
            let firsts = try segmentPaths(dir).map {
                WALFormat.parseSegmentName(URL(fileURLWithPath: $0).lastPathComponent)!.firstLSN
            }
            #expect(firsts.first! <= 201)
            #expect(firsts.first! > 1)
            let (again, report) = try WriteAheadLog.open(directory: dir, options: options)
            again.close()
            #expect(report.snapshotLSN == 300)
            #expect(report.replayed == 50)
            #expect(report.state == state)
        }
    }

    @Test func damagedNewestSnapshotFallsBackToTheOlderOne() throws {
        try withTempDir { dir in
            var options = WriteAheadLog.Options.test(.never, segmentSize: 2048)
            options.snapshotEveryRecords = 100
            let (log, _) = try WriteAheadLog.open(directory: dir, options: options)
            var state = ClusterState()
            for i in 1...250 {
                let e = Sample.submit(UInt64(i))
                try log.appendBlocking([e])
                try state.apply(e)
                if log.snapshotDue { try log.writeSnapshot(state, at: log.lastLSN) }
            }
            log.close()
            try flipBit(dir + "/snap/" + WALFormat.snapshotName(lsn: 200), at: 100)
            let (again, report) = try WriteAheadLog.open(directory: dir, options: options)
            again.close()
            #expect(report.snapshotLSN == 100)
            #expect(report.state == state)
            #expect(
                report.notes.contains {
                    $0.contains("snapshot snap/\(WALFormat.snapshotName(lsn: 200)) fails its checksum")
                }
            )
        }
    }

    @Test func onlySnapshotDamagedAfterTheLogWasPrunedIsRefused() throws {
        try withTempDir { dir in
            var options = WriteAheadLog.Options.test(.never, segmentSize: 2048)
            options.snapshotEveryRecords = 100
            let (log, _) = try WriteAheadLog.open(directory: dir, options: options)
            var state = ClusterState()
            for i in 1...250 {
                let e = Sample.submit(UInt64(i))
                try log.appendBlocking([e])
                try state.apply(e)
                if log.snapshotDue { try log.writeSnapshot(state, at: log.lastLSN) }
            }
            log.close()
            for name in try FileManager.default.contentsOfDirectory(atPath: dir + "/snap") {
                try flipBit(dir + "/snap/" + name, at: 40)
            }
            do throws(WALError) {
                _ = try WriteAheadLog.open(directory: dir, options: options)
                Issue.record("opened with no usable snapshot and a pruned log")
            } catch {
                #expect(error.code == .missing)
                #expect(error.message.contains("no older one exists; the log before LSN"))
                #expect(error.message.contains("Restore the state directory from a backup"))
            }
        }
    }

    @Test func tornTailIsCutAtEveryByteOffsetOfTheLastRecord() throws {
        try withTempDir { base in
            let events = (1...5).map { Sample.submit(UInt64($0)) }
            let template = base + "/template"
            try write(template, events)
            let seg = try segmentPaths(template)[0]
            let full = try fileSize(seg)
            let lastRecordSize = WALFormat.recordHeaderSize + EventCodec.encode(events[4]).count
            let lastStart = full - lastRecordSize
            for cut in lastStart..<full {
                let dir = base + "/cut\(cut)"
                try FileManager.default.copyItem(atPath: template, toPath: dir)
                try FileManager.default.removeItem(atPath: dir + "/LOCK")
                let path = try segmentPaths(dir)[0]
                try truncateFile(path, to: cut)
                let (log, report) = try WriteAheadLog.open(directory: dir, options: .test())
                #expect(report.lastLSN == 4, "cut at \(cut)")
                #expect(report.state.jobs.count == 4)
                if cut > lastStart {
                    #expect(
                        report.tornTail
                            == .init(
                                file: "wal/" + URL(fileURLWithPath: path).lastPathComponent,
                                offset: lastStart,
                                bytes: cut - lastStart,
                                lsn: 5
                            )
                    )
                    #expect(report.notes.first?.contains("torn tail") == true)
                }
                #expect(try fileSize(path) == lastStart, "the torn bytes are gone")
                // The log goes on from the cut.
                #expect(try log.appendBlocking([Sample.submit(5)]) == 5)
                log.close()
                let (again, r2) = try WriteAheadLog.open(directory: dir, options: .test())
                again.close()
                #expect(r2.lastLSN == 5)
                #expect(r2.notes.isEmpty)
            }
        }
    }

    @Test func bitFlipsAreCaughtAsTornTailOrCorruption() throws {
        try withTempDir { base in
            let events = (1...20).map { Sample.submit(UInt64($0)) }
            let template = base + "/template"
            try write(template, events)  // one sync per record: each record's `committed` is the one before
            let size = try fileSize(try segmentPaths(template)[0])
            var offsets = [Int]()
            var rng = SplitMix64(seed: 79)  // seeded: a failure names offsets that come back every run
            for _ in 0..<60 { offsets.append(Int.random(in: 0..<size, using: &rng)) }
            let lastRecordStart = size - (WALFormat.recordHeaderSize + EventCodec.encode(events[19]).count)
            for (n, offset) in offsets.enumerated() {
                let dir = base + "/flip\(n)"
                try FileManager.default.copyItem(atPath: template, toPath: dir)
                try FileManager.default.removeItem(atPath: dir + "/LOCK")
                let path = try segmentPaths(dir)[0]
                try flipBit(path, at: offset, bit: n % 8)
                do throws(WALError) {
                    let (log, report) = try WriteAheadLog.open(directory: dir, options: .test())
                    log.close()
                    // Only damage to the last record may be cut: nothing acknowledged follows it.
                    #expect(offset >= lastRecordStart, "flip at \(offset) was taken for a torn tail")
                    #expect(report.lastLSN == 19)
                } catch {
                    #expect(offset < lastRecordStart, "flip at \(offset) in the last record refused: \(error)")
                    #expect(error.code == .corrupt)
                    #expect(error.file == path)
                    #expect(
                        error.message.contains("Start with --repair")
                            || error.message.contains("Restore the state directory from a backup"),
                        "\(error)"
                    )
                    if offset >= WALFormat.segmentHeaderSize {
                        #expect(error.offset != nil && error.lsn != nil)
                        #expect(error.message.contains("at byte \(error.offset!)"))
                    }
                }
            }
        }
    }

    @Test func damageInTheMiddleNamesFileOffsetAndLSNAndRepairCutsThere() throws {
        try withTempDir { dir in
            let events = (1...10).map { Sample.submit(UInt64($0)) }
            try write(dir, events)
            let path = try segmentPaths(dir)[0]
            let recordSize = WALFormat.recordHeaderSize + EventCodec.encode(events[0]).count
            // Damage the payload of record 4.
            let offset4 = WALFormat.segmentHeaderSize + 3 * recordSize
            try flipBit(path, at: offset4 + WALFormat.recordHeaderSize + 2)
            do throws(WALError) {
                _ = try WriteAheadLog.open(directory: dir, options: .test())
                Issue.record("opened a corrupt log")
            } catch {
                #expect(error.code == .corrupt)
                #expect(error.lsn == 4)
                #expect(error.offset == offset4)
                #expect(error.message.contains("record LSN 4 in wal/"))
                #expect(error.message.contains("fails its checksum at byte \(offset4)"))
                #expect(error.message.contains("6 records after it will be lost"))
            }
            #expect(throws: WALError.self) { _ = try WALInspector.verify(directory: dir) }
            var options = WriteAheadLog.Options.test()
            options.repair = true
            let (log, report) = try WriteAheadLog.open(directory: dir, options: options)
            #expect(report.lastLSN == 3)
            #expect(report.notes.first?.contains("repair: cut the log at LSN 4") == true)
            #expect(try log.appendBlocking([Sample.submit(4)]) == 4)
            log.close()
            let (again, r2) = try WriteAheadLog.open(directory: dir, options: .test())
            again.close()
            #expect(r2.lastLSN == 4)
        }
    }

    @Test func tornWriteInsideTheLastUnsyncedBatchIsNotCorruption() throws {
        // A batch of records written together (same `committed`), the first of them damaged as a power loss
        // might leave it: the ones after it were never acknowledged, so the tail is cut, not refused.
        try withTempDir { dir in
            try write(dir, (1...3).map { Sample.submit(UInt64($0)) })
            let path = try segmentPaths(dir)[0]
            var batch: [UInt8] = []
            for lsn in 4...6 {
                WALFormat.appendRecord(
                    lsn: UInt64(lsn),
                    committed: 3,
                    payload: EventCodec.encode(Sample.submit(UInt64(lsn))),
                    to: &batch
                )
            }
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try h.seekToEnd()
            let start = try h.offset()
            try h.write(contentsOf: Data(batch))
            try h.close()
            try flipBit(path, at: Int(start) + WALFormat.recordHeaderSize + 1)
            let (log, report) = try WriteAheadLog.open(directory: dir, options: .test())
            log.close()
            #expect(report.lastLSN == 3)
            #expect(report.tornTail?.lsn == 4)
        }
    }

    @Test func missingMiddleSegmentIsRefused() throws {
        try withTempDir { dir in
            try write(dir, (1...300).map { Sample.submit(UInt64($0)) }, options: .test(.never, segmentSize: 2048))
            let segments = try segmentPaths(dir)
            #expect(segments.count >= 3)
            try FileManager.default.removeItem(atPath: segments[1])
            do throws(WALError) {
                _ = try WriteAheadLog.open(directory: dir, options: .test())
                Issue.record("opened a log with a missing segment")
            } catch {
                #expect(error.code == .missing)
                #expect(error.message.contains("a segment is missing"))
            }
        }
    }

    @Test func recordThatDoesNotApplyIsCorruption() throws {
        try withTempDir { dir in
            // A duplicate submit: valid bytes, but the state refuses it.
            try write(dir, [Sample.submit(1)], options: .test(.never))
            let path = try segmentPaths(dir)[0]
            var bytes: [UInt8] = []
            WALFormat.appendRecord(lsn: 2, committed: 1, payload: EventCodec.encode(Sample.submit(1)), to: &bytes)
            WALFormat.appendRecord(lsn: 3, committed: 2, payload: EventCodec.encode(Sample.submit(2)), to: &bytes)
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try h.seekToEnd()
            try h.write(contentsOf: Data(bytes))
            try h.close()
            do throws(WALError) {
                _ = try WriteAheadLog.open(directory: dir, options: .test())
                Issue.record("replayed an event the state refuses")
            } catch {
                #expect(error.code == .corrupt)
                #expect(error.lsn == 2)
                #expect(error.message.contains("the state refuses its jobSubmitted: job 1 already exists"))
            }
        }
    }

    @Test func secondOpenIsRefusedNamingTheHoldersPid() throws {
        try withTempDir { dir in
            let (log, _) = try WriteAheadLog.open(directory: dir, options: .test())
            defer { log.close() }
            do throws(WALError) {
                _ = try WriteAheadLog.open(directory: dir, options: .test())
                Issue.record("two logs opened one directory")
            } catch {
                #expect(error.code == .locked)
                #expect(error.message.contains("is in use by allotd pid \(ProcessInfo.processInfo.processIdentifier)"))
            }
        }
    }

    @Test func leftoverTemporaryFilesAreRemoved() throws {
        try withTempDir { dir in
            try write(dir, [Sample.submit(1)])
            FileManager.default.createFile(
                atPath: dir + "/wal/0000000000000002-0000000000000002.wal.tmp",
                contents: Data([1, 2, 3])
            )
            FileManager.default.createFile(atPath: dir + "/snap/0000000000000001.snap.tmp", contents: Data([1]))
            let (log, report) = try WriteAheadLog.open(directory: dir, options: .test())
            log.close()
            #expect(report.lastLSN == 1)
            #expect(!FileManager.default.fileExists(atPath: dir + "/wal/0000000000000002-0000000000000002.wal.tmp"))
            #expect(!FileManager.default.fileExists(atPath: dir + "/snap/0000000000000001.snap.tmp"))
        }
    }

    @Test func appendsAfterCloseFail() async throws {
        try await withTempDirAsync { dir in
            let (log, _) = try WriteAheadLog.open(directory: dir, options: .test(.batch))
            log.close()
            await #expect(throws: WALError.self) { try await log.append(Sample.submit(1)) }
        }
    }
}
