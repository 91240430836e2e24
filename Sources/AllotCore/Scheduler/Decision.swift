/// What the scheduler wants done now. The daemon logs each as an event, then acts on it.
public enum Decision: Hashable, Sendable {
    /// Start a pending job on these GPUs. `loans` names what lent GPUs it uses (they may be taken back).
    case start(JobID, on: Allocation, why: PlacementNote, loans: [Loan])
    /// Tell a running job to stop within `grace` seconds so that `by` can have its GPUs.
    case preempt(JobID, by: JobID, grace: Seconds, reason: PreemptionReason)
    /// Hold free GPUs for a job told just before to stop and move to them (reason `migration`).
    case hold(JobID, on: [Allocation.Slice])

    /// The event that records the decision.
    public func event(at time: Instant) -> Event {
        switch self {
        case .start(let id, let allocation, let note, let loans):
            Event(time: time, .jobStarted(id: id, allocation: allocation, note: note, loans: loans))
        case .preempt(let id, let by, let grace, let reason):
            Event(time: time, .jobPreempted(id: id, by: by, grace: grace, reason: reason))
        case .hold(let id, let slices):
            Event(time: time, .jobGPUsHeld(id: id, slices: slices))
        }
    }

    /// The job the decision is about (the one started or preempted).
    public var jobID: JobID {
        switch self {
        case .start(let id, _, _, _): id
        case .preempt(let id, _, _, _): id
        case .hold(let id, _): id
        }
    }

    /// GPUs a start takes (0 for a preemption).
    public var gpusStarted: Int {
        switch self {
        case .start(_, let a, _, _): a.gpuCount
        case .preempt, .hold: 0
        }
    }
}

/// Why a job was placed where it was.
public struct PlacementNote: Hashable, Codable, Sendable, CustomStringConvertible {
    /// How the model was chosen.
    public enum Rule: String, Hashable, Codable, Sendable {
        /// Inference: the cheapest model that serves it now.
        case cheapest
        /// Training: the model that finishes it soonest among those free now, cost breaking ties.
        case soonest
        /// The cheapest placement expected to finish by the job's deadline.
        case deadline
        /// Baseline policies: the first model in config order that fits.
        case firstFit = "first-fit"
        /// Inference on a dearer model free now: its cheapest model's GPUs are lent, and taking them back
        /// would lose more (the work since the loans' checkpoints and their restarts) than this costs extra.
        case spillOver = "spill-over"
    }

    public var rule: Rule
    public var model: String
    /// Expected run time on that model, in seconds.
    public var expectedSeconds: Seconds
    /// Expected cost of the run, in USD.
    public var estimatedCostUSD: Double
    /// What the start left free, in the job's terms (0 is a perfect fit): for whole GPUs, the free GPUs left
    /// on its nodes; for a share of one GPU, the thousandths of that GPU left free; for a MIG instance, the
    /// memory slices of its GPU left free; for a job of no GPUs, the free GPUs of its node.
    public var holesLeft: Int

    public init(rule: Rule, model: String, expectedSeconds: Seconds, estimatedCostUSD: Double, holesLeft: Int) {
        self.rule = rule
        self.model = model
        self.expectedSeconds = expectedSeconds
        self.estimatedCostUSD = estimatedCostUSD
        self.holesLeft = holesLeft
    }

    /// What kind of start a note is about, which says what `holesLeft` counts.
    public enum Shape: Sendable {
        case wholeGPUs, share, mig

        public init(_ spec: JobSpec) { self = !spec.mig.isEmpty ? .mig : spec.isShare ? .share : .wholeGPUs }
    }

    /// The note as `why` and `show` word it for a job of this shape.
    public func text(for shape: Shape) -> String {
        let left: String
        switch shape {
        case .wholeGPUs:
            left = holesLeft == 0 ? "fills its nodes exactly" : "leaves \(holesLeft) GPU(s) free on its nodes"
        case .share:
            left =
                holesLeft <= 0
                ? "fills its GPU exactly" : "leaves \(Fraction.text(min(holesLeft, 999))) of its GPU free"
        case .mig:
            left =
                holesLeft <= 0
                ? "fills its GPU's memory slices"
                : "leaves \(min(holesLeft, MIGTable.memorySlices)) of its GPU's \(MIGTable.memorySlices) memory slices free"
        }
        return head + ", " + left
    }

    public var description: String { text(for: .wholeGPUs) }

