import AllotCore

#if canImport(Glibc)
import Glibc
#endif

/// What recovery found and did.
public struct RecoveryReport: Sendable {
    /// The recovered state.
    public var state: ClusterState
    /// LSN of the snapshot recovery started from; 0 when it replayed from the beginning.
    public var snapshotLSN: UInt64 = 0
    /// The last LSN in the log after recovery.
    public var lastLSN: UInt64 = 0
    /// Records replayed after the snapshot.
    public var replayed = 0
    /// Bytes of those records.
    var replayedBytes = 0
    /// Sentences worth logging: a cut torn tail, a skipped damaged snapshot, what a repair removed.
    public var notes: [String] = []
    /// The torn tail that was (or, when verifying, would be) cut.
    public var tornTail: TornTail?

    public struct TornTail: Hashable, Sendable {
        public var file: String
        public var offset: Int
        public var bytes: Int
        /// The LSN the cut record would have had.
        public var lsn: UInt64
    }

    /// The segment appends continue in, if any.
    var lastSegment: LogDirectory.Segment?
    /// Its size after recovery.
    var lastSegmentSize = 0
}

/// How recovery treats damage.
enum RecoveryMode {
    /// Cut a torn tail; stop at damage before the tail.
    case recover
    /// Also cut the log at damage before the tail, after saying what is lost.
    case repair
    /// Change nothing; report.
    case verify
}

extension LogDirectory {
    /// Loads the newest valid snapshot and replays the log after it. See docs/wal-format.md, "Recovery".
    func recover(mode: RecoveryMode) throws(WALError) -> RecoveryReport {
        do {
            if mode != .verify {
                try create()
                try removeTemporaries()
            }
        } catch {
            throw WALError(error)
        }
        var report = RecoveryReport(state: ClusterState())
        var damagedSnapshots: [String] = []
        let snapshots: [Snapshot]
        let segments: [Segment]
        do {
            snapshots = try self.snapshots()
            segments = try self.segments()
        } catch {
            throw WALError(error)
        }
        var base: (lsn: UInt64, state: ClusterState)?
        for snap in snapshots {
            let bytes: [UInt8]
            do { bytes = try FileIO.readAll(snap.path) } catch {
                damagedSnapshots.append("\(snap.name) cannot be read (\(error))")
                continue
            }
            switch SnapshotFile.decode(bytes) {
            case .success(let s) where s.lsn == snap.lsn:
                base = s
            case .success(let s):
                damagedSnapshots.append("\(snap.name) says it holds LSN \(s.lsn), not the LSN in its name")
            case .failure(let p):
                damagedSnapshots.append("\(snap.name) \(p.sentence)")
            }
            if base != nil { break }
        }
        if let base {
            report.state = base.state
            report.snapshotLSN = base.lsn
            report.lastLSN = base.lsn
            for d in damagedSnapshots {
                report.notes.append(
                    "snapshot \(d); recovering from the older snap/\(WALFormat.snapshotName(lsn: base.lsn)) instead"
                )
            }
        }

        for (a, b) in zip(segments, segments.dropFirst()) where b.sequence != a.sequence + 1 {
            throw WALError(
                .missing,
                "segment \(b.name) follows \(a.name), but its sequence number jumps from \(a.sequence) to \(b.sequence): a segment is missing. Restore the state directory from a backup.",
                file: b.path
            )
        }
        let start = base?.lsn ?? 0
        guard let first = segments.first else {
            if base == nil, let d = damagedSnapshots.first {
                throw WALError(
                    .missing,
                    "snapshot \(d), no older one exists, and there is no log to replay. Restore the state directory from a backup."
                )
            }
            return report
        }
        if first.firstLSN > start + 1 {
            if let d = damagedSnapshots.first {
                throw WALError(
                    .missing,
                    "snapshot \(d), and no older one exists; the log before LSN \(first.firstLSN) has been removed. Restore the state directory from a backup.",
                    file: first.path
                )
            }
            throw WALError(
                .missing,
                "the log starts at LSN \(first.firstLSN) (\(first.name)) but no snapshot covers the LSNs before it. Restore the state directory from a backup.",
                file: first.path
            )
        }
        // Start in the last segment whose first record is at or before the first one to replay.
        let startIndex = segments.lastIndex { $0.firstLSN <= start + 1 } ?? 0
        var previousLast: UInt64? = nil
        scan: for i in startIndex..<segments.count {
            let seg = segments[i]
            let isLast = i == segments.count - 1
            let bytes: [UInt8]
            do { bytes = try FileIO.readAll(seg.path) } catch { throw WALError(error) }
            let outcome = try bytes.withBytes { b throws(WALError) -> Bool in
                switch WALFormat.readSegmentHeader(b) {
                case .failure(let p):
                    throw WALError(
                        .corrupt,
                        "segment \(seg.name) \(p.sentence). Restore the state directory from a backup.",
                        file: seg.path,
                        offset: 0
                    )
                case .success(let h) where h.sequence != seg.sequence || h.firstLSN != seg.firstLSN:
                    throw WALError(
                        .corrupt,
                        "segment \(seg.name) has sequence \(h.sequence) and first LSN \(h.firstLSN) in its header, which its name contradicts. Restore the state directory from a backup.",
                        file: seg.path,
                        offset: 0
                    )
                case .success:
                    break
                }
                if let previousLast, seg.firstLSN != previousLast + 1 {
                    throw WALError(
                        .missing,
                        "segment \(seg.name) starts at LSN \(seg.firstLSN), but the segment before it ends at LSN \(previousLast): records are missing. Restore the state directory from a backup.",
                        file: seg.path
                    )
                }
                var offset = WALFormat.segmentHeaderSize
                var lsn = seg.firstLSN
                while offset < b.count {
                    switch SegmentScanner.record(in: b, at: offset, expecting: lsn) {
                    case .success(let rec):
                        if rec.lsn > start {
                            if let problem = replay(rec, b, into: &report) {
                                try damage(
                                    seg,
                                    i,
                                    segments,
                                    b,
                                    offset: offset,
                                    lsn: lsn,
                                    what: "does not apply: \(problem)",
                                    corrupt: true,
                                    mode: mode,
                                    report: &report
                                )
                                return false
                            }
                            report.lastLSN = rec.lsn
                        }
                        offset = rec.end
                        lsn += 1
                    case .failure(let d):
                        let later = SegmentScanner.survivors(in: b, after: offset, lastGood: lsn - 1)
                        let corrupt = !isLast || later.contains { $0.committed >= lsn }
                        try damage(
                            seg,
                            i,
                            segments,
                            b,
                            offset: offset,
                            lsn: lsn,
                            what: d.damage.sentence,
                            corrupt: corrupt,
                            mode: mode,
                            report: &report,
                            survivorsHere: later.count
                        )
                        return false
                    }
                }
                previousLast = lsn - 1
                if isLast {
                    report.lastSegment = seg
                    report.lastSegmentSize = b.count
                }
                return true
            }
            if !outcome { break scan }
        }
        if report.lastLSN < start {
            throw WALError(
                .missing,
                "snapshot snap/\(WALFormat.snapshotName(lsn: start)) holds LSN \(start), but the log ends at LSN \(report.lastLSN). Restore the state directory from a backup."
            )
        }
        return report
    }

