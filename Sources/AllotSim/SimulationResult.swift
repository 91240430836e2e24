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
    /// ∫ GPUs in use dt.
    public let busyGPUSeconds: Double
    /// ∫ GPUs idle while a pending job could have used them dt.
    public let wastedGPUSeconds: Double
    /// Scheduling passes run.
    public let passes: Int

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

        enum CodingKeys: String, CodingKey {
            case jobs, completed
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
        public var passes: Int
        public var byKind: [String: Figures]

        enum CodingKeys: String, CodingKey {
            case policy, jobs, completed, unschedulable, preemptions, passes, utilization, waste
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

    /// Jobs that ended (completed, failed or timed out), by id.
    public var endedJobs: [Job] {
        state.jobs.values.filter { $0.state.isTerminal }.sorted { $0.id < $1.id }
    }

    public func summary() -> Summary {
        let all = state.jobs.values.sorted { $0.id < $1.id }
        let ended = all.filter { $0.state.isTerminal }
        let end = ended.compactMap { $0.endTime?.seconds }.max() ?? firstSubmit
        let makespan = max(0, end - firstSubmit)
        let gpuTime = totalGPUs * makespan
        let overall = Self.figures(all, at: state.now)
        var byKind: [String: Figures] = [:]
        for kind in JobKind.allCases {
            byKind[kind.rawValue] = Self.figures(all.filter { $0.spec.kind == kind }, at: state.now)
        }
        let pass = Scheduler(policy: policy).schedule(state, at: state.now)
        let unschedulable = pass.pending.filter { $0.blocker.isPermanent }.count
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
            preemptions: all.reduce(0) { $0 + $1.preemptions },
            passes: passes,
            byKind: byKind
        )
    }

    static func figures(_ jobs: [Job], at now: Instant) -> Figures {
        let ended = jobs.filter { $0.state.isTerminal && $0.endTime != nil }
        let jct = ended.map { $0.endTime! - $0.submitTime }.sorted()
        let wait = ended.map { max(0, ($0.endTime! - $0.submitTime) - $0.pastRunSeconds) }.sorted()
        return Figures(
            jobs: jobs.count,
            completed: ended.count,
            avgJCT: mean(jct),
            p50JCT: percentile(jct, 0.50),
            p99JCT: percentile(jct, 0.99),
            avgWait: mean(wait),
            p50Wait: percentile(wait, 0.50),
            p99Wait: percentile(wait, 0.99),
            costUSD: jobs.reduce(0) { $0 + $1.costUSD(at: now) },
            gpuHours: jobs.reduce(0) { $0 + $1.gpuSeconds(at: now) } / 3600
        )
    }

    static func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }

    /// Nearest-rank percentile of sorted values.
    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((p * Double(sorted.count)).rounded(.up))
        return sorted[min(sorted.count - 1, max(0, rank - 1))]
    }

    /// One CSV row per job: id, kind, submit, start, end, node, gpus, cost (plus model, tenant, state).
    public func timelineCSV() -> String {
        var out = "id,kind,tenant,state,submit,start,end,node,gpus,gpu_model,cost\n"
        for job in state.jobs.values.sorted(by: { $0.id < $1.id }) {
            let tj = traceIndex[job.id].map { trace.jobs[$0] }
            let start = job.firstStartTime.map { fmt($0.seconds) } ?? ""
            let end = job.state.isTerminal ? (job.endTime.map { fmt($0.seconds) } ?? "") : ""
            let nodes = job.allocation?.nodeNames.joined(separator: "+") ?? ""
            let fields = [
                csv(tj?.id ?? job.id.description), job.spec.kind.rawValue, csv(job.spec.tenant), job.state.rawValue,
                fmt(job.submitTime.seconds), start, end, csv(nodes), String(job.spec.gpus),
                job.allocation?.model ?? "", fmt(job.costUSD(at: state.now), digits: 4),
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
