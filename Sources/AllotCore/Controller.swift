/// What to do with the jobs on a GPU that failed.
public enum GPUFailureAction: String, Sendable, Hashable, CaseIterable, Codable {
    case requeue
    case fail
}

/// What to do with the jobs of a node that is lost (its agent silent past `node_timeout`).
public enum NodeLossAction: String, Sendable, Hashable, CaseIterable, Codable {
    /// Preemptible jobs go back to the queue; the others fail.
    case requeuePreemptible = "requeue-preemptible"
    case requeue
    case fail
}

/// What to do with a pending job whose dependency can never be met (a job it needs to complete failed).
public enum DependencyNeverMetAction: String, Sendable, Hashable, CaseIterable, Codable {
    /// Cancel it, saying why (Slurm's kill_invalid_depend).
    case cancel
    /// Keep it pending, saying why, until someone cancels it.
    case keep
}

/// A reading of the controller's two clocks: wall time for what users see and what the log records,
/// and a monotonic clock (seconds from any origin) for every deadline, so that a step of the wall clock
/// neither fires nor postpones one.
public struct ClockReading: Hashable, Sendable, Codable {
    public var wall: Instant
    public var mono: Double

    public init(wall: Instant, mono: Double) {
        self.wall = wall
        self.mono = mono
    }
}

/// The controller's brain: a deterministic state machine over ``ClusterState``. Its shell (allotd, the
/// simulator, the fault simulation) feeds it inputs with a clock reading; it answers with the events to
/// log and the effects to carry out — each released by the shell only once its events are durable. Every
/// rule that decides what happens to a run lives here, once: the scheduling pass and its starts and
/// preemptions, walltime limits, the grace of jobs on nodes nobody runs, GPU failures, node loss, and how a
/// run's end settles its job (requeue or fail).
///
/// It is a value: copying it copies the pool, and the same inputs at the same readings give the same
/// outputs. Requests that are still decided by the shell (submit, cancel, hold, configuration) come in as
/// ``Input/record(_:)`` with their events.
public struct Controller: Sendable {
    /// How a node's runs are run, chosen once per node by the shell.
    public enum Runner: Hashable, Sendable, Codable {
        /// By this controller's host (its executor).
        case local
        /// By the node's agent.
        case agent
        /// By nobody allot can tell: a stop is taken as done once the grace has passed.
        case none
    }

    public struct Settings: Hashable, Sendable, Codable {
        public var onGPUFailure: GPUFailureAction = .requeue
        public var onNodeLoss: NodeLossAction = .requeuePreemptible
        /// The longest grace a job gets when its GPU failed.
        public var gpuFailureGrace: Seconds = 30
        public var onDependencyNeverMet: DependencyNeverMetAction = .cancel

        public init() {}
    }

    /// How a run ended, as its runner saw it.
    public struct RunEnd: Hashable, Sendable, Codable {
        public var id: JobID
        public var run: Int
        public var exit: ExitStatus
        /// Why it could not run at all, when it could not.
        public var error: String?
        /// When it really ended, if before it was reported.
        public var endedAt: Instant?
        /// Whether it had to be killed after its grace.
        public var killed: Bool

        public init(
            id: JobID,
            run: Int,
            exit: ExitStatus,
            error: String? = nil,
            endedAt: Instant? = nil,
            killed: Bool = false
        ) {
            self.id = id
            self.run = run
            self.exit = exit
            self.error = error
            self.endedAt = endedAt
            self.killed = killed
        }
    }

    /// One GPU's health as a check found it.
    public struct GPUReport: Hashable, Sendable, Codable {
        public var index: Int
        public var health: GPUHealth
        public var reason: String?

        public init(index: Int, health: GPUHealth, reason: String?) {
            self.index = index
            self.health = health
            self.reason = reason
        }
    }

