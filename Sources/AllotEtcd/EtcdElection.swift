import Foundation

/// Leadership among allotd controllers on etcd (docs/ha.md), as etcd's own `concurrency.Election` does it:
/// each candidate puts its own key under the election prefix, bound to its lease; the candidate whose key
/// has the lowest create revision leads, and that revision is its epoch — the fencing token every write of
/// the leader carries. A candidate whose lease ends (its host stopped, a partition past the TTL) loses its
/// key, its leadership and its right to write, all at once, inside etcd.
public struct EtcdElection: Sendable {
    public let client: EtcdClient
    /// `/allot/<cluster>/leader/`.
    public let prefix: String

    public init(client: EtcdClient, prefix: String) {
        self.client = client
        self.prefix = prefix.hasSuffix("/") ? prefix : prefix + "/"
    }

    /// A candidate's standing: its key and its epoch (the key's create revision).
    public struct Candidacy: Hashable, Sendable {
        public var key: String
        public var epoch: Int64
        public var lease: Int64
    }

    /// Puts the candidate's key (idempotent: a retry finds the key it made) with `value` (who it is: name and
    /// address, for the followers to point clients at).
    public func enter(value: [UInt8], lease: Int64) async throws(EtcdError) -> Candidacy {
        let key = prefix + String(lease, radix: 16)
        let r = try await client.txn(
            [EtcdCompare(key, .equal, .createRevision(0))],
            then: [.put(key, value, lease: lease), .get(key)],
            otherwise: [.get(key)]
        )
        guard let kv = r.found.last?.first else {
            throw EtcdError("the candidate's key \(key) is gone: its lease \(lease) has ended")
        }
        return Candidacy(key: key, epoch: kv.createRevision, lease: lease)
    }

    /// The leader now: the candidate key with the lowest create revision, if any.
    public func leader() async throws(EtcdError) -> EtcdKeyValue? {
        try await client.oldest(under: prefix)
    }

    /// Waits until `candidacy` leads (every earlier key gone), watching its predecessor; returns when it
    /// leads. Throws when its own key goes (its lease ended) or the task is cancelled.
    public func campaign(_ candidacy: Candidacy) async throws -> Candidacy {
        while true {
            try Task.checkCancellation()
            let all = try await client.prefix(prefix)
            guard all.contains(where: { $0.keyString == candidacy.key }) else {
                throw EtcdError("lost the election: the key \(candidacy.key) is gone (lease \(candidacy.lease) ended)")
            }
            let earlier = all.filter { $0.createRevision < candidacy.epoch }
            guard let predecessor = earlier.max(by: { $0.createRevision < $1.createRevision }) else {
                return candidacy
            }
            // Wait for the one just before to go: a delete of its key (or it is gone already).
            let (_, _, revision) = try await client.range(from: predecessor.key, to: nil, limit: 1)
            let events = client.watch(from: predecessor.key, to: nil, revision: revision + 1)
            if try await client.get(predecessor.keyString) == nil { continue }
            waiting: for try await batch in events where batch.contains(where: { $0.kind == .delete }) {
                break waiting
            }
        }
    }

    /// Whether `candidacy` still leads, as etcd sees it now.
    public func leads(_ candidacy: Candidacy) async throws(EtcdError) -> Bool {
        try await leader().map { $0.keyString == candidacy.key && $0.createRevision == candidacy.epoch } ?? false
    }

    /// Steps down: the candidate's key goes (the next candidate leads at once, not after a TTL).
    public func resign(_ candidacy: Candidacy) async throws(EtcdError) {
        let key = Array(candidacy.key.utf8)
        _ = try await client.txn(
            [EtcdCompare(candidacy.key, .equal, .createRevision(candidacy.epoch))],
            then: [.deleteRange(from: key, to: key + [0])]
        )
    }

    /// The comparison that fences a leader's write: its key still exists with its epoch.
    public static func fence(_ candidacy: Candidacy) -> EtcdCompare {
        EtcdCompare(candidacy.key, .equal, .createRevision(candidacy.epoch))
    }
}

