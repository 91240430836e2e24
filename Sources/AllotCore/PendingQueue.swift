/// The pending jobs, kept as compact rows for the scheduler: no strings, no reference-counted fields, so a
/// pass over 100,000 of them reads one contiguous array instead of copying 100,000 jobs out of a dictionary.
///
/// Derived from the jobs: two queues are equal when they hold the same job ids, whatever their row order
/// or interning, so a state rebuilt from a snapshot equals the live one.
public struct PendingQueue: Sendable, Sequence, Hashable {
    /// What the scheduler needs of a pending job.
    struct Row: Sendable {
        var id: JobID
        /// The job's owner.
        var uid: UInt32
        /// Index into `speedTables` for a training job with speeds of its own, else -1 (beside `uid`, where
        /// the row had 4 bytes of padding: a row is read for each of 100,000 queued jobs).
        var speeds: Int32
        var submitTime: Double
        var gpus: Int
        /// The spec's sizes (32 bits each, -1 for none): a row is read for each of 100,000 queued jobs.
        var sizes: JobSpec.Sizes
        /// Thousandths of one GPU's compute for a share; 0 when none is asked.
        var share: Int { Int(Swift.max(sizes.gpuShare, 0)) }
        /// GPU memory for a share, in MiB, or -1.
        var gpuMemoryMiB: Int { Int(sizes.gpuMemoryMiB) }
        /// The job's CPU request in thousandths, or -1 (a share of each node in proportion to its GPUs).
        var cpuMilli: Int { Int(sizes.cpuMilli) }
        /// The job's memory request in MiB, or -1.
        var memoryMiB: Int { Int(sizes.memoryMiB) }
        var kind: JobKind
        var topology: Topology
        /// Index into `tenants`.
        var tenant: Int32
        /// Index into `classes`, or -1 when the job names no class.
        var priorityClass: Int32
        /// Index into `constraints`.
        var constraint: Int32
        /// The job's estimate, else its walltime, else NaN (the config default applies).
        var estimate: Double
        /// The job's walltime limit, or NaN.
        var walltime: Double
        /// NaN when the job has no cost limit.
        var maxCostUSD: Double
        /// The job's own preemptible setting: -1 none (its class decides), 0 no, 1 yes.
        var preemptible: Int8
        /// Whether the job asks for a MIG instance (its profiles are in its spec).
        var isMIG: Bool
        /// Whether the job is elastic (its range is in its spec).
        var elastic: Bool
        /// Points off its priority score.
        var nice: Int16
        var prefer: Preference?
        /// GPU-seconds and seconds of running over the job's past runs (its attained service).
        var attained: Double
        var ran: Double
        /// When it last became pending: the end of its last run, else its submit time.
        var pendingSince: Double

        /// Whether the job asks for a share of one GPU.
        var isShare: Bool { share > 0 || gpuMemoryMiB > 0 }

        /// Thousandths of one GPU of `model` the share takes; 0 for whole GPUs, -1 when the model cannot
        /// hold the share.
        func share(on model: GPUModel) -> Int {
            guard isShare else { return 0 }
            let s = JobSpec.shareMilli(
                compute: share,
                memoryMiB: Swift.max(gpuMemoryMiB, 0),
                modelMemoryGiB: model.memoryGiB
            )
            return s == 0 ? -1 : s
        }

        /// GPUs' worth the job takes on `model`: its share, or its GPU count.
        func worth(on model: GPUModel) -> Double {
            isShare ? Double(Swift.max(share(on: model), 0)) / 1000 : Double(gpus)
        }
    }

    /// A job's model, memory and node constraints, interned.
    struct Constraint: Hashable, Sendable {
        var models: [String]
        var minGPUMemoryGiB: Double?
        var nodes: NodeSelection?
    }

    private(set) var rows: [Row] = []
    private var position: [JobID: Int] = [:]
    /// Interned names; they only grow, bounded by the distinct values ever submitted.
    private(set) var tenants = Interner<String>()
    private(set) var classes = Interner<String>()
    private(set) var constraints = Interner<Constraint>()
    /// Training jobs' own speeds per model (`JobSpec.speeds`).
    private(set) var speedTables = Interner<[String: Double]>()

    public init() {}

    public var count: Int { rows.count }
    public var isEmpty: Bool { rows.isEmpty }
    public func contains(_ id: JobID) -> Bool { position[id] != nil }
    /// A pending job's row.
    func row(_ id: JobID) -> Row? { position[id].map { rows[$0] } }
    /// The ids, in no particular order.
    public var ids: Set<JobID> { Set(position.keys) }

    public func makeIterator() -> some IteratorProtocol<JobID> { rows.lazy.map(\.id).makeIterator() }

    mutating func insert(_ job: Job) {
        guard position[job.id] == nil else { return }
        let spec = job.spec
        let row = Self.row(
            of: job,
            tenant: tenants.intern(spec.tenant),
            priorityClass: spec.priorityClass.map { classes.intern($0) } ?? -1,
            constraint: constraints.intern(
                Constraint(models: spec.gpuModels, minGPUMemoryGiB: spec.minGPUMemoryGiB, nodes: spec.nodes)
            ),
            speeds: spec.kind == .training && !spec.speeds.isEmpty ? speedTables.intern(spec.speeds) : -1
        )
        position[job.id] = rows.count
        rows.append(row)
    }

    /// A job's row, with its tenant, class, constraint and speeds interned (-1: not interned, for a running
    /// job without a node selection, whose row only places it: its constraint admits every node).
    static func row(of job: Job, tenant: Int32, priorityClass: Int32, constraint: Int32, speeds: Int32 = -1) -> Row {
        let spec = job.spec
        return Row(
            id: job.id,
            uid: spec.uid,
            speeds: speeds,
            submitTime: job.submitTime.seconds,
            gpus: spec.gpus,
            sizes: spec.sizes,
            kind: spec.kind,
            topology: spec.topology,
            tenant: tenant,
            priorityClass: priorityClass,
            constraint: constraint,
            estimate: spec.estimate ?? spec.walltime ?? .nan,
            walltime: spec.walltime ?? .nan,
            maxCostUSD: spec.maxCostUSD ?? .nan,
            preemptible: spec.preemptible.map { $0 ? 1 : 0 } ?? -1,
            isMIG: spec.isMIG,
            elastic: spec.isElastic,
            nice: Int16(clamping: spec.nice),
            prefer: spec.prefer,
            attained: job.pastGPUSeconds,
            ran: job.pastRunSeconds,
            pendingSince: job.queuedSince.seconds
        )
    }

    mutating func remove(_ id: JobID) {
        guard let i = position.removeValue(forKey: id) else { return }
        let last = rows.removeLast()
        if i < rows.count {
            rows[i] = last
            position[last.id] = i
        }
    }

    public static func == (a: PendingQueue, b: PendingQueue) -> Bool {
        a.count == b.count && a.position.keys.allSatisfy { b.position[$0] != nil }
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(count) }
}

/// Gives each distinct value a small dense number.
struct Interner<Value: Hashable & Sendable>: Sendable {
    private(set) var values: [Value] = []
    private var index: [Value: Int32] = [:]

    mutating func intern(_ v: Value) -> Int32 {
        if let i = index[v] { return i }
        let i = Int32(values.count)
        values.append(v)
        index[v] = i
        return i
    }

    var count: Int { values.count }
}
