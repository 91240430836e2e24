import AllotCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The write-ahead log of a state directory: appends events durably (group commit), writes snapshots, and
/// recovers the state at open. See docs/wal-format.md.
///
/// Appends may come from any task or thread. One writer thread takes everything queued, writes it with one
/// `pwrite` and syncs it with one `fdatasync`; every caller whose record was in that batch then resumes.
public final class WriteAheadLog: @unchecked Sendable {
    /// When appends are synced.
    public enum SyncPolicy: String, Sendable, CaseIterable, Codable {
        /// Each append is written and synced on its own before the next.
        case always
        /// Group commit: appends queued while a sync runs share the next one (the default).
        case batch
        /// Never synced: tests and simulations only.
        case never
    }

    public struct Options: Sendable, Hashable {
        public var sync: SyncPolicy = .batch
        /// A new segment is started when the current one reaches this size.
        public var segmentSize = 64 << 20
        /// ``snapshotDue`` turns true after this many records since the last snapshot…
        public var snapshotEveryRecords = 100_000
        /// … or this many bytes.
        public var snapshotEveryBytes = 256 << 20
        /// Cut the log at damage before its tail instead of refusing to open.
        public var repair = false

        public init() {}
    }

    /// How one group commit went: for metrics.
    public struct WriteTiming: Sendable {
        /// Records and bytes in the batch.
        public var records: Int
        public var bytes: Int
        /// Seconds in write(2) and in fdatasync(2). (Not reported with `sync = never`.)
        public var writeSeconds: Double
        public var syncSeconds: Double
    }

    /// What ``enqueue(_:)`` hands back: the LSN of the last record, to wait on with ``waitDurable(_:)``.
    public struct Ticket: Sendable, Hashable {
        public var lsn: UInt64
        var generation: UInt64

        /// A ticket of another log that hands them out the same way (the log in etcd).
        public init(lsn: UInt64, generation: UInt64 = 0) {
            self.lsn = lsn
            self.generation = generation
        }
    }

    public let directory: String
    public let options: Options
    private let dir: LogDirectory
    private let lock: DirectoryLock
    private let cond = NSCondition()

    // Guarded by `cond`.
    private var nextLSN: UInt64
    private var durable: UInt64
    /// Encoded records not yet handed to the writer, grouped by enqueue call.
    private var queued: [(bytes: [UInt8], last: UInt64)] = []
    private var waiters:
        [(lsn: UInt64, generation: UInt64, resume: CheckedContinuation<Result<UInt64, WALError>, Never>)] = []
    /// ``whenDurable(_:_:)``'s not yet run, in ticket order.
    private var thens: [(ticket: Ticket, then: @Sendable (Result<UInt64, WALError>) -> Void)] = []
    /// Bumped when queued records are abandoned after a write error, so that their LSNs can be reused.
    private var generation: UInt64 = 0
    /// For each ended generation, the durable LSN when it ended: its tickets beyond it were abandoned.
    private var generationEnd: [UInt64: UInt64] = [:]
    private var lastError: WALError?
    /// Set after a failed sync: the log takes no more appends.
    private var failed: WALError?
    private var closing = false
    private var writerDone = false
    private var segments: [LogDirectory.Segment]
    private var snapshotLSNs: [UInt64]
    private var lastSnapshotLSN: UInt64
    private var bytesWritten = 0
    private var bytesAtSnapshot = 0
    private var observer: (@Sendable (WriteTiming) -> Void)?

    // Owned by the writer (or by `enqueue` under `cond` with `.never`).
    private var segmentFD: Int32 = -1
    private var segment: LogDirectory.Segment
    private var segmentSize: Int

    /// Opens (creating if needed) the log in `directory`, takes its lock and recovers the state.
    /// - Returns: the log, ready for appends, and what recovery found.
    /// - Throws: ``WALError``: `.locked` when another process holds the directory, `.corrupt` or `.missing`
    ///   when the log is damaged before its tail (see docs/wal-format.md), `.io` on system errors.
    public static func open(
        directory: String,
        options: Options = Options()
    ) throws(WALError) -> (WriteAheadLog, RecoveryReport) {
        let lock = try DirectoryLock(directory: directory)
        let dir = LogDirectory(root: directory)
        let report = try dir.recover(mode: options.repair ? .repair : .recover)
        let log = try WriteAheadLog(directory: directory, options: options, dir: dir, lock: lock, report: report)
        return (log, report)
    }

