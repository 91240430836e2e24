/// The files of a state directory: `wal/` segments and `snap/` snapshots.
struct LogDirectory {
    struct Segment: Hashable {
        var sequence: UInt64
        var firstLSN: UInt64
        var name: String
        var path: String
    }

    struct Snapshot: Hashable {
        var lsn: UInt64
        var name: String
        var path: String
    }

    let root: String
    var walDir: String { root + "/wal" }
    var snapDir: String { root + "/snap" }

    /// Creates `wal/` and `snap/` if missing.
    func create() throws(SystemError) {
        try FileIO.makeDirectory(root)
        try FileIO.makeDirectory(walDir)
        try FileIO.makeDirectory(snapDir)
    }

    /// Removes `*.tmp` leftovers of interrupted writes.
    func removeTemporaries() throws(SystemError) {
        for dir in [walDir, snapDir] where FileIO.exists(dir) {
            for name in try FileIO.list(dir) where name.hasSuffix(".tmp") { try FileIO.remove(dir + "/" + name) }
        }
    }

    /// Segments by sequence number; names that are not segments are ignored.
    func segments() throws(SystemError) -> [Segment] {
        guard FileIO.exists(walDir) else { return [] }
        return try FileIO.list(walDir).compactMap { name in
            WALFormat.parseSegmentName(name).map {
                Segment(sequence: $0.sequence, firstLSN: $0.firstLSN, name: "wal/" + name, path: walDir + "/" + name)
            }
        }.sorted { $0.sequence < $1.sequence }
    }

    /// Snapshots, newest first.
    func snapshots() throws(SystemError) -> [Snapshot] {
        guard FileIO.exists(snapDir) else { return [] }
        return try FileIO.list(snapDir).compactMap { name in
            WALFormat.parseSnapshotName(name).map {
                Snapshot(lsn: $0, name: "snap/" + name, path: snapDir + "/" + name)
            }
        }.sorted { $0.lsn > $1.lsn }
    }
}
