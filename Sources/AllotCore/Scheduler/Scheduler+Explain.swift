/// A job's situation in sentences, for `allotctl why`.
public struct Explanation: Hashable, Sendable {
    public var id: JobID
    public var state: JobState
    /// One sentence per fact or blocker, most important first.
    public var lines: [String]
    /// When the job is expected to start, where the reservation timeline gives one.
    public var estimatedStart: Instant?
}

extension Blocker {
    /// The blocker as a sentence about a job with `spec`, in `state`, with what would unblock it.
    public func sentence(for spec: JobSpec, in state: ClusterState) -> String {
        let what = Self.describe(spec)
        switch self {
        case .held:
            return "held: it will not start until released (allotctl release)"
        case .noModelAllowed:
            return "no GPU model in the pool satisfies \(Self.constraints(spec)); resubmit with other constraints"
        case .noNodeSelected(let selection):
            return
                "no node of the pool with its GPU models is one it may use (\(selection)); it can never start as asked (allotctl update \(spec.array.map { "\($0.array)" } ?? "ID") --nodelist/--exclude/--constraint, or ask an admin to label nodes)"
        case .exceedsNodeSize(let needed, let largest):
            let unit = spec.topology == .nvlink ? "NVLink island" : "node"
            return
                "needs \(needed) GPUs on one \(unit), but the largest allowed \(unit) has \(largest); it can never start as asked (ask for fewer GPUs or topology any)"
        case .exceedsPool(let needed, let total):
            return
                "needs \(needed) GPUs of one model, but the pool has at most \(total) of any allowed model; it can never start as asked"
        case .insufficientGPUs(let needed, let free, let block):
            return
                "waiting for \(what): \(free) allowed GPUs are free, the largest free block is \(block) on one node (needs \(needed))"
        case .hostResources(let needed, let cpu, let memory):
            let what = Self.host(cpu, memory) ?? "its CPUs and memory"
            if needed == 0 {
                return "waiting for CPUs or memory: no node it may use has \(what) free (--cpus, --memory)"
            }
            if !spec.mig.isEmpty || spec.isShare {
                let slot = spec.isShare ? "a GPU has room for its share" : "slices for its MIG instance are free"
                return
                    "waiting for CPUs or memory: \(slot), but no node with them has \(what) free beside them (--cpus, --memory)"
            }
            return
                "waiting for CPUs or memory: GPUs for it are free, but no node with \(needed) of them free has \(what) free beside them (--cpus, --memory)"
        case .exceedsNodeResources(let cpu, let memory):
            let asked = Self.host(cpu, memory) ?? "CPUs and memory"
            if spec.gpus == 0 && !spec.isElastic {
                // One node must hold it all: say what the largest has.
                let cpus = state.nodes.compactMap(\.cpuCapacity).max()
                let mib = state.nodes.compactMap(\.memoryCapacity).max()
                let largest =
                    Self.host(cpu == nil ? nil : cpus, memory == nil ? nil : mib).map {
                        " (the most any node of the pool has: \($0))"
                    } ?? ""
                return
                    "it asks for \(asked) and no GPU, more than any node it may use has, even idle\(largest); it can never start as asked (ask for less)"
            }
            if !spec.mig.isEmpty || spec.isShare {
                return
                    "it asks for \(asked) with \(spec.isShare ? "a share of one GPU" : "a MIG instance"), more than the nodes that could hold it have, even idle; it can never start as asked (ask for less)"
            }
            return
                "it asks for \(asked) with \(spec.gpus) GPU(s), more than the nodes that could hold its GPUs have, even idle; it can never start as asked (ask for less, or spread it over more GPUs)"
        case .noMIGRoom(let detail):
            return "waiting for a MIG instance: \(detail)"
        case .noShareRoom(let detail):
            return "waiting for room on a GPU: \(detail)"
        case .noMIGProfile(let detail):
            return
                "\(detail); it can never start as asked (accept other profiles with --mig, or ask an admin for MIG nodes)"
        case .overMaxCost(let cheapest, let limit):
            return
                "every placement free now costs more than its limit: cheapest $\(Money.format(cheapest)) against max cost $\(Money.format(limit)); raise --max-cost or wait for cheaper GPUs"
        case .maxCostBelowAnyPrice(let cheapest, let model, let expected, let limit):
            return
                "its max cost $\(Money.format(limit)) is below the cheapest placement it could ever have: \(spec.gpus)×\(model) for an expected \(DurationText.format(expected)) costs $\(Money.format(cheapest)); raise --max-cost (or give a shorter --estimate if it runs shorter)"
        case .behind(let head):
            return "first come, first served: behind job \(head), which cannot start yet"
        case .reserved(let job, let from):
            let when = from.map { " from \(Self.time($0))" } ?? ""
            return
                "the GPUs it could use are reserved for job \(job)\(when); a walltime that ends before then would let it start on them"
        case .waitingForPreemption(let n):
            return
                "\(n) job(s) were told to stop to make room for it; it starts when they have (within their grace period)"
        case .overBudget(let tenant, let spent, let limit, let window):
            return
                "tenant \(tenant) is over its hard budget: $\(Money.format(spent)) of $\(Money.format(limit)) this \(window.rawValue), counting what its running jobs will still cost; it starts in the next \(window.rawValue) or when an admin raises the budget"
        case .overQuota(let tenant, let inUse, let quota, let limit):
            return
                "tenant \(tenant) uses \(Fraction.text(Int((inUse * 1000).rounded()))) GPUs; its quota is \(quota) and it may borrow \(limit.map(String.init) ?? "any number") more, which this job would exceed"
        case .mustBorrow(let loan):
            if spec.gpus == 0, case .inferenceReserve(let model) = loan {
                return
                    "it could run only on CPUs and memory that free \(model) GPUs reserved for inference need, which may be taken back at once, and it is not preemptible; submit it --preemptible or wait"
            }
            return
                "it could run only on lent GPUs (\(loan)), which may be taken back at once, and it is not preemptible; submit it --preemptible or wait"
        case .reserveNeeded(let model, let expected, let reserve, let within, let basis):
            let how = basis.map { "from \($0)" } ?? "nothing is known that far ahead, so all of it"
            return
                "it could run now only on \(model) GPUs reserved for inference, and inference is expected to need \(expected) of the \(reserve) within the \(DurationText.format(within)) it would run (\(how)); lent, they would be taken back before it ends. It starts when other GPUs free or inference's expected demand falls; a shorter --estimate or --walltime lets it borrow for less"
        case .fasterModelSoon(let model, let at, let instead, let saves):
            return
                "waiting for \(model) GPUs, expected to have room for it about \(Blocker.time(at)), rather than starting now on \(instead): it is expected to end about \(DurationText.format(saves)) sooner that way (its estimate or walltime, and the running jobs' ends)"
        case .dependency(let why):
            return "waiting for its dependency \(why)"
        case .arrayLimit(let array, let limit):
            return
                "job array \(array) runs at most \(limit) task(s) at once; this one is queued when one of them ends"
        case .dependencyNeverMet(let why):
            return
                "its dependency can never be met: \(why); it stays pending until cancelled (on_dependency_never_met = \"keep\")"
        }
    }

