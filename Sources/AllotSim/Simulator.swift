import AllotCore
import HeapModule

/// Replays a trace through the real core with virtual time.
///
/// Event-driven: time jumps to the next arrival, completion or stop, never sleeps. At each such instant the
/// simulator applies the completions, then the arrivals, then runs one scheduling pass and applies its
/// decisions, exactly as the daemon would.
///
/// A preempted job gets its grace period, keeps the work done until it exits (it checkpoints on the
/// notice; with `checkpointEvery`, only the work until its last periodic checkpoint), and pays
/// `restartOverhead` when it starts again.
public struct Simulator {
    public var policy: Scheduler.Policy
    /// How the inference reserve is lent (policy allot).
    public var lending: Scheduler.Lending = .forecast
    /// When set, training jobs checkpoint only every this many seconds of their run (not on a stop's
    /// notice): a stop loses the work since the last one. A run on loans checkpoints as often as the
    /// config's `loan_checkpoint_every` asks, where that is shorter.
    public var checkpointEvery: Seconds?
    /// Check the state's invariants after every step (slow; for tests).
    public var paranoid = false
    /// Seconds a preempted job spends getting back to where it was when it starts again (loading a
    /// checkpoint, warming up).
    public var restartOverhead: Seconds = 60
    /// Called after each scheduling pass with its time, the pass, and the state it ran on (tests, tracing).
    public var onPass: ((Instant, SchedulingPass, ClusterState) -> Void)?
    /// Inference services to run beside the trace's jobs, with their requests (see ``ServiceWorkload``).
    public var services: ServiceWorkload?

    public init(policy: Scheduler.Policy = .allot) {
        self.policy = policy
    }

    /// What the simulator scheduled to happen to a running job.
    private struct Due: Comparable {
        enum Kind: Int {
            case complete
            /// Its walltime ends: the controller's tick stops it (with its grace, as allotd does).
            case walltime
            /// It was told to stop: it exits when its grace ends (it checkpoints on the notice).
            case exitAfterNotice
            /// A training job saves a periodic checkpoint (`checkpointEvery`) and reports it, as allotctl
            /// checkpoint does.
            case checkpoint
            /// Nothing happens to the job: its shield from preemption (minimum run time, protection) ends,
            /// and a pass must look again, as the daemon's tick would.
            case shieldEnds
        }
        var time: Double
        var seq: Int
        var job: JobID
        /// The run it belongs to; an entry of an earlier run is skipped.
        var run: Int
        var kind: Kind
        static func < (a: Due, b: Due) -> Bool { a.time != b.time ? a.time < b.time : a.seq < b.seq }
    }