    /// One input. Codable: allotd can record every input it gives (`allotd run --record-inputs FILE`), and
    /// replaying them through a fresh controller gives the events of its log again.
    public enum Input: Hashable, Sendable, Codable {
        /// Run a scheduling pass now.
        case pass
        /// Time passed: limits and deadlines are looked at.
        case tick
        /// A run ended.
        case runEnded(RunEnd)
        /// A health check of a node's GPUs (every GPU it found; a GPU not listed is not changed).
        case gpuHealth(node: String, gpus: [GPUReport])
        /// A node's state as its check found it (down: its jobs are stopped as on a GPU failure).
        case nodeState(node: String, NodeState, reason: String?)
        /// A node is gone (its agent silent too long): down, and its jobs requeued or failed at once.
        case nodeLost(node: String, reason: String)
        /// How a node's runs are run from now on.
        case runner(node: String, Runner)
        /// A node's agent (re)registered holding these runs. Fencing: it keeps the runs still assigned to it
        /// (``Output/keep``) and kills the others; what it missed is sent again (a start for a running run it
        /// does not hold, a stop for a stopping one it does); a stopping run it does not hold has ended unseen.
        case agentRegistered(node: String, holds: [RunRef])
        /// The rules' settings from now on (a reload).
        case settings(Settings)
        /// Jobs submitted (checked by the shell: who may, and that each could ever run), in order; their ids
        /// are the next free ones, as the `jobSubmitted` events say.
        case submit([Submission])
        /// A job cancelled by a user (nil: by allot): a waiting one ends now, a running one is told to stop
        /// within its grace.
        case cancel(JobID, by: UInt32?)
        case hold(JobID)
        case release(JobID)
        /// A job put back in the queue by a user: an ended one at once, a running one once it has stopped
        /// (within its grace).
        case requeue(JobID, by: UInt32?, reason: String)
        /// Events decided by the shell (the configuration, a node drained, a service created or scaled):
        /// applied as given, in order, up to the first one the state refuses.
        case record([Event.Body])
        /// A service deleted by a user: its replicas are cancelled (each within its grace), then it is gone.
        case deleteService(String, by: UInt32?)
        /// A service's load now: requests in flight across its replicas (scraped from them, or pushed by a
        /// router). Its autoscaler decides on the next tick.
        case serviceLoad(String, Double)
        /// Whether a replica serves (its readiness check passed), as its runner sees it now.
        case replicaReady(JobID, Bool)
    }

    /// A run: a job and its run number (an allocation).
    public struct RunRef: Hashable, Sendable, Codable {
        public var id: JobID
        public var run: Int

        public init(id: JobID, run: Int) {
            self.id = id
            self.run = run
        }
    }

    /// One job of a submit.
    public struct Submission: Hashable, Sendable, Codable {
        public var spec: JobSpec
        public var held: Bool

        public init(spec: JobSpec, held: Bool) {
            self.spec = spec
            self.held = held
        }
    }

    /// What the shell must do once the step's events are durable.
    public enum Effect: Hashable, Sendable {
        /// Start run `run` of the job on its allocation.
        case start(JobID, run: Int)
        /// Tell the run to stop within `grace` seconds (then kill it), saying why.
        case stop(JobID, run: Int, grace: Seconds, why: String)
        /// Tell watchers what happened to the job.
        case notify(JobID, String)
        /// The job reached a final state (log followers end).
        case ended(JobID)
    }

    /// A line for the operator's log: what was decided and why.
    public struct Note: Hashable, Sendable {
        public enum Level: Hashable, Sendable { case info, notice, warning, error }
        public var level: Level
        public var message: String
        public var metadata: [String: String]
    }

    /// What one step decided.
    public struct Output: Sendable {
        public var events: [Event] = []
        public var effects: [Effect] = []
        public var notes: [Note] = []
        /// Whether a scheduling pass should follow (soon, not at once: a burst of inputs gets one pass).
        public var passWanted = false
        /// For ``Input/agentRegistered(node:holds:)``: the runs the agent keeps (it kills every other).
        public var keep: [RunRef] = []
        /// The events the state refused, each with why (a bug, or a request that raced another).
        public var refused: [(Event.Body, StateError)] = []
    }

    public private(set) var state: ClusterState
    public private(set) var settings: Settings
    public let scheduler: Scheduler
    /// The last pass (reasons of pending jobs, estimates).
    public private(set) var lastPass = SchedulingPass()
    /// When the last pass ran, on the monotonic clock.
    public private(set) var lastPassAt = -Double.infinity
    /// Whether the state changed since the last pass.
    public private(set) var passStale = true
    private var runners: [String: Runner] = [:]
    /// Deadlines on the monotonic clock, by job and run: when a running job's walltime ends, or when a
    /// stopping job on a node nobody runs is taken as stopped. Derived from the logged wall times when first
    /// needed, then kept (a wall clock step does not move them).
    private var deadlines: [JobID: (run: Int, stopping: Bool, mono: Double)] = [:]
    /// The autoscalers' view of each service: its load samples, recent sizes, and a burst's panic.
    private var loads: [String: ServiceLoad] = [:]
    /// The replicas that serve, as their runners last said (observed, not logged).
    public private(set) var readyReplicas = Set<JobID>()

    /// What an autoscaler has seen of a service (observed, not logged: a restarted allotd learns it again
    /// within a window).
    public struct ServiceLoad: Sendable {
        /// (monotonic time, requests in flight), oldest first.
        public internal(set) var samples: [(at: Double, value: Double)] = []
        /// (monotonic time, size the load asked for), for the scale-down delay.
        var wanted: [(at: Double, replicas: Int)] = []
        /// No scaling down before this (a burst was seen).
        public internal(set) var panicUntil = -Double.infinity
        /// When the load was last above zero, and when it was first seen.
        var lastBusy: Double?
        var since: Double

        /// The mean of the samples since `since`, or nil when there are none.
        public func mean(since: Double) -> Double? {
            let recent = samples.filter { $0.at >= since }
            return recent.isEmpty ? nil : recent.reduce(0) { $0 + $1.value } / Double(recent.count)
        }
    }