    /// Whether waiting can never remove this blocker.
    public var isPermanent: Bool {
        switch self {
        case .noModelAllowed, .noNodeSelected, .exceedsNodeSize, .exceedsPool, .maxCostBelowAnyPrice,
            .exceedsNodeResources,
            .noMIGProfile, .dependencyNeverMet:
            true
        default: false
        }
    }

    static func time(_ t: Instant) -> String { CivilTime.format(t.seconds) + " UTC" }

    static func describe(_ spec: JobSpec) -> String {
        var s =
            spec.gpuShare.map { "\(Fraction.text($0)) of one " } ?? (spec.isShare ? "a share of one " : "\(spec.gpus)×")
        s += spec.gpuModels.isEmpty ? "GPU" : spec.gpuModels.joined(separator: "|")
        if let m = spec.gpuMemoryMiB { s += " with \(Fraction.mebibytes(m)) of its memory" }
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
        if let m = spec.gpuMemoryMiB { parts.append("a share with \(Fraction.mebibytes(m)) of one GPU's memory") }
        if spec.isShare && spec.gpuMemoryMiB == nil { parts.append("a share of one GPU (on nodes with sharing on)") }
        return parts.isEmpty ? "its constraints" : parts.joined(separator: " and ")
    }

    /// `8 CPUs and 64 GiB`; nil when neither is given.
    static func host(_ cpuMilli: Int?, _ memoryMiB: Int?) -> String? {
        let parts = [
            cpuMilli.map { "\(Fraction.text($0)) CPU\($0 == 1000 ? "" : "s")" }, memoryMiB.map(Fraction.mebibytes),
        ]
        .compactMap { $0 }
        return parts.isEmpty ? nil : parts.joined(separator: " and ")
    }

