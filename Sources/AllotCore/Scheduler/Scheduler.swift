/// The scheduler: a pure function of (state, now) that returns decisions — jobs to start, jobs to preempt
/// — and, for every pending job that does not start, its place in the queue and what blocks it.
///
/// One scheduler serves the daemon (wall clock), the simulator (virtual time) and the tests.
public struct Scheduler: Hashable, Sendable {
    /// How pending work is ordered and placed.
    public enum Policy: String, CaseIterable, Sendable, Codable {
        /// allot's policy: multifactor priority with budgets; placement by cost and time (per job
        /// preference); EASY backfill where reserved GPUs are lent to preemptible jobs and taken back; the
        /// inference reserve lent to training and reclaimed; quotas with borrowing; preemption by class.
        case allot
        /// A Slurm-like baseline: multifactor priority and EASY backfill on walltimes; models in config order;
        /// no cost awareness, loans, quotas, budgets or preemption.
        case backfill
        /// Strict first-come-first-served: the queue stops at the first job that cannot start; models in
        /// config order.
        case fifo
    }

    /// How the inference reserve is lent to preemptible jobs (policy `allot`).
    public enum Lending: String, CaseIterable, Sendable, Codable {
        /// First to the jobs expected to end before inference is expected to need the GPUs (from the use
        /// now, the last hour's trend and the same hours of past days: ``InferenceDemand``); what they
        /// leave, in priority order, to the others. Fewer loans are taken back, and reserved GPUs never
        /// idle while a job that may borrow them waits: a loan taken back loses at most the work since the
        /// job's last checkpoint, which idle GPUs would not have done either.
        case forecast
        /// Every reserved GPU inference does not use now (allot before the forecast; kept to compare).
        case always
    }

    public var policy: Policy
    public var lending: Lending

    public init(policy: Policy = .allot, lending: Lending = .forecast) {
        self.policy = policy
        self.lending = lending
    }

    /// Runs one scheduling pass.
    /// - Parameters:
    ///   - state: the pool as it is.
    ///   - now: the time of the pass (the daemon's clock, or the simulator's virtual time).
    /// - Returns: what to start and preempt, and a reason for every pending job that does not start.
    public func schedule(_ state: ClusterState, at now: Instant) -> SchedulingPass {
        var pass = Pass(state: state, now: now, policy: policy, lending: lending)
        pass.pending.reserveCapacity(state.pendingJobs.count)
        pass.run(order: rankedPending(state, at: now))
        var out = SchedulingPass()
        out.decisions = pass.decisions
        out.pending = pass.pending
        out.reservation = pass.reservation
        // A hold is on one GPU, from a finite time (the ends of the shares or instances it waits for).
        func held(_ job: JobID, from: Double, model m: Int, gpu: NodeGPU, share: Int?, mig: MIGSlot?) -> Reservation {
            let model = pass.ctx.models[m]
            let milli = mig.flatMap { model.mig?.profile(named: $0.profile) }.map(MIGTable.priceMilli)
            let slice = Allocation.Slice(node: state.nodes[gpu.node].name, gpus: [gpu.gpu])
            return Reservation(
                job: job,
                from: Instant(seconds: from),
                allocation: Allocation(model: model.name, slices: [slice], share: share, mig: mig, migMilli: milli)
            )
        }
        out.holds = [
            pass.shareHold.map { held($0.job, from: $0.from, model: $0.model, gpu: $0.gpu, share: $0.share, mig: nil) },
            pass.migHold.map { held($0.job, from: $0.from, model: $0.model, gpu: $0.gpu, share: nil, mig: $0.slot) },
        ].compactMap { $0 }
        return out
    }

    /// Pending jobs in the order this policy considers them, first first.
    public func rankedPending(_ state: ClusterState, at now: Instant) -> [Priority] {
        let rows = state.pendingJobs.rows
        var out: [Priority] = []
        out.reserveCapacity(rows.count)
        switch policy {
        case .fifo:
            for (i, row) in rows.enumerated() {
                out.append(
                    Priority(classValue: 0, kindRank: 0, score: 0, submitTime: row.submitTime, id: row.id, slot: i)
                )
            }
        case .allot, .backfill:
            var calc = PriorityCalculator(state: state, now: now, allot: policy == .allot)
            for (i, row) in rows.enumerated() {
                var p = calc.priority(row)
                p.slot = i
                out.append(p)
            }
        }
        // Sort 4-byte indices rather than the 64-byte priorities themselves, then gather once.
        var index = (0..<Int32(out.count)).map { $0 }
        out.withUnsafeBufferPointer { p in index.sort { p[Int($0)] < p[Int($1)] } }
        return out.withUnsafeBufferPointer { p in index.map { p[Int($0)] } }
    }

