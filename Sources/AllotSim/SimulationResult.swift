import AllotCore

/// What a simulation run produced: the final state, and the figures drawn from it.
public struct SimulationResult: Sendable {
    public let state: ClusterState
    public let trace: Trace
    /// Trace row of each submitted job.
    public let traceIndex: [JobID: Int]
    public let policy: Scheduler.Policy
    public let totalGPUs: Double
    public let firstSubmit: Double
    /// The last arrival: waste is also reported while jobs keep arriving.
    public let lastArrival: Double
    /// ∫ GPUs in use dt.
    public let busyGPUSeconds: Double
    /// ∫ GPUs idle while a pending job could have used them dt.
    public let wastedGPUSeconds: Double
    /// The same, up to the last arrival.
    public let wastedWhileArrivingGPUSeconds: Double
    /// Scheduling passes run.
    public let passes: Int
    public let counts: Counts
    /// Every run that ended, for per-window spending.
    public let runs: [RunRecord]
    /// What each simulated inference service did (empty without services).
    public var services: [ServiceFigures] = []

    /// Preemptions by kind, and starts on lent GPUs.
    public struct Counts: Hashable, Sendable, Codable {
        /// Jobs preempted by class (a higher class that may preempt needed the GPUs).
        public var preemptions = 0
        /// Loans taken back (reservation, inference reserve, quota).
        public var reclaims = 0
        /// Jobs moved to faster GPUs that came free.
        public var moves = 0
        /// Elastic jobs that grew into GPUs that came free, and that shrank for another job.
        public var grows = 0
        public var shrinks = 0
        /// Starts on lent GPUs.
        public var loans = 0
        /// Starts on GPUs lent from the inference reserve, and how many of those were taken back.
        public var reserveLoans = 0
        public var reserveReclaims = 0
        /// GPU-seconds of work lost to stops (the work since the last checkpoint, and restarts), all of them
        /// and those of loans the inference reserve took back.
        public var lostGPUSeconds = 0.0
        public var reserveLostGPUSeconds = 0.0
    }

    /// The inference reserve's loans over a run (the JSON's `reserve`).
    public struct ReserveFigures: Hashable, Sendable, Codable {
        /// Starts on GPUs lent from the reserve.
        public var loans: Int
        /// Of those, the ones inference took back before they ended.
        public var takenBack: Int
        public var takenBackShare: Double
        /// GPU-hours of work the loans taken back lost: the work since their last checkpoint and their restarts.
        public var lostGPUHours: Double
        /// What inference replicas cost beyond the price of their reserved model, run on a dearer one.
        public var spillOverUSD: Double
        /// Replica-hours that ran on a dearer model than their reserved one.
        public var spillOverHours: Double

        enum CodingKeys: String, CodingKey {
            case loans
            case takenBack = "taken_back"
            case takenBackShare = "taken_back_share"
            case lostGPUHours = "lost_gpu_hours"
            case spillOverUSD = "spill_over_usd"
            case spillOverHours = "spill_over_hours"
        }
    }

    /// Wait and completion-time figures of a set of jobs.
    public struct Figures: Hashable, Sendable, Codable {
        public var jobs: Int
        public var completed: Int
        public var avgJCT: Double
        public var p50JCT: Double
        public var p99JCT: Double
        public var avgWait: Double
        public var p50Wait: Double
        public var p99Wait: Double
        public var costUSD: Double
        public var gpuHours: Double
        /// Training: reference GPU-hours of work done (duration × GPUs at speed 1.0). Inference: replica-hours
        /// served.
        public var workHours: Double
        /// `cost_usd / work_hours`: money per reference GPU-hour of training, or per inference replica-hour.
        public var costPerWorkHour: Double

        enum CodingKeys: String, CodingKey {
            case jobs, completed
            case workHours = "work_hours"
            case costPerWorkHour = "cost_per_work_hour"
            case avgJCT = "avg_jct_s"
            case p50JCT = "p50_jct_s"
            case p99JCT = "p99_jct_s"
            case avgWait = "avg_wait_s"
            case p50Wait = "p50_wait_s"
            case p99Wait = "p99_wait_s"
            case costUSD = "cost_usd"
            case gpuHours = "gpu_hours"
        }
    }