    static func trim(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(v) }
}

extension Scheduler {
    /// Explains where a job stands. For a pending job: its place in the queue, every blocker (not just the
    /// first the pass met: constraints per model, budget, quota, reservation, capacity), and an estimated
    /// start where the reservation gives one. For a running job: where, why there, at what price, what lent
    /// it its GPUs. Otherwise how it ended.
    /// - Parameters:
    ///   - id: the job.
    ///   - state: the pool.
    ///   - pass: the latest pass over `state`, if the caller keeps one (the daemon does); computed if nil.
    public func explain(_ id: JobID, in state: ClusterState, pass: SchedulingPass? = nil) -> Explanation? {
        guard let job = state.jobs[id] else { return nil }
        var lines: [String] = []
        var start: Instant?
        let spec = job.spec
        let cls = state.priorityClass(of: spec)
        switch job.state {
        case .held:
            lines.append(Blocker.held.sentence(for: spec, in: state))
        case .pending:
            if let waiting = state.dependencyBlocker(of: id) {
                lines.append(waiting.sentence(for: spec, in: state))
                lines.append(contentsOf: modelLines(spec, in: state, ruledOut: []))
                break
            }
            let pass = pass ?? schedule(state, at: state.now)
            if let reason = pass.reason(for: id) {
                lines.append(
                    "queue position \(reason.rank) of \(state.pendingJobs.count) (class \(cls.name), value \(cls.value))"
                )
                if reason.rank > 1 { lines.append("behind \(reason.rank - 1) job(s) of higher priority") }
                lines.append(reason.blocker.sentence(for: spec, in: state))
            } else if pass.decisions.contains(where: { $0.jobID == id }) {
                lines.append("starting now")
            }
            if let r = pass.holds.first(where: { $0.job == id }), let from = r.from {
                start = from
                let on = r.allocation.map { " on \($0)" } ?? ""
                let what = r.allocation?.mig == nil ? "shares" : "instances"
                lines.append(
                    "holds\(on): expected to start by \(Blocker.time(from)), when the \(what) there reach their walltimes or estimates; smaller jobs may not take the room it waits for"
                )
            } else if let r = pass.reservation, r.job == id {
                if let from = r.from {
                    start = from
                    let on = r.allocation.map { " on \($0)" } ?? ""
                    lines.append(
                        "reserved: expected to start by \(Blocker.time(from))\(on), when running jobs reach their walltimes or estimates"
                    )
                } else {
                    lines.append(
                        "it holds the reservation, but no running job gives an end time, so there is no estimate"
                    )
                }
            } else {
                if let r = pass.reservation, let from = r.from, Self.competes(r, with: spec, in: state) {
                    let what = r.allocation.map { "\($0)" } ?? "GPUs"
                    lines.append(
                        "the first blocked job, \(r.job), holds \(what) from \(Blocker.time(from)), GPUs this job could use: it may use them before then only if it ends in time"
                    )
                } else if let r = pass.reservation, let from = r.from, let a = r.allocation, a.gpuCount == 0,
                    case .hostResources? = pass.reason(for: id)?.blocker
                {
                    lines.append(
                        "the first blocked job, \(r.job), holds CPUs and memory of \(a) from \(Blocker.time(from)): this job may use them before then only if it ends in time"
                    )
                }
                if let e = estimatedStart(of: id, in: state, pass: pass) {
                    start = e.start
                    let ahead =
                        e.ahead == 0 ? "" : ", and the \(e.ahead) job(s) ahead of it that wait for GPUs start first"
                    lines.append(
                        "estimated start: about \(Blocker.time(e.start)) (if running jobs end at their walltimes or estimates\(ahead))"
                    )
                }
            }
            if let shield = preemptionHeldBack(job, in: state, pass: pass) { lines.append(shield) }
            lines.append(contentsOf: otherBlockers(job, in: state, pass: pass))
            let fit = Self.walltimeFit(for: spec, in: state)
            if let fit, fit.inTime.isEmpty || policy == .allot { lines.append(fit.sentence) }
            // Models its walltime rules out (while others can meet it) are not "fits now".
            var ruledOut: Set<String> = []
            if let fit, policy == .allot, !fit.inTime.isEmpty { ruledOut = Set(fit.late.map(\.model)) }
            var hostShort = false
            if case .hostResources? = pass.reason(for: id)?.blocker { hostShort = true }
            lines.append(contentsOf: modelLines(spec, in: state, ruledOut: ruledOut, hostShort: hostShort))
            if policy != .fifo {
                let f = priorityFactors(of: job, in: state, at: state.now)
                lines.append(
                    "priority: class \(f.classValue), score \(Int(f.score.rounded())) (age \(pct(f.age)), fair share \(pct(f.fairshare)), size \(pct(f.size))\(f.nice == 0 ? "" : ", nice \(f.nice)"))"
                )
                if let q = queueLine(job, factors: f, in: state) { lines.append(q) }
            }
            if let note = job.note { lines.append("requeued earlier: \(note)") }
        case .running, .stopping:
            if let a = job.allocation, let model = state.config.model(named: a.model) {
                let began = job.startTime ?? state.now
                let price = "$\(Money.format(model.pricePerHour))/GPU-h"
                let hourly = "$\(Money.format(model.pricePerHour * a.gpuEquivalent))/h"
                let what =
                    a.mig.map {
                        "\($0.profile) of one \(a.model), priced as \(Fraction.text(a.migMilli ?? 1000)) of it at \(price): \(hourly)"
                    } ?? a.share.map { "\(Fraction.text($0)) of one \(a.model) at \(price): \(hourly)" }
                    ?? (a.gpuCount == 0
                        ? "\(Blocker.host(a.slices.first?.cpuMilli, a.slices.first?.memoryMiB) ?? "CPUs") and no GPU: no GPU cost"
                        : "\(a.gpuCount)×\(a.model) at \(price)")
                lines.append("running on \(a) (\(what)) since \(DurationText.format(state.now - began)) ago")
                if let share = a.share, let slice = a.slices.first, let node = state.node(named: slice.node),
                    let g = slice.gpus.first, node.sharers[g].count > 1
                {
                    let others = node.sharers[g].filter { $0 != job.id }.map { "job \($0)" }.joined(separator: ", ")
                    lines.append(
                        "shares GPU \(g) of \(slice.node) with \(others) (\(Fraction.text(node.shareUsed[g] - share)) of it)"
                    )
                }
                if let note = job.placement { lines.append("placed on \(note.text(for: .init(spec)))") }
                let expected = state.expectedSeconds(of: spec, on: model)
                lines.append(
                    "expected run time \(DurationText.format(expected)), cost so far $\(Money.format(job.costUSD(at: state.now)))"
                )
                if let w = spec.walltime, expected > w {
                    lines.append(
                        "its expected run time here is longer than its walltime \(DurationText.format(w)): it will be stopped at \(Blocker.time(began + w)) unless it finishes sooner"
                    )
                }
            }
            let notice = DurationText.format(state.config.preemption.loanGrace)
            for loan in job.loans {
                if case .quota(let t) = loan {
                    let tenant = state.config.tenant(named: t)
                    let why =
                        tenant.gpuQuota.map { "tenant \(t) uses more than its quota of \($0) GPUs" }
                        ?? "tenant \(t) has no GPU quota (other tenants have), so every GPU it uses is borrowed"
                    lines.append(
                        "on loan: \(why); a tenant within its quota may take these back with \(notice) notice"
                    )
                } else if case .inferenceReserve(let model) = loan, let began = job.startTime,
                    let m = state.modelIndex[model]
                {
                    let left = max(
                        0,
                        began + state.expectedSeconds(of: spec, on: state.config.gpuModels[m]) - state.now
                    )
                    let reserve = state.inferenceReserve[m]
                    let f = state.inferenceDemand.forecast(model, from: state.now, for: left, cap: reserve)
                    let how = f.basis.map { " (from \($0))" } ?? ""
                    let uses = spec.gpus == 0 ? "the CPUs and memory that free \(loan) need" : "\(loan)"
                    lines.append(
                        "on loan: it uses \(uses), expected for \(DurationText.format(left)) more; inference uses \(state.inferenceDemand.inUse(model)) of the \(reserve) and is expected to need up to \(f.peak) until then\(how). If it needs them sooner they are taken back with \(notice) notice"
                    )
                } else {
                    lines.append("on loan: it uses \(loan), which may be taken back with \(notice) notice")
                }
            }
            if job.state == .stopping, let r = job.stopReason, let text = job.stopText {
                let deadline = (job.stopRequestedAt ?? state.now) + (job.grace ?? 0)
                lines.append(
                    "stopping: \(text); killed in \(DurationText.format(max(0, deadline - state.now))) if still running"
                )
                if case .preempted(_, .migration) = r, let first = job.heldGPUs.first,
                    let node = state.node(named: first.node)
                {
                    let model = state.config.gpuModels[node.modelIndex]
                    let held = job.heldGPUs.map(\.description).joined(separator: "+")
                    var line = "moving to \(held) (\(model.name)), held for it until it starts there"
                    if let a = job.allocation, let from = state.config.model(named: a.model), spec.speed(on: from) > 0 {
                        let ratio = spec.speed(on: model) / spec.speed(on: from)
                        line += ": \(Self.oneDecimal(ratio))× as fast as its \(a.model)"
                    }
                    lines.append(line)
                } else if spec.isElastic, !job.heldGPUs.isEmpty {
                    let n = job.heldGPUs.reduce(0) { $0 + $1.gpus.count }
                    let held = job.heldGPUs.map(\.description).joined(separator: "+")
                    lines.append("resizing: it starts again on \(n) GPU(s), \(held), held for it")
                }
            }
            if job.state == .running && policy == .allot,
                let q = queueLine(job, factors: priorityFactors(of: job, in: state, at: state.now), in: state)
            {
                lines.append(q)
            }
            if let c = job.checkpointThisRun {
                lines.append(
                    "last checkpoint reported \(DurationText.format(state.now - c)) ago: a preemption would lose the work since"
                )
            }
            if let most = spec.maxGPUs, spec.isElastic {
                let step = spec.gpuStep.map { " in steps of \($0)" } ?? ""
                lines.append(
                    "elastic: \(spec.gpus)-\(most) GPUs\(step), now \(job.allocation?.gpuCount ?? 0); it grows into GPUs that stay free and shrinks rather than stop"
                )
            }
            if job.preemptions > 0 { lines.append("preempted \(job.preemptions) time(s) before") }
            if job.moves > 0 {
                lines.append(
                    "moved to faster GPUs \(job.moves) time(s) in a row (at most \(state.config.preemption.maxMoves))"
                )
            }
        case .completed, .failed, .cancelled, .timedOut:
            var s = "\(job.state.rawValue)"
            if let e = job.exit { s += " (\(e))" }
            if let r = job.stopText { s += ": \(r)" }
            lines.append(s)
            if let note = job.note { lines.append(note) }
            lines.append(
                "ran \(DurationText.format(job.pastRunSeconds)) over \(job.runs) run(s), cost $\(Money.format(job.pastCostUSD))"
            )
        }
        return Explanation(id: id, state: job.state, lines: lines, estimatedStart: start)
    }

