/// A kind of GPU in the pool.
public struct GPUModel: Hashable, Codable, Sendable {
    /// The model's name as written in configs and job constraints, e.g. `H100-80GB`.
    public var name: String
    /// Memory per GPU in GiB.
    public var memoryGiB: Double
    /// Price of one GPU for one hour, in USD.
    public var pricePerHour: Double
    /// Relative speed for training (1.0 = reference). Training work of D reference-seconds takes D / speed.
    public var speed: Double
    /// Its MIG profiles, when the model supports MIG (built in for A100 40/80 GB, H100 80 GB and H200; a
    /// config may give its own).
    public var mig: MIGTable?

    public init(name: String, memoryGiB: Double, pricePerHour: Double, speed: Double, mig: MIGTable? = nil) {
        self.name = name
        self.memoryGiB = memoryGiB
        self.pricePerHour = pricePerHour
        self.speed = speed
        self.mig = mig
    }
}

/// A priority class: where a job stands against others, and whether it may take or lose GPUs by preemption.
public struct PriorityClass: Hashable, Codable, Sendable {
    public var name: String
    /// Higher runs first. Classes order the queue strictly: any job of a higher class goes before every job of
    /// a lower one.
    public var value: Int
    /// Whether jobs of this class may preempt jobs of lower, preemptible classes.
    public var preempts: Bool
    /// Whether jobs of this class may be preempted (a job may opt out with `preemptible = false`).
    public var preemptible: Bool

    public init(name: String, value: Int, preempts: Bool, preemptible: Bool) {
        self.name = name
        self.value = value
        self.preempts = preempts
        self.preemptible = preemptible
    }

    /// The classes in force when a config names none: `inference` (highest, preempts, never preempted),
    /// `training` (preemptible), `batch` and `scavenger` (lower, preemptible).
    public static let defaults: [PriorityClass] = [
        PriorityClass(name: "inference", value: 1000, preempts: true, preemptible: false),
        PriorityClass(name: "training", value: 500, preempts: false, preemptible: true),
        PriorityClass(name: "batch", value: 200, preempts: false, preemptible: true),
        PriorityClass(name: "scavenger", value: 0, preempts: false, preemptible: true),
    ]
}

/// A budget: money a tenant may spend per window. Enforced by the policy layer.
public struct Budget: Hashable, Codable, Sendable {
    public enum Window: String, Codable, Sendable, CaseIterable { case day, week, month }
    public enum Enforcement: String, Codable, Sendable, CaseIterable { case soft, hard }
    public var usd: Double
    public var window: Window
    public var enforcement: Enforcement

    public init(usd: Double, window: Window, enforcement: Enforcement) {
        self.usd = usd
        self.window = window
        self.enforcement = enforcement
    }
}

/// A tenant: a team or project that jobs are charged to.
public struct Tenant: Hashable, Codable, Sendable {
    public var name: String
    /// Fair-share weight relative to other tenants.
    public var shares: Double
    /// GPUs guaranteed to this tenant, if any. When any tenant has a quota, a tenant without one is
    /// guaranteed nothing: everything it uses is borrowed.
    public var gpuQuota: Int?
    /// The most GPUs the tenant may use beyond its quota (nil: no limit).
    public var borrowLimit: Int?
    /// Spending limit, if any.
    public var budget: Budget?

    public init(name: String, shares: Double = 1, gpuQuota: Int? = nil, borrowLimit: Int? = nil, budget: Budget? = nil)
    {
        self.name = name
        self.shares = shares
        self.gpuQuota = gpuQuota
        self.borrowLimit = borrowLimit
        self.budget = budget
    }

    enum CodingKeys: String, CodingKey { case name, shares, gpuQuota, borrowLimit, budget }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        shares = try c.decodeIfPresent(Double.self, forKey: .shares) ?? 1
        gpuQuota = try c.decodeIfPresent(Int.self, forKey: .gpuQuota)
        borrowLimit = try c.decodeIfPresent(Int.self, forKey: .borrowLimit)
        budget = try c.decodeIfPresent(Budget.self, forKey: .budget)
    }
}

/// Which way the size factor of the priority leans.
public enum SizeFavor: String, Codable, Sendable, CaseIterable {
    /// Smaller jobs (fewer GPUs) get the higher size factor.
    case small
    /// Larger jobs get the higher size factor (Slurm's default), which helps big gangs against starvation.
    case large
}