    var head: String {
        let how: String
        switch rule {
        case .cheapest: how = "cheapest GPU that serves it"
        case .soonest: how = "finishes soonest of the GPUs free now"
        case .deadline: how = "cheapest that finishes by its deadline"
        case .firstFit: how = "first model that fits"
        case .spillOver:
            how =
                "spill-over: its cheapest model's GPUs are lent, and taking them back would lose more than this costs extra"
        }
        return
            "\(model): \(how); expected \(DurationText.format(expectedSeconds)), about $\(Money.format(estimatedCostUSD))"
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
    /// No node of the pool is one its node selection admits (`nodelist`, `exclude`, `constraint`; the
    /// selection in words).
    case noNodeSelected(String)
    /// The job wants more GPUs on one node (or one NVLink island) than any allowed node has.
    case exceedsNodeSize(needed: Int, largest: Int)
    /// The job wants more GPUs than the pool has of the allowed models.
    case exceedsPool(needed: Int, total: Int)
    /// Not enough free GPUs now: `free` of the allowed models, `largestBlock` on one node.
    case insufficientGPUs(needed: Int, free: Int, largestBlock: Int)
    /// GPUs are free, but no node with them has the job's CPUs or memory free beside them (what it needs
    /// on the node that came closest).
    case hostResources(needed: Int, cpuMilli: Int?, memoryMiB: Int?)
    /// No node could ever give it its CPUs or memory beside its GPUs (not even an idle one), so it can never
    /// start as asked.
    case exceedsNodeResources(cpuMilli: Int?, memoryMiB: Int?)
    /// No GPU has free memory slices where one of the job's MIG profiles may start (what the closest GPU has:
    /// `detail`, e.g. "3g.40gb needs memory slices 0–3 or 4–7 free; the emptiest A100-80GB GPU, a100-01 GPU
    /// 2, has 1g.10gb@0 taken").
    case noMIGRoom(detail: String)
    /// No GPU has room for the job's share, and none is free whole (what the roomiest shared GPU has:
    /// `detail`, e.g. "no GPU has 10 GiB free: the largest gap is 6 GiB on l4-02 GPU 3").
    case noShareRoom(detail: String)
    /// No MIG node of an allowed model offers any of the job's profiles (or none has MIG on): it can never
    /// start as asked.
    case noMIGProfile(detail: String)
    /// Every placement free now would cost more than the job's limit.
    case overMaxCost(cheapestUSD: Double, limitUSD: Double)
    /// Every placement the pool could ever give it would cost more than the job's limit: the cheapest is
    /// `gpus`×`model` for its expected run time, at `cheapestUSD`.
    case maxCostBelowAnyPrice(cheapestUSD: Double, model: String, expectedSeconds: Seconds, limitUSD: Double)
    /// First-come-first-served: an earlier job that cannot start holds the queue.
    case behind(JobID)
    /// The GPUs it could use are held for another job's reservation (from `from`, when known).
    case reserved(for: JobID, from: Instant?)
    /// Jobs were told to stop to make room for it; it starts when they have.
    case waitingForPreemption(victims: Int)
    /// It waits for `model`, expected to have room for it about `at`, rather than start now on `instead`:
    /// it is expected to end `saves` seconds sooner that way (model choice with foresight).
    case fasterModelSoon(model: String, at: Instant, instead: String, saves: Seconds)
    /// Its tenant is past a hard budget (counting running jobs and this one's estimated cost).
    case overBudget(tenant: String, spentUSD: Double, limitUSD: Double, window: Budget.Window)
    /// Its tenant would go past its quota plus borrowing limit.
    case overQuota(tenant: String, inUse: Double, quota: Int, borrowLimit: Int?)
    /// It could run only on lent GPUs, and it is not preemptible (lent GPUs may be taken back).
    case mustBorrow(Loan)
    /// It could run only on GPUs of `model`'s inference reserve, and inference is expected to need
    /// `expectedGPUs` of the `reserve` within the `within` seconds it is expected to run (`basis`: how that
    /// was found; nil when nothing is known that far ahead): it would be taken back, so it is not lent them.
    case reserveNeeded(model: String, expectedGPUs: Int, reserve: Int, within: Seconds, basis: String?)
    /// It waits for its dependencies (the first unmet one, e.g. "afterok:12: job 12 is running").
    case dependency(String)
    /// One of its dependencies can never be met, and the configuration keeps it rather than cancel it.
    case dependencyNeverMet(String)
    /// It is a task of job array `array`, whose limit of tasks at once is reached.
    case arrayLimit(array: JobID, limit: Int)
}

/// A pending job's place in the queue and what blocks it.
public struct PendingReason: Hashable, Sendable {
    public var id: JobID
    /// 1 for the job that goes first.
    public var rank: Int
    public var blocker: Blocker
}

/// GPUs held for the first job that cannot start (EASY backfill): later jobs may use them only if they end
/// before it starts, or (policy `allot`) as a loan that is taken back when it can start.
public struct Reservation: Hashable, Sendable {
    public var job: JobID
    /// When its GPUs are expected to be free, from running jobs' walltimes (and, for `allot`, estimates);
    /// nil when no running job gives an end.
    public var from: Instant?
    /// The GPUs held for it, when known.
    public var allocation: Allocation?
}
