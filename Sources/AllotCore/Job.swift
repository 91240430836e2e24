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

/// Training runs are long, big and can be checkpointed; inference services are latency-critical.
public enum JobKind: String, Codable, Sendable, CaseIterable {
    case training
    case inference
}

/// Where a job's GPUs may be.
public enum Topology: String, Codable, Sendable, CaseIterable {
    /// Anywhere, across nodes if needed (as few nodes as possible).
    case any
    /// All on one node.
    case singleNode = "single-node"
    /// All within one NVLink island of one node.
    case nvlink
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
    /// Allowed GPU models; empty allows any model.
    public var gpuModels: [String]
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

    public init(
        name: String = "",
        tenant: String = "default",
        uid: UInt32 = 0,
        user: String? = nil,
        kind: JobKind = .training,
        priorityClass: String? = nil,
        gpus: Int = 1,
        gpuModels: [String] = [],
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
        workingDirectory: String? = nil
    ) {
        self.name = name
        self.tenant = tenant
        self.uid = uid
        self.user = user
        self.kind = kind
        self.priorityClass = priorityClass
        self.gpus = gpus
        self.gpuModels = gpuModels
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
    }

    enum CodingKeys: String, CodingKey {
        case name, tenant, uid, user, kind, priorityClass, gpus, gpuModels, minGPUMemoryGiB, topology, walltime
        case estimate, preemptible, grace, maxCostUSD, prefer, command, environment, workingDirectory
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
        gpuModels = try c.decodeIfPresent([String].self, forKey: .gpuModels) ?? []
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

    public var description: String {
        switch self {
        case .exited(let code): "exit code \(code)"
        case .signaled(let s): "killed by signal \(s)"
        case .lost(let r): "lost: \(r)"
        }
    }
}

/// Why a running job was told to stop.
public enum StopReason: Hashable, Codable, Sendable, CustomStringConvertible {
    case preempted(by: JobID, reason: PreemptionReason)
    case cancelled(by: UInt32?)
    case walltime

    public var description: String {
        switch self {
        case .preempted(let by, .priority): "preempted by job \(by)"
        case .preempted(let by, .reservation): "its GPUs were reclaimed for job \(by)'s reservation"
        case .preempted(let by, .inference): "its GPUs were reclaimed from the inference reserve for job \(by)"
        case .preempted(let by, .quota): "its GPUs beyond its tenant's quota were reclaimed for job \(by)"
        case .cancelled(let uid?): "cancelled by uid \(uid)"
        case .cancelled(nil): "cancelled"
        case .walltime: "walltime limit reached"
        }
    }
}

/// A job as the state holds it.
public struct Job: Hashable, Codable, Sendable {
    public let id: JobID
    public internal(set) var spec: JobSpec
    public internal(set) var state: JobState
    /// When the job was submitted; kept across preemptions so it keeps its place.
    public let submitTime: Instant
    /// Start of the current (or last) run.
    public internal(set) var startTime: Instant?
    /// Start of the first run.
    public internal(set) var firstStartTime: Instant?
    public internal(set) var endTime: Instant?
    /// The GPUs held while running or stopping; the last run's GPUs afterwards.
    public internal(set) var allocation: Allocation?
    /// Why the job is stopping, or why it stopped.
    public internal(set) var stopReason: StopReason?
    /// When the stop notice was given, and the grace period.
    public internal(set) var stopRequestedAt: Instant?
    public internal(set) var grace: Seconds?
    public internal(set) var exit: ExitStatus?
    /// A short text on why the job ended as it did, or why it was requeued.
    public internal(set) var note: String?
    /// Why the current (or last) run was placed where it is.
    public internal(set) var placement: PlacementNote?
    /// What the current run's GPUs were lent by, if anything: such GPUs may be taken back at once.
    public internal(set) var loans: [Loan] = []
    /// When the job last reported a checkpoint; work before it survives a preemption.
    public internal(set) var lastCheckpoint: Instant?
    /// GPUs freed for this pending job by the jobs it preempted: held for it, so that nothing else (not even
    /// a requeued victim) takes them, until it starts, is held or is cancelled.
    public internal(set) var heldGPUs: [Allocation.Slice] = []
    /// Number of times the job was started.
    public internal(set) var runs: Int
    public internal(set) var preemptions: Int
    /// Seconds spent running in runs that are over.
    public internal(set) var pastRunSeconds: Seconds
    /// GPU-seconds and cost of runs that are over.
    public internal(set) var pastGPUSeconds: Double
    public internal(set) var pastCostUSD: Double
    /// Price per second of the current run (all its GPUs), 0 when not running.
    public internal(set) var costRate: Double