    /// The summary that `allotctl simulate --json` prints.
    public struct Summary: Hashable, Sendable, Codable {
        public var policy: String
        public var jobs: Int
        public var completed: Int
        /// Jobs that can never start on this pool (constraints or sizes it cannot meet).
        public var unschedulable: Int
        public var timedOut: Int
        public var makespan: Double
        public var avgJCT: Double
        public var p50JCT: Double
        public var p99JCT: Double
        public var avgWait: Double
        public var p50Wait: Double
        public var p99Wait: Double
        public var utilization: Double
        public var waste: Double
        public var costUSD: Double
        public var gpuHours: Double
        public var costPerGPUHour: Double
        public var preemptions: Int
        public var reclaims: Int
        /// Jobs moved to faster GPUs that came free (each a stop and a restart).
        public var moves = 0
        /// Elastic jobs that grew, and that shrank for another job instead of stopping (each a restart).
        public var grows = 0
        public var shrinks = 0
        public var loans: Int
        public var passes: Int
        /// Waste while jobs keep arriving (up to the last arrival), as opposed to the drain at the end.
        public var wasteWhileArriving: Double
        public var byKind: [String: Figures]
        public var byTenant: [String: TenantFigures]
        /// (tenant, budget window) pairs whose spending went past the tenant's budget.
        public var budgetViolations: Int
        /// The jobs that can never start on this pool: trace id and why (at most the first 1,000).
        public var neverStart: [NeverStart] = []
        /// GPU-hours of work lost to stops: the work since the last checkpoint, and restarts.
        public var lostGPUHours = 0.0
        /// The inference reserve's loans, when the pool has a reserve.
        public var reserve: ReserveFigures?

        enum CodingKeys: String, CodingKey {
            case policy, jobs, completed, unschedulable, preemptions, reclaims, moves, grows, shrinks, loans, passes
            case utilization, waste
            case wasteWhileArriving = "waste_while_arriving"
            case byTenant = "by_tenant"
            case budgetViolations = "budget_violations"
            case neverStart = "never_start"
            case lostGPUHours = "lost_gpu_hours"
            case reserve
            case timedOut = "timed_out"
            case makespan = "makespan_s"
            case avgJCT = "avg_jct_s"
            case p50JCT = "p50_jct_s"
            case p99JCT = "p99_jct_s"
            case avgWait = "avg_wait_s"
            case p50Wait = "p50_wait_s"
            case p99Wait = "p99_wait_s"
            case costUSD = "cost_usd"
            case gpuHours = "gpu_hours"
            case costPerGPUHour = "cost_per_gpu_hour"
            case byKind = "by_kind"
        }
    }

    /// A job that can never start on the pool, and why.
    public struct NeverStart: Hashable, Sendable, Codable {
        public var id: String
        public var reason: String
    }

    /// Money and GPU-time of one tenant.
    public struct TenantFigures: Hashable, Sendable, Codable {
        public var jobs: Int
        public var costUSD: Double
        public var gpuHours: Double
        enum CodingKeys: String, CodingKey {
            case jobs
            case costUSD = "cost_usd"
            case gpuHours = "gpu_hours"
        }
    }

    /// Jobs that ended (completed, failed or timed out), by id.
    public var endedJobs: [Job] {
        state.jobs.values.filter { $0.state.isTerminal && traceIndex[$0.id] != nil }.sorted { $0.id < $1.id }
    }