    /// What the autoscaler has seen of a service.
    public func load(of service: String) -> ServiceLoad? { loads[service] }

    public init(state: ClusterState, settings: Settings = Settings(), scheduler: Scheduler = Scheduler(policy: .allot))
    {
        self.state = state
        self.settings = settings
        self.scheduler = scheduler
    }

    /// Takes events another controller decided and logged, as a hot standby that follows the leader's log
    /// does: the state moves with them, nothing is decided here.
    public mutating func follow(_ events: [Event]) throws(StateError) {
        try state.apply(events)
        passStale = true
    }

    /// Takes the leader's state whole (a follower that fell behind the leader's newest snapshot reads it).
    public mutating func follow(state: ClusterState) {
        self.state = state
        passStale = true
        lastPass = SchedulingPass()
    }

    /// How a node's runs are run.
    public func runner(of node: String) -> Runner { runners[node] ?? .none }

    /// How this job's runs are run (by the node of its first slice, where its process runs).
    public func runner(of job: Job) -> Runner {
        guard let node = job.allocation?.slices.first?.node else { return .none }
        return runner(of: node)
    }

    /// Takes one input.
    public mutating func step(_ input: Input, at clock: ClockReading) -> Output {
        var out = Output()
        switch input {
        case .pass: pass(clock, &out)
        case .tick: tick(clock, &out)
        case .runEnded(let end): runEnded(end, clock, &out)
        case .gpuHealth(let node, let gpus):
            var changed = false
            for g in gpus {
                changed = setGPUHealth(node, g.index, g.health, g.reason, clock, &out) || changed
            }
            stopJobsOnFailedGPUs(node, clock, &out)
            out.passWanted = out.passWanted || changed
        case .nodeState(let node, let newState, let reason):
            guard let n = state.node(named: node), n.state != newState || n.stateReason != reason else { break }
            if apply(.nodeStateChanged(name: node, state: newState, reason: reason), clock, &out) {
                out.notes.append(
                    Note(
                        level: newState == .down ? .error : .notice,
                        message: newState == .down ? "Node down" : "Node \(newState.rawValue) again",
                        metadata: ["node": node, "reason": reason ?? "-"]
                    )
                )
                out.passWanted = true
            }
            stopJobsOnFailedGPUs(node, clock, &out)
        case .nodeLost(let node, let reason): nodeLost(node, reason, clock, &out)
        case .runner(let node, let r): runners[node] = r
        case .agentRegistered(let node, let holds): agentRegistered(node, Set(holds), clock, &out)
        case .settings(let s): settings = s
        case .submit(let jobs):
            for j in jobs {
                let id = state.nextJobID
                guard apply(.jobSubmitted(id: id, spec: j.spec, held: j.held), clock, &out) else { break }
                out.effects.append(.notify(id, j.held ? "held" : "submitted"))
            }
            out.passWanted = true
        case .cancel(let id, let by):
            cancel(id, by: by, clock, &out)
        case .requeue(let id, let by, let reason):
            guard let job = state.jobs[id] else { break }
            if job.state == .running {
                guard apply(.jobRequeueing(id: id, by: by, grace: state.grace(of: job.spec)), clock, &out),
                    let now = state.jobs[id]
                else { break }
                stop(now, grace: now.graceLeft(at: clock.wall.seconds), &out)
                out.effects.append(.notify(id, "requeueing"))
            } else if apply(.jobRequeued(id: id, reason: reason), clock, &out) {
                out.effects.append(.notify(id, "requeued"))
                out.passWanted = true
            }
        case .hold(let id):
            if apply(.jobHeld(id: id), clock, &out) {
                out.effects.append(.notify(id, "held"))
                out.passWanted = true
            }
        case .release(let id):
            if apply(.jobReleased(id: id), clock, &out) {
                out.effects.append(.notify(id, "released"))
                out.passWanted = true
            }
        case .record(let bodies):
            for b in bodies where !apply(b, clock, &out) { break }
        case .replicaReady(let id, let ready):
            if ready { readyReplicas.insert(id) } else { readyReplicas.remove(id) }
        case .serviceLoad(let name, let value):
            guard state.services[name]?.spec.autoscale != nil, value.isFinite, value >= 0 else { break }
            var l =
                loads[name]
                ?? {
                    // The size it has counts as asked for now: the scale-down delay runs from the first reading.
                    var first = ServiceLoad(since: clock.mono)
                    first.wanted = [(clock.mono, state.services[name]?.replicas ?? 0)]
                    return first
                }()
            l.samples.append((clock.mono, value))
            if value > 0 { l.lastBusy = clock.mono }
            loads[name] = l
        case .deleteService(let name, let by):
            loads[name] = nil
            guard let service = state.services[name] else { break }
            for id in service.members { cancel(id, by: by, clock, &out) }
            if apply(.serviceDeleted(name: name, by: by), clock, &out) {
                out.notes.append(Note(level: .info, message: "Service deleted", metadata: ["service": name]))
            }
        }
        cancelJobsThatCannotRun(clock, &out)
        keepServices(clock, &out)
        // What must hold after every step (debug builds, the tests; compiled out of release builds, where the
        // simulators' paranoid modes check it).
        assert(state.invariantViolations().isEmpty, "after \(input): \(state.invariantViolations())")
        assert(
            out.effects.allSatisfy { effect in
                switch effect {
                case .start(let id, let run): state.jobs[id].map { $0.runs >= run } ?? false
                case .stop(let id, let run, _, _): state.jobs[id].map { $0.runs >= run } ?? false
                case .notify, .ended: true
                }
            },
            "an effect names a run that does not exist"
        )
        return out
    }