    /// A training job's attained-service queue (factors of policy `allot` with queues; nil otherwise), e.g. "attained service: 20.5
    /// GPU-h, queue 2 of 2 (thresholds 16 GPU-h; jobs of earlier queues go first and may preempt it)".
    func queueLine(_ job: Job, factors f: PriorityFactors, in state: ClusterState) -> String? {
        guard f.queues > 0 else { return nil }
        let thresholds = state.config.scheduler.serviceQueues.map { Self.oneDecimal($0 / 3600) }
        let used = "attained service: \(Self.oneDecimal(f.attainedGPUSeconds / 3600)) GPU-h"
        let rule = "thresholds \(thresholds.joined(separator: ", ")) GPU-h"
        let s = state.config.scheduler
        if f.queue < 0 {
            return
                "\(used), at the head of queue 1 of \(f.queues) (\(rule)) after waiting \(Self.oneDecimal(s.starvationFactor))× as long as it has run (at least \(DurationText.format(s.starvationMinimum))): it goes before the jobs of later queues and may preempt them"
        }
        if f.queue == 0 && job.state.holdsGPUs
            && s.serviceQueue(gpuSeconds: f.attainedGPUSeconds, runSeconds: 0, waited: 0) > 0
        {
            return
                "\(used), in queue 1 of \(f.queues) for this run (\(rule)): it started after waiting \(Self.oneDecimal(s.starvationFactor))× as long as it had run, so no job preempts it for attained service until it stops"
        }
        let later = f.queue == 0 ? "" : "; jobs of earlier queues go first and may preempt it"
        return "\(used), queue \(f.queue + 1) of \(f.queues) (\(rule)\(later))"
    }

