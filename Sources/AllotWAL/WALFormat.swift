/// Constants and layouts of docs/wal-format.md.
enum WALFormat {
    static let segmentMagic: [UInt8] = Array("ALLOTWAL".utf8)
    static let snapshotMagic: [UInt8] = Array("ALLOTSNP".utf8)
    static let formatVersion: UInt16 = 1
    static let segmentHeaderSize = 32
    static let snapshotHeaderSize = 32
    static let recordHeaderSize = 28
    static let maxRecordSize = 16 << 20
    /// Record type of an event.
    static let eventRecord: UInt16 = 1

    /// `0000000000000001-0000000000000001.wal`
    static func segmentName(sequence: UInt64, firstLSN: UInt64) -> String {
        "\(hex16(sequence))-\(hex16(firstLSN)).wal"
    }

    static func parseSegmentName(_ name: String) -> (sequence: UInt64, firstLSN: UInt64)? {
        let u = Array(name.utf8)
        guard u.count == 37, u[16] == UInt8(ascii: "-"), name.hasSuffix(".wal"),
            let seq = UInt64(String(decoding: u[0..<16], as: UTF8.self), radix: 16),
            let first = UInt64(String(decoding: u[17..<33], as: UTF8.self), radix: 16)
        else { return nil }
        return (seq, first)
    }

    static func snapshotName(lsn: UInt64) -> String { "\(hex16(lsn)).snap" }

    static func parseSnapshotName(_ name: String) -> UInt64? {
        guard name.utf8.count == 21, name.hasSuffix(".snap") else { return nil }
        return UInt64(String(name.prefix(16)), radix: 16)
    }

    static func hex16(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, 16 - s.count)) + s
    }

    /// A segment header with its checksum.
    static func segmentHeader(sequence: UInt64, firstLSN: UInt64) -> [UInt8] {
        var w = BinaryWriter(capacity: segmentHeaderSize)
        w.bytes.append(contentsOf: segmentMagic)
        w.u16(formatVersion)
        w.u16(0)
        w.u32(0)
        w.u64(sequence)
        w.u64(firstLSN)
        let crc = CRC32C.checksum(w.bytes)
        w.bytes.replaceSubrange(12..<16, with: le32(crc))
        return w.bytes
    }

    /// Reads and checks a segment header.
    /// - Returns: sequence and first LSN, or a sentence saying what is wrong.
    static func readSegmentHeader(
        _ b: UnsafeRawBufferPointer
    ) -> Result<(sequence: UInt64, firstLSN: UInt64), HeaderProblem> {
        guard b.count >= segmentHeaderSize else {
            return .failure(.init("is \(b.count) bytes, shorter than its 32-byte header"))
        }
        guard b.prefix(8).elementsEqual(segmentMagic) else { return .failure(.init("does not start with ALLOTWAL")) }
        var r = BinaryReader(b, offset: 8)
        let version = try! r.u16()
        guard version <= formatVersion else {
            return .failure(
                .init(
                    "has format version \(version) in its header, which this allot (format \(formatVersion)) cannot read: written by a newer allot (upgrade), or damaged"
                )
            )
        }
        _ = try! r.u16()
        let stored = try! r.u32()
        var header = Array(b.prefix(segmentHeaderSize))
        header.replaceSubrange(12..<16, with: [0, 0, 0, 0])
        guard CRC32C.checksum(header) == stored else { return .failure(.init("has a header that fails its checksum")) }
        return .success((try! r.u64(), try! r.u64()))
    }

    struct HeaderProblem: Error {
        var sentence: String
        init(_ s: String) { sentence = s }
    }

    /// Appends one record to `out`.
    static func appendRecord(lsn: UInt64, committed: UInt64, payload: [UInt8], to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: le32(UInt32(payload.count)))
        out.append(contentsOf: [0, 0, 0, 0])
        out.append(contentsOf: le64(lsn))
        out.append(contentsOf: le64(committed))
        out.append(UInt8(truncatingIfNeeded: eventRecord))
        out.append(UInt8(truncatingIfNeeded: eventRecord >> 8))
        out.append(UInt8(truncatingIfNeeded: EventCodec.version))
        out.append(UInt8(truncatingIfNeeded: EventCodec.version >> 8))
        out.append(contentsOf: payload)
        var crc = CRC32C()
        out.withUnsafeBufferPointer { buf in
            crc.update(UnsafeBufferPointer(rebasing: buf[start..<(start + 4)]))
            crc.update(UnsafeBufferPointer(rebasing: buf[(start + 8)...]))
        }
        out.replaceSubrange((start + 4)..<(start + 8), with: le32(crc.value))
    }

    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
}