/// The controllers' log in etcd: one key per record (`<prefix><LSN, 20 digits>`), appended by the leader in
/// transactions fenced by its epoch, so that a deposed leader can never append (docs/ha.md).
public struct EtcdLog: Sendable {
    public let client: EtcdClient
    /// `/allot/<cluster>/log/`.
    public let prefix: String
    /// etcd's limits per transaction: operations (`--max-txn-ops`, 128 by default) and bytes of a request
    /// (`--max-request-bytes`, 1.5 MiB), with room for the JSON and base64 around the records.
    public var maxOpsPerTxn = 128
    public var maxBytesPerTxn = 1_000_000
    /// Where snapshots are: beside the records (`/allot/<cluster>/log.snapshot/<LSN>/<chunk>`), outside
    /// their range, in chunks of at most ``snapshotChunkBytes`` (a request to etcd is limited to 1.5 MiB).
    public var snapshotKey: String { String(prefix.dropLast()) + ".snapshot" }
    /// Bytes of a snapshot per key (base64 makes them 4/3 as large on the wire).
    public var snapshotChunkBytes = 768 << 10

    public init(client: EtcdClient, prefix: String) {
        self.client = client
        self.prefix = prefix.hasSuffix("/") ? prefix : prefix + "/"
    }

    /// Which snapshot is the newest: "<LSN> <chunks>" in decimal (read without the snapshot's bytes).
    public var snapshotLSNKey: String { snapshotKey + "-lsn" }

    func chunkPrefix(_ lsn: UInt64) -> String { snapshotKey + "/" + Self.digits(lsn, 20) + "/" }

    static func digits(_ n: UInt64, _ width: Int) -> String {
        let d = String(n)
        return String(repeating: "0", count: max(0, width - d.count)) + d
    }

    /// Puts a snapshot (its file's bytes, which carry its LSN) chunk by chunk, then makes it the newest and
    /// deletes the older ones' chunks in one transaction: every write fenced as appends are. A reader sees the
    /// older snapshot whole until the last transaction, then the new one whole.
    public func putSnapshot(_ bytes: [UInt8], at lsn: UInt64, as candidacy: EtcdElection.Candidacy) async throws {
        let size = max(1, snapshotChunkBytes)
        let count = max(1, (bytes.count + size - 1) / size)
        let base = chunkPrefix(lsn)
        for i in 0..<count {
            let chunk = Array(bytes[min(bytes.count, i * size)..<min(bytes.count, (i + 1) * size)])
            let r = try await client.txn(
                [EtcdElection.fence(candidacy)],
                then: [.put(base + Self.digits(UInt64(i), 6), chunk)]
            )
            guard r.succeeded else { throw Deposed(epoch: candidacy.epoch) }
        }
        let r = try await client.txn(
            [EtcdElection.fence(candidacy)],
            then: [
                .put(snapshotLSNKey, Array("\(lsn) \(count)".utf8)),
                .deleteRange(from: Array((snapshotKey + "/").utf8), to: Array(base.utf8)),
            ]
        )
        guard r.succeeded else { throw Deposed(epoch: candidacy.epoch) }
    }

    /// The newest snapshot's bytes, if there is one.
    public func snapshot() async throws(EtcdError) -> [UInt8]? {
        // The leader may replace it while this reads: then read the newer one.
        for _ in 0..<5 {
            guard let (lsn, count) = try await newestSnapshot() else { return nil }
            let base = chunkPrefix(lsn)
            var bytes: [UInt8] = []
            var next = Array((base + Self.digits(0, 6)).utf8)
            var chunks = 0
            while true {
                let r = try await client.range(from: next, to: EtcdClient.prefixEnd(Array(base.utf8)), limit: 8)
                for kv in r.kvs { bytes += kv.value }
                chunks += r.kvs.count
                guard r.more, let last = r.kvs.last else { break }
                next = Array(last.key) + [0]
            }
            if chunks == count { return bytes }
        }
        throw EtcdError("the snapshot in etcd kept changing while it was read")
    }

    /// The newest snapshot's LSN (0: none), without reading the snapshot.
    public func snapshotLSN() async throws(EtcdError) -> UInt64 { try await newestSnapshot()?.lsn ?? 0 }

