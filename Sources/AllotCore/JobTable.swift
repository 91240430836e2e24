/// Every job of a state, stored densely by id: ids are handed out in order from 1, so job `id` lives at
/// position `id - 1`, in chunks of 1,024 so that growing never moves the jobs already stored. Lookups are an
/// index computation; ``subscript(existing:)`` reads or changes a job in place instead of copying it out and
/// back (a `Job` is over 400 bytes), which is what makes replaying a million events fast.
public struct JobTable: Sendable, Hashable, Sequence {
    /// The most a submitted id may run ahead of the highest id so far: ids are dense, not arbitrary.
    public static let maxIDGap: UInt64 = 1 << 20
    private static let chunkBits: UInt64 = 10
    private static let chunkSize = 1 << chunkBits
    /// What empty slots hold.
    private static let vacant = Job(id: JobID(0), spec: JobSpec(), submitTime: .zero, held: false)

    private var chunks: [[Job]] = []
    /// Bit set: the slot holds a job.
    private var present: [UInt64] = []
    public private(set) var count = 0

    public init() {}

    @inline(__always) private func slot(_ id: JobID) -> (c: Int, j: Int, i: Int)? {
        guard id.rawValue > 0 else { return nil }
        let i = id.rawValue - 1
        let c = Int(i >> Self.chunkBits)
        guard c < chunks.count, present[Int(i >> 6)] & (1 << (i & 63)) != 0 else { return nil }
        return (c, Int(i & UInt64(Self.chunkSize - 1)), Int(i))
    }

    /// The job with that id, if any (a copy).
    public subscript(id: JobID) -> Job? {
        get {
            guard let s = slot(id) else { return nil }
            return chunks[s.c][s.j]
        }
        set {
            guard let job = newValue else {
                if let s = slot(id) {
                    chunks[s.c][s.j] = Self.vacant
                    present[s.i >> 6] &= ~(1 << UInt64(s.i & 63))
                    count -= 1
                    // A chunk left empty (its jobs archived) gives its memory back.
                    let words = Self.chunkSize / 64
                    if present[(s.c * words)..<((s.c + 1) * words)].allSatisfy({ $0 == 0 }) { chunks[s.c] = [] }
                }
                return
            }
            precondition(job.id == id, "a job is stored under its own id")
            insert(job)
        }
    }

    /// The job with that id, which must exist: read or changed in place.
    subscript(existing id: JobID) -> Job {
        _read {
            let s = slot(id)!
            yield chunks[s.c][s.j]
        }
        _modify {
            let s = slot(id)!
            yield &chunks[s.c][s.j]
        }
    }

    /// Whether a job with that id exists.
    public func contains(_ id: JobID) -> Bool { slot(id) != nil }

    /// Whether an id may be added: positive, and not far beyond the ids so far.
    func accepts(_ id: JobID) -> Bool {
        id.rawValue > 0 && id.rawValue - 1 < UInt64(chunks.count * Self.chunkSize) + Self.maxIDGap
    }

    private mutating func insert(_ job: Job) {
        precondition(accepts(job.id), "job id \(job.id) is outside the table")
        let i = Int(job.id.rawValue - 1)
        let c = i >> Int(Self.chunkBits)
        while chunks.count <= c {
            chunks.append([Job](repeating: Self.vacant, count: Self.chunkSize))
            present.append(contentsOf: repeatElement(0, count: Self.chunkSize / 64))
        }
        if chunks[c].isEmpty { chunks[c] = [Job](repeating: Self.vacant, count: Self.chunkSize) }
        let bit: UInt64 = 1 << UInt64(i & 63)
        if present[i >> 6] & bit == 0 { count += 1 }
        present[i >> 6] |= bit
        chunks[c][i & (Self.chunkSize - 1)] = job
    }

    public var isEmpty: Bool { count == 0 }

    /// Chunks holding memory (those with at least one job since they were last emptied).
    var storedChunks: Int { chunks.reduce(0) { $0 + ($1.isEmpty ? 0 : 1) } }

    /// Job ids, ascending.
    public var keys: [JobID] { map(\.id) }

    /// Jobs, ascending by id.
    public var values: [Job] { Array(self) }

    public func makeIterator() -> some IteratorProtocol<Job> {
        let present = self.present
        let chunks = self.chunks
        // Chunk by chunk: an emptied chunk holds no slots at all.
        return chunks.indices.lazy.flatMap { c in
            chunks[c].indices.lazy.filter { j in
                let i = c << Int(Self.chunkBits) + j
                return present[i >> 6] & (1 << UInt64(i & 63)) != 0
            }
            .map { chunks[c][$0] }
        }
        .makeIterator()
    }

    public static func == (a: JobTable, b: JobTable) -> Bool {
        a.count == b.count && a.elementsEqual(b)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(count) }
}