    /// A number with at most one decimal: 16, 20.5.
    static func oneDecimal(_ x: Double) -> String {
        let r = (x * 10).rounded() / 10
        return r == r.rounded() && abs(r) < 1e15 ? String(Int(r)) : String(r)
    }

    /// Whether a reservation holds GPUs a job with `spec` could use.
    static func competes(_ r: Reservation, with spec: JobSpec, in state: ClusterState) -> Bool {
        // A job of CPUs only takes no GPU, and one reserves none.
        guard spec.gpus > 0, r.allocation?.gpuCount != 0 else { return false }
        let mine = Set(state.allowedModels(for: spec))
        if let a = r.allocation, let m = state.modelIndex[a.model] { return mine.contains(m) }
        guard let other = state.jobs[r.job] else { return false }
        return !mine.isDisjoint(with: state.allowedModels(for: other.spec))
    }

    /// For a job waiting for GPUs whose class may preempt: the lower-class jobs on GPUs it could use that the
    /// preemption rules shield for now (minimum run time, protection after repeated preemption), and until
    /// when.
    private func preemptionHeldBack(_ job: Job, in state: ClusterState, pass: SchedulingPass) -> String? {
        guard policy == .allot, let blocker = pass.reason(for: job.id)?.blocker, blocker.waitsForGPUs else {
            return nil
        }
        // Short of CPUs or memory, any job on its nodes could make room; short of GPUs, only one that holds some.
        let forHost = if case .hostResources = blocker { true } else { false }
        let cls = state.priorityClass(of: job.spec)
        guard cls.preempts else { return nil }
        let rules = state.config.preemption
        let models = Set(state.allowedModels(for: job.spec).map { state.config.gpuModels[$0].name })
        var young: (count: Int, until: Instant?) = (0, nil)
        var protected: (count: Int, until: Instant?) = (0, nil)
        for id in state.activeJobs {
            guard let other = state.jobs[id], other.state == .running, let a = other.allocation,
                models.contains(a.model), forHost || a.gpuCount > 0, state.isPreemptible(other.spec),
                state.priorityClass(of: other.spec).value < cls.value, let began = other.startTime
            else { continue }
            let elapsed = state.now - began
            if elapsed < rules.minRuntime {
                young.count += 1
                young.until = min(young.until ?? began + rules.minRuntime, began + rules.minRuntime)
            } else if other.preemptions >= rules.maxPreemptions && elapsed < rules.protection {
                protected.count += 1
                protected.until = min(protected.until ?? began + rules.protection, began + rules.protection)
            }
        }
        var parts: [String] = []
        if let t = young.until {
            parts.append(
                "\(young.count) lower-class job(s) on \(forHost ? "nodes" : "GPUs") it could use are within the minimum run time (\(DurationText.format(rules.minRuntime))), the first until \(Blocker.time(t))"
            )
        }
        if let t = protected.until {
            parts.append(
                "\(protected.count) are protected after \(rules.maxPreemptions) preemptions, the first until \(Blocker.time(t))"
            )
        }
        return parts.isEmpty ? nil : "preemption is held back: " + parts.joined(separator: "; ")
    }