    // MARK: Rules

    private mutating func apply(_ body: Event.Body, _ clock: ClockReading, _ out: inout Output) -> Bool {
        let e = Event(time: clock.wall, body)
        do {
            try state.apply(e)
        } catch {
            out.refused.append((body, error))
            return false
        }
        out.events.append(e)
        passStale = true
        // A new walltime moves the deadline.
        if case .jobUpdated(let id, _, _) = body { deadlines[id] = nil }
        return true
    }

    /// Cancels a job: a waiting one ends now, a running one is told to stop within its grace.
    private mutating func cancel(_ id: JobID, by: UInt32?, _ clock: ClockReading, _ out: inout Output) {
        guard let job = state.jobs[id] else { return }
        let wasRunning = job.state.holdsGPUs
        guard apply(.jobCancelled(id: id, by: by, grace: state.grace(of: job.spec)), clock, &out),
            let now = state.jobs[id]
        else { return }
        if wasRunning { stop(now, grace: now.graceLeft(at: clock.wall.seconds), &out) }
        if now.state.isTerminal { out.effects.append(.ended(id)) }
        out.effects.append(.notify(id, now.state == .stopping ? "cancelling" : "cancelled"))
        out.passWanted = true
    }

    /// Keeps each service at the replicas it wants: submits a replica's job for each one missing (once a
    /// crash loop's back-off has passed), cancels the extra ones (waiting ones first, then the newest). While
    /// replicas of an older version run, rolls them: one new replica at a time, and an old one stopped only
    /// once a new one is ready (max surge 1, max unavailable 0); a new version whose replicas keep crashing,
    /// or one that does not become ready within the progress deadline, stops the rollout, saying why.
    private mutating func keepServices(_ clock: ClockReading, _ out: inout Output) {
        guard !state.services.isEmpty else { return }
        // A rollout may take two moves at once (an old replica cancelled, then a new one submitted): repeated
        // until nothing changes, so that a pass sees every replica it must place (the fault simulation found
        // a replica submitted after the pass, waiting without a reason).
        for _ in 0..<4 {
            let before = out.events.count
            keepServicesOnce(clock, &out)
            if out.events.count == before { return }
        }
    }

    private mutating func keepServicesOnce(_ clock: ClockReading, _ out: inout Output) {
        readyReplicas = readyReplicas.filter { state.jobs[$0].map { $0.state == .running } ?? false }
        for name in state.services.keys.sorted() {
            guard var service = state.services[name] else { continue }
            // A replica being cancelled is on its way out; one being preempted or restarted comes back.
            let staying = service.members.filter { id in
                guard let job = state.jobs[id] else { return false }
                if case .cancelled = job.stopReason, job.state == .stopping { return false }
                return true
            }
            let want = service.replicaSpec
            let old = staying.filter { state.jobs[$0]?.spec != want }
            if !old.isEmpty && service.rolloutHalted == nil, let why = rolloutProblem(service, staying, want, clock) {
                if apply(.serviceRolloutHalted(name: name, reason: why), clock, &out) {
                    out.notes.append(
                        Note(level: .warning, message: "Rollout stopped", metadata: ["service": name, "reason": why])
                    )
                }
                service = state.services[name] ?? service
            }
            let backingOff = service.restartAfter.map { clock.wall < $0 } ?? false
            if !old.isEmpty && service.rolloutHalted == nil {
                roll(service, staying, old, backingOff, clock, &out)
            } else if staying.count < service.replicas {
                guard !backingOff else { continue }
                // A halted rollout keeps the version that serves.
                let spec = service.rolloutHalted == nil ? want : old.last.flatMap { state.jobs[$0]?.spec } ?? want
                for _ in staying.count..<service.replicas {
                    guard submitReplica(name, spec, clock, &out) else { break }
                }
            } else if staying.count > service.replicas {
                let order = staying.sorted { a, b in
                    let (ra, rb) = (state.jobs[a]!.state.holdsGPUs, state.jobs[b]!.state.holdsGPUs)
                    return ra != rb ? !ra : a > b
                }
                for id in order.prefix(staying.count - service.replicas) {
                    out.notes.append(
                        Note(level: .info, message: "Replica stopped", metadata: ["service": name, "job.id": "\(id)"])
                    )
                    cancel(id, by: nil, clock, &out)
                }
            }
        }
    }