    /// Runs the trace to the end: until every job that can ever start has ended.
    ///
    /// The decisions are the controller's — the same ``Controller`` allotd runs, fed the same inputs
    /// (requests, passes, ticks, run ends) at virtual readings of its clocks; the simulator plays the runners:
    /// a job runs for its work divided by its GPUs' speed, exits when told to stop once its grace is over,
    /// and is stopped at its walltime with its grace.
    /// - Parameter initial: the pool, with no jobs (from ``AllotConfig/ConfigFile/makeState(at:)``).
    /// - Throws: ``SimulationError`` if the core refuses an event (a bug) or an invariant breaks.
    public func run(_ trace: Trace, on initial: ClusterState) throws(SimulationError) -> SimulationResult {
        var controller = Controller(state: initial, scheduler: Scheduler(policy: policy, lending: lending))
        for node in initial.nodes { _ = controller.step(.runner(node: node.name, .local), at: reading(0)) }
        var state: ClusterState { controller.state }
        let totalGPUs = Double(initial.totalGPUs)
        var due = Heap<Due>()
        var seq = 0
        var traceIndex: [JobID: Int] = [:]
        /// Work left per job: reference seconds (training) or lifetime seconds (inference).
        var workLeft: [JobID: Double] = [:]
        /// Per running job: when its useful work began in this run (after any restart overhead), its speed,
        /// and how often it checkpoints (nil: only on a stop's notice).
        var runInfo: [JobID: (workStart: Double, speed: Double, every: Seconds?)] = [:]
        var runs: [RunRecord] = []
        var nextArrival = 0
        var lastTime = trace.jobs.first?.submitTime ?? 0
        var busyGPUs = 0.0
        var usableIdle = 0.0
        var busyIntegral = 0.0
        var wasteIntegral = 0.0
        var wasteArriving = 0.0
        var passes = 0
        var counts = SimulationResult.Counts()
        /// Jobs whose last run was taken back for inference: their restart counts against the reserve.
        var takenBack: Set<JobID> = []
        let firstSubmit = lastTime
        let driver = services.map { ServiceDriver($0, origin: firstSubmit) }

        func reading(_ t: Double) -> ClockReading { ClockReading(wall: Instant(seconds: t), mono: t) }

        /// Feeds the controller and plays its effects: starts run for their work (or until their walltime),
        /// stops end when the grace does.
        func feed(_ input: Controller.Input, at t: Double) throws(SimulationError) -> Controller.Output {
            let out = controller.step(input, at: reading(t))
            if let (body, error) = out.refused.first {
                throw SimulationError.refused(Event(time: Instant(seconds: t), body), error)
            }
            for e in out.events {
                switch e.body {
                case .jobStarted(_, _, _, let loans) where !loans.isEmpty:
                    counts.loans += 1
                    if loans.contains(where: { if case .inferenceReserve = $0 { true } else { false } }) {
                        counts.reserveLoans += 1
                    }
                case .jobPreempted(let id, let by, _, let reason):
                    if reason == .migration {
                        counts.moves += 1
                    } else if reason == .resize {
                        // Giving back GPUs it grew into is counted as a shrink below.
                        if by == id { counts.grows += 1 }
                    } else if reason.isReclaim {
                        counts.reclaims += 1
                    } else {
                        counts.preemptions += 1
                    }
                    if reason == .inference { counts.reserveReclaims += 1 }
                case .jobGPUsHeld(let id, _):
                    // An elastic job told to stop for another keeps some GPUs: a shrink, not a preemption.
                    if case .preempted(let by, let reason)? = state.jobs[id]?.stopReason, by != id {
                        counts.shrinks += 1
                        if reason.isReclaim {
                            counts.reclaims -= 1
                        } else if reason != .resize {
                            counts.preemptions -= 1
                        }
                    }
                case .serviceScaled(let name, _, _, _, _): driver?.resized(name)
                default: break
                }
            }
            for effect in out.effects {
                switch effect {
                case .start(let id, let run):
                    guard let job = state.jobs[id], let allocation = job.allocation else { continue }
                    guard let index = traceIndex[id] else {
                        // A service's replica serves until it is told to stop.
                        if let name = job.spec.service {
                            driver?.started(id, run: run, service: name, model: allocation.model, at: t)
                        }
                        continue
                    }
                    let tj = trace.jobs[index]
                    let speed =
                        (state.config.model(named: allocation.model).map(tj.speed(on:)) ?? 1)
                        * tj.speedUp(on: allocation.gpuCount)
                    let overhead = job.runs > 1 ? restartOverhead : 0
                    if overhead > 0 {
                        counts.lostGPUSeconds += overhead * Double(allocation.gpuCount)
                        if takenBack.remove(id) != nil {
                            counts.reserveLostGPUSeconds += overhead * Double(allocation.gpuCount)
                        }
                    }
                    let left = workLeft[id] ?? tj.duration
                    let runTime = overhead + (tj.kind == .training ? left / speed : left)
                    let limit = tj.walltime ?? .infinity
                    // A run on loans checkpoints as often as it is asked to (`loan_checkpoint_every`).
                    let askedEvery = state.config.preemption.loanCheckpointEvery
                    let every =
                        checkpointEvery.map { job.loans.isEmpty || askedEvery <= 0 ? $0 : min($0, askedEvery) }
                    runInfo[id] = (t + overhead, speed, every)
                    seq += 1
                    due.insert(
                        Due(
                            time: t + min(runTime, limit),
                            seq: seq,
                            job: id,
                            run: run,
                            kind: runTime > limit ? .walltime : .complete
                        )
                    )
                    if let every, every > 0, tj.kind == .training,
                        min(runTime, limit) > overhead + every
                    {
                        seq += 1
                        due.insert(Due(time: t + overhead + every, seq: seq, job: id, run: run, kind: .checkpoint))
                    }
                case .stop(let id, let run, let grace, _):
                    driver?.stopping(id)
                    seq += 1
                    due.insert(Due(time: t + grace, seq: seq, job: id, run: run, kind: .exitAfterNotice))
                case .notify, .ended: continue
                }
            }
            return out
        }

        if let driver {
            for input in driver.creation() { _ = try feed(input, at: firstSubmit) }
        }

        var nextWake = -Double.infinity
        /// When the first running job's shield from preemption by class ends after `t`, and whose.
        func firstShieldEnd(after t: Double) -> (Double, JobID)? {
            let rules = state.config.preemption
            var first: (Double, JobID)?
            for id in state.activeJobs {
                guard let job = state.jobs[id], job.state == .running, let start = job.startTime?.seconds,
                    state.isPreemptible(job.spec)
                else { continue }
                var end = start + rules.minRuntime
                if job.preemptions >= rules.maxPreemptions { end = max(end, start + rules.protection) }
                if end > t, first.map({ end < $0.0 || (end == $0.0 && id < $0.1) }) ?? true { first = (end, id) }
            }
            return first
        }

        func closeRun(_ id: JobID, at t: Double, finished: Bool) {
            guard let job = state.jobs[id], let start = job.startTime, let a = job.allocation else { return }
            runs.append(
                RunRecord(
                    tenant: job.spec.tenant,
                    start: start.seconds,
                    end: t,
                    costPerSecond: job.costRate,
                    job: id,
                    run: job.runs,
                    kind: job.spec.kind,
                    allocation: a,
                    lent: !job.loans.isEmpty,
                    stopped: finished ? "finished" : RunRecord.stopped(job.stopReason)
                )
            )
        }

        while true {
            let arrival = nextArrival < trace.jobs.count ? trace.jobs[nextArrival].submitTime : Double.infinity
            while let top = due.min, top.kind != .shieldEnds,
                state.jobs[top.job]?.runs != top.run || !(state.jobs[top.job]?.state.holdsGPUs ?? false)
            {
                _ = due.popMin()
            }
            let next = due.min?.time ?? .infinity
            let serviceNext = driver?.nextTime ?? .infinity
            let t = min(arrival, next, serviceNext)
            if !t.isFinite { break }
            var passDue = arrival <= t || next <= t
            busyIntegral += busyGPUs * (t - lastTime)
            wasteIntegral += usableIdle * (t - lastTime)
            let lastArrivalTime = trace.jobs.last?.submitTime ?? 0
            if lastTime < lastArrivalTime { wasteArriving += usableIdle * (min(t, lastArrivalTime) - lastTime) }
            lastTime = t
            while let top = due.min, top.time <= t {
                _ = due.popMin()
                guard let job = state.jobs[top.job], job.runs == top.run, job.state.holdsGPUs else { continue }
                switch top.kind {
                case .complete where job.state == .running:
                    closeRun(top.job, at: t, finished: true)
                    workLeft[top.job] = 0
                    _ = try feed(.runEnded(.init(id: top.job, run: top.run, exit: .exited(code: 0))), at: t)
                case .checkpoint where job.state == .running:
                    _ = try feed(.record([.jobCheckpointed(id: top.job)]), at: t)
                    if let every = runInfo[top.job]?.every {
                        seq += 1
                        due.insert(Due(time: t + every, seq: seq, job: top.job, run: top.run, kind: .checkpoint))
                    }
                case .walltime where job.state == .running:
                    _ = try feed(.tick, at: t)
                case .exitAfterNotice where job.state == .stopping:
                    closeRun(top.job, at: t, finished: false)
                    // It checkpointed on the notice and exits now: work done until now is kept (with periodic
                    // checkpoints, only the work until the last one).
                    if let info = runInfo[top.job] {
                        var ran = max(0, t - info.workStart)
                        if let every = info.every, every > 0, job.spec.kind == .training {
                            let kept = (ran / every).rounded(.down) * every
                            let gpus = Double(job.allocation?.gpuCount ?? 0)
                            counts.lostGPUSeconds += (ran - kept) * gpus
                            if case .preempted(_, .inference)? = job.stopReason {
                                counts.reserveLostGPUSeconds += (ran - kept) * gpus
                            }
                            ran = kept
                        }
                        if case .preempted(_, .inference)? = job.stopReason { takenBack.insert(top.job) }
                        let done = ran * (job.spec.kind == .training ? info.speed : 1)
                        workLeft[top.job] = max(0, (workLeft[top.job] ?? 0) - done)
                    }
                    driver?.ended(top.job)
                    _ = try feed(.runEnded(.init(id: top.job, run: top.run, exit: .signaled(signal: 15))), at: t)
                default:
                    continue
                }
            }
            if let driver, serviceNext <= t {
                let (inputs, pass) = driver.step(at: t)
                for input in inputs { _ = try feed(input, at: t) }
                passDue = passDue || pass
            }
            // Requests coming and going change nothing the scheduler sees until the next load reading.
            if !passDue { continue }
            var arrivals: [Controller.Submission] = []
            var id = state.nextJobID
            while nextArrival < trace.jobs.count && trace.jobs[nextArrival].submitTime <= t {
                let tj = trace.jobs[nextArrival]
                arrivals.append(.init(spec: tj.spec, held: false))
                traceIndex[id] = nextArrival
                workLeft[id] = tj.duration
                nextArrival += 1
                id = JobID(id.rawValue + 1)
            }
            if !arrivals.isEmpty { _ = try feed(.submit(arrivals), at: t) }
            _ = try feed(.pass, at: t)
            let pass = controller.lastPass
            passes += 1
            onPass?(Instant(seconds: t), pass, state)
            // A job that waits while running jobs are shielded from preemption must be looked at again when
            // the first shield ends (the daemon's tick does it): wake up then.
            if policy == .allot && !pass.pending.isEmpty, let (end, id) = firstShieldEnd(after: t),
                end < nextWake || nextWake <= t
            {
                nextWake = end
                seq += 1
                due.insert(Due(time: end, seq: seq, job: id, run: state.jobs[id]!.runs, kind: .shieldEnds))
            }
            driver?.noteSizes(state, at: t)
            busyGPUs = Double(state.gpusInUse)
            // Waste: GPUs idle although a pending job could use them now. A greedy probe places what fits;
            // it finds work only where the policy held a job back (queue order, reservations, budgets).
            usableIdle = 0
            if pass.pending.contains(where: { !$0.blocker.isCapacity }) {
                usableIdle = Double(Scheduler.usableIdleGPUs(state, at: Instant(seconds: t)))
            }
            if paranoid, let broken = state.invariantViolations().first {
                throw SimulationError.invariant(broken, at: t)
            }
        }
        return SimulationResult(
            state: state,
            trace: trace,
            traceIndex: traceIndex,
            policy: policy,
            totalGPUs: totalGPUs,
            firstSubmit: firstSubmit,
            lastArrival: trace.jobs.last?.submitTime ?? firstSubmit,
            busyGPUSeconds: busyIntegral,
            wastedGPUSeconds: wasteIntegral,
            wastedWhileArrivingGPUSeconds: wasteArriving,
            passes: passes,
            counts: counts,
            runs: runs,
            services: driver?.figures(runs, state) ?? []
        )
    }
}

