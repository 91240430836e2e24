import PropertyBased
import Testing

@testable import AllotCore

/// Drives the allot policy through random workloads with preemption, loans, quotas and budgets, and checks
/// every decision against the rules.
struct PolicyDriver {
    var state: ClusterState
    var time = 0.0
    var violations: [String] = []
    var preemptionsSeen = 0
    var loansSeen = 0
    var resizesSeen = 0

    init() {
        state = ClusterState.fixture(
            nodes: [
                ("h1", "H100", 8, [[0, 1, 2, 3], [4, 5, 6, 7]]), ("a1", "A100", 8, []), ("a2", "A100", 4, []),
                ("l1", "L4", 4, []), ("l2", "L4", 4, []),
            ],
            tenants: [
                Tenant(
                    name: "t0",
                    gpuQuota: 8,
                    borrowLimit: 8,
                    budget: Budget(usd: 40, window: .day, enforcement: .hard)
                ),
                Tenant(name: "t1", gpuQuota: 8, budget: Budget(usd: 30, window: .day, enforcement: .soft)),
                Tenant(name: "t2", gpuQuota: 4),
            ]
        ) {
            $0.inferenceReserve = [InferenceReserve(gpuModel: "L4", gpus: 6)]
            $0.preemption.minRuntime = 300
            $0.preemption.maxPreemptions = 2
            $0.preemption.protection = 900
        }
    }

    mutating func step(_ op: Int) {
        time += Double(op % 11) * 17
        let now = Instant(seconds: time)
        let active = state.activeJobs.sorted()
        switch op % 9 {
        case 0, 1, 2:
            let inference = op % 5 == 0
            var spec = JobSpec(
                tenant: "t\(op % 3)",
                kind: inference ? .inference : .training,
                gpus: 1 + (op / 9) % (inference ? 2 : 10)
            )
            if op % 7 == 0 { spec.priorityClass = "batch" }
            if op % 13 == 0 { spec.preemptible = false }
            if op % 3 == 0 { spec.walltime = Double(300 + op % 5000) }
            spec.estimate = Double(600 + op % 7000)
            if op % 17 == 0 { spec.topology = .singleNode }
            if op % 19 == 0 { spec.prefer = .cheapest }
            if inference { spec.minGPUMemoryGiB = 20 }
            if !inference && op % 4 == 1 { spec.maxGPUs = spec.gpus + 1 + op % 6 }
            _ = try? state.apply(Event(time: now, .jobSubmitted(id: state.nextJobID, spec: spec, held: false)))
        case 3, 4, 5:
            check(Scheduler().schedule(state, at: now), at: now)
        case 6:
            // Jobs told to stop exit; a random running job ends.
            for id in active where state.jobs[id]?.state == .stopping {
                _ = try? state.apply(Event(time: now, .jobFinished(id: id, exit: .signaled(signal: 15))))
            }
            if let id = active.first(where: { state.jobs[$0]?.state == .running }), op % 2 == 0 {
                _ = try? state.apply(Event(time: now, .jobFinished(id: id, exit: .exited(code: 0))))
            }
        case 7:
            if !active.isEmpty {
                _ = try? state.apply(Event(time: now, .jobCheckpointed(id: active[op % active.count])))
            }
        default:
            time += 400
        }
    }

