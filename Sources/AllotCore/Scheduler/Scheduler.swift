/// The scheduler: a pure function of (state, now) that returns decisions and, for every pending job that
/// does not start, its place in the queue and what blocks it.
///
/// One scheduler serves the daemon (wall clock), the simulator (virtual time) and the tests.
public struct Scheduler: Hashable, Sendable {
    /// How pending work is ordered and placed.
    public enum Policy: String, CaseIterable, Sendable, Codable {
        /// Multifactor priority; every job that fits starts; GPUs chosen by cost and time, then packing.
        case allot
        /// Strict first-come-first-served: the queue stops at the first job that cannot start; GPU models in
        /// config order (no cost awareness). The baseline.
        case fifo
    }

    public var policy: Policy

    public init(policy: Policy = .allot) {
        self.policy = policy
    }

    /// Runs one scheduling pass.
    /// - Parameters:
    ///   - state: the pool as it is.
    ///   - now: the time of the pass (the daemon's clock, or the simulator's virtual time).
    /// - Returns: the jobs to start and where, and a reason for every pending job that does not start.
    public func schedule(_ state: ClusterState, at now: Instant) -> SchedulingPass {
        var pool = state.freePool
        let ctx = PassContext(state: state, policy: policy)
        let rows = state.pendingJobs.rows
        let order = rankedPending(state, at: now)
        var pass = SchedulingPass()
        pass.pending.reserveCapacity(order.count)
        // memo[constraint * 3 + topology]: the smallest gang of that shape that did not fit in this pass. Free
        // GPUs only shrink during a pass, so no larger gang of that shape will fit either.
        var memo = [Int](repeating: .max, count: ctx.allowed.count * 3)
        var anyFree = (0..<ctx.modelCount).contains { pool.freeGPUs(model: $0) > 0 }
        var head: JobID?

        for (rank, p) in order.enumerated() {
            let row = rows[p.slot]
            func block(_ b: Blocker) { pass.pending.append(PendingReason(id: row.id, rank: rank + 1, blocker: b)) }
            if let head {
                block(.behind(head))
                continue
            }
            let allowed = ctx.allowed[Int(row.constraint)]
            if let b = ctx.structuralBlocker(gpus: row.gpus, topology: row.topology, allowed: allowed) {
                block(b)
                continue
            }
            let key = Int(row.constraint) * 3 + row.topology.ordinal
            let memoizable = row.maxCostUSD.isNaN
            if !anyFree || (memoizable && row.gpus >= memo[key]) {
                block(ctx.shortage(row.gpus, allowed: allowed, pool: pool))
                if policy == .fifo { head = row.id }
                continue
            }
            switch ctx.place(row, allowed: allowed, pool: &pool, state: state) {
            case .success(let decision):
                pass.decisions.append(decision)
                anyFree = (0..<ctx.modelCount).contains { pool.freeGPUs(model: $0) > 0 }
            case .failure(let blocker):
                if memoizable, case .insufficientGPUs = blocker { memo[key] = min(memo[key], row.gpus) }
                block(blocker)
                if policy == .fifo { head = row.id }
            }
        }
        return pass
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
        case .allot:
            var calc = PriorityCalculator(state: state, now: now)
            for (i, row) in rows.enumerated() {
                var p = calc.priority(row)
                p.slot = i
                out.append(p)
            }
        }
        out.sort()
        return out
    }

    /// The priority factors of a job, as the `allot` policy weighs them at `now`.
    public func priorityFactors(of job: Job, in state: ClusterState, at now: Instant) -> PriorityFactors {
        var calc = PriorityCalculator(state: state, now: now)
        return calc.factors(job)
    }
}

/// The outcome of a scheduling pass.
public struct SchedulingPass: Hashable, Sendable {
    /// Jobs to start now, in priority order.
    public var decisions: [Decision] = []
    /// Every pending job that does not start, in priority order, with what blocks it.
    public var pending: [PendingReason] = []

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
    let models: [GPUModel]
    /// GPUs per model over all nodes (any state): what the pool could ever offer.
    let capacity: [Int]
    /// Largest node per model.
    let largestNode: [Int]
    /// Largest NVLink island per model.
    let largestIsland: [Int]
    /// Model indices in preference order, by kind.
    let trainingOrder: [Int]
    let inferenceOrder: [Int]
    let policy: Scheduler.Policy
    let estimateDefault: Seconds
    /// Per interned constraint of the pending queue: bit m set when model m satisfies it.
    let allowed: [UInt64]

