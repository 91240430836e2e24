import AllotCore
import AllotProtocol
import Foundation

extension Engine {
    /// How many recent moments `top` keeps.
    static let momentsKept = 50

    /// Keeps what `top` shows as recent: loans, reclaims, preemptions, GPUs failing, nodes going down.
    func recordMoment(_ body: Event.Body) {
        func name(_ id: JobID) -> String { state.jobs[id].map { "job \(id) (\($0.spec.name))" } ?? "job \(id)" }
        let text: String
        switch body {
        case .jobStarted(let id, let a, _, let loans) where !loans.isEmpty:
            text = "\(name(id)) borrows \(a.gpuCount) \(a.model): \(loans.map(\.description).joined(separator: ", "))"
        case .jobPreempted(let id, _, _, .migration):
            text = "\(name(id)) moves to faster GPUs"
        case .jobPreempted(let id, let by, _, let reason):
            text =
                reason.isReclaim
                ? "loan taken back (\(reason.rawValue)): \(name(id)) stops for job \(by)"
                : "\(name(id)) preempted for job \(by)"
        case .jobGPUFailed(let id, let reason, _): text = "\(name(id)): GPU failed (\(reason))"
        case .jobTimedOut(let id, _): text = "\(name(id)): walltime reached"
        case .nodeStateChanged(let node, let s, let reason) where s == .down || s == .draining:
            text = "node \(node) \(s.rawValue)\(reason.map { ": \($0)" } ?? "")"
        default: return
        }
        moments.append(TopMoment(time: WireTime.format(Self.now), text: text))
        if moments.count > Self.momentsKept { moments.removeFirst(moments.count - Self.momentsKept) }
    }

