/// How a job trades money against time when the scheduler picks its GPU model.
public enum Preference: Hashable, Codable, Sendable, CustomStringConvertible {
    /// The lowest expected cost (price × GPUs × expected time on that model).
    case cheapest
    /// The earliest expected finish: the fastest model free now.
    case fastest
    /// The cheapest placement expected to finish by this time; the fastest when none can.
    case deadline(Instant)

    public var description: String {
        switch self {
        case .cheapest: "cheapest"
        case .fastest: "fastest"
        case .deadline(let t): "deadline \(t.seconds)"
        }
    }
}

/// Why a running job's GPUs may be taken back at once: they were lent to it.
public enum Loan: Hashable, Codable, Sendable, CustomStringConvertible {
    /// GPUs held for a blocked job's reservation, lent to a preemptible job meanwhile (backfill with loans).
    case reservation(for: JobID)
    /// GPUs of a model kept for inference, lent to a preemptible job while inference does not need them.
    case inferenceReserve(model: String)
    /// GPUs beyond the tenant's quota: borrowed from other tenants' guarantees.
    case quota(tenant: String)

    public var description: String {
        switch self {
        case .reservation(let id): "GPUs reserved for job \(id)"
        case .inferenceReserve(let m): "\(m) GPUs reserved for inference"
        case .quota(let t): "GPUs borrowed beyond tenant \(t)'s quota"
        }
    }

    /// The loan in a job's environment: `reserve:L4`, `reservation:42`, `quota:research`.
    public var token: String {
        switch self {
        case .reservation(let id): "reservation:\(id)"
        case .inferenceReserve(let m): "reserve:\(m)"
        case .quota(let t): "quota:\(t)"
        }
    }

    /// What a run started on `loans` is told: `ALLOT_LOANS` (their tokens, comma-separated) and, when
    /// `checkpointEvery` is above 0, `ALLOT_CHECKPOINT_EVERY`: the seconds between checkpoints it is asked
    /// to keep to (saving, then `allotctl checkpoint`), as a loan may be taken back with a few seconds'
    /// notice. Empty without loans.
    public static func environment(_ loans: [Loan], checkpointEvery: Seconds) -> [String: String] {
        guard !loans.isEmpty else { return [:] }
        var env = ["ALLOT_LOANS": loans.map(\.token).joined(separator: ",")]
        if checkpointEvery > 0 { env["ALLOT_CHECKPOINT_EVERY"] = String(Int(checkpointEvery.rounded(.up))) }
        return env
    }
}

/// Why a running job was preempted.
public enum PreemptionReason: String, Hashable, Codable, Sendable, CaseIterable {
    /// A job of a higher class that may preempt needed its GPUs.
    case priority
    /// Its GPUs were lent from a reservation, and the reserved job can now start.
    case reservation
    /// Its GPUs were lent from the inference reserve, and inference needs them back.
    case inference
    /// It ran beyond its tenant's quota, and a tenant under its quota needs the GPUs.
    case quota
    /// A training job of the same class that has used fewer GPU-hours (an earlier attained-service queue,
    /// ``SchedulerSettings/serviceQueues``) needed its GPUs.
    case service
    /// It moves to a faster GPU model that has room, where it is expected to end sooner by more than the
    /// move costs (the job stops and starts again there; `by` is the job itself).
    case migration
    /// An elastic job grows into GPUs that came free (`by` is the job itself), or gives back GPUs it grew
    /// into to a job that waits (`by`): it stops and starts again at its new size.
    case resize

    /// Whether it takes back a loan (a reclaim) rather than preempting by class or attained service, or
    /// moving.
    public var isReclaim: Bool { self != .priority && self != .service && self != .migration && self != .resize }
}

/// The preemption rules.
public struct PreemptionSettings: Hashable, Codable, Sendable {
    /// A job that has run less than this since its start is not preempted by class (loans may still be
    /// taken back). Short by default: it is how long a latency-critical job may wait behind training that
    /// just started, and a young job has the least work to lose (docs/scheduling.md has the measurements);
    /// repeated preemption is what `maxPreemptions` and `protection` guard against.
    public var minRuntime: Seconds = 120
    /// After this many preemptions a job is protected from preemption by class…
    public var maxPreemptions: Int = 3
    /// … for this long after each start.
    public var protection: Seconds = 3600
    /// The notice a loan gets when it is taken back (short: the lender needs its GPUs within a pass).
    public var loanGrace: Seconds = 5
    /// Policy `allot`: how many times in a row a preemptible training job may be moved to a faster GPU model
    /// that came free (``PreemptionReason/migration``), until it is preempted for another job; 0: never.
    public var maxMoves: Int = 2
    /// A job started on loans is asked (``Loan/environment(_:checkpointEvery:)``) to save and report a
    /// checkpoint at least this often, so that taking the loan back loses little; 0: not asked.
    public var loanCheckpointEvery: Seconds = 600

    public init() {}

    enum CodingKeys: String, CodingKey {
        case minRuntime, maxPreemptions, protection, loanGrace, maxMoves, loanCheckpointEvery
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = PreemptionSettings()
        minRuntime = try c.decodeIfPresent(Double.self, forKey: .minRuntime) ?? d.minRuntime
        maxPreemptions = try c.decodeIfPresent(Int.self, forKey: .maxPreemptions) ?? d.maxPreemptions
        protection = try c.decodeIfPresent(Double.self, forKey: .protection) ?? d.protection
        maxMoves = try c.decodeIfPresent(Int.self, forKey: .maxMoves) ?? d.maxMoves
        loanGrace = try c.decodeIfPresent(Double.self, forKey: .loanGrace) ?? d.loanGrace
        loanCheckpointEvery =
            try c.decodeIfPresent(Double.self, forKey: .loanCheckpointEvery) ?? d.loanCheckpointEvery
    }
}

/// GPUs of one model kept for inference. While inference does not use them they are lent to preemptible
/// jobs, and taken back at once when it does.
public struct InferenceReserve: Hashable, Codable, Sendable {
    public var gpuModel: String
    public var gpus: Int

    public init(gpuModel: String, gpus: Int) {
        self.gpuModel = gpuModel
        self.gpus = gpus
    }
}