    /// Checks a pass against the rules, then applies it.
    mutating func check(_ pass: SchedulingPass, at now: Instant) {
        let rules = state.config.preemption
        var started: [String: Double] = [:]
        var stopReasons: [JobID: PreemptionReason] = [:]
        for d in pass.decisions {
            switch d {
            case .preempt(let id, let by, _, let reason):
                preemptionsSeen += 1
                stopReasons[id] = reason
                guard let v = state.jobs[id], let p = state.jobs[by] else {
                    violations.append("preempt names an unknown job")
                    continue
                }
                if v.state != .running { violations.append("job \(id) is \(v.state) but was told to stop") }
                if !state.isPreemptible(v.spec) {
                    violations.append("non-preemptible job \(id) is a victim (\(reason))")
                }
                if reason == .priority {
                    let age = now - (v.startTime ?? now)
                    if age < rules.minRuntime { violations.append("job \(id) preempted by class at age \(age)") }
                    if v.preemptions >= rules.maxPreemptions && age < rules.protection {
                        violations.append("protected job \(id) preempted")
                    }
                    if state.priorityClass(of: p.spec).value <= state.priorityClass(of: v.spec).value {
                        violations.append("job \(by) preempted job \(id) of a class not lower")
                    }
                } else if reason == .service {
                    let age = now - (v.startTime ?? now)
                    if age < rules.minRuntime { violations.append("job \(id) preempted by service at age \(age)") }
                    if v.preemptions >= rules.maxPreemptions && age < rules.protection {
                        violations.append("protected job \(id) preempted by service")
                    }
                    if state.priorityClass(of: p.spec).value != state.priorityClass(of: v.spec).value
                        || v.spec.kind != .training || p.spec.kind != .training
                    {
                        violations.append("job \(by) preempted job \(id) by service across classes or kinds")
                    }
                    let settings = state.config.scheduler
                    let waited = now - p.queuedSince
                    let mine = settings.serviceQueue(
                        gpuSeconds: p.pastGPUSeconds,
                        runSeconds: p.pastRunSeconds,
                        waited: waited
                    )
                    if settings.serviceQueue(running: v, at: now) <= max(0, mine) {
                        violations.append("job \(by) preempted job \(id) by service from a queue not later")
                    }
                } else if reason == .resize {
                    if !v.spec.isElastic { violations.append("job \(id) resized (by \(by)) but is not elastic") }
                    if id != by {
                        // It gives back GPUs it grew into to a job of its class or a higher one, of a queue not
                        // later, after its minimum runtime.
                        let age = now - (v.startTime ?? now)
                        if age < rules.minRuntime { violations.append("job \(id) gave back GPUs at age \(age)") }
                        if state.priorityClass(of: p.spec).value < state.priorityClass(of: v.spec).value {
                            violations.append("job \(id) gave back GPUs to job \(by) of a lower class")
                        }
                        let settings = state.config.scheduler
                        let mine = settings.serviceQueue(
                            gpuSeconds: p.pastGPUSeconds,
                            runSeconds: p.pastRunSeconds,
                            waited: now - p.queuedSince
                        )
                        if p.spec.kind == .training && max(0, mine) > settings.serviceQueue(running: v, at: now) {
                            violations.append("job \(id) gave back GPUs to job \(by) of a later queue")
                        }
                    }
                } else if reason == .migration {
                    let age = now - (v.startTime ?? now)
                    if id != by || v.spec.kind != .training || age < rules.minRuntime || v.moves >= rules.maxMoves {
                        violations.append("job \(id) moved (by \(by)) at age \(age) after \(v.moves) move(s)")
                    }
                } else if v.loans.isEmpty {
                    violations.append("job \(id) was reclaimed (\(reason)) but holds no loan")
                }
            case .hold(let id, let slices):
                guard let v = state.jobs[id], let a = v.allocation, let from = state.config.model(named: a.model)
                else {
                    violations.append("GPUs held for job \(id), which runs nowhere")
                    continue
                }
                if stopReasons[id] != .migration {
                    // An elastic job resizing: within its range, on its own model, never below its fewest.
                    resizesSeen += 1
                    let n = slices.reduce(0) { $0 + $1.gpus.count }
                    let models = Set(slices.compactMap { state.node(named: $0.node)?.modelIndex })
                    if !v.spec.isElastic || n < v.spec.gpus || n > (v.spec.maxGPUs ?? 0)
                        || models != [state.modelIndex[a.model]!]
                    {
                        violations.append(
                            "job \(id) (\(v.spec.gpus)-\(v.spec.maxGPUs ?? 0) GPUs) resizes to \(n) on \(models)"
                        )
                    }
                    for slice in slices {
                        guard let node = state.node(named: slice.node) else { continue }
                        for g in slice.gpus where node.holder[g] != nil && node.holder[g] != id {
                            violations.append("GPU \(g) of \(slice.node) held for job \(id) is another job's")
                        }
                    }
                    continue
                }
                // Free GPUs, all of one model faster than the moving job's.
                for slice in slices {
                    guard let node = state.node(named: slice.node) else {
                        violations.append("GPUs held on unknown node \(slice.node)")
                        continue
                    }
                    if state.config.gpuModels[node.modelIndex].speed <= from.speed {
                        violations.append("job \(id) moves to \(slice.node), no faster than its \(a.model)")
                    }
                    for g in slice.gpus where node.holder[g] != nil || !node.sharers[g].isEmpty {
                        violations.append("GPU \(g) of \(slice.node) held for job \(id) is not free")
                    }
                }
            case .start(let id, let a, let note, let loans):
                if let spec = state.jobs[id]?.spec, spec.isElastic,
                    a.gpuCount < spec.gpus || a.gpuCount > (spec.maxGPUs ?? spec.gpus)
                {
                    violations.append(
                        "elastic job \(id) (\(spec.gpus)-\(spec.maxGPUs ?? 0)) starts on \(a.gpuCount) GPUs"
                    )
                }
                if !loans.isEmpty {
                    loansSeen += 1
                    if !state.isPreemptible(state.jobs[id]!.spec) {
                        violations.append("non-preemptible job \(id) got a loan")
                    }
                }
                let tenant = state.jobs[id]!.spec.tenant
                if let b = state.config.tenant(named: tenant).budget, b.enforcement == .hard {
                    started[tenant, default: 0] += note.estimatedCostUSD
                    let projected = state.spent(by: tenant, in: b.window, at: now) + started[tenant]!
                    if projected > b.usd + 1e-9 {
                        violations.append("start of job \(id) takes tenant \(tenant) to $\(projected) of $\(b.usd)")
                    }
                }
            }
        }
        let starts = Set(pass.decisions.compactMap { if case .start(let id, _, _, _) = $0 { id } else { nil } })
        if starts.union(pass.pending.map(\.id)) != state.pendingJobs.ids {
            violations.append("a pending job has no reason")
        }
        for e in pass.events(at: now) {
            do { try state.apply(e) } catch { violations.append("the state refused a decision: \(error)") }
        }
        if let broken = state.invariantViolations().first { violations.append(broken) }
    }
}

@Suite struct PolicyPropertyTests {
    @Test func everyDecisionFollowsThePreemptionLoanAndBudgetRules() async {
        await propertyCheck(count: 80, input: Gen.int(in: 0...99_999).array(of: 50...400)) { ops in
            var d = PolicyDriver()
            for op in ops { d.step(op) }
            #expect(d.violations.isEmpty, "\(d.violations.prefix(3))")
        }
    }

    @Test func theRandomWorkloadsDoExercisePreemptionAndLoans() {
        // Guards the property above against testing nothing: over many seeds, decisions of each kind occur.
        var rng = SplitMix64(seed: 20_261_202)  // seeded: the guard checks the same workloads every run
        var preemptions = 0
        var loans = 0
        var resizes = 0
        for _ in 0..<40 {
            var d = PolicyDriver()
            for _ in 0..<400 { d.step(Int.random(in: 0...99_999, using: &rng)) }
            preemptions += d.preemptionsSeen
            loans += d.loansSeen
            resizes += d.resizesSeen
            #expect(d.violations.isEmpty, "\(d.violations.prefix(3))")
        }
        #expect(preemptions > 10)
        #expect(loans > 10)
        #expect(resizes > 5, "elastic jobs grow and shrink")
    }
}
