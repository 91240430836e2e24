import AllotCore
import AllotEtcd
import AllotWAL
import Foundation
import NIOConcurrencyHelpers
import NIOPosix

/// Where the engine's events become durable: the local write-ahead log (one controller), or the log in etcd
/// (several controllers, docs/ha.md). Group commit either way: every ticket up to the one waited on is
/// durable when the wait returns.
protocol EventLog: AnyObject, Sendable {
    /// Queues events; the ticket's LSN is the last one's.
    func enqueue(_ events: [Event]) throws(WALError) -> WriteAheadLog.Ticket
    /// Returns once the ticket (and everything before it) is durable: the durable LSN.
    func waitDurable(_ ticket: WriteAheadLog.Ticket) async throws(WALError) -> UInt64
    /// Calls `then` once the ticket is durable (or abandoned): at once when it already is, else from the
    /// log's writer, in ticket order and before ``waitDurable(_:)`` returns for it. Quick work only.
    func whenDurable(_ ticket: WriteAheadLog.Ticket, _ then: @escaping @Sendable (Result<UInt64, WALError>) -> Void)
    var lastLSN: UInt64 { get }
    /// Enough has been written since the last snapshot that another is due.
    var snapshotDue: Bool { get }
    /// Writes a snapshot of `state`, whose events up to `lsn` are durable.
    func writeSnapshot(_ state: ClusterState, at lsn: UInt64) async throws
    func close()
}

extension WriteAheadLog: EventLog {
    func writeSnapshot(_ state: ClusterState, at lsn: UInt64) async throws {
        try await NIOThreadPool.singleton.runIfActive { try self.writeSnapshot(state, at: lsn) }
    }
}

/// The log in etcd, written by the leader (docs/ha.md): records queue here and go to etcd in one fenced
/// append per batch, everything queued while the previous batch was in flight together. A write etcd
/// refuses (this controller was deposed) or cannot take (no quorum) fails the log, as a failed disk does:
/// the engine then serves reads only.
final class EtcdEventLog: EventLog {
    private struct State {
        var nextLSN: UInt64
        var durableLSN: UInt64
        var pending: [[UInt8]] = []
        var pendingFirst: UInt64
        var failed: WALError?
        var waiters: [(lsn: UInt64, continuation: CheckedContinuation<UInt64, any Error>)] = []
        var thens: [(lsn: UInt64, then: @Sendable (Result<UInt64, WALError>) -> Void)] = []
        var lastSnapshotLSN: UInt64
        /// The revision of the previous snapshot's truncation: etcd's history is compacted there at the next.
        var compactAt: Int64?
        var closed = false
    }

    private let log: EtcdLog
    private let leadership: EtcdElection.Candidacy
    private let snapshotEveryRecords: Int
    private let state: NIOLockedValueBox<State>
    private let wake: AsyncStream<Void>.Continuation
    private let writer: Task<Void, Never>