    /// The priority factors of a job, as this policy weighs them at `now`.
    public func priorityFactors(of job: Job, in state: ClusterState, at now: Instant) -> PriorityFactors {
        var calc = PriorityCalculator(state: state, now: now, allot: policy == .allot)
        return calc.factors(job)
    }
}

/// The outcome of a scheduling pass.
public struct SchedulingPass: Hashable, Sendable {
    /// What to do now, in priority order: starts, and preemptions that make room.
    public var decisions: [Decision] = []
    /// Every pending job that does not start, in priority order, with what blocks it.
    public var pending: [PendingReason] = []
    /// GPUs held for the first job that cannot start, if any.
    public var reservation: Reservation?
    /// Parts of GPUs held for the first share and the first MIG job that find no room: the shared GPU whose
    /// shares leave it room soonest, the memory slices whose instances end soonest. Jobs behind them may take
    /// that room only where it is not needed then, or if they end before then.
    public var holds: [Reservation] = []

    public init() {}

    /// The events that record the decisions.
    public func events(at time: Instant) -> [Event] { decisions.map { $0.event(at: time) } }

    /// The reason recorded for a pending job, if it did not start.
    public func reason(for id: JobID) -> PendingReason? { pending.first { $0.id == id } }
}

extension Topology {
    var ordinal: Int {
        switch self {
        case .any: 0
        case .singleNode: 1
        case .nvlink: 2
        }
    }
}

/// Per-pass facts about the models: prices, speeds, capacities, preference orders, and each interned
/// constraint of the pending queue resolved to a mask of allowed models.
struct PassContext {
    let modelCount: Int
    /// Whether any node declares its CPUs or memory (then placements check them).
    let tracksHost: Bool
    /// Whether any node takes no shares of GPUs (then share placements check it).
    let anyNodeWithoutShares: Bool
    /// The models with a node that takes shares.
    let shareModels: UInt64
    let models: [GPUModel]
    let modelIndex: [String: Int]
    /// GPUs per model over all nodes (any state): what the pool could ever offer.
    let capacity: [Int]
    /// Largest node per model.
    let largestNode: [Int]
    /// Largest NVLink island per model.
    let largestIsland: [Int]
    let policy: Scheduler.Policy
    let estimateDefault: Seconds
    /// Per interned constraint of the pending queue: bit m set when model m satisfies it (and, for a
    /// constraint with a node selection, has a node the selection admits).
    let allowed: [UInt64]
    /// Per interned constraint: for one with a node selection, whether it admits each node (by position);
    /// nil for the others (every node).
    let nodeAllowed: [[Bool]?]
    /// Per interned constraint: its node selection in words, when it has one.
    let selectionText: [String?]
    /// Model orders: config order, and by each preference.
    let configOrder: [(Int, PlacementNote.Rule)]
    let fastest: [(Int, PlacementNote.Rule)]
    let cheapestTraining: [(Int, PlacementNote.Rule)]
    let cheapestInference: [(Int, PlacementNote.Rule)]
    /// Per interned speed table of the pending queue (training jobs with speeds of their own): each model's
    /// speed for those jobs, and the two training orders by it.
    let tableSpeeds: [[Double]]
    let tableFastest: [[(Int, PlacementNote.Rule)]]
    let tableCheapest: [[(Int, PlacementNote.Rule)]]

