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
    /// Where the job's standard output and error go (an absolute path, opened as the job's owner); nil: a
    /// per-job log kept by allotd.
    public var output: String?

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
        workingDirectory: String? = nil,
        output: String? = nil
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
        self.output = output
    }

    enum CodingKeys: String, CodingKey {
        case name, tenant, uid, user, kind, priorityClass, gpus, gpuModels, minGPUMemoryGiB, topology, walltime
        case estimate, preemptible, grace, maxCostUSD, prefer, command, environment, workingDirectory
        case output
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
        output = try c.decodeIfPresent(String.self, forKey: .output)
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
    /// A GPU of the job failed, or its node went down.
    case gpuFailed(reason: String)

    public var description: String {
        switch self {
        case .preempted(let by, .priority): "preempted by job \(by)"
        case .preempted(let by, .reservation): "its GPUs were reclaimed for job \(by)'s reservation"
        case .preempted(let by, .inference): "its GPUs were reclaimed from the inference reserve for job \(by)"
        case .preempted(let by, .quota): "its GPUs beyond its tenant's quota were reclaimed for job \(by)"
        case .cancelled(let uid?): "cancelled by uid \(uid)"
        case .cancelled(nil): "cancelled"
        case .walltime: "walltime limit reached"
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
/// never run, like most of a long queue, holds none), copied on write.
struct JobRun: Hashable, Sendable {
    var startTime: Instant?
    var firstStartTime: Instant?
    var endTime: Instant?
    var allocation: Allocation?
    var stopReason: StopReason?
    var stopRequestedAt: Instant?
    var grace: Seconds?
    var exit: ExitStatus?
    var note: String?
    var placement: PlacementNote?
    var loans: [Loan] = []
    var lastCheckpoint: Instant?
    var heldGPUs: [Allocation.Slice] = []
    var runs = 0
    var preemptions = 0
    var pastRunSeconds: Seconds = 0
    var pastGPUSeconds: Double = 0
    var pastCostUSD: Double = 0
    var costRate: Double = 0
    var history: [PastRun] = []

    static let none = JobRun()
}

/// The box of a job's ``JobRun``: shared between copies of the job until one changes it.
final class JobRunBox: @unchecked Sendable {
    var run: JobRun
    init(_ run: JobRun) { self.run = run }
}

/// A job as the state holds it.
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

    /// Start of the current (or last) run.
    public internal(set) var startTime: Instant? {
        get { box?.run.startTime ?? JobRun.none.startTime }
        set { run.startTime = newValue }
    }
    /// Start of the first run.
    public internal(set) var firstStartTime: Instant? {
        get { box?.run.firstStartTime ?? JobRun.none.firstStartTime }
        set { run.firstStartTime = newValue }
    }
    public internal(set) var endTime: Instant? {
        get { box?.run.endTime ?? JobRun.none.endTime }
        set { run.endTime = newValue }
    }
    /// The GPUs held while running or stopping; the last run's GPUs afterwards.
    public internal(set) var allocation: Allocation? {
        get { box?.run.allocation ?? JobRun.none.allocation }
        set { run.allocation = newValue }
    }
    /// Why the job is stopping, or why it stopped.
    /// What is left of a stopping job's grace at `now` (Unix seconds): it is killed after that.
    public func graceLeft(at now: Double) -> Seconds {
        guard let at = stopRequestedAt else { return grace ?? 0 }
        return max(0, at.seconds + (grace ?? 0) - now)
    }

    public internal(set) var stopReason: StopReason? {
        get { box?.run.stopReason ?? JobRun.none.stopReason }
        set { run.stopReason = newValue }
    }
    /// When the stop notice was given, and the grace period.
    public internal(set) var stopRequestedAt: Instant? {
        get { box?.run.stopRequestedAt ?? JobRun.none.stopRequestedAt }
        set { run.stopRequestedAt = newValue }
    }
    public internal(set) var grace: Seconds? {
        get { box?.run.grace ?? JobRun.none.grace }
        set { run.grace = newValue }
    }
    public internal(set) var exit: ExitStatus? {
        get { box?.run.exit ?? JobRun.none.exit }
        set { run.exit = newValue }
    }
    /// A short text on why the job ended as it did, or why it was requeued.
    public internal(set) var note: String? {
        get { box?.run.note ?? JobRun.none.note }
        set { run.note = newValue }
    }
    /// Why the current (or last) run was placed where it is.
    public internal(set) var placement: PlacementNote? {
        get { box?.run.placement ?? JobRun.none.placement }
        set { run.placement = newValue }
    }
    /// What the current run's GPUs were lent by, if anything: such GPUs may be taken back at once.
    public internal(set) var loans: [Loan] {
        get { box?.run.loans ?? JobRun.none.loans }
        set { run.loans = newValue }
    }
    /// When the job last reported a checkpoint; work before it survives a preemption.
    public internal(set) var lastCheckpoint: Instant? {
        get { box?.run.lastCheckpoint ?? JobRun.none.lastCheckpoint }
        set { run.lastCheckpoint = newValue }
    }
    /// GPUs freed for this pending job by the jobs it preempted: held for it, so that nothing else (not even
    /// a requeued victim) takes them, until it starts, is held or is cancelled.
    public internal(set) var heldGPUs: [Allocation.Slice] {
        get { box?.run.heldGPUs ?? JobRun.none.heldGPUs }
        set { run.heldGPUs = newValue }
    }
    /// Number of times the job was started.
    public internal(set) var runs: Int {
        get { box?.run.runs ?? JobRun.none.runs }
        set { run.runs = newValue }
    }
    public internal(set) var preemptions: Int {
        get { box?.run.preemptions ?? JobRun.none.preemptions }
        set { run.preemptions = newValue }
    }
    /// Seconds spent running in runs that are over.
    public internal(set) var pastRunSeconds: Seconds {
        get { box?.run.pastRunSeconds ?? JobRun.none.pastRunSeconds }
        set { run.pastRunSeconds = newValue }
    }
    /// GPU-seconds and cost of runs that are over.
    public internal(set) var pastGPUSeconds: Double {
        get { box?.run.pastGPUSeconds ?? JobRun.none.pastGPUSeconds }
        set { run.pastGPUSeconds = newValue }
    }
    public internal(set) var pastCostUSD: Double {
        get { box?.run.pastCostUSD ?? JobRun.none.pastCostUSD }
        set { run.pastCostUSD = newValue }
    }
    /// The runs that are over while the job went on (preempted, requeued), oldest first; at most
    /// ``PastRun/kept``.
    public internal(set) var history: [PastRun] {
        get { box?.run.history ?? JobRun.none.history }
        set { run.history = newValue }
    }
    /// Price per second of the current run (all its GPUs), 0 when not running.
    public internal(set) var costRate: Double {
        get { box?.run.costRate ?? JobRun.none.costRate }
        set { run.costRate = newValue }
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
        case id, spec, state, submitTime, startTime, firstStartTime, endTime, allocation, stopReason
        case stopRequestedAt, grace, exit, note, placement, loans, lastCheckpoint, heldGPUs, runs, preemptions
        case pastRunSeconds, pastGPUSeconds, pastCostUSD, costRate, history
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(JobID.self, forKey: .id)
        spec = try c.decode(JobSpec.self, forKey: .spec)
        state = try c.decode(JobState.self, forKey: .state)
        submitTime = try c.decode(Instant.self, forKey: .submitTime)
        var r = JobRun()
        r.startTime = try c.decodeIfPresent(Instant.self, forKey: .startTime)
        r.firstStartTime = try c.decodeIfPresent(Instant.self, forKey: .firstStartTime)
        r.endTime = try c.decodeIfPresent(Instant.self, forKey: .endTime)
        r.allocation = try c.decodeIfPresent(Allocation.self, forKey: .allocation)
        r.stopReason = try c.decodeIfPresent(StopReason.self, forKey: .stopReason)
        r.stopRequestedAt = try c.decodeIfPresent(Instant.self, forKey: .stopRequestedAt)
        r.grace = try c.decodeIfPresent(Seconds.self, forKey: .grace)
        r.exit = try c.decodeIfPresent(ExitStatus.self, forKey: .exit)
        r.note = try c.decodeIfPresent(String.self, forKey: .note)
        r.placement = try c.decodeIfPresent(PlacementNote.self, forKey: .placement)
        r.loans = try c.decodeIfPresent([Loan].self, forKey: .loans) ?? []
        r.lastCheckpoint = try c.decodeIfPresent(Instant.self, forKey: .lastCheckpoint)
        r.heldGPUs = try c.decodeIfPresent([Allocation.Slice].self, forKey: .heldGPUs) ?? []
        r.runs = try c.decodeIfPresent(Int.self, forKey: .runs) ?? 0
        r.preemptions = try c.decodeIfPresent(Int.self, forKey: .preemptions) ?? 0
        r.pastRunSeconds = try c.decodeIfPresent(Seconds.self, forKey: .pastRunSeconds) ?? 0
        r.pastGPUSeconds = try c.decodeIfPresent(Double.self, forKey: .pastGPUSeconds) ?? 0
        r.pastCostUSD = try c.decodeIfPresent(Double.self, forKey: .pastCostUSD) ?? 0
        r.costRate = try c.decodeIfPresent(Double.self, forKey: .costRate) ?? 0
        r.history = try c.decodeIfPresent([PastRun].self, forKey: .history) ?? []
        if r != .none { box = JobRunBox(r) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(spec, forKey: .spec)
        try c.encode(state, forKey: .state)
        try c.encode(submitTime, forKey: .submitTime)
        let r = run
        try c.encodeIfPresent(r.startTime, forKey: .startTime)
        try c.encodeIfPresent(r.firstStartTime, forKey: .firstStartTime)
        try c.encodeIfPresent(r.endTime, forKey: .endTime)
        try c.encodeIfPresent(r.allocation, forKey: .allocation)
        try c.encodeIfPresent(r.stopReason, forKey: .stopReason)
        try c.encodeIfPresent(r.stopRequestedAt, forKey: .stopRequestedAt)
        try c.encodeIfPresent(r.grace, forKey: .grace)
        try c.encodeIfPresent(r.exit, forKey: .exit)
        try c.encodeIfPresent(r.note, forKey: .note)
        try c.encodeIfPresent(r.placement, forKey: .placement)
        try c.encode(r.loans, forKey: .loans)
        try c.encodeIfPresent(r.lastCheckpoint, forKey: .lastCheckpoint)
        try c.encode(r.heldGPUs, forKey: .heldGPUs)
        try c.encode(r.runs, forKey: .runs)
        try c.encode(r.preemptions, forKey: .preemptions)
        try c.encode(r.pastRunSeconds, forKey: .pastRunSeconds)
        try c.encode(r.pastGPUSeconds, forKey: .pastGPUSeconds)
        try c.encode(r.pastCostUSD, forKey: .pastCostUSD)
        try c.encode(r.costRate, forKey: .costRate)
        if !r.history.isEmpty { try c.encode(r.history, forKey: .history) }
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
        costRate: Double,
        history: [PastRun] = []
    ) {
        self.id = id
        self.spec = spec
        self.state = state
        self.submitTime = submitTime
        let r = JobRun(
            startTime: startTime,
            firstStartTime: firstStartTime,
            endTime: endTime,
            allocation: allocation,
            stopReason: stopReason,
            stopRequestedAt: stopRequestedAt,
            grace: grace,
            exit: exit,
            note: note,
            placement: placement,
            loans: loans,
            lastCheckpoint: lastCheckpoint,
            heldGPUs: heldGPUs,
            runs: runs,
            preemptions: preemptions,
            pastRunSeconds: pastRunSeconds,
            pastGPUSeconds: pastGPUSeconds,
            pastCostUSD: pastCostUSD,
            costRate: costRate,
            history: history
        )
        if r != .none { box = JobRunBox(r) }
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
