extension Scheduler {
    /// GPUs that are idle although pending jobs could use them now: what a greedy pass — every job in
    /// priority order on whatever free GPUs fit it, ignoring reservations, budgets, quotas and the inference
    /// reserve — would fill. The simulator's measure of waste.
    public static func usableIdleGPUs(_ state: ClusterState, at now: Instant) -> Int {
        var pool = state.freePool
        let ctx = PassContext(state: state, policy: .backfill)
        let rows = state.pendingJobs.rows
        var filled = 0
        var memo = [Int](repeating: .max, count: ctx.allowed.count * 3)
        for p in Scheduler(policy: .backfill).rankedPending(state, at: now) {
            let row = rows[p.slot]
            let key = Int(row.constraint) * 3 + row.topology.ordinal
            if row.gpus >= memo[key] { continue }
            let allowed = ctx.allowed[Int(row.constraint)]
            var placed = false
            var m = allowed
            while m != 0 && !placed {
                let i = m.trailingZeroBitCount
                m &= m - 1
                if pool.place(model: i, count: row.gpus, topology: row.topology) != nil {
                    placed = true
                    filled += row.gpus
                }
            }
            if !placed { memo[key] = min(memo[key], row.gpus) }
            if (0..<ctx.modelCount).allSatisfy({ pool.freeGPUs(model: $0) == 0 }) { break }
        }
        return filled
    }
}

extension Scheduler {
    /// What would keep a job with `spec` from ever starting in this pool, whatever runs: no GPU model meets
    /// its constraints, or it wants more GPUs (on one node, one NVLink island, or of one model) than the pool
    /// has. Nil when it could start once enough GPUs are free. Daemons refuse such jobs at submit time.
    public static func permanentBlocker(for spec: JobSpec, in state: ClusterState) -> Blocker? {
        let models = state.config.gpuModels
        let allowed = PassContext.mask(models, spec.gpuModels, spec.minGPUMemoryGiB)
        if allowed == 0 { return .noModelAllowed }
        let pool = state.freePool
        var largest = 0
        var m = allowed
        while m != 0 {
            let i = m.trailingZeroBitCount
            m &= m - 1
            guard i < pool.capacity.count else { continue }
            switch spec.topology {
            case .any: largest = max(largest, pool.capacity[i])
            case .singleNode: largest = max(largest, pool.maxK[i])
            case .nvlink: largest = max(largest, pool.largestIsland[i])
            }
        }
        if spec.gpus <= largest { return nil }
        return spec.topology == .any
            ? .exceedsPool(needed: spec.gpus, total: largest) : .exceedsNodeSize(needed: spec.gpus, largest: largest)
    }
}