    init(state: ClusterState, policy: Scheduler.Policy) {
        tracksHost = state.nodeTraits.tracksHost
        anyNodeWithoutShares = state.nodeTraits.anyNodeWithoutShares
        shareModels = state.nodeTraits.shareModels
        let models = state.config.gpuModels
        self.models = models
        self.modelCount = models.count
        self.modelIndex = state.modelIndex
        self.policy = policy
        self.estimateDefault = state.config.scheduler.defaultEstimate
        let pool = state.freePool
        self.capacity = pool.capacity
        self.largestNode = pool.maxK
        self.largestIsland = pool.largestIsland
        let idx = Array(models.indices)
        configOrder = idx.map { ($0, .firstFit) }
        let speeds = models.map(\.speed)
        fastest = Self.fastest(models, speeds)
        cheapestTraining = Self.cheapestTraining(models, speeds)
        var tableSpeeds: [[Double]] = []
        var tableFastest: [[(Int, PlacementNote.Rule)]] = []
        var tableCheapest: [[(Int, PlacementNote.Rule)]] = []
        for table in state.pendingJobs.speedTables.values {
            let s = models.map { table[$0.name] ?? $0.speed }
            tableSpeeds.append(s)
            tableFastest.append(Self.fastest(models, s))
            tableCheapest.append(Self.cheapestTraining(models, s))
        }
        self.tableSpeeds = tableSpeeds
        self.tableFastest = tableFastest
        self.tableCheapest = tableCheapest
        cheapestInference = idx.sorted { a, b in
            let (x, y) = (models[a], models[b])
            if x.pricePerHour != y.pricePerHour { return x.pricePerHour < y.pricePerHour }
            return x.speed != y.speed ? x.speed > y.speed : a < b
        }.map { ($0, .cheapest) }
        var allowed: [UInt64] = []
        var nodeAllowed: [[Bool]?] = []
        var selectionText: [String?] = []
        for c in state.pendingJobs.constraints.values {
            var mask = Self.mask(models, c.models, c.minGPUMemoryGiB)
            if let s = c.nodes {
                let admits = s.admits(state.nodes)
                var withNode: UInt64 = 0
                for (i, ok) in admits.enumerated() where ok { withNode |= 1 << UInt64(state.nodes[i].modelIndex) }
                nodeAllowed.append(admits)
                selectionText.append(mask == 0 ? nil : s.description)
                mask &= withNode
            } else {
                nodeAllowed.append(nil)
                selectionText.append(nil)
            }
            allowed.append(mask)
        }
        self.allowed = allowed
        self.nodeAllowed = nodeAllowed
        self.selectionText = selectionText
    }

    static func mask(_ models: [GPUModel], _ names: [String], _ minMemory: Double?) -> UInt64 {
        var mask: UInt64 = 0
        for (i, m) in models.enumerated() {
            if !names.isEmpty && !names.contains(m.name) { continue }
            if let min = minMemory, m.memoryGiB < min { continue }
            mask |= 1 << UInt64(i)
        }
        return mask
    }

    /// A model must be this much faster than one that is cheaper per unit of work to go before it in the
    /// fastest-first order: a job that gains little from a dear model leaves it to the jobs that gain more.
    static let nearlyAsFast = 1.15

    /// Fastest first; of equal speed, the cheaper per unit of work, and a model that is not `nearlyAsFast`
    /// times as fast as the next goes after it when it is dearer per unit of work.
    static func fastest(_ models: [GPUModel], _ speed: [Double]) -> [(Int, PlacementNote.Rule)] {
        let cost = models.indices.map { models[$0].pricePerHour / speed[$0] }
        var order = models.indices.sorted { a, b in
            if speed[a] != speed[b] { return speed[a] > speed[b] }
            return cost[a] != cost[b] ? cost[a] < cost[b] : a < b
        }
        var i = 1
        while i < order.count {
            let (faster, next) = (order[i - 1], order[i])
            if speed[faster] < speed[next] * nearlyAsFast && cost[next] < cost[faster] {
                order.swapAt(i - 1, i)
                i = max(1, i - 1)
            } else {
                i += 1
            }
        }
        return order.map { ($0, .soonest) }
    }

    /// Training work costs price / speed per reference hour: cheapest per unit of work first.
    static func cheapestTraining(_ models: [GPUModel], _ speed: [Double]) -> [(Int, PlacementNote.Rule)] {
        models.indices.sorted { a, b in
            let (cx, cy) = (models[a].pricePerHour / speed[a], models[b].pricePerHour / speed[b])
            if cx != cy { return cx < cy }
            return speed[a] != speed[b] ? speed[a] > speed[b] : a < b
        }.map { ($0, .cheapest) }
    }

    /// A pending job's speed on model `m`: its own (`JobSpec.speeds`) or the model's; 1 for a job of CPUs
    /// only.
    @inline(__always) func speed(_ row: PendingQueue.Row, model m: Int) -> Double {
        row.gpus == 0 ? 1 : row.speeds < 0 ? models[m].speed : tableSpeeds[Int(row.speeds)][m]
    }

    /// A running job's speed on model `m` (its spec is at hand; its speeds are not interned).
    func speed(_ spec: JobSpec, model m: Int) -> Double { spec.speed(on: models[m]) }

