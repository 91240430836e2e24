import AllotCore

/// A seeded simulation of the whole controller under faults, in the manner of TigerBeetle's VOPR and
/// FoundationDB's simulation testing: the real ``Controller`` against a simulated log that can lose its
/// unsynced tail in a crash (between append and fsync, or between fsync and the effect), simulated runners
/// whose jobs exit, fail, hang or ignore SIGTERM and outlive a crash, nodes whose GPUs fail and heal and
/// whose agents are lost and come back (fenced) or restart, requests (submit, cancel, hold, release), and a wall clock
/// that steps — every choice drawn from one seed, so a failure replays exactly.
///
/// After every step it checks what must hold: no GPU held by two jobs (the state's invariants), no
/// acknowledged request lost after a recovery, at most one live run per job on nodes that are up and none
/// after fencing that the state does not assign, every pending job with a reason after a pass, and the log
/// rebuilding the state exactly.
public struct FaultSimulation: Sendable {
    /// What went wrong: the seed and step replay it (`allotctl simulate-faults --seed S`).
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var seed: UInt64
        public var step: Int
        public var message: String
        /// The last inputs before the failure, oldest first.
        public var recent: [String]

        public var description: String {
            "seed \(seed), step \(step): \(message)\n  last inputs:\n    " + recent.joined(separator: "\n    ")
        }
    }

    /// What a run went through.
    public struct Report: Sendable, Hashable {
        public var steps = 0
        public var events = 0
        public var crashes = 0
        public var submits = 0
        public var starts = 0
        public var gpuFailures = 0
        public var nodesLost = 0
        /// Agents that restarted and registered again before the controller missed them.
        public var agentRestarts = 0
        public var fenced = 0
        public var killedAfterGrace = 0
        public var wallClockSteps = 0
        public var completed = 0
        public var requeues = 0
        /// Jobs moved or resized onto GPUs held for them.
        public var resizes = 0
        public var serviceChanges = 0
        /// Sizes the services' autoscaler chose.
        public var autoscaled = 0

        public init() {}

        /// This report and another, added up.
        public func adding(_ o: Report) -> Report {
            var r = self
            r.steps += o.steps
            r.events += o.events
            r.crashes += o.crashes
            r.submits += o.submits
            r.starts += o.starts
            r.gpuFailures += o.gpuFailures
            r.nodesLost += o.nodesLost
            r.agentRestarts += o.agentRestarts
            r.fenced += o.fenced
            r.killedAfterGrace += o.killedAfterGrace
            r.wallClockSteps += o.wallClockSteps
            r.completed += o.completed
            r.requeues += o.requeues
            r.resizes += o.resizes
            r.serviceChanges += o.serviceChanges
            r.autoscaled += o.autoscaled
            return r
        }

        public var summary: String {
            let parts = [
                "\(steps) steps", "\(events) events", "\(crashes) crashes", "\(submits) submits", "\(starts) starts",
                "\(completed) completed", "\(requeues) requeues", "\(resizes) moves or resizes",
                "\(gpuFailures) jobs stopped by GPU failures",
                "\(nodesLost) agents lost", "\(agentRestarts) agents restarted", "\(fenced) runs fenced",
                "\(killedAfterGrace) killed after their grace",
                "\(wallClockSteps) wall clock steps", "\(serviceChanges) services created, scaled or deleted",
                "\(autoscaled) sizes chosen by the autoscaler",
            ]
            return parts.joined(separator: ", ")
        }
    }

    public let seed: UInt64
    public var steps: Int

    public init(seed: UInt64, steps: Int = 2_000) {
        self.seed = seed
        self.steps = steps
    }

    // MARK: The world

    /// How a simulated job behaves.
    private enum Behaviour { case exits(code: Int32, after: Double), hangs, ignoresTerm(after: Double) }

    private struct Run {
        var id: JobID
        var run: Int
        var node: String
        var behaviour: Behaviour
        var startedAt: Double
        /// When it was told to stop (mono), and its grace.
        var stopAt: Double?
        var grace: Double = 0
        /// Set once it has ended: how (kept, as a supervisor's status file is, until the end is recorded).
        var end: Controller.RunEnd?
        /// When its end is reported to the controller (delayed, sometimes twice).
        var reportAt: Double?
    }

    private struct RunKey: Hashable { var id: JobID, run: Int }

    /// Every choice, from the seed.
    private struct RNG {
        var base: SplitMix64
        init(seed: UInt64) { base = SplitMix64(seed: seed) }
        mutating func next() -> UInt64 { base.next() }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }
        mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
        mutating func uniform(_ lo: Double, _ hi: Double) -> Double {
            lo + (hi - lo) * Double(next() >> 11) / Double(1 << 53)
        }
    }

    /// The pool: four nodes of eight GPUs, two run here and two by agents.
    static func initialState() -> ClusterState {
        var config = PoolConfig(
            gpuModels: [
                GPUModel(name: "H100", memoryGiB: 80, pricePerHour: 4, speed: 2),
                GPUModel(name: "L4", memoryGiB: 24, pricePerHour: 0.6, speed: 0.35),
            ],
            tenants: [Tenant(name: "a", shares: 1), Tenant(name: "b", shares: 2)]
        )
        config.scheduler.interval = 5
        config.preemption.minRuntime = 5
        var s = ClusterState()
        var events = [Event(time: .zero, .configApplied(config: config))]
        for (name, model) in [("h1", "H100"), ("h2", "H100"), ("l1", "L4"), ("l2", "L4")] {
            events.append(Event(time: .zero, .nodeAdded(spec: NodeSpec(name: name, gpuModel: model, gpus: 8))))
        }
        try! s.apply(events)
        return s
    }

    static let localNodes = ["h1", "l1"]
    static let agentNodes = ["h2", "l2"]

    // MARK: Running it

    /// Runs the simulation. - Throws: ``Failure`` at the first broken invariant.
    public func run() throws(Failure) -> Report {
        var rng = RNG(seed: seed)
        var report = Report()
        let initial = Self.initialState()
        var durable: [Event] = []
        var unsynced: [Event] = []
        /// Effects waiting for their events to be durable: (events logged before them, effect).
        var unreleased: [(upTo: Int, effect: Controller.Effect)] = []
        /// Submits acknowledged to their client (their event was durable): they must survive any crash.
        var acknowledged: [(upTo: Int, id: JobID)] = []
        var acked = Set<JobID>()
        var runs: [RunKey: Run] = [:]
        /// Agent nodes cut off from the controller (lost): their runs go on until the agent comes back.
        var partitioned = Set<String>()
        var mono = 0.0
        var wallOffset = 1_800_000_000.0
        /// The last inputs (described only when something fails).
        var recent: [(mono: Double, input: Controller.Input?, note: String)] = []
        var controller = Controller(state: initial)
        var stepNo = 0
        var passWanted = true

        func clock() -> ClockReading { ClockReading(wall: Instant(seconds: mono + wallOffset), mono: mono) }
        func fail(_ message: String) -> Failure {
            Failure(
                seed: seed,
                step: stepNo,
                message: message,
                recent: recent.suffix(12).map { "t=\(Int($0.mono)) " + ($0.input.map(Self.describe) ?? $0.note) }
            )
        }

        @discardableResult
        func feed(_ input: Controller.Input) throws(Failure) -> Controller.Output {
            recent.append((mono, input, ""))
            if recent.count > 64 { recent.removeFirst(recent.count - 32) }
            let out = controller.step(input, at: clock())
            for (body, error) in out.refused {
                // Requests may race (a cancel of a job that just ended); rules never should.
                switch input {
                case .record, .cancel, .hold, .release, .submit: continue
                default: break
                }
                throw fail("the controller's own decision was refused: \(body) — \(error)")
            }
            unsynced += out.events
            report.events += out.events.count
            for e in out.events {
                switch e.body {
                case .jobStarted: report.starts += 1
                case .jobGPUFailed: report.gpuFailures += 1
                case .jobRequeued: report.requeues += 1
                case .jobGPUsHeld: report.resizes += 1
                case .serviceScaled(_, _, _, _, let reason) where reason.hasPrefix("autoscaled"): report.autoscaled += 1
                case .jobFinished:
                    if case .jobFinished(let id, _, _) = e.body, controller.state.jobs[id]?.state == .completed {
                        report.completed += 1
                    }
                default: break
                }
            }
            let upTo = durable.count + unsynced.count
            for effect in out.effects { unreleased.append((upTo, effect)) }
            if out.passWanted { passWanted = true }
            if case .pass = input {
                // Every pending job has a reason.
                let reasons = Set(controller.lastPass.pending.map(\.id))
                for id in controller.state.pendingJobs.ids where !reasons.contains(id) {
                    let job = controller.state.jobs[id]
                    let decided = controller.lastPass.decisions.filter { $0.jobID == id }.map { "\($0)" }
                    throw fail(
                        "pending job \(id) (\(job?.spec.name ?? "?"), run \(job?.runs ?? 0)) has no reason after a pass"
                            + (decided.isEmpty ? "" : "; the pass decided: \(decided.joined(separator: "; "))")
                    )
                }
            }
            return out
        }

        /// The effects whose events are durable, carried out.
        /// Orders on their way to agents: in order per node (one link), delayed, sometimes sent twice; a cut link
        /// loses them (what the agent missed is sent again when it registers).
        var inFlight: [String: [(at: Double, effect: Controller.Effect)]] = [:]

        /// A runner carries out an order: a start makes the run unless it has it (orders are idempotent), a
        /// stop signals it.
        func setRunners() throws(Failure) {
            for n in Self.localNodes { try feed(.runner(node: n, .local)) }
            for n in Self.agentNodes { try feed(.runner(node: n, .agent)) }
        }
        try setRunners()

        func carryOut(_ effect: Controller.Effect, on node: String) {
            switch effect {
            case .start(let id, let run):
                guard runs[RunKey(id: id, run: run)] == nil else { return }
                let behaviour: Behaviour
                switch rng.below(10) {
                case 0: behaviour = .hangs
                case 1: behaviour = .ignoresTerm(after: rng.uniform(5, 200))
                case 2: behaviour = .exits(code: 1, after: rng.uniform(1, 100))
                default: behaviour = .exits(code: 0, after: rng.uniform(1, 150))
                }
                runs[RunKey(id: id, run: run)] = Run(
                    id: id,
                    run: run,
                    node: node,
                    behaviour: behaviour,
                    startedAt: mono
                )
            case .stop(let id, let run, let grace, _):
                guard var r = runs[RunKey(id: id, run: run)], r.end == nil else { return }
                if r.stopAt == nil || mono + grace < r.stopAt! + r.grace {
                    r.stopAt = mono
                    r.grace = grace
                }
                runs[RunKey(id: id, run: run)] = r
            case .notify, .ended: return
            }
        }

        /// The effects whose events are durable, carried out as the shell does: checked against the state
        /// now, then run here or sent to the node's agent.
        func release() {
            var keep: [(upTo: Int, effect: Controller.Effect)] = []
            for (upTo, effect) in unreleased {
                guard upTo <= durable.count else {
                    keep.append((upTo, effect))
                    continue
                }
                let node: String
                switch effect {
                case .start(let id, let run):
                    guard let job = controller.state.jobs[id], job.runs == run, job.state == .running,
                        let n = job.allocation?.slices.first?.node
                    else { continue }
                    node = n
                case .stop(let id, let run, _, _):
                    guard let job = controller.state.jobs[id], job.runs == run, job.state == .stopping,
                        let n = job.allocation?.slices.first?.node
                    else { continue }
                    node = n
                case .notify, .ended: continue
                }
                if partitioned.contains(node) { continue }
                if Self.agentNodes.contains(node) {
                    let last = inFlight[node]?.last?.at ?? mono
                    let at = max(last, mono + rng.uniform(0, 2))
                    inFlight[node, default: []].append((at, effect))
                    if rng.chance(0.1) { inFlight[node, default: []].append((at + rng.uniform(0, 1), effect)) }
                } else {
                    carryOut(effect, on: node)
                }
            }
            unreleased = keep
        }

        /// Orders that reached their agents by now.
        func deliver() {
            for node in inFlight.keys.sorted() {
                while let first = inFlight[node]?.first, first.at <= mono {
                    inFlight[node]?.removeFirst()
                    if !partitioned.contains(node) { carryOut(first.effect, on: node) }
                }
            }
        }

        func sync() {
            durable += unsynced
            unsynced.removeAll()
            for (upTo, id) in acknowledged where upTo <= durable.count { acked.insert(id) }
            acknowledged.removeAll { $0.upTo <= durable.count }
        }

        /// The runners' clocks: runs end by themselves, on SIGTERM, or killed after their grace.
        func advanceRuns() throws(Failure) {
            for key in runs.keys.sorted(by: { ($0.id, $0.run) < ($1.id, $1.run) }) {
                guard var r = runs[key] else { continue }
                if r.end == nil {
                    var end: Controller.RunEnd?
                    if case .exits(let code, let after) = r.behaviour, mono >= r.startedAt + after {
                        end = .init(id: r.id, run: r.run, exit: .exited(code: code))
                    }
                    if end == nil, let stop = r.stopAt {
                        switch r.behaviour {
                        case .ignoresTerm where mono >= stop + r.grace, .hangs where mono >= stop + r.grace:
                            end = .init(id: r.id, run: r.run, exit: .signaled(signal: 9), killed: true)
                            report.killedAfterGrace += 1
                        case .exits where mono >= stop + min(r.grace, 2):
                            end = .init(id: r.id, run: r.run, exit: .signaled(signal: 15))
                        default: break
                        }
                    }
                    if case .ignoresTerm(let after) = r.behaviour, end == nil, mono >= r.startedAt + after {
                        end = .init(id: r.id, run: r.run, exit: .exited(code: 0))
                    }
                    if let end {
                        var e = end
                        e.endedAt = Instant(seconds: mono + wallOffset)
                        r.end = e
                        r.reportAt = mono + rng.uniform(0, 3)
                    }
                }
                // Reported (late, sometimes twice) unless the node is cut off.
                if let end = r.end, let at = r.reportAt, mono >= at, !partitioned.contains(r.node) {
                    r.reportAt = rng.chance(0.1) ? mono + rng.uniform(0, 5) : nil
                    runs[key] = r
                    try feed(.runEnded(end))
                    continue
                }
                runs[key] = r
            }
        }

        /// The controller's host crashes: the unsynced tail is lost, and with it every effect not carried
        /// out; the controller comes back from the log; the runs outlive it and are taken back.
        func crash() throws(Failure) {
            report.crashes += 1
            recent.append((mono, nil, "CRASH (lost \(unsynced.count) unsynced events)"))
            unsynced.removeAll()
            unreleased.removeAll()
            acknowledged.removeAll()
            // The agents' links break with it: an order on its way was read before, or is lost.
            for node in inFlight.keys.sorted() where !partitioned.contains(node) {
                for order in inFlight[node] ?? [] where rng.chance(0.5) { carryOut(order.effect, on: node) }
            }
            inFlight.removeAll()
            var recovered = initial
            do { try recovered.apply(durable) } catch { throw fail("the log does not replay: \(error)") }
            controller = Controller(state: recovered)
            // As allotd: every output is logged, a runner's too (a service's missing replicas are submitted
            // on the first step after recovery, whichever it is).
            try setRunners()
            for id in acked where recovered.jobs[id] == nil {
                throw fail("acknowledged job \(id) is gone after a recovery")
            }
            // Adoption, as allotd does it: a run still going here is watched again; one that ended reports its
            // status; one never started (its start event was durable, the start was not carried out) starts.
            // Agents' runs are not adopted: each agent reconnects and registers with what it holds (below).
            for id in recovered.activeJobs.sorted() {
                guard let job = recovered.jobs[id], let node = job.allocation?.slices.first?.node,
                    !Self.agentNodes.contains(node)
                else { continue }
                let key = RunKey(id: id, run: job.runs)
                if let r = runs[key] {
                    if let end = r.end {
                        try feed(.runEnded(end))
                    } else if job.state == .stopping {
                        var adopted = r
                        if adopted.stopAt == nil {
                            adopted.stopAt = mono
                            adopted.grace = job.graceLeft(at: mono + wallOffset)
                        }
                        runs[key] = adopted
                    }
                } else if job.state == .running {
                    unreleased.append((durable.count, .start(id, run: job.runs)))
                } else {
                    try feed(.runEnded(.init(id: id, run: job.runs, exit: .lost(reason: "never started"))))
                }
            }
            for node in Self.agentNodes where !partitioned.contains(node) { try register(node) }
            // An agent still cut off is lost again once its node_timeout passes.
            for node in partitioned.sorted() where controller.state.node(named: node)?.state != .down {
                try feed(.nodeLost(node: node, reason: "agent lost: no heartbeat"))
            }
            passWanted = true
        }

        /// An agent registers with the runs it holds (going, or ended and not yet reported); it kills every
        /// run the controller does not keep.
        func register(_ node: String) throws(Failure) {
            if controller.state.node(named: node)?.state == .down {
                try feed(.nodeState(node: node, .up, reason: nil))
            }
            let holds = runs.filter { key, r in
                guard r.node == node else { return false }
                if r.end == nil || r.reportAt != nil { return true }
                // An end is held until the controller has it (its event may have been lost in a crash).
                return controller.state.jobs[key.id].map { $0.runs == key.run && $0.state.holdsGPUs } ?? false
            }
            .keys.sorted { ($0.id, $0.run) < ($1.id, $1.run) }
            .map { Controller.RunRef(id: $0.id, run: $0.run) }
            let keep = Set(try feed(.agentRegistered(node: node, holds: holds)).keep)
            for ref in keep {
                let key = RunKey(id: ref.id, run: ref.run)
                if runs[key]?.end != nil && runs[key]?.reportAt == nil { runs[key]?.reportAt = mono }
            }
            for ref in holds where !keep.contains(ref) {
                let key = RunKey(id: ref.id, run: ref.run)
                if runs[key]?.end == nil {
                    runs[key]?.end = .init(id: ref.id, run: ref.run, exit: .signaled(signal: 9), killed: true)
                    report.fenced += 1
                }
                runs[key]?.reportAt = nil
            }
        }

        for step in 0..<steps {
            stepNo = step
            report.steps += 1
            mono += rng.uniform(0.1, 3)
            deliver()
            try advanceRuns()
            switch rng.below(100) {
            case 0..<10:
                let id = controller.state.nextJobID
                let kind: JobKind = rng.chance(0.3) ? .inference : .training
                var spec = JobSpec(
                    name: "j\(id)",
                    tenant: rng.chance(0.5) ? "a" : "b",
                    kind: kind,
                    gpus: [1, 1, 2, 4, 8][rng.below(5)]
                )
                if rng.chance(0.3) { spec.walltime = rng.uniform(10, 120) }
                if rng.chance(0.3) { spec.grace = rng.uniform(0, 20) }
                // Elastic training: it grows, shrinks and restarts on GPUs held for it through the faults.
                if kind == .training && rng.chance(0.25) { spec.maxGPUs = spec.gpus + [1, 2, 4][rng.below(3)] }
                let held = rng.chance(0.1)
                try feed(.submit([.init(spec: spec, held: held)]))
                acknowledged.append((durable.count + unsynced.count, id))
                report.submits += 1
                passWanted = true
            case 10..<14:
                let active = controller.state.activeJobs.sorted() + controller.state.pendingJobs.ids.sorted()
                if !active.isEmpty {
                    let id = active[rng.below(active.count)]
                    if controller.state.jobs[id] != nil {
                        try feed(.cancel(id, by: 1000))
                        passWanted = true
                    }
                }
            case 14..<16:
                let held = controller.state.jobs.filter { $0.state == .held }.map(\.id).sorted()
                if let id = held.first { try feed(.release(id)) }
            case 16..<19:
                let node = ["h1", "h2", "l1", "l2"][rng.below(4)]
                let gpu = rng.below(8)
                let sick = rng.chance(0.6)
                try feed(
                    .gpuHealth(
                        node: node,
                        gpus: [.init(index: gpu, health: sick ? .unhealthy : .healthy, reason: sick ? "Xid 79" : nil)]
                    )
                )
            case 19..<21:
                let node = Self.agentNodes[rng.below(2)]
                if partitioned.contains(node) {
                    // The agent comes back: the controller's fencing keeps the runs it still assigns there
                    // and sends again what the agent missed.
                    partitioned.remove(node)
                    try register(node)
                } else if controller.state.node(named: node)?.state != .down {
                    if rng.chance(0.4) {
                        // The agent restarts before the controller misses it: the orders on their way are
                        // lost, its runs go on, and it registers again with them.
                        inFlight[node] = nil
                        report.agentRestarts += 1
                        try register(node)
                    } else {
                        partitioned.insert(node)
                        inFlight[node] = nil  // the link is cut: what was on its way is lost
                        report.nodesLost += 1
                        try feed(.nodeLost(node: node, reason: "agent lost: no heartbeat"))
                    }
                }
            case 21..<23:
                report.wallClockSteps += 1
                wallOffset += rng.chance(0.5) ? rng.uniform(60, 86_400) : -rng.uniform(60, 3_600)
            case 23..<25:
                if rng.chance(0.5) { sync() }
                try crash()
            case 25..<28:
                // A service: created, scaled (its replicas submitted and cancelled by the controller, crash
                // loops backed off), deleted.
                report.serviceChanges += 1
                if controller.state.services["svc"] == nil {
                    let spec = ServiceSpec(
                        name: "svc",
                        template: JobSpec(name: "svc", tenant: "a", kind: .inference, gpus: 1, command: ["serve"]),
                        minReplicas: 0,
                        maxReplicas: 4,
                        autoscale: rng.chance(0.5)
                            ? nil
                            : {
                                var a = Autoscale(target: 2)
                                a.window = 30
                                a.downDelay = rng.chance(0.5) ? 20 : 0
                                a.zeroAfter = 60
                                return a
                            }()
                    )
                    try feed(.record([.serviceCreated(spec: spec, replicas: 1 + rng.below(3))]))
                } else if rng.chance(0.3), let s = controller.state.services["svc"] {
                    // A new version: its replicas roll one at a time as they become ready.
                    var spec = s.spec
                    spec.template.command = ["serve", "v\(s.generation + 1)"]
                    try feed(.record([.serviceUpdated(spec: spec, replicas: s.replicas, by: 1000)]))
                } else if rng.chance(0.65) {
                    try feed(
                        .record([
                            .serviceScaled(
                                name: "svc",
                                replicas: rng.below(5),
                                minReplicas: 0,
                                maxReplicas: 4,
                                reason: "test"
                            )
                        ])
                    )
                } else {
                    try feed(.deleteService("svc", by: 1000))
                }
                passWanted = true
            case 34..<40:
                // The runners report which replicas serve.
                let replicas = controller.state.services["svc"]?.members ?? []
                if !replicas.isEmpty {
                    let id = replicas[rng.below(replicas.count)]
                    try feed(.replicaReady(id, rng.chance(0.8)))
                }
            case 28..<34:
                // The load a router reports (an autoscaled service follows it; others ignore it).
                try feed(.serviceLoad("svc", rng.chance(0.3) ? 0 : rng.uniform(0, 12)))
            default:
                break
            }
            if rng.chance(0.4) { try feed(.tick) }
            if passWanted && rng.chance(0.7) {
                passWanted = false
                try feed(.pass)
            }
            if rng.chance(0.6) {
                sync()
                release()
            }
            // What must hold.
            if let broken = controller.state.invariantViolations().first { throw fail(broken) }
            var live: [JobID: RunKey] = [:]
            for (key, r) in runs where r.end == nil && !partitioned.contains(r.node) {
                if let other = live[key.id] {
                    let job = controller.state.jobs[key.id]
                    throw fail(
                        "job \(key.id) has two live runs: \(other.run) on \(runs[other]!.node) and \(key.run) on \(r.node); "
                            + "the job is \(job?.state.rawValue ?? "gone"), run \(job?.runs ?? 0) on \(job?.allocation?.description ?? "-")"
                    )
                }
                live[key.id] = key
            }
            if step % 50 == 49 {
                var replayed = initial
                for (i, e) in (durable + unsynced).enumerated() {
                    do { try replayed.apply(e) } catch {
                        throw fail(
                            "the log does not replay: event \(i + 1), \(e.kindName) \("\(e.body)".prefix(120)): \(error)"
                        )
                    }
                }
                if replayed != controller.state { throw fail("replaying the log does not rebuild the state") }
            }
        }
        return report
    }

    static func describe(_ input: Controller.Input) -> String {
        switch input {
        case .pass: "pass"
        case .tick: "tick"
        case .runEnded(let e): "run ended: job \(e.id) run \(e.run) \(e.exit)\(e.killed ? " (killed)" : "")"
        case .gpuHealth(let node, let gpus):
            "GPU health \(node): " + gpus.map { "\($0.index)=\($0.health.rawValue)" }.joined(separator: ",")
        case .nodeState(let node, let st, _): "node \(node) \(st.rawValue)"
        case .nodeLost(let node, _): "node \(node) lost"
        case .runner(let node, let r): "runner \(node) \(r)"
        case .agentRegistered(let node, let holds): "agent of \(node) registers holding \(holds.count) run(s)"
        case .settings(let s): "settings \(s)"
        case .record(let bodies): bodies.map { "\($0)".prefix(80) }.joined(separator: "; ")
        case .submit(let jobs):
            "submit " + jobs.map { "\($0.spec.gpus) GPU(s)\($0.held ? " held" : "")" }.joined(separator: ", ")
        case .cancel(let id, _): "cancel \(id)"
        case .hold(let id): "hold \(id)"
        case .release(let id): "release \(id)"
        case .requeue(let id, _, _): "requeue \(id)"
        case .deleteService(let name, _): "delete service \(name)"
        case .serviceLoad(let name, let v): "load of \(name): \(v)"
        case .replicaReady(let id, let ready): "replica \(id) \(ready ? "ready" : "not ready")"
        }
    }
}
