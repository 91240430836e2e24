import AllotCore

/// Snapshot files: a 32-byte header and the binary state image (docs/wal-format.md).
enum SnapshotFile {
    static func encode(_ image: ClusterState.Image, lsn: UInt64) -> [UInt8] {
        let payload = StateCodec.encode(image)
        var w = BinaryWriter(capacity: WALFormat.snapshotHeaderSize + payload.count)
        w.bytes.append(contentsOf: WALFormat.snapshotMagic)
        w.u16(WALFormat.formatVersion)
        w.u16(StateCodec.version)
        w.u32(0)
        w.u64(lsn)
        w.u32(UInt32(payload.count))
        w.u32(CRC32C.checksum(payload))
        let crc = CRC32C.checksum(w.bytes)
        w.bytes.replaceSubrange(12..<16, with: WALFormat.le32(crc))
        w.bytes.append(contentsOf: payload)
        return w.bytes
    }

    /// Checks and decodes a snapshot.
    /// - Returns: its LSN and state, or a sentence saying what is wrong with it.
    static func decode(_ bytes: [UInt8]) -> Result<(lsn: UInt64, state: ClusterState), WALFormat.HeaderProblem> {
        bytes.withUnsafeBytes { b in
            guard b.count >= WALFormat.snapshotHeaderSize else { return .failure(.init("is shorter than its header")) }
            guard b.prefix(8).elementsEqual(WALFormat.snapshotMagic) else {
                return .failure(.init("does not start with ALLOTSNP"))
            }
            var header = Array(b.prefix(WALFormat.snapshotHeaderSize))
            header.replaceSubrange(12..<16, with: [0, 0, 0, 0])
            var r = BinaryReader(b, offset: 8)
            let format = try! r.u16()
            let version = try! r.u16()
            let stored = try! r.u32()
            let lsn = try! r.u64()
            let length = Int(try! r.u32())
            let payloadCRC = try! r.u32()
            guard CRC32C.checksum(header) == stored else {
                return .failure(.init("has a header that fails its checksum"))
            }
            guard format <= WALFormat.formatVersion else {
                return .failure(.init("has format version \(format), newer than this allot reads; upgrade allot"))
            }
            guard b.count == WALFormat.snapshotHeaderSize + length else {
                return .failure(
                    .init("is \(b.count) bytes, but its header says \(WALFormat.snapshotHeaderSize + length)")
                )
            }
            let payload = UnsafeRawBufferPointer(rebasing: b[WALFormat.snapshotHeaderSize...])
            guard CRC32C.checksum(payload.bindMemory(to: UInt8.self)) == payloadCRC else {
                return .failure(.init("fails its checksum"))
            }
            let image: ClusterState.Image
            do { image = try StateCodec.decode(payload, version: version) } catch {
                return .failure(.init("does not decode: \(error)"))
            }
            do { return .success((lsn, try ClusterState(image: image))) } catch {
                return .failure(.init("holds a state that contradicts itself: \(error)"))
            }
        }
    }
}