    private mutating func submitReplica(
        _ name: String,
        _ spec: JobSpec,
        _ clock: ClockReading,
        _ out: inout Output
    ) -> Bool {
        let id = state.nextJobID
        guard apply(.jobSubmitted(id: id, spec: spec, held: false), clock, &out) else { return false }
        out.notes.append(
            Note(level: .info, message: "Replica submitted", metadata: ["service": name, "job.id": "\(id)"])
        )
        out.effects.append(.notify(id, "submitted"))
        out.passWanted = true
        return true
    }

    /// One step of a rollout: a new replica when every new one serves and there is room for one more than
    /// wanted; an old one stopped when that leaves as many serving as wanted (not-serving old ones first).
    private mutating func roll(
        _ service: InferenceService,
        _ staying: [JobID],
        _ old: [JobID],
        _ backingOff: Bool,
        _ clock: ClockReading,
        _ out: inout Output
    ) {
        let name = service.spec.name
        let new = staying.filter { !old.contains($0) }
        let newServing = new.allSatisfy { readyReplicas.contains($0) }
        if newServing && staying.count <= service.replicas && !backingOff {
            _ = submitReplica(name, service.replicaSpec, clock, &out)
            return
        }
        guard staying.count > service.replicas else { return }
        let serving = staying.filter { readyReplicas.contains($0) }.count
        if let idle = old.first(where: { !readyReplicas.contains($0) }) {
            out.notes.append(
                Note(level: .info, message: "Replica replaced", metadata: ["service": name, "job.id": "\(idle)"])
            )
            cancel(idle, by: nil, clock, &out)
        } else if serving - 1 >= service.replicas, let oldest = old.first {
            out.notes.append(
                Note(level: .info, message: "Replica replaced", metadata: ["service": name, "job.id": "\(oldest)"])
            )
            cancel(oldest, by: nil, clock, &out)
        }
    }

    /// Why a rollout should stop, if it should: the new version's replicas keep crashing, or one has run
    /// without becoming ready for the progress deadline.
    private func rolloutProblem(
        _ service: InferenceService,
        _ staying: [JobID],
        _ want: JobSpec,
        _ clock: ClockReading
    ) -> String? {
        if service.crashes >= InferenceService.crashesThatHaltARollout {
            return
                "version \(service.generation) never became ready: its replicas keep ending (\(service.lastCrash ?? "-"))"
        }
        for id in staying where !readyReplicas.contains(id) {
            guard let job = state.jobs[id], job.spec == want, job.state == .running, let start = job.startTime else {
                continue
            }
            if clock.wall - start >= InferenceService.progressDeadline {
                return
                    "version \(service.generation) never became ready: replica \(id) has not passed its readiness check in \(DurationText.format(InferenceService.progressDeadline))"
            }
        }
        return nil
    }

    /// Sizes each autoscaled service to its load: the mean over its window divided by its target, or at once
    /// to the short window's when a burst asks for twice its size (then no scaling down for a window); a
    /// smaller size only once it has been enough for the scale-down delay and after a whole window of
    /// readings; zero only after no load for
    /// `zero-after` (and with min 0). Each change is an event saying why.
    private mutating func autoscale(_ clock: ClockReading, _ out: inout Output) {
        guard !loads.isEmpty else { return }
        for name in loads.keys.sorted() {
            guard let service = state.services[name], let a = service.spec.autoscale else {
                loads[name] = nil
                continue
            }
            var l = loads[name]!
            let now = clock.mono
            let keep = max(a.window, a.downDelay, a.zeroAfter ?? 0)
            l.samples.removeAll { $0.at < now - keep }
            l.wanted.removeAll { $0.at < now - a.downDelay }
            defer { loads[name] = l }
            guard let stable = l.mean(since: now - a.window) else { continue }
            let panic = l.mean(since: now - a.panicWindow) ?? stable
            let current = service.replicas
            let forStable = a.replicas(for: stable)
            let forPanic = a.replicas(for: panic)
            var reason: String
            var size: Int
            if forPanic >= 2 * max(current, 1) && forPanic > current {
                l.panicUntil = now + a.window
            }
            if now < l.panicUntil {
                size = max(current, forPanic)
                reason =
                    "a burst: \(Autoscale.number((panic * 10).rounded() / 10)) requests in flight over \(DurationText.format(a.panicWindow)), \(a.sizing)"
            } else {
                size = forStable
                reason =
                    "\(Autoscale.number((stable * 10).rounded() / 10)) requests in flight over \(DurationText.format(a.window)), \(a.sizing)"
            }
            l.wanted.append((now, size))
            // Not down on less than a whole window of readings (just started, or allotd restarted).
            if size < current && now - l.since < a.window { size = current }
            if size < current, a.downDelay > 0 {
                // Down only to what the whole delay has asked for at most.
                size = min(current, l.wanted.map(\.replicas).max() ?? size)
            }
            if size == 0 {
                if let z = a.zeroAfter, service.spec.minReplicas == 0, now - (l.lastBusy ?? l.since) >= z {
                    reason = "no load for \(DurationText.format(z))"
                } else {
                    size = 1
                }
            }
            size = min(max(size, service.spec.minReplicas), service.spec.maxReplicas)
            guard size != current else { continue }
            let why = "autoscaled from \(current) to \(size): \(reason)"
            if apply(
                .serviceScaled(
                    name: name,
                    replicas: size,
                    minReplicas: service.spec.minReplicas,
                    maxReplicas: service.spec.maxReplicas,
                    reason: why
                ),
                clock,
                &out
            ) {
                out.notes.append(
                    Note(level: .info, message: "Service autoscaled", metadata: ["service": name, "reason": why])
                )
            }
        }
    }