/// Tunables of the scheduler.
public struct SchedulerSettings: Hashable, Codable, Sendable {
    /// Half-life of the decay applied to each tenant's past usage for fair share (default 7 days).
    public var fairshareHalfLife: Seconds = 7 * 86_400
    /// Weight of the age factor (0...1, reaching 1 at `maxAge`).
    public var ageWeight: Double = 1000
    /// Age at which the age factor stops growing (default 7 days).
    public var maxAge: Seconds = 7 * 86_400
    /// Weight of the fair-share factor (0...1, 1 for a tenant with no recent usage).
    public var fairshareWeight: Double = 2000
    /// Weight of the size factor (0...1).
    public var sizeWeight: Double = 500
    /// Which jobs the size factor favours.
    public var sizeFavor: SizeFavor = .small
    /// Grace period for preempted or cancelled jobs that name none.
    public var defaultGrace: Seconds = 30
    /// Run time assumed for jobs with neither an estimate nor a walltime limit, to price placements.
    public var defaultEstimate: Seconds = 3600
    /// How often the daemon runs a scheduling pass when nothing else triggers one.
    public var interval: Seconds = 10
    /// Subtracted from the score of jobs whose tenant is past a soft budget, so that they go after every job
    /// of their class whose tenant is within budget.
    public var overBudgetPenalty: Double = 10_000
    /// Attained-service queues (policy `allot`, as Tiresias's discretized least-attained-service): ascending
    /// thresholds of GPU-seconds a training job has used over all its runs. A job is in queue 0 until it has
    /// used the first threshold, then in queue 1, and so on; within a class, earlier queues go first and
    /// may preempt preemptible training jobs of later queues (with the usual notice, grace, minimum runtime
    /// and protection). Empty: no queues. Default: two queues split at 16 GPU-hours.
    public var serviceQueues: [Double] = [16 * 3600]
    /// Starvation prevention for the queues: a job that has waited `starvationFactor` times as long as it
    /// has run (and at least `starvationMinimum`) goes to the head of the first queue until it starts
    /// (without preempting jobs of the first queue). 0: never.
    public var starvationFactor: Double = 2
    public var starvationMinimum: Seconds = 1800

    public init() {}

    enum CodingKeys: String, CodingKey {
        case fairshareHalfLife, ageWeight, maxAge, fairshareWeight, sizeWeight, sizeFavor, defaultGrace
        case defaultEstimate, interval, overBudgetPenalty, serviceQueues, starvationFactor, starvationMinimum
    }

    /// The attained-service queue of a training job that has used `gpuSeconds` over `runSeconds` of running
    /// and has waited `waited` seconds since it last ran (or was submitted): 0 for the first queue, -1 for a
    /// job promoted for having waited too long (it goes before the first queue's jobs, but preempts none
    /// of them).
    public func serviceQueue(gpuSeconds: Double, runSeconds: Seconds, waited: Seconds) -> Int {
        if serviceQueues.isEmpty { return 0 }
        var q = 0
        while q < serviceQueues.count && gpuSeconds >= serviceQueues[q] { q += 1 }
        if q > 0 && starvationFactor > 0 && waited >= max(starvationMinimum, starvationFactor * runSeconds) {
            return -1
        }
        return q
    }

    /// The attained-service queue of a running (or stopping) training job: by the GPU-seconds it has used,
    /// except that a run started after the job was promoted for waiting too long counts from its start (as
    /// Tiresias's promotion resets the job's service): it stays in the first queue until this run alone has
    /// used the first threshold, so that a promoted big job cannot hold the pool for a whole long run.
    public func serviceQueue(running job: Job, at now: Instant) -> Int {
        let byService = serviceQueue(gpuSeconds: job.gpuSeconds(at: now), runSeconds: 0, waited: 0)
        guard byService > 0, let start = job.startTime else { return byService }
        let waited = start - job.queuedSince
        let promoted = serviceQueue(gpuSeconds: job.pastGPUSeconds, runSeconds: job.pastRunSeconds, waited: waited)
        guard promoted < 0 else { return byService }
        return serviceQueue(gpuSeconds: job.gpuSeconds(at: now) - job.pastGPUSeconds, runSeconds: 0, waited: 0)
    }

