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

/// The log in a form that travels (`allotd wal migrate`, the log in etcd: docs/ha.md): each record its
/// event codec version (u16, little-endian) and its event payload; a snapshot its file's bytes (header,
/// checksums and state image, as in `snap/`).
public enum PortableLog {
    /// The newest readable snapshot of a state directory and every record after it, in order.
    /// - Throws: ``WALError`` when the log is damaged (run `allotd wal verify` / `repair` first).
    public static func export(
        directory: String
    ) throws(WALError) -> (
        snapshot: (lsn: UInt64, bytes: [UInt8])?, records: [(lsn: UInt64, event: Event)]
    ) {
        _ = try WALInspector.verify(directory: directory)
        let dir = LogDirectory(root: directory)
        var snapshot: (lsn: UInt64, bytes: [UInt8])?
        do {
            for s in try dir.snapshots() {
                let bytes = try FileIO.readAll(s.path)
                if case .success(let decoded) = SnapshotFile.decode(bytes) {
                    snapshot = (decoded.lsn, bytes)
                    break
                }
            }
        } catch { throw WALError(error) }
        var records: [(lsn: UInt64, event: Event)] = []
        let from = snapshot?.lsn ?? 0
        let stop = try WALInspector.walk(directory: directory) { e in
            if e.lsn > from { records.append((e.lsn, e.event)) }
        }
        if let stop { throw WALError(.corrupt, stop) }
        if let first = records.first, first.lsn != from + 1 {
            throw WALError(.missing, "the log starts at LSN \(first.lsn) but its newest snapshot is at LSN \(from)")
        }
        return (snapshot, records)
    }

    /// Writes a log into a state directory that holds none: the snapshot (its file's bytes) and the records
    /// after it, in order, so that the directory recovers to the state they make (the way back from etcd).
    /// - Returns: what recovery of the written directory finds.
    /// - Throws: ``WALError``: the directory already holds a log, a snapshot does not decode, the records do
    ///   not follow the snapshot without a gap, or a write failed.
    public static func importLog(
        directory: String,
        snapshot: (lsn: UInt64, bytes: [UInt8])?,
        records: [(lsn: UInt64, payload: [UInt8])]
    ) throws(WALError) -> RecoveryReport {
        let dir = LogDirectory(root: directory)
        do {
            if !(try dir.segments().isEmpty && dir.snapshots().isEmpty) {
                throw WALError(.failed, "\(directory) already holds a log: give a new or empty state directory")
            }
            try dir.create()
        } catch let e as WALError {
            throw e
        } catch {
            throw WALError(.io, "cannot create \(directory): \(error)")
        }
        var next: UInt64 = 1
        if let snapshot {
            switch SnapshotFile.decode(snapshot.bytes) {
            case .success(let s) where s.lsn == snapshot.lsn: break
            case .success(let s): throw WALError(.corrupt, "the snapshot says LSN \(s.lsn), not \(snapshot.lsn)")
            case .failure(let p): throw WALError(.corrupt, "the snapshot \(p.sentence)")
            }
            let path = dir.snapDir + "/" + WALFormat.snapshotName(lsn: snapshot.lsn)
            do { try FileIO.writeAtomically(snapshot.bytes, to: path, directory: dir.snapDir) } catch {
                throw WALError(.io, "cannot write \(path): \(error)", file: path)
            }
            next = snapshot.lsn + 1
        }
        let (log, opened) = try WriteAheadLog.open(directory: directory)
        defer { log.close() }
        guard opened.lastLSN + 1 == next else {
            throw WALError(.corrupt, "\(directory) recovers to LSN \(opened.lastLSN), expected \(next - 1)")
        }
        var i = 0
        while i < records.count {
            let chunk = records[i..<min(records.count, i + 4096)]
            var events: [Event] = []
            events.reserveCapacity(chunk.count)
            for r in chunk {
                guard r.lsn == next else {
                    throw WALError(.missing, "the records jump from LSN \(next - 1) to \(r.lsn)")
                }
                do { events.append(try decode(r.payload)) } catch let e as WALError { throw e } catch {
                    throw WALError(.corrupt, "record \(r.lsn): \(error)")
                }
                next += 1
            }
            try log.appendBlocking(events)
            i += chunk.count
        }
        log.close()
        return try WALInspector.verify(directory: directory)
    }

    /// A record as it travels.
    public static func encode(_ event: Event) -> [UInt8] {
        [UInt8(truncatingIfNeeded: EventCodec.version), UInt8(truncatingIfNeeded: EventCodec.version >> 8)]
            + EventCodec.encode(event)
    }

    /// A travelling record's event.
    public static func decode(_ bytes: [UInt8]) throws -> Event {
        guard bytes.count >= 2 else { throw WALError(.corrupt, "a record of \(bytes.count) bytes has no version") }
        let version = UInt16(bytes[0]) | UInt16(bytes[1]) << 8
        guard version <= EventCodec.version else {
            throw WALError(
                .corrupt,
                "a record of event codec version \(version), newer than this allot reads; upgrade allot"
            )
        }
        return try EventCodec.decode(Array(bytes[2...]), version: version)
    }

    /// A snapshot as it travels (the bytes of its file).
    public static func encodeSnapshot(_ state: ClusterState, at lsn: UInt64) -> [UInt8] {
        SnapshotFile.encode(state.image, lsn: lsn)
    }

    /// A travelling snapshot's LSN and state.
    public static func decodeSnapshot(_ bytes: [UInt8]) throws -> (lsn: UInt64, state: ClusterState) {
        switch SnapshotFile.decode(bytes) {
        case .success(let s): return s
        case .failure(let p): throw WALError(.corrupt, "the snapshot \(p.sentence)")
        }
    }
}
