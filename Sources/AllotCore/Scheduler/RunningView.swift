/// A running (or stopping) job as a pass sees it: where its GPUs are, what preempting it would lose, and
/// when it is expected to end.
struct RunView {
    var id: JobID
    var model: Int
    /// (node position, GPU mask) per node.
    var slices: [NodeMask]
    var gpus: Int
    /// Thousandths of GPUs it holds: 1000 per whole GPU, its share, or its MIG instance's price (what quotas
    /// count).
    var milli: Int
    /// Thousandths of its GPU for a share job (its GPU frees only when every share on it ends); 0 for whole
    /// GPUs.
    var share: Int
    var classValue: Int
    var preemptible: Bool
    var grace: Seconds
    /// GPU-seconds since its start or last checkpoint.
    var risk: Double
    /// When it should end: its walltime, else its estimate, else (as long as it has run so far) a guess.
    var expectedEnd: Double
    /// Start plus walltime, or infinity.
    var walltimeEnd: Double
    var loans: [Loan]
    var tenant: String
    var kind: JobKind
    var costRate: Double
    /// When stopping: the job it makes way for, if preempted.
    var preemptedFor: JobID?
    var stopping: Bool
    /// Younger than the minimum runtime, or protected after too many preemptions: not a victim by class.
    var shielded: Bool
    /// Younger than the minimum runtime (this run).
    var young: Bool
    /// Its attained-service queue now (training; 0 without queues).
    var queue: Int
    /// Whether it has reported a checkpoint in this run (its work at risk is then known, not assumed saved
    /// on the notice).
    var checkpoints: Bool
    /// Whether it is an elastic job (it may grow or shrink).
    var elastic: Bool

    /// GPUs on one node (0 if none there).
    func mask(on node: Int) -> UInt64 {
        for s in slices where s.node == node { return s.mask }
        return 0
    }
}

extension ClusterState {
    /// The running and stopping jobs, by id, as a pass sees them at `now`.
    func runViews(at now: Instant) -> [RunView] {
        let settings = config.scheduler
        let rules = config.preemption
        var out: [RunView] = []
        out.reserveCapacity(activeJobs.count)
        for id in activeJobs.sorted() {
            let job = jobs[existing: id]
            guard let a = job.allocation, let m = modelIndex[a.model] else { continue }
            var slices: [NodeMask] = []
            for slice in a.slices {
                guard let ni = nodeIndex[slice.node] else { continue }
                slices.append(NodeMask(node: ni, mask: slice.gpus.reduce(UInt64(0)) { $0 | (1 << UInt64($1)) }))
            }
            let start = (job.startTime ?? now).seconds
            let cls = priorityClass(of: job.spec)
            var total: Double? = job.spec.walltime
            if total == nil, let e = job.spec.estimate {
                let speed = job.spec.speed(on: config.gpuModels[m])
                // An elastic job's estimate is at its fewest GPUs; it speeds up with more (linearly, as planned).
                let scale = job.spec.isElastic ? Double(job.spec.gpus) / Double(max(1, a.gpuCount)) : 1
                total = job.spec.kind == .training ? e / speed * scale : e
            }
            let elapsed = max(0, now.seconds - start)
            let expectedEnd: Double
            if let total, start + total > now.seconds {
                expectedEnd = start + total
            } else {
                // Past its estimate, or none given: expect it to run about as long again as it has.
                expectedEnd =
                    now.seconds + max(settings.interval, elapsed, total == nil ? settings.defaultEstimate / 2 : 0)
            }
            var preemptedFor: JobID?
            if case .preempted(let by, _)? = job.stopReason, job.state == .stopping { preemptedFor = by }
            let young = elapsed < rules.minRuntime
            let protected = job.preemptions >= rules.maxPreemptions && elapsed < rules.protection
            let queue = job.spec.kind == .training ? settings.serviceQueue(running: job, at: now) : 0
            out.append(
                RunView(
                    id: id,
                    model: m,
                    slices: slices,
                    gpus: a.gpuCount,
                    milli: Int((a.gpuEquivalent * 1000).rounded()),
                    share: a.share ?? 0,
                    classValue: cls.value,
                    preemptible: job.spec.preemptible ?? cls.preemptible,
                    grace: job.spec.grace ?? settings.defaultGrace,
                    risk: job.workAtRisk(at: now),
                    expectedEnd: job.state == .stopping
                        ? (job.stopRequestedAt ?? now).seconds + (job.grace ?? 0) : expectedEnd,
                    walltimeEnd: job.state == .stopping
                        ? (job.stopRequestedAt ?? now).seconds + (job.grace ?? 0)
                        : (job.spec.walltime.map { start + $0 } ?? .infinity),
                    loans: job.loans,
                    tenant: job.spec.tenant,
                    kind: job.spec.kind,
                    costRate: job.costRate,
                    preemptedFor: preemptedFor,
                    stopping: job.state == .stopping,
                    shielded: young || protected,
                    young: young,
                    queue: queue,
                    checkpoints: job.checkpointThisRun != nil,
                    elastic: job.spec.isElastic
                )
            )
        }
        return out
    }
}