    /// Decodes leniently: settings added by later versions take their defaults when absent.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SchedulerSettings()
        fairshareHalfLife = try c.decodeIfPresent(Double.self, forKey: .fairshareHalfLife) ?? d.fairshareHalfLife
        ageWeight = try c.decodeIfPresent(Double.self, forKey: .ageWeight) ?? d.ageWeight
        maxAge = try c.decodeIfPresent(Double.self, forKey: .maxAge) ?? d.maxAge
        fairshareWeight = try c.decodeIfPresent(Double.self, forKey: .fairshareWeight) ?? d.fairshareWeight
        sizeWeight = try c.decodeIfPresent(Double.self, forKey: .sizeWeight) ?? d.sizeWeight
        sizeFavor = try c.decodeIfPresent(SizeFavor.self, forKey: .sizeFavor) ?? d.sizeFavor
        defaultGrace = try c.decodeIfPresent(Double.self, forKey: .defaultGrace) ?? d.defaultGrace
        defaultEstimate = try c.decodeIfPresent(Double.self, forKey: .defaultEstimate) ?? d.defaultEstimate
        interval = try c.decodeIfPresent(Double.self, forKey: .interval) ?? d.interval
        overBudgetPenalty = try c.decodeIfPresent(Double.self, forKey: .overBudgetPenalty) ?? d.overBudgetPenalty
        serviceQueues = try c.decodeIfPresent([Double].self, forKey: .serviceQueues) ?? d.serviceQueues
        starvationFactor = try c.decodeIfPresent(Double.self, forKey: .starvationFactor) ?? d.starvationFactor
        starvationMinimum = try c.decodeIfPresent(Double.self, forKey: .starvationMinimum) ?? d.starvationMinimum
    }
}

/// Everything in the configuration except the nodes: GPU models, classes, tenants and scheduler settings.
/// Nodes are added and removed by their own events so that a config change can be reconciled node by node.
public struct PoolConfig: Hashable, Codable, Sendable {
    public var gpuModels: [GPUModel]
    public var priorityClasses: [PriorityClass]
    public var tenants: [Tenant]
    public var scheduler: SchedulerSettings
    public var preemption: PreemptionSettings
    /// GPUs kept for inference, by model (nodes marked `inference_reserved` add theirs).
    public var inferenceReserve: [InferenceReserve]
    /// The class a job gets when it names none, by kind.
    public var defaultTrainingClass: String
    public var defaultInferenceClass: String

    public init(
        gpuModels: [GPUModel] = [],
        priorityClasses: [PriorityClass] = PriorityClass.defaults,
        tenants: [Tenant] = [],
        scheduler: SchedulerSettings = SchedulerSettings(),
        preemption: PreemptionSettings = PreemptionSettings(),
        inferenceReserve: [InferenceReserve] = [],
        defaultTrainingClass: String = "training",
        defaultInferenceClass: String = "inference"
    ) {
        self.gpuModels = gpuModels
        self.priorityClasses = priorityClasses
        self.tenants = tenants
        self.scheduler = scheduler
        self.preemption = preemption
        self.inferenceReserve = inferenceReserve
        self.defaultTrainingClass = defaultTrainingClass
        self.defaultInferenceClass = defaultInferenceClass
    }

    enum CodingKeys: String, CodingKey {
        case gpuModels, priorityClasses, tenants, scheduler, preemption, inferenceReserve, defaultTrainingClass
        case defaultInferenceClass
    }

