/// The multifactor priority of pending jobs.
///
/// Jobs are ordered by class value (strictly: a higher class always goes first), then inference before
/// training, then (policy `allot`, training) by attained-service queue — fewer GPU-hours used first, see
/// ``SchedulerSettings/serviceQueues`` — then by a score, then by submit time and id. The score sums weighted factors, each in 0...1:
/// - age: time waited over `max_age`;
/// - fair share: `2^(−(u/U)/(s/S))`, where u is the tenant's usage decayed with the half-life, U all
///   tenants' usage, s the tenant's shares and S all shares (1 for a tenant with no recent usage);
/// - size: `1 − log2(work)/log2(pool work)` favouring small jobs (work: GPUs × expected minutes; pool work:
///   its GPU-minutes in 30 days), or its complement favouring large ones;
/// and, with policy `allot`, a tenant past a soft budget loses `over_budget_penalty`.
public struct Priority: Hashable, Sendable, Comparable {
    public var classValue: Int
    /// 0 for inference, 1 for training: inference first at equal class.
    public var kindRank: Int
    /// The attained-service queue (0 first; -1 for a job promoted for waiting too long; 0 for everyone
    /// without queues).
    public var queue: Int32 = 0
    public var score: Double
    public var submitTime: Double
    public var id: JobID
    /// Position of the job's row in the pending queue, for the pass that computed it.
    var slot: Int = 0
    /// The row's GPUs, constraint and topology, carried along so that the pass can report a job waiting
    /// for GPUs without reading its row again (rows are visited in priority order, not memory order).
    var gpus: Int32 = 0
    var constraint: Int32 = 0
    var topology: Topology = .any

    public static func < (a: Priority, b: Priority) -> Bool {
        // "Less" is "runs earlier".
        if a.classValue != b.classValue { return a.classValue > b.classValue }
        if a.kindRank != b.kindRank { return a.kindRank < b.kindRank }
        if a.queue != b.queue { return a.queue < b.queue }
        if a.score != b.score { return a.score > b.score }
        if a.submitTime != b.submitTime { return a.submitTime < b.submitTime }
        return a.id < b.id
    }
}

/// Factors of one job's priority, for explanations.
public struct PriorityFactors: Hashable, Sendable {
    public var classValue: Int
    public var age: Double
    public var fairshare: Double
    public var size: Double
    public var score: Double
    /// Points the job's nice took off the score.
    public var nice: Int = 0
    /// The job's attained-service queue (0-based; -1 when promoted for waiting too long), and how many
    /// queues there are (0 when they are not in force for it: inference, or not policy `allot`).
    public var queue: Int = 0
    public var queues: Int = 0
    /// GPU-seconds the job has used over all its runs.
    public var attainedGPUSeconds: Double = 0
}

/// What a pass needs of a priority class (no name: copying it costs nothing).
struct ClassInfo {
    var value: Int
    var preempts: Bool
    var preemptible: Bool

    init(_ c: PriorityClass) {
        value = c.value
        preempts = c.preempts
        preemptible = c.preemptible
    }
}

/// The classes of one pass, resolved for the pending queue's interned class names.
struct ClassTable {
    /// Per interned class name: the class, or nil when the config no longer declares it.
    let named: [ClassInfo?]
    let defaultTraining: ClassInfo
    let defaultInference: ClassInfo

    init(state: ClusterState) {
        named = state.pendingJobs.classes.values.map { state.config.priorityClass(named: $0).map(ClassInfo.init) }
        defaultTraining = ClassInfo(state.priorityClass(of: JobSpec(kind: .training)))
        defaultInference = ClassInfo(state.priorityClass(of: JobSpec(kind: .inference)))
    }

    /// The class in force for a row: its own if declared, else its kind's default.
    func of(_ row: PendingQueue.Row) -> ClassInfo {
        if row.priorityClass >= 0, let c = named[Int(row.priorityClass)] { return c }
        return row.kind == .inference ? defaultInference : defaultTraining
    }

    /// Whether a row's job may be preempted: its own setting, else its class's.
    func preemptible(_ row: PendingQueue.Row) -> Bool {
        row.preemptible >= 0 ? row.preemptible == 1 : of(row).preemptible
    }
}

/// Computes priorities for one pass. Tenant facts are resolved once into tables indexed by the pending
/// queue's interned numbers, so ranking 100,000 jobs is arithmetic on rows.
struct PriorityCalculator {
    let state: ClusterState
    let now: Instant
    let settings: SchedulerSettings
    /// log2 of the pool's GPU-minutes in 30 days: the size factor's scale.
    let logPoolWork: Double
    let classes: ClassTable
    /// Policy `allot`: soft budgets lower priority, and attained-service queues order training.
    let allot: Bool
    /// Whether attained-service queues are in force.
    let queues: Bool
    private let totalUsage: Double
    private let totalShares: Double
    /// Per interned tenant of the pending queue: fair-share factor minus budget penalty (NaN until computed).
    private var tenantScore: [Double]