    /// Decodes and applies one record; returns what went wrong, if anything.
    private func replay(_ rec: RecordView, _ b: UnsafeRawBufferPointer, into report: inout RecoveryReport) -> String? {
        guard rec.type == WALFormat.eventRecord else { return "record type \(rec.type) is unknown" }
        let event: Event
        do {
            event = try EventCodec.decode(
                UnsafeRawBufferPointer(rebasing: b[rec.payloadOffset..<rec.end]),
                version: rec.version
            )
        } catch {
            return "its payload \(error)"
        }
        do { try report.state.apply(event) } catch {
            return "the state refuses its \(event.kindName): \(error.message)"
        }
        report.replayed += 1
        report.replayedBytes += rec.end - rec.offset
        return nil
    }

    /// Handles damage to the record expected at `offset` with `lsn`: cuts a torn tail, or stops (or, when
    /// repairing, cuts) at corruption.
    private func damage(
        _ seg: Segment,
        _ index: Int,
        _ segments: [Segment],
        _ b: UnsafeRawBufferPointer,
        offset: Int,
        lsn: UInt64,
        what: String,
        corrupt: Bool,
        mode: RecoveryMode,
        report: inout RecoveryReport,
        survivorsHere: Int = 0
    ) throws(WALError) {
        if !corrupt {
            report.tornTail = .init(file: seg.name, offset: offset, bytes: b.count - offset, lsn: lsn)
            let verb = mode == .verify ? "would cut" : "cut"
            report.notes.append(
                "torn tail: the record with LSN \(lsn) in \(seg.name) \(what) at byte \(offset) and nothing acknowledged follows it; \(verb) the last \(b.count - offset) bytes"
            )
            if mode != .verify { try cut(seg, at: offset, removing: []) }
            report.lastSegment = seg
            report.lastSegmentSize = offset
            return
        }
        // Count what a repair would lose: the valid records after the damage here and in later segments.
        var lost = survivorsHere
        let later = Array(segments[(index + 1)...])
        for s in later { lost += countRecords(s) }
        let lostText = lost == 1 ? "1 record after it" : "\(lost) records after it"
        if mode == .repair {
            report.notes.append(
                "repair: cut the log at LSN \(lsn) (\(seg.name), byte \(offset)), where it \(what); \(lostText) and \(later.count) later segment(s) were removed"
            )
            try cut(seg, at: offset, removing: later)
            report.lastSegment = seg
            report.lastSegmentSize = offset
            return
        }
        throw WALError(
            .corrupt,
            "record LSN \(lsn) in \(seg.name) \(what) at byte \(offset), and acknowledged records follow it: the log is damaged before its tail. Start with --repair to cut the log there (\(lostText) will be lost), or restore the state directory from a backup.",
            file: seg.path,
            offset: offset,
            lsn: lsn
        )
    }

    private func countRecords(_ s: Segment) -> Int {
        guard let bytes = try? FileIO.readAll(s.path) else { return 0 }
        return bytes.withUnsafeBytes { b in
            var offset = WALFormat.segmentHeaderSize
            var n = 0
            while offset < b.count, case .success(let rec) = SegmentScanner.record(in: b, at: offset, expecting: nil) {
                n += 1
                offset = rec.end
            }
            return n
        }
    }

    private func cut(_ seg: Segment, at offset: Int, removing later: [Segment]) throws(WALError) {
        do throws(SystemError) {
            let fd = try FileIO.open(seg.path, O_WRONLY)
            defer { FileIO.close(fd) }
            try FileIO.truncate(fd, to: offset, path: seg.path)
            try FileIO.fsync(fd, path: seg.path)
            for s in later { try FileIO.remove(s.path) }
            if !later.isEmpty { try FileIO.syncDirectory(walDir) }
        } catch {
            throw WALError(error)
        }
    }
}