/// One record as found in a segment.
struct RecordView {
    var lsn: UInt64
    var committed: UInt64
    var type: UInt16
    var version: UInt16
    /// Offset of the record's header in the file.
    var offset: Int
    /// Offset and length of the payload in the file.
    var payloadOffset: Int
    var payloadLength: Int
    var end: Int { payloadOffset + payloadLength }
}

/// Reads the records of one segment's bytes.
enum SegmentScanner {
    /// Why a record could not be read.
    enum Damage: Equatable {
        case partialHeader
        case badLength(UInt32)
        case checksum
        case outOfSequence(found: UInt64)

        var sentence: String {
            switch self {
            case .partialHeader: "ends inside a record header"
            case .badLength(let n): "has a record length (\(n) bytes) that runs past the end of the file"
            case .checksum: "fails its checksum"
            case .outOfSequence(let lsn): "has LSN \(lsn) out of sequence"
            }
        }
    }

    /// Checks the record at `offset`, expecting `lsn`.
    static func record(
        in b: UnsafeRawBufferPointer,
        at offset: Int,
        expecting lsn: UInt64?
    ) -> Result<RecordView, DamageAt> {
        let left = b.count - offset
        guard left >= WALFormat.recordHeaderSize else {
            return .failure(DamageAt(offset: offset, damage: .partialHeader))
        }
        var r = BinaryReader(b, offset: offset)
        let length = try! r.u32()
        let stored = try! r.u32()
        guard Int(length) <= WALFormat.maxRecordSize, Int(length) <= left - WALFormat.recordHeaderSize else {
            return .failure(DamageAt(offset: offset, damage: .badLength(length)))
        }
        let found = try! r.u64()
        let committed = try! r.u64()
        let type = try! r.u16()
        let version = try! r.u16()
        var crc = CRC32C()
        crc.update(UnsafeBufferPointer(rebasing: b.bindMemory(to: UInt8.self)[offset..<(offset + 4)]))
        crc.update(
            UnsafeBufferPointer(
                rebasing: b.bindMemory(to: UInt8.self)[
                    (offset + 8)..<(offset + WALFormat.recordHeaderSize + Int(length))
                ]
            )
        )
        guard crc.value == stored else { return .failure(DamageAt(offset: offset, damage: .checksum)) }
        if let lsn, found != lsn { return .failure(DamageAt(offset: offset, damage: .outOfSequence(found: found))) }
        return .success(
            RecordView(
                lsn: found,
                committed: committed,
                type: type,
                version: version,
                offset: offset,
                payloadOffset: offset + WALFormat.recordHeaderSize,
                payloadLength: Int(length)
            )
        )
    }

    struct DamageAt: Error {
        var offset: Int
        var damage: Damage
    }

    /// After damage at `offset` to the record that should carry `lsn`: the valid records that follow it
    /// (plausible LSN after `lastGood`, checksum matching), found by trying every byte position.
    static func survivors(in b: UnsafeRawBufferPointer, after offset: Int, lastGood: UInt64) -> [RecordView] {
        var out: [RecordView] = []
        var p = offset + 1
        while p + WALFormat.recordHeaderSize <= b.count {
            // Cheap filters before the checksum: length in range, LSN ahead of the last good one, type and
            // version known.
            let length = Int(b.loadUnaligned(fromByteOffset: p, as: UInt32.self).littleEndian)
            let lsn = b.loadUnaligned(fromByteOffset: p + 8, as: UInt64.self).littleEndian
            let type = b.loadUnaligned(fromByteOffset: p + 24, as: UInt16.self).littleEndian
            let version = b.loadUnaligned(fromByteOffset: p + 26, as: UInt16.self).littleEndian
            if length <= WALFormat.maxRecordSize, p + WALFormat.recordHeaderSize + length <= b.count,
                lsn > lastGood, lsn < lastGood &+ (1 << 32), type == WALFormat.eventRecord, version >= 1,
                version <= EventCodec.version, case .success(let rec) = record(in: b, at: p, expecting: nil)
            {
                out.append(rec)
                p = rec.end
                continue
            }
            p += 1
        }
        return out
    }
}