    init(state: ClusterState, now: Instant, allot: Bool) {
        self.state = state
        self.now = now
        self.settings = state.config.scheduler
        self.logPoolWork = (Double(max(2, state.totalGPUs)) * 30 * 24 * 60).log2Approx
        self.classes = ClassTable(state: state)
        self.allot = allot
        self.queues = allot && !state.config.scheduler.serviceQueues.isEmpty
        // Shares count for tenants the config names, tenants with usage, and tenants with pending jobs now.
        var names = Set(state.config.tenants.map(\.name))
        var usage = 0.0
        for (name, u) in state.tenantUsage {
            names.insert(name)
            usage += u.decayed.value(at: now, halfLife: settings.fairshareHalfLife)
        }
        let queue = state.pendingJobs
        var pendingTenant = [Bool](repeating: false, count: queue.tenants.count)
        for row in queue.rows { pendingTenant[Int(row.tenant)] = true }
        for (i, isPending) in pendingTenant.enumerated() where isPending { names.insert(queue.tenants.values[i]) }
        totalUsage = usage
        totalShares = names.reduce(0) { $0 + state.config.tenant(named: $1).shares }
        tenantScore = [Double](repeating: .nan, count: queue.tenants.count)
    }

    func fairshareFactor(_ tenant: String) -> Double {
        if totalUsage <= 0 || totalShares <= 0 { return 1 }
        let u = state.decayedUsage(of: tenant, at: now) / totalUsage
        let s = state.config.tenant(named: tenant).shares / totalShares
        return Math.exp2(-u / max(s, 1e-9))
    }

    /// Whether a tenant is past its soft budget now.
    func overSoftBudget(_ tenant: String) -> Bool {
        guard allot, let b = state.config.tenant(named: tenant).budget, b.enforcement == .soft else { return false }
        return state.spent(by: tenant, in: b.window, at: now) >= b.usd
    }

    /// The size factor of a job of `gpus` GPUs expected to run `seconds`: its work in GPU-minutes on a log
    /// scale from 1 to the whole pool for 30 days, so that favouring small jobs favours short and narrow ones
    /// (shortest expected work first shortens the average completion time most).
    func sizeFactor(gpus: Int, seconds: Double) -> Double {
        let minutes = max(1, Double(max(1, gpus)) * max(0, seconds) / 60)
        let g = min(1, minutes.log2Approx / logPoolWork)
        return settings.sizeFavor == .small ? 1 - g : g
    }

    /// The attained-service queue of a pending row (0 without queues, and for inference).
    func queue(_ row: PendingQueue.Row) -> Int {
        guard queues && row.kind == .training else { return 0 }
        return settings.serviceQueue(
            gpuSeconds: row.attained,
            runSeconds: row.ran,
            waited: now.seconds - row.pendingSince
        )
    }

    /// The attained-service queue of a job, pending or running.
    func queue(_ job: Job) -> Int {
        guard queues && job.spec.kind == .training else { return 0 }
        if job.state.holdsGPUs { return settings.serviceQueue(running: job, at: now) }
        return settings.serviceQueue(
            gpuSeconds: job.gpuSeconds(at: now),
            runSeconds: job.runSeconds(at: now),
            waited: now - job.queuedSince
        )
    }

    func ageFactor(_ submit: Double) -> Double { min(1, max(0, (now.seconds - submit) / settings.maxAge)) }

    func score(age: Double, fairshare: Double, size: Double) -> Double {
        settings.ageWeight * age + settings.fairshareWeight * fairshare + settings.sizeWeight * size
    }

    /// The factors of one job, for explanations.
    mutating func factors(_ job: Job) -> PriorityFactors {
        let age = ageFactor(job.submitTime.seconds)
        let fs = fairshareFactor(job.spec.tenant)
        let size = sizeFactor(gpus: job.spec.gpus, seconds: state.estimate(of: job.spec))
        let penalty = overSoftBudget(job.spec.tenant) ? settings.overBudgetPenalty : 0
        return PriorityFactors(
            classValue: state.priorityClass(of: job.spec).value,
            age: age,
            fairshare: fs,
            size: size,
            score: score(age: age, fairshare: fs, size: size) - penalty - Double(job.spec.nice),
            nice: job.spec.nice,
            queue: queue(job),
            queues: queues && job.spec.kind == .training ? settings.serviceQueues.count + 1 : 0,
            attainedGPUSeconds: job.gpuSeconds(at: now)
        )
    }

    /// The priority of a pending row.
    mutating func priority(_ row: PendingQueue.Row) -> Priority {
        let t = Int(row.tenant)
        if tenantScore[t].isNaN {
            let name = state.pendingJobs.tenants.values[t]
            tenantScore[t] =
                settings.fairshareWeight * fairshareFactor(name)
                - (overSoftBudget(name) ? settings.overBudgetPenalty : 0)
        }
        return Priority(
            classValue: classes.of(row).value,
            kindRank: row.kind == .inference ? 0 : 1,
            queue: Int32(queue(row)),
            score: settings.ageWeight * ageFactor(row.submitTime) + tenantScore[t] + settings.sizeWeight
                * sizeFactor(gpus: row.gpus, seconds: row.estimate.isNaN ? settings.defaultEstimate : row.estimate)
                - Double(row.nice),
            submitTime: row.submitTime,
            id: row.id,
            gpus: Int32(clamping: row.gpus),
            constraint: row.constraint,
            topology: row.topology
        )
    }
}

extension Double {
    /// log2 of a positive value, from its exponent and a cubic on the significand (error under 0.01): enough
    /// for priority factors, cheap enough for every pending job in every pass, and free of platform
    /// libraries.
    var log2Approx: Double {
        guard self > 0 else { return 0 }
        let m = significand  // 1 <= m < 2
        // Least-squares cubic for log2 on [1, 2).
        let p = -2.153_620_718_9 + m * (3.047_884_960_1 + m * (-1.051_875_735_7 + m * 0.158_226_748_7))
        return Double(exponent) + p
    }
}
