/// A job's number, unique for the life of a state. Numbers start at 1 and are never reused.
public struct JobID: Hashable, Comparable, Codable, Sendable, CustomStringConvertible,
    ExpressibleByIntegerLiteral
{
    public var rawValue: UInt64
    @inlinable public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public init(integerLiteral value: UInt64) { self.rawValue = value }
    @inlinable public static func < (a: JobID, b: JobID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(UInt64.self)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// What a user asks for when submitting a job. The command, environment and working directory are opaque
/// to the core; the executor uses them.
public struct JobSpec: Hashable, Codable, Sendable {
    public var name: String
    public var tenant: String
    /// The uid that submitted the job and owns it.
    public var uid: UInt32
    /// The owner's user name, when known.
    public var user: String?
    public var kind: JobKind
    /// Priority class; nil takes the config's default for the job's kind.
    public var priorityClass: String?
    /// GPUs wanted, all at once (a gang).
    public var gpus: Int
    /// A share of one GPU, in thousandths (1–999; `gpus` is then 1): the job shares that GPU with other
    /// share jobs and is priced by its share. Nil for whole GPUs.
    public var gpuShare: Int? {
        get { Sizes.read(sizes.gpuShare) }
        set { sizes.gpuShare = Sizes.stored(newValue) }
    }
    /// For a share of one GPU: the GPU memory it takes, in MiB (an MPS client's pinned memory limit). The
    /// share is then the larger of `gpuShare` and this memory's part of the GPU's, per model.
    public var gpuMemoryMiB: Int? {
        get { Sizes.read(sizes.gpuMemoryMiB) }
        set { sizes.gpuMemoryMiB = Sizes.stored(newValue) }
    }
    /// CPUs the job needs, in thousandths of a CPU, over all its nodes (split by GPUs taken on each); nil: a
    /// share of each node's CPUs in proportion to the GPUs it takes there.
    public var cpuMilli: Int? {
        get { Sizes.read(sizes.cpuMilli) }
        set { sizes.cpuMilli = Sizes.stored(newValue) }
    }
    /// Memory the job needs, in MiB, over all its nodes (split as CPUs are); nil: a share in proportion to
    /// the GPUs it takes.
    public var memoryMiB: Int? {
        get { Sizes.read(sizes.memoryMiB) }
        set { sizes.memoryMiB = Sizes.stored(newValue) }
    }
    /// The four above, 16 bytes instead of 64: a pending job's spec is held for each of 100,000 queued jobs.
    var sizes = Sizes()
    /// Allowed GPU models; empty allows any model.
    public var gpuModels: [String]
    /// A MIG instance instead of whole GPUs: the acceptable profiles (`1g.10gb`), cheapest first; `gpus` is
    /// then 1. Empty for whole GPUs and shares.
    public var mig: [String]
    /// Minimum memory per GPU, in GiB.
    public var minGPUMemoryGiB: Double?
    public var topology: Topology
    /// The job is stopped when it has run this long.
    public var walltime: Seconds?
    /// Expected run time: for training, seconds of work on a speed-1.0 GPU; for inference, the lifetime of
    /// the service. Used to price placements and plan.
    public var estimate: Seconds?
    /// Whether the job may be preempted; nil takes its class's setting.
    public var preemptible: Bool?
    /// Time between the stop notice (SIGTERM) and the kill; nil takes the config default.
    public var grace: Seconds?
    /// Placements whose estimated cost exceeds this are not used.
    public var maxCostUSD: Double?
    /// How to trade money against time; nil takes the default for the job's kind (training: fastest,
    /// inference: cheapest).
    public var prefer: Preference?
    public var command: [String]
    public var environment: [String: String]
    public var workingDirectory: String?
    /// Where the job's standard output and error go (an absolute path, opened as the job's owner); nil: a
    /// per-job log kept by allotd.
    public var output: String?
    /// What must hold before the job's first start (all of it); empty for none.
    public var dependencies: [Dependency]
    /// The array and index of a task of a job array; nil for a job of its own.
    public var array: ArrayTask?
    /// The nodes the job may run on; nil for any.
    public var nodes: NodeSelection? {
        get { rare?.value.nodes }
        set { changeRare { $0.nodes = newValue } }
    }
    /// Points taken off the job's priority score (Slurm's nice; negative raises it, admins only).
    public var nice: Int {
        get { rare?.value.nice ?? 0 }
        set { changeRare { $0.nice = newValue } }
    }
    /// Who is told when the job starts, ends, fails or is preempted; nil for nobody (its tenant's default
    /// webhook, if any, still applies).
    public var notify: JobNotify? {
        get { rare?.value.notify }
        set { changeRare { $0.notify = newValue } }
    }
    /// For a run attached to its owner's terminal: how.
    public var interactive: Interactive? {
        get { rare?.value.interactive }
        set { changeRare { $0.interactive = newValue } }
    }
    /// The service this job is a replica of; nil for a job of its own.
    public var service: String? {
        get { rare?.value.service }
        set { changeRare { $0.service = newValue } }
    }
    /// The client's id of the submit this job came from: a retry with the same id (by the same user) gets
    /// the jobs it made instead of new ones (docs/ha.md).
    public var requestID: String? {
        get { rare?.value.requestID }
        set { changeRare { $0.requestID = newValue } }
    }
    /// An elastic training job (`--gpus 4-16`): the most GPUs it may grow to (`gpus` is the fewest it
    /// runs with); nil for a job of a fixed size.
    public var maxGPUs: Int? {
        get { rare?.value.maxGPUs }
        set { changeRare { $0.maxGPUs = newValue } }
    }
    /// For an elastic job: the sizes it runs at go from `gpus` up by this many (`--gpus-step`; 1 when nil).
    public var gpuStep: Int? {
        get { rare?.value.gpuStep }
        set { changeRare { $0.gpuStep = newValue } }
    }
    /// A training job's own speed on GPU models, by model name, on the scale of the models' `speed` (work
    /// of D reference-seconds takes D / speed there), for an application that gains more or less from a
    /// model than the pool's figure says (`--speed A100=4.4,T4=1`); a model it does not name keeps its
    /// configured speed. Empty for none.
    public var speeds: [String: Double] {
        get { rare?.value.speeds ?? [:] }
        set { changeRare { $0.speeds = newValue } }
    }
    /// What few jobs set, boxed: one pointer in every spec (a queue holds 100,000 of them).
    private var rare: RareBox?

    private mutating func changeRare(_ change: (inout Rare) -> Void) {
        var r = rare?.value ?? Rare()
        change(&r)
        rare = r == Rare() ? nil : RareBox(r)
    }

    public init(
        name: String = "",
        tenant: String = "default",
        uid: UInt32 = 0,
        user: String? = nil,
        kind: JobKind = .training,
        priorityClass: String? = nil,
        gpus: Int = 1,
        gpuShare: Int? = nil,
        gpuMemoryMiB: Int? = nil,
        cpuMilli: Int? = nil,
        memoryMiB: Int? = nil,
        gpuModels: [String] = [],
        mig: [String] = [],
        minGPUMemoryGiB: Double? = nil,
        topology: Topology = .any,
        walltime: Seconds? = nil,
        estimate: Seconds? = nil,
        preemptible: Bool? = nil,
        grace: Seconds? = nil,
        maxCostUSD: Double? = nil,
        prefer: Preference? = nil,
        command: [String] = [],
        environment: [String: String] = [:],
        workingDirectory: String? = nil,
        output: String? = nil,
        dependencies: [Dependency] = [],
        array: ArrayTask? = nil,
        nodes: NodeSelection? = nil,
        nice: Int = 0,
        notify: JobNotify? = nil,
        interactive: Interactive? = nil,
        service: String? = nil,
        requestID: String? = nil
    ) {
        self.name = name
        self.tenant = tenant
        self.uid = uid
        self.user = user
        self.kind = kind
        self.priorityClass = priorityClass
        self.gpus = gpus
        self.sizes = Sizes(
            gpuShare: Sizes.stored(gpuShare),
            gpuMemoryMiB: Sizes.stored(gpuMemoryMiB),
            cpuMilli: Sizes.stored(cpuMilli),
            memoryMiB: Sizes.stored(memoryMiB)
        )
        self.gpuModels = gpuModels
        self.mig = mig
        self.minGPUMemoryGiB = minGPUMemoryGiB
        self.topology = topology
        self.walltime = walltime
        self.estimate = estimate
        self.preemptible = preemptible
        self.grace = grace
        self.maxCostUSD = maxCostUSD
        self.prefer = prefer
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.output = output
        self.dependencies = dependencies
        self.array = array
        let r = Rare(
            nodes: nodes,
            nice: nice,
            notify: notify,
            interactive: interactive,
            service: service,
            requestID: requestID
        )
        self.rare = r == Rare() ? nil : RareBox(r)
    }

    enum CodingKeys: String, CodingKey {
        case name, tenant, uid, user, kind, priorityClass, gpus, gpuModels, minGPUMemoryGiB, topology, walltime
        case estimate, preemptible, grace, maxCostUSD, prefer, command, environment, workingDirectory
        case output, gpuShare, gpuMemoryMiB, cpuMilli, memoryMiB, mig, dependencies, array, nodes, nice, notify,
            interactive, service, requestID, maxGPUs, gpuStep, speeds
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(tenant, forKey: .tenant)
        try c.encode(uid, forKey: .uid)
        try c.encodeIfPresent(user, forKey: .user)
        try c.encode(kind, forKey: .kind)
        try c.encodeIfPresent(priorityClass, forKey: .priorityClass)
        try c.encode(gpus, forKey: .gpus)
        try c.encodeIfPresent(gpuShare, forKey: .gpuShare)
        try c.encodeIfPresent(gpuMemoryMiB, forKey: .gpuMemoryMiB)
        try c.encodeIfPresent(cpuMilli, forKey: .cpuMilli)
        try c.encodeIfPresent(memoryMiB, forKey: .memoryMiB)
        try c.encode(gpuModels, forKey: .gpuModels)
        if !mig.isEmpty { try c.encode(mig, forKey: .mig) }
        try c.encodeIfPresent(minGPUMemoryGiB, forKey: .minGPUMemoryGiB)
        try c.encode(topology, forKey: .topology)
        try c.encodeIfPresent(walltime, forKey: .walltime)
        try c.encodeIfPresent(estimate, forKey: .estimate)
        try c.encodeIfPresent(preemptible, forKey: .preemptible)
        try c.encodeIfPresent(grace, forKey: .grace)
        try c.encodeIfPresent(maxCostUSD, forKey: .maxCostUSD)
        try c.encodeIfPresent(prefer, forKey: .prefer)
        try c.encode(command, forKey: .command)
        try c.encode(environment, forKey: .environment)
        try c.encodeIfPresent(workingDirectory, forKey: .workingDirectory)
        try c.encodeIfPresent(output, forKey: .output)
        if !dependencies.isEmpty { try c.encode(dependencies, forKey: .dependencies) }
        try c.encodeIfPresent(array, forKey: .array)
        try c.encodeIfPresent(nodes, forKey: .nodes)
        if nice != 0 { try c.encode(nice, forKey: .nice) }
        try c.encodeIfPresent(notify, forKey: .notify)
        try c.encodeIfPresent(interactive, forKey: .interactive)
        try c.encodeIfPresent(service, forKey: .service)
        try c.encodeIfPresent(requestID, forKey: .requestID)
        try c.encodeIfPresent(maxGPUs, forKey: .maxGPUs)
        try c.encodeIfPresent(gpuStep, forKey: .gpuStep)
        if !speeds.isEmpty { try c.encode(speeds, forKey: .speeds) }
    }

    /// Optional sizes in 32 bits each, -1 for none (values beyond 32 bits are clamped: 2 billion MiB or
    /// milli-CPUs is beyond any node).
    struct Sizes: Hashable, Sendable {
        var gpuShare: Int32 = -1
        var gpuMemoryMiB: Int32 = -1
        var cpuMilli: Int32 = -1
        var memoryMiB: Int32 = -1

        static func read(_ v: Int32) -> Int? { v < 0 ? nil : Int(v) }
        /// A negative value is kept as 0, which validation refuses, rather than lost as none.
        static func stored(_ value: Int?) -> Int32 { value.map { Int32(clamping: Swift.max($0, 0)) } ?? -1 }
    }

    /// Decodes leniently: keys added by later versions may be absent from older records.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        tenant = try c.decodeIfPresent(String.self, forKey: .tenant) ?? "default"
        uid = try c.decodeIfPresent(UInt32.self, forKey: .uid) ?? 0
        user = try c.decodeIfPresent(String.self, forKey: .user)
        kind = try c.decodeIfPresent(JobKind.self, forKey: .kind) ?? .training
        priorityClass = try c.decodeIfPresent(String.self, forKey: .priorityClass)
        gpus = try c.decode(Int.self, forKey: .gpus)
        sizes = Sizes(
            gpuShare: Sizes.stored(try c.decodeIfPresent(Int.self, forKey: .gpuShare)),
            gpuMemoryMiB: Sizes.stored(try c.decodeIfPresent(Int.self, forKey: .gpuMemoryMiB)),
            cpuMilli: Sizes.stored(try c.decodeIfPresent(Int.self, forKey: .cpuMilli)),
            memoryMiB: Sizes.stored(try c.decodeIfPresent(Int.self, forKey: .memoryMiB))
        )
        gpuModels = try c.decodeIfPresent([String].self, forKey: .gpuModels) ?? []
        mig = try c.decodeIfPresent([String].self, forKey: .mig) ?? []
        minGPUMemoryGiB = try c.decodeIfPresent(Double.self, forKey: .minGPUMemoryGiB)
        topology = try c.decodeIfPresent(Topology.self, forKey: .topology) ?? .any
        walltime = try c.decodeIfPresent(Double.self, forKey: .walltime)
        estimate = try c.decodeIfPresent(Double.self, forKey: .estimate)
        preemptible = try c.decodeIfPresent(Bool.self, forKey: .preemptible)
        grace = try c.decodeIfPresent(Double.self, forKey: .grace)
        maxCostUSD = try c.decodeIfPresent(Double.self, forKey: .maxCostUSD)
        prefer = try c.decodeIfPresent(Preference.self, forKey: .prefer)
        command = try c.decodeIfPresent([String].self, forKey: .command) ?? []
        environment = try c.decodeIfPresent([String: String].self, forKey: .environment) ?? [:]
        workingDirectory = try c.decodeIfPresent(String.self, forKey: .workingDirectory)
        output = try c.decodeIfPresent(String.self, forKey: .output)
        dependencies = try c.decodeIfPresent([Dependency].self, forKey: .dependencies) ?? []
        array = try c.decodeIfPresent(ArrayTask.self, forKey: .array)
        let r = Rare(
            nodes: try c.decodeIfPresent(NodeSelection.self, forKey: .nodes),
            nice: try c.decodeIfPresent(Int.self, forKey: .nice) ?? 0,
            notify: try c.decodeIfPresent(JobNotify.self, forKey: .notify),
            interactive: try c.decodeIfPresent(Interactive.self, forKey: .interactive),
            service: try c.decodeIfPresent(String.self, forKey: .service),
            requestID: try c.decodeIfPresent(String.self, forKey: .requestID),
            maxGPUs: try c.decodeIfPresent(Int.self, forKey: .maxGPUs),
            gpuStep: try c.decodeIfPresent(Int.self, forKey: .gpuStep),
            speeds: try c.decodeIfPresent([String: Double].self, forKey: .speeds) ?? [:]
        )
        rare = r == Rare() ? nil : RareBox(r)
    }
}

extension JobSpec {
    /// Whether the job is elastic: it runs on any of several sizes from `gpus` to `maxGPUs`.
    public var isElastic: Bool { (maxGPUs ?? gpus) > gpus }

    /// Reads a job's own speeds per model, `A100=4.4,T4=1` (with `separator` between entries): each a
    /// model's name and a speed above 0, each model once.
    public static func parseSpeeds(
        _ text: String,
        separator: Character = ","
    ) -> Result<[String: Double], SpeedsProblem> {
        var out: [String: Double] = [:]
        for part in text.split(separator: separator, omittingEmptySubsequences: false) {
            let pair = part.split(separator: "=", maxSplits: 1).map { String($0.filter { $0 != " " }) }
            guard pair.count == 2, !pair[0].isEmpty else {
                return .failure(
                    SpeedsProblem(
                        message: "expected MODEL=SPEED entries such as A100=4.4\(separator)T4=1, got \"\(part)\""
                    )
                )
            }
            guard let v = Double(pair[1]), v.isFinite, v > 0 else {
                return .failure(
                    SpeedsProblem(message: "the speed on \(pair[0]) must be a number above 0, not \"\(pair[1])\"")
                )
            }
            guard out.updateValue(v, forKey: pair[0]) == nil else {
                return .failure(SpeedsProblem(message: "\(pair[0]) is given twice"))
            }
        }
        return .success(out)
    }

    /// A bad list of speeds, in words.
    public struct SpeedsProblem: Error, Sendable, Hashable {
        public let message: String
    }

    /// The job's speed on `model`: its own for a training job that names the model (`speeds`), else the
    /// model's; 1 for a job of CPUs only (no GPU makes it faster).
    public func speed(on model: GPUModel) -> Double {
        if gpus == 0 { return 1 }
        // Read for every running job in every pass: most jobs have no table, and need no lookup.
        guard kind == .training, let table = rare?.value.speeds, !table.isEmpty else { return model.speed }
        return table[model.name] ?? model.speed
    }

    /// The largest size the job runs at that is at most `n` GPUs (nil when `n` is below its minimum): `gpus`
    /// for a job of fixed size.
    public func size(atMost n: Int) -> Int? {
        guard n >= gpus else { return nil }
        guard let most = maxGPUs, most > gpus else { return gpus }
        let step = Swift.max(1, gpuStep ?? 1)
        return gpus + (Swift.min(n, most) - gpus) / step * step
    }

    /// Whether the job asks for a share of one GPU (of its compute, its memory, or both).
    public var isShare: Bool { gpuShare != nil || gpuMemoryMiB != nil }
    /// Whether the job asks for a MIG instance.
    public var isMIG: Bool { !mig.isEmpty }

    /// The profiles of `model` the job accepts, in its order (empty: none there, or not a MIG job).
    public func migProfiles(on model: GPUModel) -> [MIGProfile] {
        guard let table = model.mig else { return [] }
        return mig.compactMap { table.profile(named: $0) }
    }

    /// The thousandths of one GPU of `model` the job's share takes: the larger of its compute share and its
    /// GPU memory's part of the model's. Nil for whole GPUs; 0 when the model's GPUs cannot hold the share (its
    /// memory is a whole GPU's or more).
    public func shareMilli(on model: GPUModel) -> Int? {
        guard isShare else { return nil }
        return Self.shareMilli(compute: gpuShare ?? 0, memoryMiB: gpuMemoryMiB ?? 0, modelMemoryGiB: model.memoryGiB)
    }

    /// ``shareMilli(on:)`` from the numbers (0 compute or memory: none asked).
    static func shareMilli(compute: Int, memoryMiB: Int, modelMemoryGiB: Double) -> Int {
        let memory = memoryMiB > 0 ? Int((Double(memoryMiB) / (modelMemoryGiB * 1024) * 1000).rounded(.up)) : 0
        let milli = max(compute, memory, 1)
        return milli < 1000 ? milli : 0
    }
}

/// Where a job is in its life.
///
/// ```
/// held ⇄ pending → running → stopping → pending (preempted or requeued, keeping its submit time)
///                     │          └────→ completed | failed | cancelled | timed_out
///                     └───────────────→ completed | failed
/// pending, held → cancelled
/// ```
public enum JobState: String, Codable, Sendable, CaseIterable {
    case pending
    case held
    case running
    /// Told to stop (preempted, cancelled or out of walltime), in its grace period; still holds its GPUs.
    case stopping
    case completed
    case failed
    case cancelled
    case timedOut = "timed_out"

    /// Whether the job is over for good.
    public var isTerminal: Bool {
        switch self {
        case .completed, .failed, .cancelled, .timedOut: true
        case .pending, .held, .running, .stopping: false
        }
    }

    /// Whether the job holds GPUs.
    public var holdsGPUs: Bool { self == .running || self == .stopping }
}

/// How a job's process ended.
public enum ExitStatus: Hashable, Codable, Sendable, CustomStringConvertible {
    case exited(code: Int32)
    case signaled(signal: Int32)
    /// The job was lost without a status (its node went down, its supervisor vanished).
    case lost(reason: String)

    /// The job's command never ran: its user, working directory or command could not be had (no code of
    /// its own to report). Kept as a lost status (the log's schema has no other), told apart by its words.
    public static func couldNotStart(_ problem: String) -> ExitStatus { .lost(reason: notStartedPrefix + problem) }

    static let notStartedPrefix = "could not start: "

    public var description: String {
        switch self {
        case .exited(let code): "exit code \(code)"
        case .signaled(let s): "killed by signal \(s)"
        case .lost(let r): r.hasPrefix(Self.notStartedPrefix) ? r : "lost: \(r)"
        }
    }
}

/// Why a running job was told to stop.
public enum StopReason: Hashable, Codable, Sendable, CustomStringConvertible {
    case preempted(by: JobID, reason: PreemptionReason)
    case cancelled(by: UInt32?)
    case walltime
    /// Stopped to go back to the queue (`allotctl requeue` of a running job), by `by`.
    case requeued(by: UInt32?)
    /// A GPU of the job failed, or its node went down.
    case gpuFailed(reason: String)

    public var description: String {
        switch self {
        case .preempted(let by, .priority): "preempted by job \(by)"
        case .preempted(let by, .reservation): "its GPUs were reclaimed for job \(by)'s reservation"
        case .preempted(let by, .inference): "its GPUs were reclaimed from the inference reserve for job \(by)"
        case .preempted(let by, .quota): "its GPUs beyond its tenant's quota were reclaimed for job \(by)"
        case .preempted(let by, .service):
            "preempted by job \(by), which has used fewer GPU-hours (an earlier attained-service queue)"
        case .preempted(_, .migration): "moved to faster GPUs that came free"
        case .preempted(_, .resize): "resizes: grows into GPUs that came free, or gives back GPUs it grew into"
        case .cancelled(let uid?): "cancelled by uid \(uid)"
        case .cancelled(nil): "cancelled"
        case .walltime: "walltime limit reached"
        case .requeued(let uid?): "requeued by uid \(uid)"
        case .requeued(nil): "requeued"
        case .gpuFailed(let reason): reason
        }
    }
}

/// A run of a job that is over while the job goes on (it was preempted or requeued): its history, for
/// `show`.
public struct PastRun: Hashable, Codable, Sendable {
    public var start: Instant
    public var end: Instant
    /// Where it ran.
    public var allocation: Allocation?
    /// How it ended, e.g. "preempted by job 7; killed by signal 15".
    public var ended: String

    public init(start: Instant, end: Instant, allocation: Allocation?, ended: String) {
        self.start = start
        self.end = end
        self.allocation = allocation
        self.ended = ended
    }

    /// Runs kept per job: the most recent.
    public static let kept = 100
}

/// What a job accumulates once it has started: its runs, stops and costs. Kept out of line (a job that has
/// never run, like most of a long queue, holds none), copied on write. A ``Job`` shows every field as its
/// own (`job.startTime`), read-only outside AllotCore (only the state changes a job, through events).
/// Adding a field is one line here (and its encoding in the WAL's state codec).
public struct JobRun: Hashable, Codable, Sendable {
    /// Start of the current (or last) run.
    public var startTime: Instant?
    /// Start of the first run.
    public var firstStartTime: Instant?
    public var endTime: Instant?
    /// The GPUs held while running or stopping; the last run's GPUs afterwards.
    public var allocation: Allocation?
    /// Why the job is stopping, or why it stopped.
    public var stopReason: StopReason?
    /// When the stop notice was given, and the grace period.
    public var stopRequestedAt: Instant?
    public var grace: Seconds?
    public var exit: ExitStatus?
    /// A short text on why the job ended as it did, or why it was requeued.
    public var note: String?
    /// Why the current (or last) run was placed where it is.
    public var placement: PlacementNote?
    /// What the current run's GPUs were lent by, if anything: such GPUs may be taken back at once.
    public var loans: [Loan] = []
    /// When the job last reported a checkpoint; work before it survives a preemption.
    public var lastCheckpoint: Instant?
    /// GPUs freed for this pending job by the jobs it preempted, or, for a job moving to faster GPUs, those
    /// GPUs: held for it, so that nothing else (not even a requeued victim) takes them, until it starts, is
    /// held or ends.
    public var heldGPUs: [Allocation.Slice] = []
    /// Number of times the job was started.
    public var runs = 0
    /// Number of times it was told to stop for another job (moves not included).
    public var preemptions = 0
    /// Number of times in a row it was moved to faster GPUs (``PreemptionReason/migration``): since it was
    /// last preempted for another job (a run it starts from the queue anew may move again).
    public var moves = 0
    /// Seconds spent running in runs that are over.
    public var pastRunSeconds: Seconds = 0
    /// GPU-seconds and cost of runs that are over.
    public var pastGPUSeconds: Double = 0
    public var pastCostUSD: Double = 0
    /// Price per second of the current run (all its GPUs), 0 when not running.
    public var costRate: Double = 0
    /// The runs that are over while the job went on (preempted, requeued), oldest first; at most
    /// ``PastRun/kept``.
    public var history: [PastRun] = []

    public init() {}

    static let none = JobRun()
}

/// The box of a job's ``JobRun``: shared between copies of the job until one changes it.
final class JobRunBox: @unchecked Sendable {
    var run: JobRun
    init(_ run: JobRun) { self.run = run }
}

/// A job as the state holds it: what it is (id, spec, state, submit time) and, once it has started, its
/// ``JobRun`` record, whose fields read as the job's own.
@dynamicMemberLookup
public struct Job: Hashable, Codable, Sendable {
    public let id: JobID
    public internal(set) var spec: JobSpec
    public internal(set) var state: JobState
    /// When the job was submitted; kept across preemptions so it keeps its place.
    public let submitTime: Instant
    private var box: JobRunBox?

    /// The run record (read).
    var run: JobRun {
        get { box?.run ?? .none }
        _modify {
            if box == nil {
                box = JobRunBox(JobRun())
            } else if !isKnownUniquelyReferenced(&box!) {
                box = JobRunBox(box!.run)
            }
            yield &box!.run
        }
        set {
            if box != nil && isKnownUniquelyReferenced(&box!) {
                box!.run = newValue
            } else {
                box = JobRunBox(newValue)
            }
        }
    }

    /// The run record's fields, read as the job's own (`job.startTime`).
    public subscript<T>(dynamicMember key: KeyPath<JobRun, T>) -> T { (box?.run ?? .none)[keyPath: key] }

    /// … and changed as the job's own, inside AllotCore (`job.startTime = t`), copied on write.
    subscript<T>(dynamicMember key: WritableKeyPath<JobRun, T>) -> T {
        get { (box?.run ?? .none)[keyPath: key] }
        set { run[keyPath: key] = newValue }
    }

    /// What is left of a stopping job's grace at `now` (Unix seconds): it is killed after that.
    public func graceLeft(at now: Double) -> Seconds {
        guard let at = self.stopRequestedAt else { return self.grace ?? 0 }
        return max(0, at.seconds + (self.grace ?? 0) - now)
    }

    init(id: JobID, spec: JobSpec, submitTime: Instant, held: Bool) {
        self.id = id
        self.spec = spec
        self.state = held ? .held : .pending
        self.submitTime = submitTime
    }

    public static func == (a: Job, b: Job) -> Bool {
        a.id == b.id && a.state == b.state && a.submitTime == b.submitTime && a.run == b.run && a.spec == b.spec
    }

    public func hash(into h: inout Hasher) {
        h.combine(id)
        h.combine(spec)
        h.combine(state)
        h.combine(submitTime)
        h.combine(run)
    }

    enum CodingKeys: String, CodingKey {
        case id, spec, state, submitTime, run
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(JobID.self, forKey: .id)
        spec = try c.decode(JobSpec.self, forKey: .spec)
        state = try c.decode(JobState.self, forKey: .state)
        submitTime = try c.decode(Instant.self, forKey: .submitTime)
        if let r = try c.decodeIfPresent(JobRun.self, forKey: .run), r != .none { box = JobRunBox(r) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(spec, forKey: .spec)
        try c.encode(state, forKey: .state)
        try c.encode(submitTime, forKey: .submitTime)
        if let r = box?.run, r != .none { try c.encode(r, forKey: .run) }
    }

    /// A job with its whole record: for decoders of snapshots. Anything else gets jobs from events.
    public init(id: JobID, spec: JobSpec, state: JobState, submitTime: Instant, record: JobRun) {
        self.id = id
        self.spec = spec
        self.state = state
        self.submitTime = submitTime
        if record != .none { box = JobRunBox(record) }
    }

    /// When the job last went into the queue: the end of its last run that is over, else its submit time
    /// (for a running job, when the wait before this run began).
    public var queuedSince: Instant { self.history.last?.end ?? submitTime }

    /// The last checkpoint the current run reported (`allotctl checkpoint`); nil when it reported none, or
    /// the job is not running.
    public var checkpointThisRun: Instant? {
        guard state.holdsGPUs, let c = self.lastCheckpoint, c >= (self.startTime ?? c) else { return nil }
        return c
    }

    /// Seconds spent running up to `now`, over all runs.
    public func runSeconds(at now: Instant) -> Seconds {
        self.pastRunSeconds + (state.holdsGPUs ? max(0, now - (self.startTime ?? now)) : 0)
    }

    /// GPU-seconds used up to `now`, over all runs.
    public func gpuSeconds(at now: Instant) -> Double {
        self.pastGPUSeconds
            + (state.holdsGPUs ? max(0, now - (self.startTime ?? now)) * (self.allocation?.gpuEquivalent ?? 0) : 0)
    }

    /// GPU-seconds of work the current run would lose if stopped at `now`: since its start or its last
    /// checkpoint, whichever is later.
    public func workAtRisk(at now: Instant) -> Double {
        guard state.holdsGPUs, let start = self.startTime else { return 0 }
        let since = max(start, self.lastCheckpoint ?? start)
        return max(0, now - since) * (self.allocation?.gpuEquivalent ?? Double(spec.gpus))
    }

    /// Money spent up to `now`, over all runs.
    public func costUSD(at now: Instant) -> Double {
        self.pastCostUSD + (state.holdsGPUs ? max(0, now - (self.startTime ?? now)) * self.costRate : 0)
    }
}

/// The parts of a spec few jobs set.
struct Rare: Hashable, Sendable {
    var nodes: NodeSelection?
    var nice = 0
    var notify: JobNotify?
    var interactive: Interactive?
    var service: String?
    var requestID: String?
    var maxGPUs: Int?
    var gpuStep: Int?
    var speeds: [String: Double] = [:]
}

/// An immutable box (a change makes a new one), so that specs stay values.
final class RareBox: Hashable, Sendable {
    let value: Rare
    init(_ value: Rare) { self.value = value }
    static func == (a: RareBox, b: RareBox) -> Bool { a === b || a.value == b.value }
    func hash(into hasher: inout Hasher) { hasher.combine(value) }
}

extension Job {
    /// Why the job is stopping or stopped, in words, told apart where the reason alone cannot: an elastic job
    /// grows by itself, and gives back what it grew into for another job.
    public var stopText: String? {
        guard let r = self.stopReason else { return nil }
        if case .preempted(let by, .resize) = r {
            return by == id ? "grows into GPUs that came free" : "gives back GPUs it grew into to job \(by)"
        }
        return r.description
    }
}
