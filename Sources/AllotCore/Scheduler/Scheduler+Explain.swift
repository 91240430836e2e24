/// A job's situation in sentences, for `allotctl why`.
public struct Explanation: Hashable, Sendable {
    public var id: JobID
    public var state: JobState
    /// One sentence per fact or blocker, most important first.
    public var lines: [String]
}

extension Blocker {
    /// The blocker as a sentence about a job with `spec`, in `state`.
    public func sentence(for spec: JobSpec, in state: ClusterState) -> String {
        let what = Self.describe(spec)
        switch self {
        case .held:
            return "held: it will not start until released (allotctl release)"
        case .noModelAllowed:
            return "no GPU model in the pool satisfies \(Self.constraints(spec)); resubmit with other constraints"
        case .exceedsNodeSize(let needed, let largest):
            let unit = spec.topology == .nvlink ? "NVLink island" : "node"
            return
                "needs \(needed) GPUs on one \(unit), but the largest allowed \(unit) has \(largest); it can never start as asked"
        case .exceedsPool(let needed, let total):
            return
                "needs \(needed) GPUs of one model, but the pool has at most \(total) of any allowed model; it can never start as asked"
        case .insufficientGPUs(let needed, let free, let block):
            return
                "waiting for \(what): \(free) allowed GPUs are free, the largest free block is \(block) on one node (needs \(needed))"
        case .overMaxCost(let cheapest, let limit):
            return
                "every placement free now costs more than its limit: cheapest $\(Money.format(cheapest)) against max cost $\(Money.format(limit))"
        case .behind(let head):
            return "first come, first served: behind job \(head), which cannot start yet"
        }
    }

    /// Whether waiting can never remove this blocker.
    public var isPermanent: Bool {
        switch self {
        case .noModelAllowed, .exceedsNodeSize, .exceedsPool: true
        default: false
        }
    }

    static func describe(_ spec: JobSpec) -> String {
        var s = "\(spec.gpus)×"
        s += spec.gpuModels.isEmpty ? "GPU" : spec.gpuModels.joined(separator: "|")
        if let m = spec.minGPUMemoryGiB { s += " (≥\(Self.trim(m)) GiB)" }
        switch spec.topology {
        case .any: break
        case .singleNode: s += " on one node"
        case .nvlink: s += " in one NVLink island"
        }
        return s
    }

    static func constraints(_ spec: JobSpec) -> String {
        var parts: [String] = []
        if !spec.gpuModels.isEmpty { parts.append("model in [\(spec.gpuModels.joined(separator: ", "))]") }
        if let m = spec.minGPUMemoryGiB { parts.append("at least \(trim(m)) GiB per GPU") }
        return parts.isEmpty ? "its constraints" : parts.joined(separator: " and ")
    }

    static func trim(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(v) }
}

extension Scheduler {
    /// Explains where a job stands: its place in the queue and every blocker for a pending job; where and why
    /// for a running one; how it ended otherwise.
    /// - Parameters:
    ///   - id: the job.
    ///   - state: the pool.
    ///   - pass: the latest pass over `state`, if the caller keeps one (the daemon does); computed if nil.
    public func explain(_ id: JobID, in state: ClusterState, pass: SchedulingPass? = nil) -> Explanation? {
        guard let job = state.jobs[id] else { return nil }
        var lines: [String] = []
        let spec = job.spec
        let cls = state.priorityClass(of: spec)
        switch job.state {
        case .held:
            lines.append(Blocker.held.sentence(for: spec, in: state))
        case .pending:
            let pass = pass ?? schedule(state, at: state.now)
            if let reason = pass.reason(for: id) {
                lines.append(
                    "queue position \(reason.rank) of \(state.pendingJobs.count) (class \(cls.name), value \(cls.value))"
                )
                if reason.rank > 1 {
                    lines.append("behind \(reason.rank - 1) job(s) of higher priority")
                }
                lines.append(reason.blocker.sentence(for: spec, in: state))
            } else if pass.decisions.contains(where: { $0.jobID == id }) {
                lines.append("starting now")
            }
            lines.append(contentsOf: modelLines(spec, in: state))
            if policy == .allot {
                let f = priorityFactors(of: job, in: state, at: state.now)
                lines.append(
                    "priority: class \(f.classValue), score \(Int(f.score.rounded())) (age \(pct(f.age)), fair share \(pct(f.fairshare)), size \(pct(f.size)))"
                )
            }
            if let note = job.note { lines.append("requeued earlier: \(note)") }
        case .running, .stopping:
            if let a = job.allocation, let model = state.config.model(named: a.model) {
                let start = job.startTime ?? state.now
                lines.append(
                    "running on \(a) (\(a.gpuCount)×\(a.model) at $\(Money.format(model.pricePerHour))/GPU-h) since \(DurationText.format(state.now - start)) ago"
                )
                let est = state.estimate(of: spec)
                let expected = spec.kind == .training ? est / model.speed : est
                lines.append(
                    "expected run time \(DurationText.format(expected)), cost so far $\(Money.format(job.costUSD(at: state.now)))"
                )
            }
            if job.state == .stopping, let r = job.stopReason {
                let deadline = (job.stopRequestedAt ?? state.now) + (job.grace ?? 0)
                lines.append(
                    "stopping: \(r); killed in \(DurationText.format(max(0, deadline - state.now))) if still running"
                )
            }
            if job.preemptions > 0 { lines.append("preempted \(job.preemptions) time(s) before") }
        case .completed, .failed, .cancelled, .timedOut:
            var s = "\(job.state.rawValue)"
            if let e = job.exit { s += " (\(e))" }
            if let r = job.stopReason { s += ": \(r)" }
            lines.append(s)
            if let note = job.note { lines.append(note) }
            lines.append(
                "ran \(DurationText.format(job.pastRunSeconds)) over \(job.runs) run(s), cost $\(Money.format(job.pastCostUSD))"
            )
        }
        return Explanation(id: id, state: job.state, lines: lines)
    }

    /// One line per model the job may or may not use.
    private func modelLines(_ spec: JobSpec, in state: ClusterState) -> [String] {
        let pool = state.freePool
        var out: [String] = []
        for (i, m) in state.config.gpuModels.enumerated() {
            if !spec.gpuModels.isEmpty && !spec.gpuModels.contains(m.name) {
                out.append("  \(m.name): not among the requested models")
            } else if let min = spec.minGPUMemoryGiB, m.memoryGiB < min {
                out.append("  \(m.name): \(Blocker.trim(m.memoryGiB)) GiB per GPU, needs \(Blocker.trim(min))")
            } else {
                let fits = pool.fits(model: i, count: spec.gpus, topology: spec.topology)
                out.append(
                    "  \(m.name): \(pool.freeGPUs(model: i)) free, largest block \(pool.largestBlock(model: i))\(fits ? " — fits now" : "")"
                )
            }
        }
        return out
    }

    private func pct(_ v: Double) -> String { "\(Int((v * 100).rounded()))%" }
}
