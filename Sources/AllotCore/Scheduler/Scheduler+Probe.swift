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