    /// When the next replica of a service in a crash loop may start, if one waits for that; for the shell's
    /// timer.
    public var nextServiceRestart: Instant? {
        state.services.values.compactMap { s in s.members.count < s.replicas ? s.restartAfter : nil }.min()
    }

    /// Cancels the pending jobs whose dependencies can never be met (when the settings say so), and then
    /// those that depended on them.
    private mutating func cancelJobsThatCannotRun(_ clock: ClockReading, _ out: inout Output) {
        guard settings.onDependencyNeverMet == .cancel else { return }
        while let id = state.dependencies.never.min() {
            guard apply(.jobCancelled(id: id, by: nil, grace: 0), clock, &out) else { return }
            let why = state.jobs[id]?.note ?? "its dependency can never be met"
            out.notes.append(
                Note(level: .notice, message: "Job cancelled", metadata: ["job.id": "\(id)", "reason": why])
            )
            out.effects.append(.ended(id))
            out.effects.append(.notify(id, "cancelled: \(why)"))
        }
    }

    /// A scheduling pass, its decisions applied: starts and stops to carry out.
    private mutating func pass(_ clock: ClockReading, _ out: inout Output) {
        // The services' missing replicas first: the pass places them and gives the waiting ones a reason.
        keepServices(clock, &out)
        let pass = scheduler.schedule(state, at: clock.wall)
        lastPass = pass
        lastPassAt = clock.mono
        passStale = false
        for decision in pass.decisions {
            guard apply(decision.event(at: clock.wall).body, clock, &out) else { continue }
            let id = decision.jobID
            guard let job = state.jobs[id] else { continue }
            switch decision {
            case .start(_, let a, let note, _):
                out.notes.append(
                    Note(
                        level: .info,
                        message: "Job starting",
                        metadata: ["job.id": "\(id)", "job.allocation": "\(a)", "job.placement": "\(note)"]
                    )
                )
                out.effects.append(.start(id, run: job.runs))
                out.effects.append(.notify(id, "started"))
            case .preempt(_, let by, let grace, let reason):
                out.notes.append(
                    Note(
                        level: .info,
                        message: "Job preempted",
                        metadata: [
                            "job.id": "\(id)", "job.preemptor": "\(by)", "job.grace_s": "\(grace)",
                            "reason": "\(reason)",
                        ]
                    )
                )
                stop(job, grace: grace, &out)
                out.effects.append(.notify(id, reason == .migration ? "moving to faster GPUs" : "preempted"))
            case .hold(_, let slices):
                out.notes.append(
                    Note(
                        level: .info,
                        message: "GPUs held for a moving job",
                        metadata: ["job.id": "\(id)", "job.gpus": slices.map(\.description).joined(separator: ",")]
                    )
                )
            }
        }
        // Decisions change reasons (a preemptor now waits for its victims): keep the pass's view.
        passStale = !pass.decisions.isEmpty
    }

    /// Tells the job's runner to stop it; a job nobody runs is taken as stopped once its grace has passed.
    private func stop(_ job: Job, grace: Seconds, why: String? = nil, _ out: inout Output) {
        guard runner(of: job) != .none else { return }
        out.effects.append(
            .stop(job.id, run: job.runs, grace: grace, why: why ?? job.stopText ?? "told to stop")
        )
    }

    /// The monotonic time at which `wall` comes, as seen now.
    private func mono(of wall: Instant, _ clock: ClockReading) -> Double {
        clock.mono + (wall.seconds - clock.wall.seconds)
    }