    /// Blockers beyond the one the pass reported: budget and quota state of the tenant.
    private func otherBlockers(_ job: Job, in state: ClusterState, pass: SchedulingPass) -> [String] {
        guard policy == .allot else { return [] }
        var out: [String] = []
        let tenant = state.config.tenant(named: job.spec.tenant)
        let reported = pass.reason(for: job.id)?.blocker
        if let b = tenant.budget {
            let spent = state.spent(by: tenant.name, in: b.window, at: state.now)
            let rate = (state.tenantUsage[tenant.name]?.usage.costUSD.rate ?? 0) * 3600
            var line =
                "budget of tenant \(tenant.name): $\(Money.format(spent)) of $\(Money.format(b.usd)) spent this \(b.window.rawValue) (\(b.enforcement.rawValue))"
            if rate > 0 {
                let left = max(0, b.usd - spent) / (rate / 3600)
                let runsOut = state.now + left
                line +=
                    runsOut < b.window.end(containing: state.now)
                    ? "; at $\(Money.format(rate))/h it runs out at \(Blocker.time(runsOut))"
                    : "; at $\(Money.format(rate))/h it lasts the \(b.window.rawValue)"
            }
            if case .overBudget? = reported {} else { out.append(line) }
        }
        if state.config.quotasInForce {
            // A share counts its share of a GPU, a MIG instance its price, as the pass counts them.
            let rate = state.tenantUsage[tenant.name]?.usage.gpuSeconds.rate ?? 0
            let used = Fraction.text(Int((max(0, rate) * 1000).rounded()))
            let quota = tenant.gpuQuota ?? 0
            let limit = tenant.borrowLimit.map { "may borrow \($0) more" } ?? "may borrow without limit"
            if case .overQuota? = reported {
            } else {
                out.append(
                    "quota of tenant \(tenant.name): \(used) GPUs in use of \(quota) guaranteed; \(limit) (borrowed GPUs can be reclaimed)"
                )
            }
        }
        return out
    }