    /// The figures of the trace's jobs; the services' replicas are in ``services``.
    public func summary() -> Summary {
        let all = state.jobs.values.filter { traceIndex[$0.id] != nil }.sorted { $0.id < $1.id }
        let ended = all.filter { $0.state.isTerminal }
        let end = ended.compactMap { $0.endTime?.seconds }.max() ?? firstSubmit
        let makespan = max(0, end - firstSubmit)
        let gpuTime = totalGPUs * makespan
        let overall = figures(all, at: state.now)
        var byKind: [String: Figures] = [:]
        for kind in JobKind.allCases {
            byKind[kind.rawValue] = figures(all.filter { $0.spec.kind == kind }, at: state.now)
        }
        var byTenant: [String: TenantFigures] = [:]
        for job in all {
            var f = byTenant[job.spec.tenant] ?? TenantFigures(jobs: 0, costUSD: 0, gpuHours: 0)
            f.jobs += 1
            f.costUSD += job.costUSD(at: state.now)
            f.gpuHours += job.gpuSeconds(at: state.now) / 3600
            byTenant[job.spec.tenant] = f
        }
        let arriving = max(0, lastArrival - firstSubmit) * totalGPUs
        let pass = Scheduler(policy: policy).schedule(state, at: state.now)
        let permanent = pass.pending.filter { $0.blocker.isPermanent }
        let unschedulable = permanent.count
        let neverStart = permanent.sorted { $0.id < $1.id }.prefix(1_000).compactMap { p -> NeverStart? in
            guard let job = state.jobs[p.id] else { return nil }
            let id = traceIndex[p.id].map { trace.jobs[$0].id } ?? p.id.description
            return NeverStart(id: id, reason: p.blocker.sentence(for: job.spec, in: state))
        }
        return Summary(
            policy: policy.rawValue,
            jobs: all.count,
            completed: ended.count,
            unschedulable: unschedulable,
            timedOut: all.filter { $0.state == .timedOut }.count,
            makespan: makespan,
            avgJCT: overall.avgJCT,
            p50JCT: overall.p50JCT,
            p99JCT: overall.p99JCT,
            avgWait: overall.avgWait,
            p50Wait: overall.p50Wait,
            p99Wait: overall.p99Wait,
            utilization: gpuTime > 0 ? busyGPUSeconds / gpuTime : 0,
            waste: gpuTime > 0 ? wastedGPUSeconds / gpuTime : 0,
            costUSD: overall.costUSD,
            gpuHours: overall.gpuHours,
            costPerGPUHour: overall.gpuHours > 0 ? overall.costUSD / overall.gpuHours : 0,
            preemptions: counts.preemptions,
            reclaims: counts.reclaims,
            moves: counts.moves,
            grows: counts.grows,
            shrinks: counts.shrinks,
            loans: counts.loans,
            passes: passes,
            wasteWhileArriving: arriving > 0 ? wastedWhileArrivingGPUSeconds / arriving : 0,
            byKind: byKind,
            byTenant: byTenant,
            budgetViolations: budgetViolations(),
            neverStart: neverStart,
            lostGPUHours: counts.lostGPUSeconds / 3600,
            reserve: reserveFigures()
        )
    }

    /// The reserve's loans, taken back, work lost, and spill-over: inference runs on a dearer model than the
    /// cheapest their job allows when that cheapest one has a reserve, priced at the difference.
    func reserveFigures() -> ReserveFigures? {
        let reserve = state.inferenceReserve
        guard reserve.contains(where: { $0 > 0 }) else { return nil }
        let models = state.config.gpuModels
        var spill = 0.0
        var hours = 0.0
        for r in runs where r.kind == .inference && r.end > r.start && r.allocation.share == nil {
            guard let spec = state.jobs[r.job]?.spec,
                let used = state.config.gpuModels.firstIndex(where: { $0.name == r.allocation.model })
            else { continue }
            var cheapest: Int?
            for (i, m) in models.enumerated() {
                if !spec.gpuModels.isEmpty && !spec.gpuModels.contains(m.name) { continue }
                if let min = spec.minGPUMemoryGiB, m.memoryGiB < min { continue }
                if cheapest.map({ m.pricePerHour < models[$0].pricePerHour }) ?? true { cheapest = i }
            }
            guard let c = cheapest, c != used, reserve[c] > 0 else { continue }
            let h = (r.end - r.start) / 3600 * Double(r.allocation.gpuCount)
            hours += h
            spill += max(0, models[used].pricePerHour - models[c].pricePerHour) * h
        }
        return ReserveFigures(
            loans: counts.reserveLoans,
            takenBack: counts.reserveReclaims,
            takenBackShare: counts.reserveLoans > 0 ? Double(counts.reserveReclaims) / Double(counts.reserveLoans) : 0,
            lostGPUHours: counts.reserveLostGPUSeconds / 3600,
            spillOverUSD: spill,
            spillOverHours: hours
        )
    }

    /// (tenant, window) pairs over budget: runs' costs split at the windows' calendar boundaries.
    func budgetViolations() -> Int {
        var violations = 0
        for tenant in state.config.tenants {
            guard let b = tenant.budget else { continue }
            var spent: [Double: Double] = [:]
            for r in runs where r.tenant == tenant.name && r.end > r.start {
                var t = r.start
                while t < r.end {
                    let w = b.window.start(containing: Instant(seconds: t)).seconds
                    let e = min(r.end, b.window.end(containing: Instant(seconds: t)).seconds)
                    spent[w, default: 0] += (e - t) * r.costPerSecond
                    t = e
                }
            }
            violations += spent.values.filter { $0 > b.usd + 1e-6 }.count
        }
        return violations
    }

