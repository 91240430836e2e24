/// A quantity that grows at a constant rate between changes: GPU-seconds or money of running jobs.
/// Reading it at any time costs O(1); it is settled only when its rate changes.
public struct Accrual: Hashable, Codable, Sendable {
    /// The value at `since`.
    public internal(set) var settled: Double = 0
    /// Growth per second from `since` on.
    public internal(set) var rate: Double = 0
    public internal(set) var since: Instant = .zero

    public init() {}

    /// An accrual with every field given (for snapshot decoders).
    public init(settled: Double, rate: Double, since: Instant) {
        self.settled = settled
        self.rate = rate
        self.since = since
    }

    /// The value at `t` (not before `since`).
    public func value(at t: Instant) -> Double { settled + rate * max(0, t - since) }

    mutating func settle(at t: Instant) {
        if t > since {
            settled = value(at: t)
            since = t
        }
    }

    mutating func changeRate(by delta: Double, at t: Instant) {
        settle(at: t)
        rate += delta
        if abs(rate) < 1e-12 { rate = 0 }
    }

    /// Adds a lump (a correction) at `t`.
    mutating func add(_ amount: Double, at t: Instant) {
        settle(at: t)
        settled += amount
    }
}

/// Usage that decays with a half-life: the fair-share measure of how much a tenant used lately.
///
/// With a constant rate r from t0, the value at t is `u0·d + r·h/ln2·(1 − d)` with `d = 2^(−(t − t0)/h)`:
/// exact, and O(1) to read.
public struct DecayingUsage: Hashable, Codable, Sendable {
    public internal(set) var settled: Double = 0
    /// GPUs in use (GPU-seconds per second) from `since` on.
    public internal(set) var rate: Double = 0
    public internal(set) var since: Instant = .zero

    public init() {}

    /// A decaying usage with every field given (for snapshot decoders).
    public init(settled: Double, rate: Double, since: Instant) {
        self.settled = settled
        self.rate = rate
        self.since = since
    }

    /// The decayed GPU-seconds at `t`, for a half-life `h` seconds.
    public func value(at t: Instant, halfLife h: Seconds) -> Double {
        let dt = t - since
        if dt <= 0 { return settled }
        let d = Math.exp2(-dt / h)
        return settled * d + rate * h / Math.ln2 * (1 - d)
    }

    mutating func changeRate(by delta: Double, at t: Instant, halfLife h: Seconds) {
        if t > since {
            settled = value(at: t, halfLife: h)
            since = t
        }
        rate += delta
        if abs(rate) < 1e-12 { rate = 0 }
    }

    /// Takes back use accrued at `rate` over the `seconds` before `t` (decayed as it would be by now).
    mutating func refund(rate r: Double, for seconds: Seconds, at t: Instant, halfLife h: Seconds) {
        if t > since {
            settled = value(at: t, halfLife: h)
            since = t
        }
        settled = max(0, settled - r * h / Math.ln2 * (1 - Math.exp2(-seconds / h)))
    }
}

/// What a tenant, a GPU model or a job kind has used.
public struct Usage: Hashable, Codable, Sendable {
    public internal(set) var gpuSeconds = Accrual()
    public internal(set) var costUSD = Accrual()
    /// GPUs held right now; a job on a share of a GPU counts that GPU (quotas count GPUs touched).
    public internal(set) var gpusInUse: Int = 0
    /// Jobs holding GPUs right now.
    public internal(set) var jobsRunning: Int = 0

    public init() {}

    /// A usage with every field given (for snapshot decoders).
    public init(gpuSeconds: Accrual, costUSD: Accrual, gpusInUse: Int, jobsRunning: Int) {
        self.gpuSeconds = gpuSeconds
        self.costUSD = costUSD
        self.gpusInUse = gpusInUse
        self.jobsRunning = jobsRunning
    }

    mutating func start(gpus: Int, worth: Double, costPerSecond: Double, at t: Instant) {
        gpuSeconds.changeRate(by: worth, at: t)
        costUSD.changeRate(by: costPerSecond, at: t)
        gpusInUse += gpus
        jobsRunning += 1
    }

    mutating func stop(gpus: Int, worth: Double, costPerSecond: Double, at t: Instant) {
        gpuSeconds.changeRate(by: -worth, at: t)
        costUSD.changeRate(by: -costPerSecond, at: t)
        gpusInUse -= gpus
        jobsRunning -= 1
    }

    /// Takes back `seconds` of a run's use that were accrued but not used (it ended before it was seen to).
    mutating func refund(gpus: Int, worth: Double, costPerSecond: Double, for seconds: Seconds, at t: Instant) {
        gpuSeconds.add(-worth * seconds, at: t)
        costUSD.add(-costPerSecond * seconds, at: t)
    }
}

/// A tenant's usage plus its decayed usage for fair share.
public struct TenantUsage: Hashable, Codable, Sendable {
    public internal(set) var usage = Usage()
    public internal(set) var decayed = DecayingUsage()
    /// Spend at the start of the current budget windows.
    public internal(set) var marks = WindowMarks()
    public init() {}

    /// Money spent within the budget window holding `t`.
    public func spent(in window: Budget.Window, at t: Instant) -> Double {
        marks.spent(in: window, at: t, cost: usage.costUSD)
    }

    mutating func start(gpus: Int, worth: Double, costPerSecond: Double, at t: Instant, halfLife: Seconds) {
        marks.roll(to: t, cost: usage.costUSD)
        usage.start(gpus: gpus, worth: worth, costPerSecond: costPerSecond, at: t)
        decayed.changeRate(by: worth, at: t, halfLife: halfLife)
    }

    mutating func stop(gpus: Int, worth: Double, costPerSecond: Double, at t: Instant, halfLife: Seconds) {
        marks.roll(to: t, cost: usage.costUSD)
        usage.stop(gpus: gpus, worth: worth, costPerSecond: costPerSecond, at: t)
        decayed.changeRate(by: -worth, at: t, halfLife: halfLife)
    }

    mutating func refund(
        gpus: Int,
        worth: Double,
        costPerSecond: Double,
        for seconds: Seconds,
        at t: Instant,
        halfLife: Seconds
    ) {
        usage.refund(gpus: gpus, worth: worth, costPerSecond: costPerSecond, for: seconds, at: t)
        decayed.refund(rate: worth, for: seconds, at: t, halfLife: halfLife)
    }

    /// A tenant usage with every field given (for snapshot decoders).
    public init(usage: Usage, decayed: DecayingUsage, marks: WindowMarks = WindowMarks()) {
        self.usage = usage
        self.decayed = decayed
        self.marks = marks
    }
}