    private mutating func tick(_ clock: ClockReading, _ out: inout Output) {
        autoscale(clock, &out)
        for id in state.activeJobs.sorted() {
            guard let job = state.jobs[id] else { continue }
            switch job.state {
            case .running:
                guard let limit = job.spec.walltime, let start = job.startTime else { continue }
                let due = deadline(job, stopping: false, wall: start + limit, clock)
                guard clock.mono >= due else { continue }
                guard apply(.jobTimedOut(id: id, grace: state.grace(of: job.spec)), clock, &out) else { continue }
                out.notes.append(Note(level: .info, message: "Job reached its walltime", metadata: ["job.id": "\(id)"]))
                if let now = state.jobs[id] { stop(now, grace: now.grace ?? 0, &out) }
                out.effects.append(.notify(id, "timed_out"))
            case .stopping:
                // Nobody runs it: past its grace it is taken as stopped (no end will be reported).
                guard runner(of: job) == .none, let at = job.stopRequestedAt else { continue }
                let due = deadline(job, stopping: true, wall: at + (job.grace ?? 0), clock)
                guard clock.mono >= due else { continue }
                runEnded(
                    RunEnd(
                        id: id,
                        run: job.runs,
                        exit: .lost(
                            reason:
                                "stopped on a node allotd does not run; no end was reported within its grace period"
                        )
                    ),
                    clock,
                    &out
                )
            default: continue
            }
        }
        // Entries of jobs that no longer hold GPUs (ended without a finish here: a requeue) go.
        if deadlines.count > state.activeJobs.count {
            deadlines = deadlines.filter { state.jobs[$0.key]?.state.holdsGPUs == true }
        }
        let interval = state.config.scheduler.interval
        if clock.mono - lastPassAt >= interval || (passStale && clock.mono - lastPassAt >= 1) {
            if !state.pendingJobs.isEmpty || passStale { out.passWanted = true }
        }
    }

    /// A job's deadline on the monotonic clock, from its wall time the first time it is asked for.
    private mutating func deadline(_ job: Job, stopping: Bool, wall: Instant, _ clock: ClockReading) -> Double {
        if let d = deadlines[job.id], d.run == job.runs, d.stopping == stopping { return d.mono }
        let m = mono(of: wall, clock)
        deadlines[job.id] = (job.runs, stopping, m)
        return m
    }

    private mutating func runEnded(_ end: RunEnd, _ clock: ClockReading, _ out: inout Output) {
        guard let job = state.jobs[end.id], job.runs == end.run, job.state.holdsGPUs else { return }
        if end.killed {
            out.notes.append(
                Note(
                    level: .notice,
                    message: "Job ended by SIGKILL after its grace period",
                    metadata: ["job.id": "\(end.id)"]
                )
            )
        }
        // A job stopped because its GPU failed goes back to the queue, or fails, per on_gpu_failure.
        if case .gpuFailed(let why)? = job.stopReason {
            if settings.onGPUFailure == .requeue {
                if apply(.jobRequeued(id: end.id, reason: why), clock, &out) {
                    out.notes.append(
                        Note(
                            level: .warning,
                            message: "Job requeued",
                            metadata: ["job.id": "\(end.id)", "reason": why]
                        )
                    )
                    out.effects.append(.notify(end.id, "requeued"))
                    out.passWanted = true
                }
                return
            }
            finish(end.id, exit: .lost(reason: why), endedAt: nil, clock, &out)
            return
        }
        // It could not run at all (no such user, a working directory it cannot enter): that is the reason.
        if let error = end.error, job.stopReason == nil {
            finish(end.id, exit: .couldNotStart(error), endedAt: nil, clock, &out)
            return
        }
        finish(end.id, exit: end.exit, endedAt: end.endedAt, clock, &out)
    }

    private mutating func finish(
        _ id: JobID,
        exit: ExitStatus,
        endedAt: Instant?,
        _ clock: ClockReading,
        _ out: inout Output
    ) {
        guard apply(.jobFinished(id: id, exit: exit, endedAt: endedAt), clock, &out), let job = state.jobs[id] else {
            return
        }
        deadlines[id] = nil
        out.notes.append(
            Note(
                level: .info,
                message: "Job ended",
                metadata: ["job.id": "\(id)", "job.exit": "\(exit)", "job.state": job.state.rawValue]
            )
        )
        out.effects.append(.notify(id, job.state.rawValue))
        if job.state.isTerminal { out.effects.append(.ended(id)) }
        out.passWanted = true
    }

    /// A GPU's health as a check found it: an event when it changed. - Returns: whether it changed.
    private mutating func setGPUHealth(
        _ name: String,
        _ gpu: Int,
        _ health: GPUHealth,
        _ reason: String?,
        _ clock: ClockReading,
        _ out: inout Output
    ) -> Bool {
        guard let node = state.node(named: name), gpu >= 0, gpu < node.spec.gpus,
            node.health[gpu] != health || (health == .unhealthy && node.healthReason[gpu] != reason)
        else { return false }
        guard apply(.gpuHealthChanged(node: name, gpu: gpu, health: health, reason: reason), clock, &out) else {
            return false
        }
        out.notes.append(
            Note(
                level: health == .healthy ? .notice : .error,
                message: "GPU \(health == .healthy ? "healthy again" : "unhealthy: taken out of scheduling")",
                metadata: ["node": name, "gpu": "\(gpu)", "reason": reason ?? "-"]
            )
        )
        return true
    }