    /// Per GPU model: why it does not hold the job, or what it has free. `hostShort`: the job waits for CPUs
    /// or memory (GPUs that fit now lack them beside them).
    private func modelLines(
        _ spec: JobSpec,
        in state: ClusterState,
        ruledOut: Set<String> = [],
        hostShort: Bool = false
    ) -> [String] {
        var pool = state.freePool
        var out: [String] = []
        var mayUse: [Bool]?
        if let s = spec.nodes {
            let admits = s.admits(state.nodes)
            pool = pool.keeping(admits)
            out.append(
                "  nodes it may use (\(s.description)): \(admits.filter { $0 }.count) of \(state.nodes.count); GPUs below are theirs"
            )
            mayUse = admits
        }
        for (i, m) in state.config.gpuModels.enumerated() {
            if !spec.gpuModels.isEmpty && !spec.gpuModels.contains(m.name) {
                out.append("  \(m.name): not among the requested models")
            } else if let min = spec.minGPUMemoryGiB, m.memoryGiB < min {
                out.append("  \(m.name): \(Blocker.trim(m.memoryGiB)) GiB per GPU, needs \(Blocker.trim(min))")
            } else if !spec.mig.isEmpty {
                // A MIG job: whole free GPUs are not what it needs; say which models could make its instance.
                let offered = spec.migProfiles(on: m).map(\.name)
                let nodes = state.nodes.filter { n in
                    n.modelIndex == i
                        && (n.spec.mig == .dynamic || n.spec.migLayout.contains { offered.contains($0.profile) })
                }
                out.append(
                    offered.isEmpty || nodes.isEmpty
                        ? "  \(m.name): no MIG node offers \(spec.mig.joined(separator: " or "))"
                        : "  \(m.name): \(nodes.count) MIG node(s) that offer \(offered.joined(separator: " or ")), \(pool.freeGPUs(model: i)) GPU(s) free whole"
                )
            } else if spec.gpus == 0 {
                // A job of CPUs only: what the model's nodes it may use have free.
                let nodes = state.nodes.indices.filter {
                    state.nodes[$0].modelIndex == i && state.nodes[$0].schedulable && mayUse?[$0] != false
                }
                if nodes.isEmpty {
                    out.append("  \(m.name): no node it may use")
                } else if let most = Self.mostHostFree(state, nodes: nodes) {
                    out.append("  \(m.name): at most \(most) free on one node")
                }
            } else {
                let fits = pool.fits(model: i, count: spec.gpus, topology: spec.topology)
                let note =
                    !fits
                    ? ""
                    : ruledOut.contains(m.name)
                        ? " — fits now, but it would outrun its walltime here"
                        : hostShort ? " — its GPUs fit now, not its CPUs or memory beside them" : " — fits now"
                out.append(
                    "  \(m.name): \(pool.freeGPUs(model: i)) free, largest block \(pool.largestBlock(model: i))\(note)"
                )
            }
        }
        return out
    }

    /// The most CPUs and the most memory free on one of `nodes` (each on its own node), as text; nil when
    /// none declares them.
    static func mostHostFree(_ state: ClusterState, nodes: [Int]) -> String? {
        var cpu: Int?
        var memory: Int?
        for i in nodes {
            let n = state.nodes[i]
            if let cap = n.cpuCapacity { cpu = max(cpu ?? 0, cap - n.cpuUsed) }
            if let cap = n.memoryCapacity { memory = max(memory ?? 0, cap - n.memoryUsed) }
        }
        return Blocker.host(cpu, memory)
    }

    private func pct(_ v: Double) -> String { "\(Int((v * 100).rounded()))%" }
}