    /// - Parameter failed: called once when etcd does not take a batch.
    init(
        log: EtcdLog,
        as leadership: EtcdElection.Candidacy,
        lastLSN: UInt64,
        snapshotLSN: UInt64,
        snapshotEveryRecords: Int,
        failed: @escaping @Sendable () -> Void
    ) {
        self.log = log
        self.leadership = leadership
        self.snapshotEveryRecords = snapshotEveryRecords
        let state = NIOLockedValueBox(
            State(nextLSN: lastLSN + 1, durableLSN: lastLSN, pendingFirst: lastLSN + 1, lastSnapshotLSN: snapshotLSN)
        )
        self.state = state
        let (signals, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.wake = wake
        writer = Task {
            for await _ in signals {
                while true {
                    let (batch, first) = state.withLockedValue { s -> ([[UInt8]], UInt64) in
                        defer {
                            s.pending.removeAll()
                            s.pendingFirst = s.nextLSN
                        }
                        return (s.pending, s.pendingFirst)
                    }
                    if batch.isEmpty { break }
                    do {
                        try await log.append(batch, from: first, as: leadership)
                        let ready = state.withLockedValue { s in
                            s.durableLSN = first + UInt64(batch.count) - 1
                            // Under the lock, so that one given after these (run at once) follows them.
                            let due = s.thens.prefix { $0.lsn <= s.durableLSN }
                            for t in due { t.then(.success(t.lsn)) }
                            s.thens.removeFirst(due.count)
                            let done = s.waiters.filter { $0.lsn <= s.durableLSN }
                            s.waiters.removeAll { $0.lsn <= s.durableLSN }
                            return (done, s.durableLSN)
                        }
                        for w in ready.0 { w.continuation.resume(returning: ready.1) }
                    } catch {
                        let failure = WALError(.failed, "etcd did not take the log's records: \(error)")
                        let waiters = state.withLockedValue { s in
                            s.failed = failure
                            for t in s.thens { t.then(.failure(failure)) }
                            s.thens.removeAll()
                            defer { s.waiters.removeAll() }
                            return s.waiters
                        }
                        for w in waiters { w.continuation.resume(throwing: failure) }
                        failed()
                        return
                    }
                }
            }
        }
    }

    func enqueue(_ events: [Event]) throws(WALError) -> WriteAheadLog.Ticket {
        let taken = state.withLockedValue { s -> Result<UInt64, WALError> in
            if let f = s.failed { return .failure(f) }
            if s.closed { return .failure(WALError(.closed, "the log is closed")) }
            if s.pending.isEmpty { s.pendingFirst = s.nextLSN }
            for e in events { s.pending.append(PortableLog.encode(e)) }
            s.nextLSN += UInt64(events.count)
            return .success(s.nextLSN - 1)
        }
        let lsn = try taken.get()
        wake.yield()
        return WriteAheadLog.Ticket(lsn: lsn)
    }

    func waitDurable(_ ticket: WriteAheadLog.Ticket) async throws(WALError) -> UInt64 {
        do {
            return try await withCheckedThrowingContinuation { (c: CheckedContinuation<UInt64, any Error>) in
                let now: Result<UInt64, WALError>? = state.withLockedValue { s in
                    if s.durableLSN >= ticket.lsn { return .success(s.durableLSN) }
                    if let f = s.failed { return .failure(f) }
                    s.waiters.append((ticket.lsn, c))
                    return nil
                }
                switch now {
                case .success(let lsn)?: c.resume(returning: lsn)
                case .failure(let e)?: c.resume(throwing: e)
                case nil: break
                }
            }
        } catch let e as WALError {
            throw e
        } catch {
            throw WALError(.failed, "\(error)")
        }
    }

    func whenDurable(_ ticket: WriteAheadLog.Ticket, _ then: @escaping @Sendable (Result<UInt64, WALError>) -> Void) {
        state.withLockedValue { s in
            if s.thens.isEmpty, s.durableLSN >= ticket.lsn {
                then(.success(ticket.lsn))
            } else if s.thens.isEmpty, let f = s.failed {
                then(.failure(f))
            } else {
                s.thens.append((ticket.lsn, then))
            }
        }
    }

    var lastLSN: UInt64 { state.withLockedValue { $0.nextLSN - 1 } }

    var snapshotDue: Bool {
        state.withLockedValue { Int($0.nextLSN - 1 - $0.lastSnapshotLSN) >= snapshotEveryRecords }
    }

    /// Puts the snapshot, then deletes the records it covers (both fenced), and compacts etcd's history at the
    /// previous snapshot's delete: without it etcd keeps every deleted record's revisions and its database
    /// grows to its quota. One snapshot interval of history stays, for followers' watches that lag.
    func writeSnapshot(_ state: ClusterState, at lsn: UInt64) async throws {
        try await log.putSnapshot(PortableLog.encodeSnapshot(state, at: lsn), at: lsn, as: leadership)
        let revision = try await log.truncate(below: lsn + 1, as: leadership)
        let previous = self.state.withLockedValue { s in
            defer {
                s.lastSnapshotLSN = lsn
                s.compactAt = revision
            }
            return s.compactAt
        }
        if let previous { try? await log.client.compact(revision: previous) }
    }

    func close() {
        state.withLockedValue { $0.closed = true }
        wake.finish()
    }
}

/// The state the log in etcd holds: its newest snapshot and the records after it, applied.
enum EtcdRecovery {
    static func recover(_ log: EtcdLog) async throws -> (state: ClusterState, lastLSN: UInt64, snapshotLSN: UInt64) {
        var state = ClusterState()
        var snapshotLSN: UInt64 = 0
        if let bytes = try await log.snapshot() {
            (snapshotLSN, state) = try PortableLog.decodeSnapshot(bytes)
        }
        var next = snapshotLSN + 1
        // The next batch is read while this one is decoded and applied.
        var reading = Task { [next] in try await log.read(from: next, limit: 4096).records }
        defer { reading.cancel() }
        while true {
            let batch = try await reading.value
            guard let last = batch.last else { break }
            reading = Task { try await log.read(from: last.lsn + 1, limit: 4096).records }
            try state.apply(try events(batch, from: &next))
        }
        return (state, next - 1, snapshotLSN)
    }

    /// A batch of records read from etcd as events; they must start at `next` and leave no gap (`next` then
    /// follows the last).
    static func events(_ batch: [(lsn: UInt64, payload: [UInt8])], from next: inout UInt64) throws -> [Event] {
        var events: [Event] = []
        events.reserveCapacity(batch.count)
        for r in batch {
            guard r.lsn == next else {
                throw WALError(.missing, "the log in etcd jumps from LSN \(next - 1) to \(r.lsn)")
            }
            events.append(try PortableLog.decode(r.payload))
            next += 1
        }
        return events
    }
}