    func figures(_ jobs: [Job], at now: Instant) -> Figures {
        let ended = jobs.filter { $0.state.isTerminal && $0.endTime != nil }
        let jct = ended.map { $0.endTime! - $0.submitTime }.sorted()
        let wait = ended.map { max(0, ($0.endTime! - $0.submitTime) - $0.pastRunSeconds) }.sorted()
        let cost = jobs.reduce(0) { $0 + $1.costUSD(at: now) }
        // Work done: for ended training jobs their whole trace duration × GPUs (reference GPU-hours); for
        // inference, the hours each replica served.
        var work = 0.0
        for job in ended {
            guard let i = traceIndex[job.id] else { continue }
            let tj = trace.jobs[i]
            work +=
                job.spec.kind == .training
                ? tj.duration
                    * (tj.elastic != nil
                        ? Double(tj.gpus)
                        : job.allocation?.gpuEquivalent ?? tj.gpuShare.map { Double($0) / 1000 } ?? Double(tj.gpus))
                    / 3600
                : job.pastRunSeconds / 3600
        }
        return Figures(
            jobs: jobs.count,
            completed: ended.count,
            avgJCT: Self.mean(jct),
            p50JCT: Self.percentile(jct, 0.50),
            p99JCT: Self.percentile(jct, 0.99),
            avgWait: Self.mean(wait),
            p50Wait: Self.percentile(wait, 0.50),
            p99Wait: Self.percentile(wait, 0.99),
            costUSD: cost,
            gpuHours: jobs.reduce(0) { $0 + $1.gpuSeconds(at: now) } / 3600,
            workHours: work,
            costPerWorkHour: work > 0 ? cost / work : 0
        )
    }

    static func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }

    /// Nearest-rank percentile of sorted values.
    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((p * Double(sorted.count)).rounded(.up))
        return sorted[min(sorted.count - 1, max(0, rank - 1))]
    }

    /// The timeline as CSV: a `job` row per job (its state, submit, first start, end, last node, GPUs asked
    /// for, model, total cost), then a `run` row per run, in start order (its start and stop, the GPUs it
    /// held as `node:index|index+node:…`, a share in thousandths of a GPU or a MIG slot, its cost, and why it
    /// stopped) — enough to rebuild which GPU did what at every instant.
    public func timelineCSV() -> String {
        var out =
            "record,id,run,kind,tenant,state,submit,start,end,node,gpus,gpu_model,cost,gpu_indices,share,stopped\n"
        func traceID(_ id: JobID) -> String { csv(traceIndex[id].map { trace.jobs[$0].id } ?? id.description) }
        for job in state.jobs.values.sorted(by: { $0.id < $1.id }) {
            let start = job.firstStartTime.map { fmt($0.seconds) } ?? ""
            let end = job.state.isTerminal ? (job.endTime.map { fmt($0.seconds) } ?? "") : ""
            let nodes = job.allocation?.nodeNames.joined(separator: "+") ?? ""
            let fields = [
                "job", traceID(job.id), String(job.runs), job.spec.kind.rawValue, csv(job.spec.tenant),
                job.state.rawValue, fmt(job.submitTime.seconds), start, end, csv(nodes), String(job.spec.gpus),
                job.allocation?.model ?? "", fmt(job.costUSD(at: state.now), digits: 4), "", "", "",
            ]
            out += fields.joined(separator: ",") + "\n"
        }
        let ordered = runs.sorted { ($0.start, $0.job, $0.run) < ($1.start, $1.job, $1.run) }
        for r in ordered {
            let a = r.allocation
            let indices = a.slices.map { "\($0.node):" + $0.gpus.map(String.init).joined(separator: "|") }
                .joined(separator: "+")
            let share = a.mig.map { "mig:\($0)" } ?? a.share.map(String.init) ?? ""
            let fields = [
                "run", traceID(r.job), String(r.run), r.kind.rawValue, csv(r.tenant), "", "", fmt(r.start), fmt(r.end),
                csv(a.nodeNames.joined(separator: "+")), String(a.gpuCount), a.model,
                fmt(r.costPerSecond * max(0, r.end - r.start), digits: 4), csv(indices), share, r.stopped,
            ]
            out += fields.joined(separator: ",") + "\n"
        }
        return out
    }

    private func csv(_ s: String) -> String {
        s.contains(",") || s.contains("\"") ? "\"" + s.replacingQuotes() + "\"" : s
    }

    private func fmt(_ v: Double, digits: Int = 3) -> String {
        if v == v.rounded() && abs(v) < 1e15 { return String(Int(v)) }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        return String((v * scale).rounded() / scale)
    }
}

extension String {
    fileprivate func replacingQuotes() -> String {
        var out = ""
        for c in self { out += c == "\"" ? "\"\"" : String(c) }
        return out
    }
}