    /// `top`: bounded whatever the queue's length — the nodes GPU by GPU, the first `limit` waiting and
    /// running jobs that match, the tenants, the recent moments.
    func top(_ p: TopParams) -> Result<TopResult, RPCError> {
        let uid: UInt32?
        let kind: JobKind?
        switch Self.userAndKind(p.user, p.kind) {
        case .success(let v): (uid, kind) = v
        case .failure(let e): return .failure(e)
        }
        let sort = p.sort ?? "priority"
        guard TopParams.sorts.contains(sort) else {
            return .failure(
                .invalidParams("sort: expected one of \(TopParams.sorts.joined(separator: ", ")), got \"\(sort)\"")
            )
        }
        let limit = min(max(p.limit ?? 50, 0), 1000)
        let now = Self.now
        func matches(_ spec: JobSpec) -> Bool {
            (p.tenant == nil || spec.tenant == p.tenant) && (uid == nil || spec.uid == uid)
                && (kind == nil || spec.kind == kind)
        }
        func user(_ spec: JobSpec) -> String { spec.user ?? "uid \(spec.uid)" }

        // The pool, GPU by GPU.
        var cells: [String: [Character]] = [:]
        var counts: [String: Int] = [:]
        for node in state.nodes {
            let n = node.spec.gpus
            counts["total", default: 0] += n
            var row = [Character](repeating: ".", count: n)
            for g in 0..<n {
                if node.state == .down {
                    row[g] = "-"
                } else if node.health[g] != .healthy {
                    row[g] = "X"
                } else if node.state != .up {
                    row[g] = "d"
                } else if node.spec.inferenceReserved {
                    row[g] = "r"
                }
            }
            cells[node.name] = row
        }
        for slice in lastPass.reservation?.allocation?.slices ?? [] {
            for g in slice.gpus where cells[slice.node]?.indices.contains(g) == true && cells[slice.node]![g] == "." {
                cells[slice.node]![g] = "r"
            }
        }
        for id in state.activeJobs {
            guard let job = state.jobs[id], let a = job.allocation else { continue }
            let fraction = a.share != nil || a.mig != nil
            let mark: Character =
                job.state == .stopping
                ? "S"
                : !job.loans.isEmpty
                    ? "L" : job.spec.kind == .training ? (fraction ? "t" : "T") : (fraction ? "i" : "I")
            for slice in a.slices {
                for g in slice.gpus where cells[slice.node]?.indices.contains(g) == true {
                    // A GPU shared by several jobs shows the first whole-GPU mark it gets.
                    let old = cells[slice.node]![g]
                    if old == "." || old == "r" || old == "d" || (old.isLowercase && !mark.isLowercase) {
                        cells[slice.node]![g] = mark
                    }
                }
            }
        }
        let names: [Character: String] = [
            "T": "training", "t": "training", "I": "inference", "i": "inference", "L": "lent", "S": "stopping",
            "r": "reserved", ".": "free", "d": "draining", "X": "unhealthy", "-": "down",
        ]
        var nodes: [TopNode] = []
        nodes.reserveCapacity(state.nodes.count)
        for node in state.nodes {
            let row = cells[node.name] ?? []
            for c in row { counts[names[c] ?? "free", default: 0] += 1 }
            nodes.append(
                TopNode(name: node.name, model: node.spec.gpuModel, state: node.state.rawValue, cells: String(row))
            )
        }

        // The queue: in the last pass's order (priority); jobs submitted since are counted, and listed after
        // the next pass.
        var queue: [TopJob] = []
        var pending = 0
        var pendingByTenant: [String: Int] = [:]
        func waiting(_ job: Job) -> TopJob {
            TopJob(
                id: job.id.rawValue,
                name: job.spec.name,
                user: user(job.spec),
                tenant: job.spec.tenant,
                kind: job.spec.kind.rawValue,
                gpus: job.spec.gpuShare.map { Double($0) / 1000 } ?? Double(job.spec.gpus),
                model: job.spec.gpuModels.count == 1 ? job.spec.gpuModels[0] : nil,
                reason: reason(of: job),
                waitS: max(0, now - job.submitTime.seconds)
            )
        }
        // Other orders: a key per matching job (not the jobs: the queue may be 100,000 long).
        let key: ((Job) -> Double)? =
            switch sort {
            case "time": { -$0.submitTime.seconds }
            case "gpus": { Double($0.spec.gpus) + Double($0.spec.gpuShare ?? 0) / 1000 }
            case "cost": { $0.spec.maxCostUSD ?? 0 }
            default: nil
            }
        var keyed: [(key: Double, id: JobID)] = []
        for id in state.pendingJobs {
            guard let job = state.jobs[id] else { continue }
            pendingByTenant[job.spec.tenant, default: 0] += 1
            guard matches(job.spec) else { continue }
            pending += 1
            if let key { keyed.append((key(job), id)) }
        }
        if key == nil {
            var seen = Set<JobID>()
            for r in lastPass.pending {
                if queue.count >= limit { break }
                guard let job = state.jobs[r.id], job.state == .pending, matches(job.spec), seen.insert(r.id).inserted
                else { continue }
                queue.append(waiting(job))
            }
        } else {
            keyed.sort { $0.key != $1.key ? $0.key > $1.key : $0.id < $1.id }
            queue = keyed.prefix(limit).compactMap { state.jobs[$0.id].map(waiting) }
        }

        // Running jobs and the tenants' burn.
        var running: [Job] = []
        var burn: [String: (gpus: Int, jobs: Int, rate: Double)] = [:]
        for id in state.activeJobs {
            guard let job = state.jobs[id] else { continue }
            var b = burn[job.spec.tenant] ?? (0, 0, 0)
            b.gpus += job.allocation?.gpuCount ?? 0
            b.jobs += 1
            b.rate += job.costRate * 3600
            burn[job.spec.tenant] = b
            if matches(job.spec) { running.append(job) }
        }
        let runningKey: (Job) -> Double =
            switch sort {
            // Soonest to reach its walltime first.
            case "time": { job in job.spec.walltime.map { now - (job.startTime?.seconds ?? now) - $0 } ?? -.infinity }
            case "gpus": { $0.allocation?.gpuEquivalent ?? 0 }
            case "cost": { $0.costRate }
            default: { $0.startTime?.seconds ?? 0 }
            }
        let runningRows = running.sorted {
            runningKey($0) != runningKey($1) ? runningKey($0) > runningKey($1) : $0.id < $1.id
        }
        .prefix(limit).map { job -> TopJob in
            // The walltime limits each run: what is left is counted from the current run's start.
            let inRun = max(0, now - (job.startTime?.seconds ?? now))
            return TopJob(
                id: job.id.rawValue,
                name: job.spec.name,
                user: user(job.spec),
                tenant: job.spec.tenant,
                kind: job.spec.kind.rawValue,
                gpus: job.allocation?.gpuEquivalent ?? 0,
                model: job.allocation?.model,
                node: job.allocation?.nodeNames.joined(separator: ","),
                reason: reason(of: job),
                ranS: job.runSeconds(at: Instant(seconds: now)),
                leftS: job.spec.walltime.map { max(0, $0 - inRun) },
                usdPerHour: job.costRate * 3600
            )
        }
        let at = Instant(seconds: now)
        var tenantNames = Set(burn.keys).union(pendingByTenant.keys)
        for t in state.config.tenants where t.budget != nil { tenantNames.insert(t.name) }
        let tenants = tenantNames.sorted().map { name -> TopTenant in
            let budget = state.config.tenants.first { $0.name == name }?.budget
            let window = budget?.window ?? .day
            let b = burn[name] ?? (0, 0, 0)
            return TopTenant(
                name: name,
                gpus: b.gpus,
                running: b.jobs,
                pending: pendingByTenant[name] ?? 0,
                usdPerHour: b.rate,
                spentUSD: state.tenantUsage[name]?.spent(in: window, at: at) ?? 0,
                budgetUSD: budget?.usd,
                window: window.rawValue
            )
        }
        return .success(
            TopResult(
                time: WireTime.format(now),
                gpus: counts,
                nodes: nodes,
                pending: pending,
                queue: queue,
                runningCount: running.count,
                running: Array(runningRows),
                tenants: tenants,
                moments: moments
            )
        )
    }
}
