import AllotCore

/// Offline reading of a state directory's log: `allotd wal dump` and `allotd wal verify`.
public enum WALInspector {
    /// One record as `dump` shows it.
    public struct Entry: Sendable {
        public var lsn: UInt64
        public var committed: UInt64
        /// `wal/<name>.wal`
        public var segment: String
        public var offset: Int
        public var event: Event
    }

    /// Calls `body` with every record of every segment in order, then returns what stopped the walk: nil at
    /// a clean end, else a sentence naming the file, offset and LSN of the damage.
    public static func walk(directory: String, _ body: (Entry) -> Void) throws(WALError) -> String? {
        let dir = LogDirectory(root: directory)
        let segments: [LogDirectory.Segment]
        do { segments = try dir.segments() } catch { throw WALError(error) }
        var expected: UInt64?
        for seg in segments {
            let bytes: [UInt8]
            do { bytes = try FileIO.readAll(seg.path) } catch { throw WALError(error) }
            let stop: String? = bytes.withUnsafeBytes { b in
                guard case .success(let h) = WALFormat.readSegmentHeader(b) else {
                    return "\(seg.name): damaged header"
                }
                if let e = expected, h.firstLSN != e {
                    return "\(seg.name) starts at LSN \(h.firstLSN), expected \(e): records are missing"
                }
                var offset = WALFormat.segmentHeaderSize
                var lsn = h.firstLSN
                while offset < b.count {
                    switch SegmentScanner.record(in: b, at: offset, expecting: lsn) {
                    case .failure(let d):
                        return "\(seg.name): the record with LSN \(lsn) \(d.damage.sentence) at byte \(offset)"
                    case .success(let rec):
                        do {
                            let event = try EventCodec.decode(
                                UnsafeRawBufferPointer(rebasing: b[rec.payloadOffset..<rec.end]),
                                version: rec.version
                            )
                            body(
                                Entry(
                                    lsn: rec.lsn,
                                    committed: rec.committed,
                                    segment: seg.name,
                                    offset: offset,
                                    event: event
                                )
                            )
                        } catch {
                            return "\(seg.name): the record with LSN \(lsn) at byte \(offset) does not decode: \(error)"
                        }
                        offset = rec.end
                        lsn += 1
                    }
                }
                expected = lsn
                return nil
            }
            if let stop { return stop }
        }
        return nil
    }

    /// Checks everything recovery checks, changing nothing.
    /// - Returns: the report recovery would give (its `tornTail` set when there is one to cut).
    /// - Throws: ``WALError`` for damage that would stop recovery.
    public static func verify(directory: String) throws(WALError) -> RecoveryReport {
        try LogDirectory(root: directory).recover(mode: .verify)
    }
}