    private init(
        directory: String,
        options: Options,
        dir: LogDirectory,
        lock: DirectoryLock,
        report: RecoveryReport
    ) throws(WALError) {
        self.directory = directory
        self.options = options
        self.dir = dir
        self.lock = lock
        nextLSN = report.lastLSN + 1
        durable = report.lastLSN
        lastSnapshotLSN = report.snapshotLSN
        bytesWritten = report.replayedBytes
        do {
            segments = try dir.segments()
            snapshotLSNs = try dir.snapshots().map(\.lsn)
            if let last = report.lastSegment {
                segment = last
                segmentSize = report.lastSegmentSize
                segmentFD = try FileIO.open(last.path, O_WRONLY)
            } else {
                let seq = (segments.last?.sequence ?? 0) + 1
                segment = LogDirectory.Segment(sequence: 0, firstLSN: 0, name: "", path: "")
                segmentSize = 0
                (segment, segmentFD) = try Self.createSegment(dir, sequence: seq, firstLSN: nextLSN)
                segments.append(segment)
                segmentSize = WALFormat.segmentHeaderSize
            }
        } catch {
            throw WALError(error)
        }
        if options.sync != .never {
            let thread = Thread { [self] in writerLoop() }
            thread.name = "allot-wal-writer"
            thread.start()
        }
    }

    // MARK: Appending

    /// Appends events and returns when they are durable (per the sync policy).
    /// - Returns: the LSN of the last event.
    /// - Throws: ``WALError``: `.io` when the write failed (nothing of it will be read back), `.failed`
    ///   after an earlier failed sync, `.closed` after ``close()``.
    @discardableResult
    public func append(_ events: [Event]) async throws(WALError) -> UInt64 {
        let ticket = try enqueue(events)
        return try await waitDurable(ticket)
    }

    /// Appends one event and returns when it is durable.
    @discardableResult
    public func append(_ event: Event) async throws(WALError) -> UInt64 { try await append([event]) }

    /// Queues events and gives them their LSNs at once, in call order, without waiting for the disk; wait
    /// with ``waitDurable(_:)`` before acknowledging them. This lets a single owner of the state append in
    /// order while many acknowledgements wait for the same sync.
    public func enqueue(_ events: [Event]) throws(WALError) -> Ticket {
        let payloads = events.map { EventCodec.encode($0) }
        cond.lock()
        defer { cond.unlock() }
        if closing { throw WALError(.closed, "the log is closed") }
        if let failed { throw failed }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(payloads.reduce(0) { $0 + $1.count + WALFormat.recordHeaderSize })
        for p in payloads {
            guard p.count <= WALFormat.maxRecordSize else {
                throw WALError(
                    .io,
                    "an event of \(p.count) bytes exceeds the largest record (\(WALFormat.maxRecordSize) bytes)"
                )
            }
            WALFormat.appendRecord(lsn: nextLSN, committed: durable, payload: p, to: &bytes)
            nextLSN += 1
        }
        let ticket = Ticket(lsn: nextLSN - 1, generation: generation)
        if bytes.isEmpty { return ticket }
        if options.sync == .never {
            // Written at once, never synced.
            do throws(SystemError) {
                try rollIfFull(firstLSN: ticket.lsn - UInt64(events.count) + 1)
                try FileIO.pwriteAll(segmentFD, bytes, at: segmentSize, path: segment.path)
                segmentSize += bytes.count
                bytesWritten += bytes.count
                durable = ticket.lsn
            } catch {
                nextLSN = durable + 1
                generationEnd[generation] = durable
                generation += 1
                try? FileIO.truncate(segmentFD, to: segmentSize, path: segment.path)
                throw WALError(
                    .io,
                    "cannot append to the log: \(error); nothing of this append was kept",
                    file: segment.path
                )
            }
            return ticket
        }
        queued.append((bytes, ticket.lsn))
        cond.broadcast()
        return ticket
    }

