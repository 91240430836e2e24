import AllotCore
import HeapModule

/// Replays a trace through the real core with virtual time.
///
/// Event-driven: time jumps to the next arrival or completion, never sleeps. At each such instant the
/// simulator applies the completions, then the arrivals, then runs one scheduling pass and applies its
/// decisions, exactly as the daemon would.
public struct Simulator {
    public var policy: Scheduler.Policy
    /// Check the state's invariants after every step (slow; for tests).
    public var paranoid = false

    public init(policy: Scheduler.Policy = .allot) {
        self.policy = policy
    }

    /// What the simulator scheduled to happen to a running job.
    private struct Due: Comparable {
        var time: Double
        var seq: Int
        var job: JobID
        /// The run it belongs to; a stale entry (the job was requeued since) is skipped.
        var run: Int
        var timesOut: Bool
        static func < (a: Due, b: Due) -> Bool { a.time != b.time ? a.time < b.time : a.seq < b.seq }
    }

    /// Runs the trace to the end: until every job that can ever start has ended.
    /// - Parameter initial: the pool, with no jobs (from ``AllotConfig/ConfigFile/makeState(at:)``).
    /// - Throws: ``SimulationError`` if the core refuses an event (a bug) or an invariant breaks.
    public func run(_ trace: Trace, on initial: ClusterState) throws(SimulationError) -> SimulationResult {
        var state = initial
        let scheduler = Scheduler(policy: policy)
        let probe = Scheduler(policy: .allot)
        let totalGPUs = Double(state.totalGPUs)
        var due = Heap<Due>()
        var seq = 0
        var traceIndex: [JobID: Int] = [:]
        var nextArrival = 0
        var lastTime = trace.jobs.first?.submitTime ?? 0
        var busyGPUs = 0.0
        var usableIdle = 0.0
        var busyIntegral = 0.0
        var wasteIntegral = 0.0
        var passes = 0
        let firstSubmit = lastTime

        func apply(_ e: Event) throws(SimulationError) {
            do { try state.apply(e) } catch { throw SimulationError.refused(e, error) }
        }

        while true {
            let arrival = nextArrival < trace.jobs.count ? trace.jobs[nextArrival].submitTime : Double.infinity
            while let top = due.min,
                state.jobs[top.job]?.runs != top.run || !(state.jobs[top.job]?.state.holdsGPUs ?? false)
            {
                _ = due.popMin()
            }
            let completion = due.min?.time ?? .infinity
            let t = min(arrival, completion)
            if !t.isFinite { break }
            busyIntegral += busyGPUs * (t - lastTime)
            wasteIntegral += usableIdle * (t - lastTime)
            lastTime = t
            let now = Instant(seconds: t)
            while let top = due.min, top.time <= t {
                _ = due.popMin()
                guard let job = state.jobs[top.job], job.runs == top.run, job.state.holdsGPUs else { continue }
                if top.timesOut {
                    try apply(Event(time: now, .jobTimedOut(id: top.job, grace: 0)))
                    try apply(Event(time: now, .jobFinished(id: top.job, exit: .signaled(signal: 15))))
                } else {
                    try apply(Event(time: now, .jobFinished(id: top.job, exit: .exited(code: 0))))
                }
            }
            while nextArrival < trace.jobs.count && trace.jobs[nextArrival].submitTime <= t {
                let id = state.nextJobID
                try apply(Event(time: now, .jobSubmitted(id: id, spec: trace.jobs[nextArrival].spec, held: false)))
                traceIndex[id] = nextArrival
                nextArrival += 1
            }
            let pass = scheduler.schedule(state, at: now)
            passes += 1
            for decision in pass.decisions {
                try apply(decision.event(at: now))
                guard case .start(let id, let allocation, _) = decision else { continue }
                let tj = trace.jobs[traceIndex[id]!]
                let speed = state.config.model(named: allocation.model)?.speed ?? 1
                let runTime = tj.kind == .training ? tj.duration / speed : tj.duration
                let limit = tj.walltime ?? .infinity
                seq += 1
                due.insert(
                    Due(
                        time: t + min(runTime, limit),
                        seq: seq,
                        job: id,
                        run: state.jobs[id]!.runs,
                        timesOut: runTime > limit
                    )
                )
            }
            busyGPUs = Double(state.gpusInUse)
            // Waste: GPUs idle although a pending job could use them now. A greedy probe pass places what
            // fits; it can only find work where the policy held a job back (queue order, not capacity).
            usableIdle = 0
            if pass.pending.contains(where: { if case .behind = $0.blocker { true } else { false } }) {
                let probed = probe.schedule(state, at: now)
                usableIdle = Double(probed.decisions.reduce(0) { $0 + $1.gpuCount })
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
            busyGPUSeconds: busyIntegral,
            wastedGPUSeconds: wasteIntegral,
            passes: passes
        )
    }
}

extension Decision {
    /// GPUs a start decision takes.
    var gpuCount: Int {
        switch self {
        case .start(_, let a, _): a.gpuCount
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