    /// The models fastest first for a pending job, by its own speeds.
    func fastest(for row: PendingQueue.Row) -> [(Int, PlacementNote.Rule)] {
        row.speeds < 0 ? fastest : tableFastest[Int(row.speeds)]
    }

    /// The models fastest first for a running job, by its own speeds.
    func fastest(for spec: JobSpec) -> [(Int, PlacementNote.Rule)] {
        spec.kind != .training || spec.speeds.isEmpty ? fastest : Self.fastest(models, models.map(spec.speed(on:)))
    }

    /// Expected run time of a job on model `m`: training work shrinks on faster GPUs, an inference service's
    /// lifetime does not.
    func expectedSeconds(_ row: PendingQueue.Row, model m: Int) -> Seconds {
        let estimate = row.estimate.isNaN ? estimateDefault : row.estimate
        return row.kind == .training ? estimate / speed(row, model: m) : estimate
    }

    /// The models to try for a job, in order, with the rule that put each there. Baselines: config order.
    /// `allot`: the job's preference, by default fastest for training and cheapest for inference.
    func order(for row: PendingQueue.Row, now: Instant) -> [(model: Int, rule: PlacementNote.Rule)] {
        guard policy == .allot else { return configOrder }
        let training = row.speeds < 0 ? cheapestTraining : tableCheapest[Int(row.speeds)]
        switch row.prefer ?? (row.kind == .inference ? .cheapest : .fastest) {
        case .fastest: return fastest(for: row)
        case .cheapest: return row.kind == .inference ? cheapestInference : training
        case .deadline(let d):
            let cheapest = row.kind == .inference ? cheapestInference : training
            let inTime = cheapest.filter { now.seconds + expectedSeconds(row, model: $0.0) <= d.seconds }
            let late = fastest(for: row).filter { m in !inTime.contains { $0.0 == m.0 } }
            return inTime.map { ($0.0, .deadline) } + late
        }
    }

    /// The models a pending job may be placed on: those its constraints allow, less those on which it is
    /// expected to outrun its walltime (it would only be killed there) when another allowed model that could
    /// ever hold it meets the walltime. With none meeting it, all allowed models stay (`why` says so).
    func usableModels(_ row: PendingQueue.Row) -> UInt64 {
        var mask = allowed[Int(row.constraint)]
        if row.isShare { mask &= shareModels }
        if row.gpuMemoryMiB > 0 {
            // A share's GPU memory must fit in one GPU of the model.
            for i in mask.setBits where row.share(on: models[i]) < 0 { mask &= ~(1 << UInt64(i)) }
        }
        guard !row.walltime.isNaN, policy == .allot else { return mask }
        var late: UInt64 = 0
        var inTime = false
        for i in (mask).setBits {
            if expectedSeconds(row, model: i) > row.walltime {
                late |= 1 << UInt64(i)
            } else if structuralBlocker(gpus: row.gpus, topology: row.topology, allowed: 1 << UInt64(i)) == nil {
                inTime = true
            }
        }
        return late != 0 && inTime ? mask & ~late : mask
    }

    /// A blocker no amount of waiting removes (constraints or sizes the pool cannot meet), if any.
    func structuralBlocker(gpus: Int, topology: Topology, allowed: UInt64, constraint: Int32 = -1) -> Blocker? {
        if allowed == 0 {
            if constraint >= 0, let s = selectionText[Int(constraint)] { return .noNodeSelected(s) }
            return .noModelAllowed
        }
        var largest = 0
        for i in (allowed).setBits {
            switch topology {
            case .any: largest = max(largest, capacity[i])
            case .singleNode: largest = max(largest, largestNode[i])
            case .nvlink: largest = max(largest, largestIsland[i])
            }
        }
        if topology == .any {
            // A gang's GPUs are of one model: the largest single model's capacity is the limit.
            return gpus > largest ? .exceedsPool(needed: gpus, total: largest) : nil
        }
        return gpus > largest ? .exceedsNodeSize(needed: gpus, largest: largest) : nil
    }

    /// The shortage a job of `n` GPUs meets now.
    func shortage(_ n: Int, allowed: UInt64, pool: FreePool) -> Blocker {
        var free = 0
        var block = 0
        for i in (allowed).setBits {
            free = max(free, pool.freeGPUs(model: i))
            block = max(block, pool.largestBlock(model: i))
        }
        return .insufficientGPUs(needed: n, free: free, largestBlock: block)
    }
}