/// One run of a job: who paid, when, at what rate, on which GPUs, and why it stopped.
public struct RunRecord: Hashable, Sendable {
    public var tenant: String
    public var start: Double
    public var end: Double
    public var costPerSecond: Double
    public var job: JobID
    /// Its number among the job's runs, from 1.
    public var run: Int
    public var kind: JobKind
    public var allocation: Allocation
    /// Whether it ran on lent GPUs (a loan).
    public var lent: Bool
    /// `finished`, `preempted`, `reclaimed` (a loan taken back), `walltime`, `cancelled`, `requeued`,
    /// `gpu_failed` or `node_lost`.
    public var stopped: String

    /// The word for why a run stopped early.
    static func stopped(_ reason: StopReason?) -> String {
        switch reason {
        case .preempted(_, let why)?: why.isReclaim ? "reclaimed" : "preempted"
        case .walltime?: "walltime"
        case .cancelled?: "cancelled"
        case .requeued?: "requeued"
        case .gpuFailed(let why)?: why.contains("node") ? "node_lost" : "gpu_failed"
        case nil: "stopped"
        }
    }
}

extension Blocker {
    /// Whether only a lack of GPUs blocks the job (not a rule, a queue order or a reservation).
    var isCapacity: Bool {
        switch self {
        case .insufficientGPUs, .hostResources, .noModelAllowed, .noNodeSelected, .exceedsNodeSize, .exceedsPool,
            .exceedsNodeResources,
            .held, .noMIGRoom, .noShareRoom, .noMIGProfile:
            true
        default: false
        }
    }
}

/// The core refused an event, or an invariant broke: a bug in allot, never in the trace.
public enum SimulationError: Error, CustomStringConvertible {
    case refused(Event, StateError)
    case invariant(String, at: Double)

    public var description: String {
        switch self {
        case .refused(let e, let err): "the core refused \(e.kindName) at t=\(e.time.seconds): \(err)"
        case .invariant(let s, let t): "invariant broken at t=\(t): \(s)"
        }
    }
}
