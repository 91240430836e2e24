/// What the scheduler wants done now. The daemon logs each as an event, then acts on it.
public enum Decision: Hashable, Sendable {
    /// Start a pending job on these GPUs.
    case start(JobID, on: Allocation, why: PlacementNote)

    /// The event that records the decision.
    public func event(at time: Instant) -> Event {
        switch self {
        case .start(let id, let allocation, _): Event(time: time, .jobStarted(id: id, allocation: allocation))
        }
    }

    public var jobID: JobID {
        switch self {
        case .start(let id, _, _): id
        }
    }
}

/// Why a job was placed where it was.
public struct PlacementNote: Hashable, Sendable, CustomStringConvertible {
    /// How the model was chosen.
    public enum Rule: String, Hashable, Sendable {
        /// Inference: the cheapest model that serves it now.
        case cheapest
        /// Training: the model that finishes it soonest among those free now, cost breaking ties.
        case soonest
        /// Baseline policies: the first model in config order that fits.
        case firstFit = "first-fit"
    }

    public var rule: Rule
    public var model: String
    /// Expected run time on that model, in seconds.
    public var expectedSeconds: Seconds
    /// Expected cost of the run, in USD.
    public var estimatedCostUSD: Double
    /// Free GPUs left on the chosen nodes after placing (0 is a perfect fit).
    public var holesLeft: Int

    public var description: String {
        let how: String
        switch rule {
        case .cheapest: how = "cheapest GPU that serves it"
        case .soonest: how = "finishes soonest of the GPUs free now"
        case .firstFit: how = "first model that fits"
        }
        return
            "\(model): \(how); expected \(DurationText.format(expectedSeconds)), about $\(Money.format(estimatedCostUSD))"
            + (holesLeft == 0 ? ", fills its nodes exactly" : ", leaves \(holesLeft) GPU(s) free on its nodes")
    }
}

/// Money formatting without Foundation.
public enum Money {
    /// `1234.5` → `1,234.50`.
    public static func format(_ usd: Double) -> String {
        let cents = Int((abs(usd) * 100).rounded())
        var whole = String(cents / 100)
        var grouped = ""
        while whole.count > 3 {
            grouped = "," + whole.suffix(3) + grouped
            whole = String(whole.dropLast(3))
        }
        let c = cents % 100
        return (usd < 0 ? "-" : "") + whole + grouped + "." + (c < 10 ? "0\(c)" : "\(c)")
    }
}

/// What keeps a pending job from starting in this pass (the first obstacle met; ``Scheduler/explain(_:in:pass:)``
/// lists them all).
public enum Blocker: Hashable, Sendable {
    /// The job is held by its owner or an admin.
    case held
    /// No declared GPU model satisfies the job's model and memory constraints.
    case noModelAllowed
    /// The job wants more GPUs on one node (or one NVLink island) than any allowed node has.
    case exceedsNodeSize(needed: Int, largest: Int)
    /// The job wants more GPUs than the pool has of the allowed models.
    case exceedsPool(needed: Int, total: Int)
    /// Not enough free GPUs now: `free` of the allowed models, `largestBlock` on one node.
    case insufficientGPUs(needed: Int, free: Int, largestBlock: Int)
    /// Every placement free now would cost more than the job's limit.
    case overMaxCost(cheapestUSD: Double, limitUSD: Double)
    /// First-come-first-served: an earlier job that cannot start holds the queue.
    case behind(JobID)
}

/// A pending job's place in the queue and what blocks it.
public struct PendingReason: Hashable, Sendable {
    public var id: JobID
    /// 1 for the job that goes first.
    public var rank: Int
    public var blocker: Blocker
}
