/// The multifactor priority of pending jobs.
///
/// Jobs are ordered by class value (strictly: a higher class always goes first), then inference before
/// training, then by a score, then by submit time and id. The score sums weighted factors, each in 0...1:
/// - age: time waited over `max_age`;
/// - fair share: `2^(−(u/U)/(s/S))`, where u is the tenant's usage decayed with the half-life, U all
///   tenants' usage, s the tenant's shares and S all shares (1 for a tenant with no recent usage);
/// - size: `1 − log2(gpus)/log2(pool GPUs)` favouring small jobs, or its complement favouring large ones;
/// and, with policy `allot`, a tenant past a soft budget loses `over_budget_penalty`.
public struct Priority: Hashable, Sendable, Comparable {
    public var classValue: Int
    /// 0 for inference, 1 for training: inference first at equal class.
    public var kindRank: Int
    public var score: Double
    public var submitTime: Double
    public var id: JobID
    /// Position of the job's row in the pending queue, for the pass that computed it.
    var slot: Int = 0

    public static func < (a: Priority, b: Priority) -> Bool {
        // "Less" is "runs earlier".
        if a.classValue != b.classValue { return a.classValue > b.classValue }
        if a.kindRank != b.kindRank { return a.kindRank < b.kindRank }
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
}

/// The classes of one pass, resolved for the pending queue's interned class names.
struct ClassTable {
    /// Per interned class name: the class, or nil when the config no longer declares it.
    let named: [PriorityClass?]
    let defaultTraining: PriorityClass
    let defaultInference: PriorityClass

    init(state: ClusterState) {
        named = state.pendingJobs.classes.values.map { state.config.priorityClass(named: $0) }
        defaultTraining = state.priorityClass(of: JobSpec(kind: .training))
        defaultInference = state.priorityClass(of: JobSpec(kind: .inference))
    }

    /// The class in force for a row: its own if declared, else its kind's default.
    func of(_ row: PendingQueue.Row) -> PriorityClass {
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
    let logPoolGPUs: Double
    let classes: ClassTable
    /// Whether soft budgets lower priority (policy `allot`).
    let budgets: Bool
    private let totalUsage: Double
    private let totalShares: Double
    /// Per interned tenant of the pending queue: fair-share factor minus budget penalty (NaN until computed).
    private var tenantScore: [Double]
    private var sizeFactorCache: [Int: Double] = [:]

    init(state: ClusterState, now: Instant, budgets: Bool) {
        self.state = state
        self.now = now
        self.settings = state.config.scheduler
        self.logPoolGPUs = Double(max(2, state.totalGPUs)).log2Approx
        self.classes = ClassTable(state: state)
        self.budgets = budgets
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
        guard budgets, let b = state.config.tenant(named: tenant).budget, b.enforcement == .soft else { return false }
        return state.spent(by: tenant, in: b.window, at: now) >= b.usd
    }

    mutating func sizeFactor(_ gpus: Int) -> Double {
        if let f = sizeFactorCache[gpus] { return f }
        let g = Double(max(1, gpus)).log2Approx / logPoolGPUs
        let f = settings.sizeFavor == .small ? max(0, 1 - g) : min(1, g)
        sizeFactorCache[gpus] = f
        return f
    }

    func ageFactor(_ submit: Double) -> Double { min(1, max(0, (now.seconds - submit) / settings.maxAge)) }

    func score(age: Double, fairshare: Double, size: Double) -> Double {
        settings.ageWeight * age + settings.fairshareWeight * fairshare + settings.sizeWeight * size
    }

    /// The factors of one job, for explanations.
    mutating func factors(_ job: Job) -> PriorityFactors {
        let age = ageFactor(job.submitTime.seconds)
        let fs = fairshareFactor(job.spec.tenant)
        let size = sizeFactor(job.spec.gpus)
        let penalty = overSoftBudget(job.spec.tenant) ? settings.overBudgetPenalty : 0
        return PriorityFactors(
            classValue: state.priorityClass(of: job.spec).value,
            age: age,
            fairshare: fs,
            size: size,
            score: score(age: age, fairshare: fs, size: size) - penalty
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
            score: settings.ageWeight * ageFactor(row.submitTime) + tenantScore[t] + settings.sizeWeight
                * sizeFactor(row.gpus),
            submitTime: row.submitTime,
            id: row.id
        )
    }
}

extension Double {
    /// log2 of a positive value, from its exponent and a short series on the significand; exact enough for
    /// priority factors and free of platform libraries.
    var log2Approx: Double {
        guard self > 0 else { return 0 }
        let e = Double(exponent)
        let m = significand  // 1 <= m < 2
        // ln(m) = 2 atanh((m-1)/(m+1))
        let z = (m - 1) / (m + 1)
        let z2 = z * z
        var term = z
        var sum = 0.0
        var k = 1.0
        for _ in 0..<12 {
            sum += term / k
            term *= z2
            k += 2
        }
        return e + 2 * sum / Math.ln2
    }
}
