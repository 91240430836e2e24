/// A fact about the pool: the only way the state changes. The write-ahead log stores events, and replaying
/// them with ``ClusterState/apply(_:)`` rebuilds the state.
public struct Event: Hashable, Codable, Sendable {
    /// When the event happened. Events are applied in order; a time earlier than the state's clock is taken
    /// as the clock's time (clocks step back; the log's order is the truth).
    public var time: Instant
    public var body: Body

    public init(time: Instant, _ body: Body) {
        self.time = time
        self.body = body
    }

    /// What happened.
    public enum Body: Hashable, Codable, Sendable {
        /// GPU models, classes, tenants and scheduler settings in force from now on.
        case configApplied(config: PoolConfig)
        case nodeAdded(spec: NodeSpec)
        /// Only a node holding no job's GPUs can be removed.
        case nodeRemoved(name: String)
        case nodeStateChanged(name: String, state: NodeState, reason: String?)
        case gpuHealthChanged(node: String, gpu: Int, health: GPUHealth, reason: String?)
        case jobSubmitted(id: JobID, spec: JobSpec, held: Bool)
        case jobHeld(id: JobID)
        case jobReleased(id: JobID)
        /// A pending job starts on these GPUs; `note` says why there, `loans` what lent them.
        case jobStarted(id: JobID, allocation: Allocation, note: PlacementNote? = nil, loans: [Loan] = [])
        /// A running job is told to make way for `by`; it stops within `grace` seconds, then goes back to
        /// pending with its original submit time.
        case jobPreempted(id: JobID, by: JobID, grace: Seconds, reason: PreemptionReason = .priority)
        /// A running job reported a checkpoint: work before now survives a preemption.
        case jobCheckpointed(id: JobID)
        /// Free GPUs are held for a job moving to them (it was just told to stop, reason `migration`): no
        /// other job starts on them until it starts again, there, or ends.
        case jobGPUsHeld(id: JobID, slices: [Allocation.Slice])
        /// A pending or held job is cancelled at once; a running one is told to stop within `grace`.
        case jobCancelled(id: JobID, by: UInt32?, grace: Seconds)
        /// A running job reached its walltime limit and is told to stop within `grace`.
        case jobTimedOut(id: JobID, grace: Seconds)
        /// A GPU of a running job failed (or its node went down): it is told to stop within `grace`, then it
        /// is requeued or failed, per `on_gpu_failure`.
        case jobGPUFailed(id: JobID, reason: String, grace: Seconds)
        /// A running or stopping job's process ended. The job's next state follows from why it was stopping:
        /// preempted → pending; cancelled → cancelled; walltime → timed out; not stopping → completed on exit
        /// code 0, failed otherwise. `endedAt`: when the process ended, if that was before this event (it
        /// ended while allotd was down); the run is accounted until then (kept between its start and now).
        case jobFinished(id: JobID, exit: ExitStatus, endedAt: Instant? = nil)
        /// A running or stopping job loses its GPUs and goes back to pending (its node failed, say); an ended
        /// job is put back in the queue (`allotctl requeue`), its last run kept in its history.
        case jobRequeued(id: JobID, reason: String)
        /// A running job is told to stop within `grace` and then go back to the queue (`allotctl requeue`
        /// by `by`).
        case jobRequeueing(id: JobID, by: UInt32?, grace: Seconds)
        /// A job's spec changed by `by` (`allotctl update`): anything of a pending or held job's but its owner
        /// and array, only the walltime of a running one.
        case jobUpdated(id: JobID, spec: JobSpec, by: UInt32?)
        /// Ended jobs taken out of the state after their retention (their records are in the daemon's
        /// archive; what they used stays counted in ``ClusterState/archived``).
        case jobsArchived(ids: [JobID])
        /// Time passes; running jobs accrue usage and cost.
        case clockTick
        /// A service is created wanting `replicas` replicas (the controller submits their jobs).
        case serviceCreated(spec: ServiceSpec, replicas: Int)
        /// A service wants `replicas` replicas from now on, within new bounds; `reason` says who or what
        /// decided it.
        case serviceScaled(name: String, replicas: Int, minReplicas: Int, maxReplicas: Int, reason: String)
        /// A service is gone (its replicas were cancelled just before), by `by`.
        case serviceDeleted(name: String, by: UInt32?)
        /// A service's spec replaced by `by`: when its replicas' job changes, they are replaced one at a time
        /// (a new one ready before an old one stops).
        case serviceUpdated(spec: ServiceSpec, replicas: Int, by: UInt32?)
        /// The rollout of a service's newest version stopped, saying why; the older replicas keep serving.
        case serviceRolloutHalted(name: String, reason: String)
    }

    /// A short name of the event's kind, as in logs and the WAL dump: `jobStarted`.

    public var kindName: String {
        switch body {
        case .configApplied: "configApplied"
        case .nodeAdded: "nodeAdded"
        case .nodeRemoved: "nodeRemoved"
        case .nodeStateChanged: "nodeStateChanged"
        case .gpuHealthChanged: "gpuHealthChanged"
        case .jobSubmitted: "jobSubmitted"
        case .jobHeld: "jobHeld"
        case .jobReleased: "jobReleased"
        case .jobStarted: "jobStarted"
        case .jobPreempted: "jobPreempted"
        case .jobCheckpointed: "jobCheckpointed"
        case .jobGPUsHeld: "jobGPUsHeld"
        case .jobCancelled: "jobCancelled"
        case .jobTimedOut: "jobTimedOut"
        case .jobGPUFailed: "jobGPUFailed"
        case .jobFinished: "jobFinished"
        case .jobRequeued: "jobRequeued"
        case .jobRequeueing: "jobRequeueing"
        case .jobsArchived: "jobsArchived"
        case .jobUpdated: "jobUpdated"
        case .clockTick: "clockTick"
        case .serviceCreated: "serviceCreated"
        case .serviceScaled: "serviceScaled"
        case .serviceDeleted: "serviceDeleted"
        case .serviceUpdated: "serviceUpdated"
        case .serviceRolloutHalted: "serviceRolloutHalted"
        }
    }
}

extension Event.Body {
    /// The one job the event is about, if it is about one.
    public var jobID: JobID? {
        switch self {
        case .jobSubmitted(let id, _, _), .jobHeld(let id), .jobReleased(let id), .jobStarted(let id, _, _, _),
            .jobPreempted(let id, _, _, _), .jobCheckpointed(let id), .jobGPUsHeld(let id, _),
            .jobCancelled(let id, _, _),
            .jobTimedOut(let id, _), .jobGPUFailed(let id, _, _), .jobFinished(let id, _, _),
            .jobRequeued(let id, _), .jobRequeueing(let id, _, _), .jobUpdated(let id, _, _):
            id
        case .configApplied, .nodeAdded, .nodeRemoved, .nodeStateChanged, .gpuHealthChanged, .jobsArchived,
            .clockTick, .serviceCreated, .serviceScaled, .serviceDeleted, .serviceUpdated, .serviceRolloutHalted:
            nil
        }
    }
}

/// Why an event does not fit the state. The state is unchanged when one is thrown.
public struct StateError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Stable codes, for callers that map errors onto protocol errors.
    public enum Code: String, Sendable, Hashable {
        case unknownJob, unknownNode, unknownModel, unknownClass
        case duplicate
        case illegalTransition
        case invalidAllocation
        case invalidSpec
        case invalidConfig
        case nodeBusy
    }

    public var code: Code
    /// A sentence saying what was refused and why.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