    /// Decodes leniently: sections added by later versions take their defaults when absent.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        gpuModels = try c.decode([GPUModel].self, forKey: .gpuModels)
        priorityClasses =
            try c.decodeIfPresent([PriorityClass].self, forKey: .priorityClasses) ?? PriorityClass.defaults
        tenants = try c.decodeIfPresent([Tenant].self, forKey: .tenants) ?? []
        scheduler = try c.decodeIfPresent(SchedulerSettings.self, forKey: .scheduler) ?? SchedulerSettings()
        preemption = try c.decodeIfPresent(PreemptionSettings.self, forKey: .preemption) ?? PreemptionSettings()
        inferenceReserve = try c.decodeIfPresent([InferenceReserve].self, forKey: .inferenceReserve) ?? []
        defaultTrainingClass = try c.decodeIfPresent(String.self, forKey: .defaultTrainingClass) ?? "training"
        defaultInferenceClass = try c.decodeIfPresent(String.self, forKey: .defaultInferenceClass) ?? "inference"
    }

    /// Checks the config on its own: unique names, positive prices and speeds, default classes that exist.
    /// - Returns: a sentence per problem; empty when the config is valid.
    public func problems() -> [String] {
        var out: [String] = []
        var seen = Set<String>()
        if gpuModels.count > FreePool.maxModels {
            out.append("at most \(FreePool.maxModels) GPU models are supported; the config has \(gpuModels.count)")
        }
        for m in gpuModels {
            if m.name.isEmpty { out.append("a GPU model has an empty name") }
            if !seen.insert(m.name).inserted { out.append("GPU model \"\(m.name)\" is declared twice") }
            if !(m.memoryGiB > 0) { out.append("GPU model \"\(m.name)\": memory_gib must be > 0") }
            if !(m.pricePerHour >= 0) || !m.pricePerHour.isFinite {
                out.append("GPU model \"\(m.name)\": price_per_hour must be >= 0")
            }
            if !(m.speed > 0) || !m.speed.isFinite { out.append("GPU model \"\(m.name)\": speed must be > 0") }
        }
        seen.removeAll()
        for c in priorityClasses where !seen.insert(c.name).inserted {
            out.append("priority class \"\(c.name)\" is declared twice")
        }
        for name in [defaultTrainingClass, defaultInferenceClass] where !seen.contains(name) {
            out.append("default priority class \"\(name)\" is not declared")
        }
        seen.removeAll()
        for t in tenants {
            if !seen.insert(t.name).inserted { out.append("tenant \"\(t.name)\" is declared twice") }
            if !(t.shares > 0) { out.append("tenant \"\(t.name)\": shares must be > 0") }
            if let q = t.gpuQuota, q < 0 { out.append("tenant \"\(t.name)\": gpu_quota must be >= 0") }
        }
        let s = scheduler
        if !(s.fairshareHalfLife > 0) { out.append("scheduler.fairshare_half_life must be > 0") }
        if !(s.maxAge > 0) { out.append("scheduler.max_age must be > 0") }
        if !(s.defaultEstimate > 0) { out.append("scheduler.default_estimate must be > 0") }
        if !(s.interval > 0) { out.append("scheduler.interval must be > 0") }
        if !(s.defaultGrace >= 0) { out.append("scheduler.default_grace must be >= 0") }
        let p = preemption
        if !(p.minRuntime >= 0) { out.append("preemption.min_runtime must be >= 0") }
        if p.maxPreemptions < 1 { out.append("preemption.max_preemptions must be >= 1") }
        if !(p.protection >= 0) { out.append("preemption.protection must be >= 0") }
        if !(p.loanGrace >= 0) { out.append("preemption.loan_grace must be >= 0") }
        if p.maxMoves < 0 { out.append("preemption.max_moves must be >= 0") }
        if !(p.loanCheckpointEvery >= 0) || !p.loanCheckpointEvery.isFinite {
            out.append("preemption.loan_checkpoint_every must be a duration >= 0")
        }
        for r in inferenceReserve {
            if model(named: r.gpuModel) == nil {
                out.append("inference_reserve names GPU model \"\(r.gpuModel)\", which is not declared")
            }
            if r.gpus < 0 { out.append("inference_reserve for \(r.gpuModel): gpus must be >= 0") }
        }
        for t in tenants {
            if let b = t.borrowLimit, b < 0 { out.append("tenant \"\(t.name)\": borrow_limit must be >= 0") }
        }
        return out
    }

    /// Whether any tenant has a quota: then quotas are guarantees, and use beyond them is borrowed.
    public var quotasInForce: Bool { tenants.contains { $0.gpuQuota != nil } }

    /// The model of that name, if declared.
    public func model(named name: String) -> GPUModel? { gpuModels.first { $0.name == name } }
    /// The class of that name, if declared.
    public func priorityClass(named name: String) -> PriorityClass? { priorityClasses.first { $0.name == name } }
    /// The tenant of that name, or default settings for a tenant the config does not name.
    public func tenant(named name: String) -> Tenant {
        tenants.first { $0.name == name } ?? Tenant(name: name)
    }
}