    /// Stops the running jobs on unhealthy GPUs of a node, or on the node if it is down: a logged event each,
    /// so that after a restart they are still requeued (or failed) when they end.
    private mutating func stopJobsOnFailedGPUs(_ name: String, _ clock: ClockReading, _ out: inout Output) {
        guard let node = state.node(named: name) else { return }
        var seen = Set<JobID>()
        for gpu in 0..<node.spec.gpus {
            let failedGPU = node.health[gpu] == .unhealthy
            let downNode = node.state == .down
            guard failedGPU || downNode else { continue }
            for id in node.jobs(onGPU: gpu) {
                guard seen.insert(id).inserted, let job = state.jobs[id], job.state == .running else { continue }
                let why =
                    failedGPU
                    ? "GPU \(gpu) of node \(name) failed: \(node.healthReason[gpu] ?? "unhealthy")"
                    : "node \(name) went down: \(node.stateReason ?? "")"
                let grace = min(job.spec.grace ?? state.grace(of: job.spec), settings.gpuFailureGrace)
                guard apply(.jobGPUFailed(id: id, reason: why, grace: grace), clock, &out), let now = state.jobs[id]
                else {
                    continue
                }
                out.notes.append(
                    Note(
                        level: .error,
                        message: "Job stopped: its GPU failed",
                        metadata: ["job.id": "\(id)", "reason": why]
                    )
                )
                stop(now, grace: grace, &out)
                out.effects.append(.notify(id, "gpu_failed"))
            }
        }
    }

    private mutating func agentRegistered(
        _ node: String,
        _ held: Set<RunRef>,
        _ clock: ClockReading,
        _ out: inout Output
    ) {
        for id in state.activeJobs.sorted() {
            guard let job = state.jobs[id], job.state.holdsGPUs, job.allocation?.slices.first?.node == node else {
                continue
            }
            let ref = RunRef(id: id, run: job.runs)
            let holds = held.contains(ref)
            if holds { out.keep.append(ref) }
            switch (job.state, holds) {
            case (.running, false): out.effects.append(.start(id, run: job.runs))
            case (.stopping, true): stop(job, grace: job.graceLeft(at: clock.wall.seconds), &out)
            case (.stopping, false):
                let why = "it was told to stop, and its node's agent no longer has it"
                runEnded(RunEnd(id: id, run: job.runs, exit: .lost(reason: why)), clock, &out)
            default: break
            }
        }
        out.passWanted = true
    }

    /// A node is gone: down, and its jobs requeued or failed per `on_node_loss`.
    private mutating func nodeLost(_ name: String, _ reason: String, _ clock: ClockReading, _ out: inout Output) {
        guard apply(.nodeStateChanged(name: name, state: .down, reason: reason), clock, &out) else { return }
        out.notes.append(Note(level: .error, message: "Node lost", metadata: ["node": name, "reason": reason]))
        for id in state.activeJobs.sorted() {
            guard let job = state.jobs[id], job.state.holdsGPUs,
                job.allocation?.slices.contains(where: { $0.node == name }) == true
            else { continue }
            let why = "node \(name) was lost (\(reason))"
            // Its process runs on another node that is still reachable (it spans nodes): it is stopped there
            // first, as on a GPU failure, and settled when it has ended — requeued at once, its old run
            // would hold GPUs the pool gives to others.
            if let first = job.allocation?.slices.first?.node, first != name, runner(of: first) != .none,
                job.state == .running
            {
                let grace = min(job.spec.grace ?? state.grace(of: job.spec), settings.gpuFailureGrace)
                if apply(.jobGPUFailed(id: id, reason: why, grace: grace), clock, &out), let now = state.jobs[id] {
                    out.notes.append(
                        Note(
                            level: .error,
                            message: "Job stopped: a node of it was lost",
                            metadata: ["job.id": "\(id)", "reason": why]
                        )
                    )
                    stop(now, grace: grace, &out)
                    out.effects.append(.notify(id, "gpu_failed"))
                }
                continue
            }
            if job.state == .stopping, let first = job.allocation?.slices.first?.node, first != name,
                runner(of: first) != .none
            {
                continue  // already told to stop where it runs: settled when it ends
            }
            let requeue: Bool
            switch settings.onNodeLoss {
            case .requeue: requeue = true
            case .fail: requeue = false
            case .requeuePreemptible: requeue = state.isPreemptible(job.spec)
            }
            if requeue, apply(.jobRequeued(id: id, reason: why), clock, &out) {
                deadlines[id] = nil
                out.notes.append(
                    Note(level: .warning, message: "Job requeued", metadata: ["job.id": "\(id)", "reason": why])
                )
                out.effects.append(.notify(id, "requeued"))
            } else if !requeue {
                finish(id, exit: .lost(reason: why), endedAt: nil, clock, &out)
            }
        }
        out.passWanted = true
    }
}
