import AllotCore
import Foundation
import Testing

@testable import AllotWAL

@Suite struct CodecTests {
    @Test func crc32cMatchesTheStandardCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        // Feeding in pieces gives the same as at once.
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        var c = CRC32C()
        c.update(data[0..<3])
        c.update(data[3..<517])
        c.update(data[517...])
        #expect(c.value == CRC32C.checksum(data))
    }

    @Test func everyEventKindRoundTrips() throws {
        for e in Sample.events + Sample.eventsV2 + Sample.eventsV11 {
            #expect(try EventCodec.decode(EventCodec.encode(e)) == e, "\(e.kindName)")
        }
    }

    @Test func theSampleCoversEveryEventKind() {
        #expect(Set((Sample.through(2)).map(\.kindName)).count == 16)
        #expect(Sample.eventsV9.contains { $0.kindName == "jobUpdated" })
    }

    @Test func stateImageRoundTrips() throws {
        var s = ClusterState()
        try s.apply(Sample.through(2))
        // Preempted and requeued jobs carry their past runs (state version 5).
        #expect(s.jobs.contains { !$0.history.isEmpty })
        let bytes = SnapshotFile.encode(s.image, lsn: 42)
        guard case .success(let back) = SnapshotFile.decode(bytes) else {
            Issue.record("snapshot did not decode")
            return
        }
        #expect(back.lsn == 42)
        #expect(back.state == s)
        #expect(back.state.invariantViolations().isEmpty)
    }

    @Test func truncatedOrPaddedPayloadsAreRefused() {
        let bytes = EventCodec.encode(Sample.events[3])
        for cut in [0, 1, 8, 9, bytes.count / 2, bytes.count - 1] {
            #expect(throws: (any Error).self) { try EventCodec.decode(Array(bytes.prefix(cut))) }
        }
        #expect(throws: (any Error).self) { try EventCodec.decode(bytes + [0]) }
    }

    @Test func newerPayloadVersionsAskForAnUpgrade() {
        do {
            _ = try EventCodec.decode(EventCodec.encode(Sample.events[0]), version: EventCodec.version + 1)
            Issue.record("decoded a newer version")
        } catch {
            #expect("\(error)".contains("upgrade allot"))
        }
    }

    /// The events recovery reads from one segment's bytes, and where it stopped (nil: at the end).
    func walkSegment(_ bytes: [UInt8]) throws -> (events: [Event], stop: String?) {
        try withTempDir { dir in
            try FileManager.default.createDirectory(atPath: dir + "/wal", withIntermediateDirectories: true)
            try Data(bytes).write(
                to: URL(fileURLWithPath: dir + "/wal/" + WALFormat.segmentName(sequence: 1, firstLSN: 1))
            )
            var read: [Event] = []
            let stop = try WALInspector.walk(directory: dir) { read.append($0.event) }
            return (read, stop)
        }
    }

    /// A golden segment's bytes, from testdata.
    /// Reads testdata/golden-vN.wal, checks that it holds the sample events up to version N and nothing else,
    /// and applies them.
    func goldenState(_ version: Int) throws -> (read: [Event], state: ClusterState) {
        let (read, stop) = try walkSegment(try golden(version))
        #expect(stop == nil)
        #expect(read == Sample.through(version))
        var state = ClusterState()
        for e in read { try state.apply(e) }
        return (read, state)
    }

    func golden(_ version: Int) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: Sample.testdata.appendingPathComponent("golden-v\(version).wal")))
    }

    /// A newer allot must read an older log: testdata/golden-v1.wal was written by format version 1 and must
    /// still decode to the same events.
    @Test func goldenV1SegmentStillReads() throws {
        let (read, stop) = try walkSegment(try golden(1))
        #expect(stop == nil)
        #expect(read == Sample.events)
        // And it replays into a state, as recovery would.
        var state = ClusterState()
        try state.apply(read)
        #expect(state.jobs.count == 4)
    }

    /// A newer allot reads version 2: testdata/golden-v2.wal holds the sample events with every version-2
    /// field, written by format version 2.
    @Test func goldenV2SegmentStillReads() throws {
        let (read, stop) = try walkSegment(try golden(2))
        #expect(stop == nil)
        #expect(read == Sample.through(2))
    }

    /// A newer allot reads version 3: testdata/golden-v3.wal holds the sample events with every version-3
    /// field, written by format version 3.
    @Test func goldenV3SegmentStillReads() throws {
        let (read, stop) = try walkSegment(try golden(3))
        #expect(stop == nil)
        #expect(read == Sample.through(3))
    }

    /// A newer allot reads version 4: testdata/golden-v4.wal holds the sample events with every version-4
    /// field, written by format version 4.
    @Test func goldenV4SegmentStillReads() throws {
        let (read, stop) = try walkSegment(try golden(4))
        #expect(stop == nil)
        #expect(read == Sample.through(4))
        var state = ClusterState()
        try state.apply(read)
        #expect(state.invariantViolations().isEmpty)
    }

    /// The run that ended while nobody watched is charged until its real end, not its recording; the job
    /// whose GPU failed went back to the queue, its reason kept (the version-4 and version-5 events).
    func expectV5Facts(_ state: ClusterState) throws {
        let job = try #require(state.jobs[8])
        #expect(job.endTime == Instant(seconds: 1_800_000_305))
        #expect(job.pastRunSeconds == 4)
        let requeued = try #require(state.jobs[9])
        #expect(requeued.state == .pending)
        #expect(requeued.history.last?.ended.contains("Xid 79") == true, "\(requeued.history)")
    }

    /// A newer allot reads version 5: testdata/golden-v5.wal holds the sample events with every version-5
    /// field, written by format version 5.
    @Test func goldenV5SegmentStillReads() throws {
        let (read, stop) = try walkSegment(try golden(5))
        #expect(stop == nil)
        #expect(read == Sample.through(5))
        var state = ClusterState()
        try state.apply(read)
        #expect(state.invariantViolations().isEmpty)
        try expectV5Facts(state)
    }

    /// Two shares of one GPU: the GPU stays shared by the one left, which pays for its half (version 7).
    func expectV7Facts(_ state: ClusterState) throws {
        let gpu = try #require(state.node(named: "h1"))
        #expect(gpu.shareUsed[7] == 500 && gpu.sharers[7] == [11] && gpu.holder[7] == nil)
        #expect(gpu.cpuUsed == 2500 && gpu.memoryUsed == 8192)
        #expect(state.node(named: "m1")?.spec.sharing == .mps)
        #expect(state.jobs[10]?.pastGPUSeconds == 8 * 0.25)
        #expect(state.jobs[11]?.allocation?.description == "h1[7]@0.5")
    }

    /// A newer allot reads version 7: testdata/golden-v7.wal holds the sample events with every version-7
    /// field, written by format version 7.
    @Test func goldenV7SegmentStillReads() throws {
        let (read, stop) = try walkSegment(try golden(7))
        #expect(stop == nil)
        #expect(
            read == Sample.through(7)
        )
        var state = ClusterState()
        try state.apply(read)
        #expect(state.invariantViolations().isEmpty)
        try expectV5Facts(state)
        try expectV7Facts(state)
    }

    /// A newer allot reads version 8: testdata/golden-v8.wal holds the sample events with every version-8
    /// field, written by format version 8.
    @Test func goldenV8SegmentStillReads() throws {
        let events =
            Sample.through(8)
        let (read, stop) = try walkSegment(try golden(8))
        #expect(stop == nil)
        #expect(read == events)
        var state = ClusterState()
        try state.apply(read)
        #expect(state.invariantViolations().isEmpty)
        try expectV5Facts(state)
        try expectV7Facts(state)
        try expectV8Facts(state)
    }

    /// A newer allot reads version 9: testdata/golden-v9.wal holds the sample events with every version-9
    /// field, written by format version 9.
    @Test func goldenV9SegmentStillReads() throws {
        let events =
            Sample.through(9)
        let (read, stop) = try walkSegment(try golden(9))
        #expect(stop == nil)
        #expect(read == events)
        var state = ClusterState()
        try state.apply(read)
        #expect(state.invariantViolations().isEmpty)
        try expectV5Facts(state)
        try expectV7Facts(state)
        try expectV8Facts(state)
        try expectV9Facts(state)
        // A snapshot of it reads back to the same state, with the same jobs waiting.
        guard case .success(let back) = SnapshotFile.decode(SnapshotFile.encode(state.image, lsn: 9)) else {
            Issue.record("the snapshot does not read back")
            return
        }
        #expect(back.state == state)
        #expect(back.state.waitingForDependencies == [22])
        #expect(back.state.jobs[17]?.spec.dependencies.count == 2)
        #expect(back.state.invariantViolations().isEmpty)
    }

    func expectV9Facts(_ state: ClusterState) throws {
        // Dependencies: 15 and 19 are queued (12 completed; 13 and 14 started), 16 too once updated.
        // Met dependencies are cleared (a parent requeued later changes nothing); 17's wait.
        #expect(state.jobs[16]?.spec.dependencies == [] && state.jobs[15]?.spec.dependencies == [])
        #expect(state.jobs[16]?.spec.name == "renamed" && state.pendingJobs.contains(16))
        #expect(state.jobs[12]?.state == .pending && state.jobs[12]?.history.last?.ended == "completed")
        #expect(state.pendingJobs.contains(15) && state.pendingJobs.contains(19))
        #expect(state.waitingForDependencies == [22])
        #expect(state.pendingJobs.contains(20) && state.pendingJobs.contains(21))
        #expect(state.jobs[22]?.spec.array == ArrayTask(array: 20, index: 10, limit: 2))
        #expect(state.jobs[17]?.state == .held)
        #expect(state.jobs[18]?.state == .cancelled)
        #expect(state.jobs[18]?.note == "its dependency can never be met: afternotok:12: job 12 completed")
    }

    /// A newer allot reads version 10: testdata/golden-v10.wal holds the sample events with every version-10
    /// field, written by format version 10.
    @Test func goldenV10SegmentStillReads() throws {
        let events =
            Sample.through(10)
        let (read, stop) = try walkSegment(try golden(10))
        #expect(stop == nil)
        #expect(read == events)
        var state = ClusterState()
        try state.apply(read)
        #expect(state.invariantViolations().isEmpty)
        try expectV5Facts(state)
        try expectV7Facts(state)
        try expectV8Facts(state)
        try expectV9Facts(state)
        let sel = try #require(state.jobs[23]?.spec)
        #expect(sel.nodes?.nodes == ["h1", "h2"] && sel.nodes?.constraint == "ib&zone=a|nvme" && sel.nice == -50)
        #expect(sel.notify == JobNotify(url: "http://hooks:8080/allot", mailUser: "a@b.org", events: [.end, .fail]))
        let upd = try #require(state.jobs[24]?.spec)
        #expect(upd.nodes == NodeSelection(exclude: ["h9"]) && upd.nice == 10_000 && upd.notify?.events == [])
        #expect(state.jobs[13]?.state == .stopping && state.jobs[13]?.stopReason == .requeued(by: 1000))
        #expect(state.jobs[25] == nil && state.archived.jobs == 1 && state.archived.rows.first?.key.model == "none")
        // A snapshot of it reads back to the same state.
        guard case .success(let back) = SnapshotFile.decode(SnapshotFile.encode(state.image, lsn: 9)) else {
            Issue.record("the snapshot does not read back")
            return
        }
        #expect(back.state == state)
        #expect(back.state.jobs[23]?.spec == sel && back.state.archived == state.archived)
    }

    /// The services of the version-11 sample, applied from `read`, and their snapshot read back.
    static func expectServices(_ read: [Event]) throws -> ClusterState {
        var state = ClusterState()
        try state.apply(read)
        #expect(state.invariantViolations().isEmpty)
        let llm = try #require(state.services["llm"])
        #expect(llm.replicas == 1 && llm.members == [26] && llm.scaleReason == "scaled to 1 by alice")
        #expect(llm.generation == 2 && llm.rolloutHalted == "version 2 never became ready")
        #expect(llm.spec.autoscale?.zeroAfter == 600 && llm.spec.autoscale?.metricsPath == "/metrics")
        #expect(llm.spec.ready == Probe(kind: .http, target: "/health") && llm.spec.live?.kind == .exec)
        #expect(llm.spec.port == 8000 && llm.spec.template.gpuShare == 250)
        #expect(state.jobs[26]?.spec.service == "llm" && state.jobs[27] == nil)
        // What an archived replica used stays counted by its service.
        #expect(state.archived.rows.keys.contains { $0.service == "llm" })
        #expect(state.services["scratch"] == nil)
        // A snapshot of it reads back to the same state, services included.
        guard case .success(let back) = SnapshotFile.decode(SnapshotFile.encode(state.image, lsn: 11)) else {
            Issue.record("the snapshot does not read back")
            return state
        }
        #expect(back.state == state)
        #expect(back.state.services == state.services && back.state.archived == state.archived)
        return back.state
    }

    /// A newer allot reads version 11: testdata/golden-v11.wal holds the sample events with every version-11
    /// field, written by format version 11.
    @Test func goldenV11SegmentStillReads() throws {
        let events =
            Sample.through(11)
        let stored = try golden(11)
        let (read, stop) = try walkSegment(stored)
        #expect(stop == nil)
        #expect(read == events)
        _ = try Self.expectServices(read)
    }

    /// A newer allot reads version 12: testdata/golden-v12.wal holds the sample events with every version-12
    /// field, written by format version 12.
    @Test func goldenV12SegmentStillReads() throws {
        let events =
            Sample.through(12)
        let (read, stop) = try walkSegment(try golden(12))
        #expect(stop == nil)
        #expect(read == events)
        let back = try Self.expectServices(read)
        let chat = try #require(back.services["chat"]?.spec.autoscale)
        #expect(chat.slots == 8 && chat.waiting == 0.02 && chat.replicas(for: 40) == 7)
    }

    /// A newer allot reads version 13: testdata/golden-v13.wal holds the sample events with every version-13
    /// field (a job with a client's request id), written by format version 13.
    @Test func goldenV13SegmentStillReads() throws {
        let (_, state) = try goldenState(13)
        #expect(state.jobs(ofRequest: "retry-7f3a", uid: 1000) == [28])
        #expect(state.jobs(ofRequest: "retry-7f3a", uid: 1001).isEmpty, "request ids are per user")
        guard case .success(let back) = SnapshotFile.decode(SnapshotFile.encode(state.image, lsn: 1)) else {
            Issue.record("the snapshot does not read back")
            return
        }
        #expect(back.state.jobs(ofRequest: "retry-7f3a", uid: 1000) == [28], "rebuilt from the snapshot")
    }

    /// A newer allot reads version 14: testdata/golden-v14.wal holds the sample events with every version-14
    /// field (attained-service queues and the starvation bound), written by format version 14.
    @Test func goldenV14SegmentStillReads() throws {
        let (_, state) = try goldenState(14)
        #expect(state.config.scheduler.serviceQueues == [3600, 36_000])
        #expect(state.config.scheduler.starvationFactor == 3 && state.config.scheduler.starvationMinimum == 600)
    }

    /// A newer allot reads version 15: testdata/golden-v15.wal holds the sample events with every version-15
    /// field (moves to faster GPUs, elastic jobs), written by format version 15.
    @Test func goldenV15SegmentStillReads() throws {
        let (_, state) = try goldenState(15)
        #expect(state.config.scheduler.serviceQueues == [3600, 36_000])
        #expect(state.config.preemption.maxMoves == 1)
        #expect(state.jobs[29]?.moves == 1 && state.jobs[29]?.heldGPUs.map(\.description) == ["mv-fast[1]"])
        #expect(state.jobs[30]?.spec.maxGPUs == 8 && state.jobs[30]?.spec.gpuStep == 2)
        guard case .success(let back) = SnapshotFile.decode(SnapshotFile.encode(state.image, lsn: 1)) else {
            Issue.record("the snapshot does not read back")
            return
        }
        #expect(back.state.config.scheduler.serviceQueues == [3600, 36_000], "rebuilt from the snapshot")
        #expect(back.state.jobs[29]?.moves == 1, "rebuilt from the snapshot")
        #expect(back.state.jobs[29]?.heldGPUs.map(\.description) == ["mv-fast[1]"], "rebuilt from the snapshot")
        #expect(back.state == state, "the snapshot holds the whole state")
    }

    /// A newer allot reads version 16: testdata/golden-v16.wal holds the sample events with every version-16
    /// field (a `spill-over` placement, `loan_checkpoint_every`), written by format version 16.
    @Test func goldenV16SegmentStillReads() throws {
        let (_, state) = try goldenState(16)
        #expect(state.jobs[31]?.placement?.rule == .spillOver)
        #expect(state.config.preemption.loanCheckpointEvery == 900)
    }

    /// The format cannot drift unnoticed: testdata/golden-v17.wal holds the sample events with every
    /// version-17 field. It must decode to them, and encoding them must give the same bytes. Regenerate only
    /// for a deliberate format change (with a new version): ALLOT_UPDATE_GOLDEN=1.
    @Test func goldenV17SegmentReadsAndWritesTheSameBytes() throws {
        let events =
            Sample.through(17)
        var bytes = WALFormat.segmentHeader(sequence: 1, firstLSN: 1)
        for (i, e) in events.enumerated() {
            WALFormat.appendRecord(lsn: UInt64(i + 1), committed: UInt64(i), payload: EventCodec.encode(e), to: &bytes)
        }
        if ProcessInfo.processInfo.environment["ALLOT_UPDATE_GOLDEN"] == "1" {
            let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
                "testdata/golden-v17.wal"
            )
            try Data(bytes).write(to: source)
        }
        let stored = try golden(17)
        #expect(stored == bytes, "the encoding of version 17 changed")
        let (read, stop) = try walkSegment(stored)
        #expect(stop == nil)
        #expect(read == events)
        var state = ClusterState()
        for e in read { try state.apply(e) }
        #expect(state.jobs[31]?.placement?.rule == .spillOver)
        #expect(state.config.preemption.loanCheckpointEvery == 900)
        #expect(state.jobs[32]?.spec.speeds == ["H100": 3.5, "L4": 0.25])
        guard case .success(let back) = SnapshotFile.decode(SnapshotFile.encode(state.image, lsn: 1)) else {
            Issue.record("the snapshot does not read back")
            return
        }
        #expect(back.state.jobs[31]?.placement?.rule == .spillOver, "rebuilt from the snapshot")
        #expect(back.state.jobs[32]?.spec.speeds == ["H100": 3.5, "L4": 0.25], "rebuilt from the snapshot")
        #expect(back.state == state, "the snapshot holds the whole state")
    }

    func expectV8Facts(_ state: ClusterState) throws {
        // MIG: job 14's 1g.10gb is left on GPU 0 of g1 (slice 5), job 13's 3g.40gb on the static node's
        // slices 4-7; each pays its instance's price.
        let g1 = try #require(state.node(named: "g1"))
        #expect(g1.migUsed[0] == 1 << 5 && g1.sharers[0] == [14] && g1.usedMask == 1)
        #expect(state.node(named: "s1")?.migUsed[0] == 0xF0)
        #expect(state.node(named: "s1")?.spec.migLayout.count == 2)
        #expect(state.jobs[12]?.pastGPUSeconds == 8 * 0.143)
        #expect(state.jobs[13]?.allocation?.description == "s1[0]:3g.40gb@4")
        #expect(state.config.gpuModels[0].mig?.profiles.count == 6)
    }
}