    init(id: JobID, spec: JobSpec, submitTime: Instant, held: Bool) {
        self.id = id
        self.spec = spec
        self.state = held ? .held : .pending
        self.submitTime = submitTime
        self.runs = 0
        self.preemptions = 0
        self.pastRunSeconds = 0
        self.pastGPUSeconds = 0
        self.pastCostUSD = 0
        self.costRate = 0
    }

    /// A job with every field given: for decoders of snapshots. Anything else gets jobs from events.
    public init(
        id: JobID,
        spec: JobSpec,
        state: JobState,
        submitTime: Instant,
        startTime: Instant?,
        firstStartTime: Instant?,
        endTime: Instant?,
        allocation: Allocation?,
        stopReason: StopReason?,
        stopRequestedAt: Instant?,
        grace: Seconds?,
        exit: ExitStatus?,
        note: String?,
        placement: PlacementNote? = nil,
        loans: [Loan] = [],
        lastCheckpoint: Instant? = nil,
        heldGPUs: [Allocation.Slice] = [],
        runs: Int,
        preemptions: Int,
        pastRunSeconds: Seconds,
        pastGPUSeconds: Double,
        pastCostUSD: Double,
        costRate: Double
    ) {
        self.id = id
        self.spec = spec
        self.state = state
        self.submitTime = submitTime
        self.startTime = startTime
        self.firstStartTime = firstStartTime
        self.endTime = endTime
        self.allocation = allocation
        self.stopReason = stopReason
        self.stopRequestedAt = stopRequestedAt
        self.grace = grace
        self.exit = exit
        self.note = note
        self.placement = placement
        self.loans = loans
        self.lastCheckpoint = lastCheckpoint
        self.heldGPUs = heldGPUs
        self.runs = runs
        self.preemptions = preemptions
        self.pastRunSeconds = pastRunSeconds
        self.pastGPUSeconds = pastGPUSeconds
        self.pastCostUSD = pastCostUSD
        self.costRate = costRate
    }

    /// Seconds spent running up to `now`, over all runs.
    public func runSeconds(at now: Instant) -> Seconds {
        pastRunSeconds + (state.holdsGPUs ? max(0, now - (startTime ?? now)) : 0)
    }

    /// GPU-seconds used up to `now`, over all runs.
    public func gpuSeconds(at now: Instant) -> Double {
        pastGPUSeconds
            + (state.holdsGPUs ? max(0, now - (startTime ?? now)) * Double(allocation?.gpuCount ?? 0) : 0)
    }

    /// GPU-seconds of work the current run would lose if stopped at `now`: since its start or its last
    /// checkpoint, whichever is later.
    public func workAtRisk(at now: Instant) -> Double {
        guard state.holdsGPUs, let start = startTime else { return 0 }
        let since = max(start, lastCheckpoint ?? start)
        return max(0, now - since) * Double(allocation?.gpuCount ?? spec.gpus)
    }

    /// Money spent up to `now`, over all runs.
    public func costUSD(at now: Instant) -> Double {
        pastCostUSD + (state.holdsGPUs ? max(0, now - (startTime ?? now)) * costRate : 0)
    }
}
