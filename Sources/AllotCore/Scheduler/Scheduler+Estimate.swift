extension Scheduler {
    /// The most jobs ahead of a job that ``estimatedStart(of:in:pass:)`` plans; beyond, it gives none.
    public static let estimatePlanLimit = 1_000

    /// When a pending job is expected to start, for `why`: a plan on free GPU counts per model (how they sit
    /// on nodes aside) in which running jobs end at their walltimes or estimates (walltimes for `backfill`),
    /// jobs told to stop end after their grace, and the jobs ahead of it that wait only for GPUs start, in
    /// priority order, at the earliest time enough GPUs are free for their expected run time (conservative
    /// backfill). Nil when the job is not waiting for GPUs, when more than ``estimatePlanLimit`` jobs are
    /// ahead, when no running job's end gives it room, or when the plan would start it now (what it waits
    /// for is then not a count of GPUs).
    /// - Returns: the start, and how many jobs ahead of it the plan starts first.
    public func estimatedStart(
        of id: JobID,
        in state: ClusterState,
        pass: SchedulingPass
    ) -> (start: Instant, ahead: Int)? {
        guard let mine = pass.reason(for: id), mine.blocker.waitsForGPUs,
            state.pendingJobs.row(id) != nil
        else { return nil }
        let ahead = pass.pending.filter { $0.rank < mine.rank && $0.blocker.waitsForGPUs }.sorted { $0.rank < $1.rank }
        guard ahead.count <= Self.estimatePlanLimit else { return nil }
        let now = state.now.seconds
        let ctx = PassContext(state: state, policy: policy)
        let pool = state.freePool
        var plan = GPUPlan(now: now, free: (0..<ctx.modelCount).map { pool.freeGPUs(model: $0) })
        var stopping: [JobID: Double] = [:]
        for d in pass.decisions {
            switch d {
            case .start(let job, let a, _, _):
                guard a.share == nil, let m = ctx.modelIndex[a.model], let j = state.jobs[job] else { continue }
                let seconds = state.expectedSeconds(of: j.spec, on: ctx.models[m])
                plan.take(model: m, count: a.gpuCount, from: now, to: now + seconds)
            case .preempt(let job, _, let grace, _):
                stopping[job] = now + grace
            case .hold(_, let slices):
                guard let ni = slices.first.flatMap({ state.nodeIndex[$0.node] }) else { continue }
                let gpus = slices.reduce(0) { $0 + $1.gpus.count }
                plan.take(model: state.nodes[ni].modelIndex, count: gpus, from: now, to: .infinity)
            }
        }
        for v in state.runViews(at: state.now) where v.share == 0 {
            let end = stopping[v.id] ?? (policy == .backfill ? v.walltimeEnd : v.expectedEnd)
            if end.isFinite { plan.give(model: v.model, count: v.gpus, from: max(end, now)) }
        }
        var started = 0
        for r in ahead + [mine] {
            guard let row = state.pendingJobs.row(r.id) else { continue }
            let allowed = ctx.usableModels(row)
            var best: (start: Double, model: Int, seconds: Double)?
            for (m, _) in ctx.order(for: row, now: state.now) where allowed & (1 << UInt64(m)) != 0 {
                let seconds = ctx.expectedSeconds(row, model: m)
                if let t = plan.earliest(model: m, count: row.gpus, for: seconds), t < (best?.start ?? .infinity) {
                    best = (t, m, seconds)
                }
            }
            guard let best else {
                if r.id == id { return nil }
                continue
            }
            if r.id == id {
                // The plan counts GPUs per model only: where it says "now", what keeps the job waiting is
                // something it does not see (CPUs or memory, MIG slices, room on a shared GPU, GPUs on one
                // node), and it knows no better time.
                return best.start > now ? (Instant(seconds: best.start), started) : nil
            }
            plan.take(model: best.model, count: row.gpus, from: best.start, to: best.start + best.seconds)
            started += 1
        }
        return nil
    }
}

extension Blocker {
    /// Whether the job waits only for GPUs to come free (not for a person, a budget, a quota or a price).
    var waitsForGPUs: Bool {
        switch self {
        case .insufficientGPUs, .hostResources, .reserved, .behind, .waitingForPreemption, .noMIGRoom, .noShareRoom,
            .fasterModelSoon:
            true
        default: false
        }
    }
}

/// Free GPUs per model over time: a step function from `now` on.
struct GPUPlan {
    /// Where each step begins, ascending; the last step lasts forever.
    private(set) var times: [Double]
    /// Free GPUs per model in each step.
    private(set) var free: [[Int]]

    init(now: Double, free: [Int]) {
        times = [now]
        self.free = [free]
    }

    /// The index of the step that begins at `t` (≥ now), splitting a step if needed.
    private mutating func step(at t: Double) -> Int {
        var lo = 0
        var hi = times.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if times[mid] < t { lo = mid + 1 } else { hi = mid }
        }
        if lo < times.count && times[lo] == t { return lo }
        times.insert(t, at: lo)
        free.insert(free[lo - 1], at: lo)
        return lo
    }

    /// `count` GPUs of model `m` come free at `t`, for good.
    mutating func give(model m: Int, count: Int, from t: Double) {
        for i in step(at: t)..<times.count { free[i][m] += count }
    }

    /// `count` GPUs of model `m` are in use over [a, b).
    mutating func take(model m: Int, count: Int, from a: Double, to b: Double) {
        let first = step(at: a)
        let last = b.isFinite ? step(at: b) : times.count
        for i in first..<last { free[i][m] -= count }
    }

    /// The earliest step start from which `count` GPUs of model `m` stay free for `seconds`.
    func earliest(model m: Int, count: Int, for seconds: Double) -> Double? {
        var i = 0
        while i < times.count {
            guard free[i][m] >= count else {
                i += 1
                continue
            }
            let end = times[i] + seconds
            var j = i + 1
            while j < times.count && times[j] < end && free[j][m] >= count { j += 1 }
            if j == times.count || times[j] >= end { return times[i] }
            i = j + 1
        }
        return nil
    }
}