    /// Waits until the records up to a ticket's LSN are durable.
    /// - Throws: ``WALError`` when they were abandoned after a write error, or the log failed or closed.
    @discardableResult
    public func waitDurable(_ ticket: Ticket) async throws(WALError) -> UInt64 {
        let result = await withCheckedContinuation { (c: CheckedContinuation<Result<UInt64, WALError>, Never>) in
            cond.lock()
            defer { cond.unlock() }
            if let outcome = outcome(ticket) {
                c.resume(returning: outcome)
            } else {
                waiters.append((ticket.lsn, ticket.generation, c))
            }
        }
        return try result.get()
    }

    /// Calls `then` once the records up to `ticket` are durable (or abandoned): at once when they already are,
    /// else on the writer's thread right after their sync, before ``waitDurable(_:)``'s waiters resume. Calls
    /// run in ticket order, so answers queued this way go out in the order they were queued — without a hop
    /// to another task for each. `then` must be quick and must not call into the log. Tickets must be given
    /// in the order ``enqueue(_:)`` handed them out.
    public func whenDurable(_ ticket: Ticket, _ then: @escaping @Sendable (Result<UInt64, WALError>) -> Void) {
        cond.lock()
        defer { cond.unlock() }
        if thens.isEmpty, let outcome = outcome(ticket) {
            then(outcome)
        } else {
            thens.append((ticket, then))
        }
    }

    /// Appends and waits on the calling thread (tools and tests; not from an async context).
    @discardableResult
    public func appendBlocking(_ events: [Event]) throws(WALError) -> UInt64 {
        let ticket = try enqueue(events)
        cond.lock()
        defer { cond.unlock() }
        while true {
            if let outcome = outcome(ticket) { return try outcome.get() }
            cond.wait()
        }
    }

    /// The result for a ticket, if it is known. Call with `cond` held.
    private func outcome(_ t: Ticket) -> Result<UInt64, WALError>? {
        if t.generation < generation {
            // Records of an ended generation are durable only up to where it ended; LSNs after that were
            // abandoned (and may since have been given to other records).
            if t.lsn <= generationEnd[t.generation, default: 0] { return .success(t.lsn) }
            return .failure(lastError ?? WALError(.io, "the append was abandoned after a write error"))
        }
        if t.lsn <= durable { return .success(t.lsn) }
        if let failed { return .failure(failed) }
        if writerDone { return .failure(WALError(.closed, "the log closed before the append was durable")) }
        return nil
    }

    /// The LSN of the last record appended (durable or not).
    public var lastLSN: UInt64 {
        cond.lock()
        defer { cond.unlock() }
        return nextLSN - 1
    }

    /// The LSN up to which records are durable.
    public var durableLSN: UInt64 {
        cond.lock()
        defer { cond.unlock() }
        return durable
    }

    /// The error that stopped the log taking appends, if any.
    public var failure: WALError? {
        cond.lock()
        defer { cond.unlock() }
        return failed
    }

    // MARK: The writer

    private func writerLoop() {
        cond.lock()
        while true {
            while queued.isEmpty && !closing { cond.wait() }
            if queued.isEmpty && closing { break }
            let batch: [(bytes: [UInt8], last: UInt64)]
            if options.sync == .always {
                batch = [queued.removeFirst()]
            } else {
                batch = queued
                queued.removeAll(keepingCapacity: true)
            }
            let batchGeneration = generation
            cond.unlock()
            let result = write(batch)
            cond.lock()
            switch result {
            case .success(let last):
                if batchGeneration == generation { durable = max(durable, last) }
            case .failure(let f):
                lastError = f.error
                if f.permanent { failed = f.error }
                // Everything not durable is abandoned, so that LSNs stay without gaps.
                queued.removeAll()
                nextLSN = durable + 1
                generationEnd[generation] = durable
                generation += 1
            }
            resumeWaiters()
            cond.broadcast()
        }
        writerDone = true
        resumeWaiters()
        cond.broadcast()
        cond.unlock()
    }