    init(state: ClusterState, policy: Scheduler.Policy) {
        let models = state.config.gpuModels
        self.models = models
        self.modelCount = models.count
        self.policy = policy
        self.estimateDefault = state.config.scheduler.defaultEstimate
        self.capacity = state.freePool.capacity
        self.largestNode = state.freePool.maxK
        self.largestIsland = state.freePool.largestIsland
        let idx = Array(models.indices)
        switch policy {
        case .fifo:
            trainingOrder = idx
            inferenceOrder = idx
        case .allot:
            trainingOrder = idx.sorted { a, b in
                let (x, y) = (models[a], models[b])
                if x.speed != y.speed { return x.speed > y.speed }
                let (cx, cy) = (x.pricePerHour / x.speed, y.pricePerHour / y.speed)
                if cx != cy { return cx < cy }
                return a < b
            }
            inferenceOrder = idx.sorted { a, b in
                let (x, y) = (models[a], models[b])
                if x.pricePerHour != y.pricePerHour { return x.pricePerHour < y.pricePerHour }
                if x.speed != y.speed { return x.speed > y.speed }
                return a < b
            }
        }
        allowed = state.pendingJobs.constraints.values.map { Self.mask(models, $0.models, $0.minGPUMemoryGiB) }
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

    /// A blocker no amount of waiting removes (constraints or sizes the pool cannot meet), if any.
    func structuralBlocker(gpus: Int, topology: Topology, allowed: UInt64) -> Blocker? {
        if allowed == 0 { return .noModelAllowed }
        var largest = 0
        var m = allowed
        while m != 0 {
            let i = m.trailingZeroBitCount
            m &= m - 1
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
        var m = allowed
        while m != 0 {
            let i = m.trailingZeroBitCount
            m &= m - 1
            free = max(free, pool.freeGPUs(model: i))
            block = max(block, pool.largestBlock(model: i))
        }
        return .insufficientGPUs(needed: n, free: free, largestBlock: block)
    }

    enum Outcome {
        case success(Decision)
        case failure(Blocker)
    }

    /// Places a job on the first model in its preference order that holds it now and is within its cost
    /// limit. Training work shrinks on faster GPUs; an inference service's lifetime does not.
    func place(_ row: PendingQueue.Row, allowed: UInt64, pool: inout FreePool, state: ClusterState) -> Outcome {
        let estimate = row.estimate.isNaN ? estimateDefault : row.estimate
        let order = row.kind == .inference ? inferenceOrder : trainingOrder
        var cheapestOverLimit = Double.infinity
        for m in order where allowed & (1 << UInt64(m)) != 0 {
            let seconds = row.kind == .training ? estimate / models[m].speed : estimate
            let cost = models[m].pricePerHour * Double(row.gpus) * seconds / 3600
            guard pool.fits(model: m, count: row.gpus, topology: row.topology) else { continue }
            if !row.maxCostUSD.isNaN, cost > row.maxCostUSD {
                cheapestOverLimit = min(cheapestOverLimit, cost)
                continue
            }
            guard let slices = pool.place(model: m, count: row.gpus, topology: row.topology) else { continue }
            let allocation = Allocation(
                model: models[m].name,
                slices: slices.map { Allocation.Slice(node: state.nodes[$0.node].name, gpus: $0.mask.bitIndices) }
            )
            let holes = slices.reduce(0) { $0 + pool.freeCount($1.node) }
            let rule: PlacementNote.Rule =
                policy == .fifo ? .firstFit : (row.kind == .inference ? .cheapest : .soonest)
            let note = PlacementNote(
                rule: rule,
                model: models[m].name,
                expectedSeconds: seconds,
                estimatedCostUSD: cost,
                holesLeft: holes
            )
            return .success(.start(row.id, on: allocation, why: note))
        }
        if cheapestOverLimit.isFinite {
            return .failure(.overMaxCost(cheapestUSD: cheapestOverLimit, limitUSD: row.maxCostUSD))
        }
        return .failure(shortage(row.gpus, allowed: allowed, pool: pool))
    }
}