    /// The newest snapshot's LSN and chunk count.
    private func newestSnapshot() async throws(EtcdError) -> (lsn: UInt64, chunks: Int)? {
        guard let kv = try await client.get(snapshotLSNKey) else { return nil }
        let parts = String(decoding: kv.value, as: UTF8.self).split(separator: " ").compactMap { Int($0) }
        guard parts.count == 2, parts[0] >= 0, parts[1] > 0 else {
            throw EtcdError("\(snapshotLSNKey) is not \"LSN chunks\": \(String(decoding: kv.value, as: UTF8.self))")
        }
        return (UInt64(parts[0]), parts[1])
    }

    public func key(_ lsn: UInt64) -> String { prefix + Self.digits(lsn, 20) }

    /// Why an append was refused: the writer no longer leads.
    public struct Deposed: Error, Hashable, Sendable, CustomStringConvertible {
        public var epoch: Int64
        public var description: String {
            "not the leader any more: epoch \(epoch) has ended (its lease expired or it resigned); nothing was appended"
        }
    }

    /// Appends records from `first` on, as `candidacy` (fenced by its epoch); split into as few transactions as
    /// etcd's limits allow. Returns the revision of the last one. Throws ``Deposed`` when the writer no longer
    /// leads (what an earlier transaction of the same call wrote stays: a prefix of the batch, never a gap).
    @discardableResult
    public func append(
        _ records: [[UInt8]],
        from first: UInt64,
        as candidacy: EtcdElection.Candidacy
    ) async throws -> Int64 {
        var revision: Int64 = 0
        var i = 0
        while i < records.count {
            var ops: [EtcdOp] = []
            var bytes = 0
            while i < records.count && ops.count < maxOpsPerTxn
                && (ops.isEmpty || bytes + records[i].count * 4 / 3 + 64 <= maxBytesPerTxn)
            {
                ops.append(.put(key(first + UInt64(i)), records[i]))
                bytes += records[i].count * 4 / 3 + 64
                i += 1
            }
            let r = try await client.txn([EtcdElection.fence(candidacy)], then: ops)
            guard r.succeeded else { throw Deposed(epoch: candidacy.epoch) }
            revision = r.revision
        }
        return revision
    }

    /// Records from `lsn` on (at most `limit`), in order, and the revision they were read at.
    public func read(
        from lsn: UInt64,
        limit: Int = 0
    ) async throws(EtcdError) -> (
        records: [(lsn: UInt64, payload: [UInt8])], revision: Int64
    ) {
        let end = EtcdClient.prefixEnd(Array(prefix.utf8))
        let r = try await client.range(from: Array(key(lsn).utf8), to: end, limit: limit)
        return (r.kvs.compactMap { kv in lsnOf(kv).map { ($0, kv.value) } }, r.revision)
    }

    /// The last record's LSN (0: none).
    public func last() async throws(EtcdError) -> UInt64 {
        // Keys sort by LSN: the greatest is the last.
        try await client.greatestKey(under: prefix).flatMap(lsnOf) ?? 0
    }

    /// Follows the log: the records from `lsn` on, those there now and then each as it is appended, in order.
    public func follow(from lsn: UInt64) -> AsyncThrowingStream<(lsn: UInt64, payload: [UInt8]), any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var next = lsn
                    let (now, revision) = try await read(from: lsn)
                    for r in now {
                        continuation.yield(r)
                        next = r.lsn + 1
                    }
                    let end = EtcdClient.prefixEnd(Array(prefix.utf8))
                    for try await batch in client.watch(from: Array(key(next).utf8), to: end, revision: revision + 1) {
                        for e in batch where e.kind == .put {
                            guard let n = lsnOf(e.kv), n >= next else { continue }
                            continuation.yield((n, e.kv.value))
                            next = n + 1
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Deletes the records below `lsn` (covered by a snapshot), fenced by the leader's epoch. Returns the
    /// revision of the delete.
    @discardableResult
    public func truncate(below lsn: UInt64, as candidacy: EtcdElection.Candidacy) async throws -> Int64 {
        let r = try await client.txn(
            [EtcdElection.fence(candidacy)],
            then: [.deleteRange(from: Array(key(0).utf8), to: Array(key(lsn).utf8))]
        )
        guard r.succeeded else { throw Deposed(epoch: candidacy.epoch) }
        return r.revision
    }

    func lsnOf(_ kv: EtcdKeyValue) -> UInt64? {
        let k = kv.keyString
        guard k.hasPrefix(prefix) else { return nil }
        return UInt64(k.dropFirst(prefix.count))
    }
}