    /// Runs the ``whenDurable(_:_:)`` calls and resumes every waiter whose outcome is known. Call with
    /// `cond` held.
    private func resumeWaiters() {
        // Those left are the ones queued during this sync: few.
        var ran = 0
        while ran < thens.count, let outcome = outcome(thens[ran].ticket) {
            thens[ran].then(outcome)
            ran += 1
        }
        thens.removeFirst(ran)
        var keep: [(lsn: UInt64, generation: UInt64, resume: CheckedContinuation<Result<UInt64, WALError>, Never>)] = []
        for w in waiters {
            if let outcome = outcome(Ticket(lsn: w.lsn, generation: w.generation)) {
                w.resume.resume(returning: outcome)
            } else {
                keep.append(w)
            }
        }
        waiters = keep
    }

    /// Writes a batch to the current segment (starting a new one first if it is full) with one write and
    /// one sync. Runs on the writer thread without `cond`.
    private func write(_ batch: [(bytes: [UInt8], last: UInt64)]) -> Result<UInt64, WriteFailure> {
        var bytes = batch[0].bytes
        for b in batch.dropFirst() { bytes.append(contentsOf: b.bytes) }
        let firstLSN = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian }
        do {
            try rollIfFull(firstLSN: firstLSN)
        } catch {
            return .failure(
                WriteFailure(
                    error: WALError(.io, "cannot start a new log segment: \(error)", file: dir.walDir),
                    permanent: false
                )
            )
        }
        let start = segmentSize
        let t0 = ContinuousClock.now
        do {
            try FileIO.pwriteAll(segmentFD, bytes, at: start, path: segment.path)
        } catch {
            // Cut what part of the batch reached the file, so nothing half-written is ever read back.
            do {
                try FileIO.truncate(segmentFD, to: start, path: segment.path)
                try FileIO.fdatasync(segmentFD, path: segment.path)
            } catch {
                return .failure(
                    WriteFailure(
                        error: WALError(
                            .failed,
                            "cannot append to the log: \(error); it refuses changes until allotd restarts",
                            file: segment.path
                        ),
                        permanent: true
                    )
                )
            }
            return .failure(
                WriteFailure(
                    error: WALError(
                        .io,
                        "cannot append to the log: \(error); nothing of this append was kept",
                        file: segment.path,
                        offset: start
                    ),
                    permanent: false
                )
            )
        }
        let t1 = ContinuousClock.now
        do {
            try FileIO.fdatasync(segmentFD, path: segment.path)
        } catch {
            // After a failed sync the kernel may have dropped the pages: a retry could "succeed" on data that
            // is gone. Stop taking appends; recovery at the next start reads what really is on disk.
            return .failure(
                WriteFailure(
                    error: WALError(
                        .failed,
                        "cannot sync the log: \(error); it refuses changes until allotd restarts",
                        file: segment.path,
                        offset: start
                    ),
                    permanent: true
                )
            )
        }
        let t2 = ContinuousClock.now
        segmentSize = start + bytes.count
        cond.lock()
        bytesWritten += bytes.count
        let observer = self.observer
        cond.unlock()
        observer?(
            WriteTiming(
                records: Int(batch.last!.last - firstLSN + 1),
                bytes: bytes.count,
                writeSeconds: Self.seconds(t1 - t0),
                syncSeconds: Self.seconds(t2 - t1)
            )
        )
        return .success(batch.last!.last)
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// Calls `observer` on the writer thread after each batch is durable (keep it quick).
    public func observeWrites(_ observer: @escaping @Sendable (WriteTiming) -> Void) {
        cond.lock()
        self.observer = observer
        cond.unlock()
    }

    /// Starts a new segment when the current one is full; the full one is synced first, so damage in any
    /// segment but the last is always corruption. Writer-side only.
    private func rollIfFull(firstLSN: UInt64) throws(SystemError) {
        guard segmentSize >= options.segmentSize else { return }
        if options.sync != .never { try FileIO.fdatasync(segmentFD, path: segment.path) }
        let (next, fd) = try Self.createSegment(dir, sequence: segment.sequence + 1, firstLSN: firstLSN)
        FileIO.close(segmentFD)
        segmentFD = fd
        segment = next
        segmentSize = WALFormat.segmentHeaderSize
        if options.sync == .never {
            segments.append(next)
        } else {
            cond.lock()
            segments.append(next)
            cond.unlock()
        }
    }

    private static func createSegment(
        _ dir: LogDirectory,
        sequence: UInt64,
        firstLSN: UInt64
    ) throws(SystemError) -> (LogDirectory.Segment, Int32) {
        let name = WALFormat.segmentName(sequence: sequence, firstLSN: firstLSN)
        let path = dir.walDir + "/" + name
        try FileIO.writeAtomically(
            WALFormat.segmentHeader(sequence: sequence, firstLSN: firstLSN),
            to: path,
            directory: dir.walDir
        )
        let fd = try FileIO.open(path, O_WRONLY)
        return (LogDirectory.Segment(sequence: sequence, firstLSN: firstLSN, name: "wal/" + name, path: path), fd)
    }

    struct WriteFailure: Error {
        var error: WALError
        /// After a failed sync: the log must take no more appends.
        var permanent: Bool
    }

    // MARK: Snapshots

    /// Whether enough has been appended since the last snapshot that one should be taken.
    public var snapshotDue: Bool {
        cond.lock()
        defer { cond.unlock() }
        return Int(nextLSN - 1 - lastSnapshotLSN) >= options.snapshotEveryRecords
            || bytesWritten - bytesAtSnapshot >= options.snapshotEveryBytes
    }

    /// Writes a snapshot of `state`, which must hold every record up to `lsn` and none after, then removes
    /// snapshots but the two newest and the segments wholly before the older of those two. Blocks while it
    /// encodes and writes; call it off the state owner's task.
    /// - Throws: ``WALError`` on a write error (the previous snapshots stay in place).
    public func writeSnapshot(_ state: ClusterState, at lsn: UInt64) throws(WALError) {
        let bytes = SnapshotFile.encode(state.image, lsn: lsn)
        let name = WALFormat.snapshotName(lsn: lsn)
        do {
            try FileIO.writeAtomically(bytes, to: dir.snapDir + "/" + name, directory: dir.snapDir)
        } catch {
            throw WALError(.io, "cannot write snapshot snap/\(name): \(error)", file: dir.snapDir + "/" + name)
        }
        cond.lock()
        if !snapshotLSNs.contains(lsn) { snapshotLSNs.append(lsn) }
        snapshotLSNs.sort(by: >)
        let drop = Array(snapshotLSNs.dropFirst(2))
        snapshotLSNs = Array(snapshotLSNs.prefix(2))
        // Segments go only once two snapshots exist, so the older one can stand in for a damaged newer one.
        let keepFrom = snapshotLSNs.count >= 2 ? snapshotLSNs[1] : 0
        lastSnapshotLSN = max(lastSnapshotLSN, lsn)
        bytesAtSnapshot = bytesWritten
        // Segment i holds LSNs firstLSN ..< segments[i + 1].firstLSN; it can go when all of them are at or
        // before the older kept snapshot. The current segment always stays.
        var removable: [LogDirectory.Segment] = []
        while segments.count > 1 && segments[1].firstLSN <= keepFrom + 1 {
            removable.append(segments.removeFirst())
        }
        cond.unlock()
        do {
            for old in drop { try FileIO.remove(dir.snapDir + "/" + WALFormat.snapshotName(lsn: old)) }
            for s in removable { try FileIO.remove(s.path) }
            if !drop.isEmpty { try FileIO.syncDirectory(dir.snapDir) }
            if !removable.isEmpty { try FileIO.syncDirectory(dir.walDir) }
        } catch {
            throw WALError(.io, "snapshot snap/\(name) is written, but removing old files failed: \(error)")
        }
    }

    // MARK: Closing

    /// Writes and syncs everything queued, stops the writer and releases the directory lock. Appends after
    /// this fail with `.closed`. Blocks until the writer is done.
    public func close() {
        cond.lock()
        if closing {
            cond.unlock()
            return
        }
        closing = true
        cond.broadcast()
        if options.sync == .never { writerDone = true }
        while !writerDone { cond.wait() }
        resumeWaiters()
        if segmentFD >= 0 {
            if options.sync != .never { try? FileIO.fdatasync(segmentFD, path: segment.path) }
            FileIO.close(segmentFD)
            segmentFD = -1
        }
        cond.unlock()
        lock.close()
    }

    deinit {
        if segmentFD >= 0 { FileIO.close(segmentFD) }
    }
}
