/// Whole GPUs held by inference jobs on each model, over the last days, and the forecast the inference
/// reserve's loans are decided by: how many of a model's GPUs inference is likely to need over the next
/// while, from the recent level, its trend and the same hours of the past days.
///
/// Derived from the jobs' runs (``ClusterState`` keeps it up to date as inference jobs start and stop, and
/// rebuilds it from the runs it still holds when it is loaded), so the same events give the same forecast.
public struct InferenceDemand: Hashable, Sendable {
    /// The resolution of the history.
    public static let bucket: Seconds = 300
    /// How far back the history reaches (the daily pattern reads up to this many past days).
    public static let days = 7
    static let bucketsPerDay = Int(86_400 / bucket)
    static let ringSize = (days + 1) * bucketsPerDay
    /// Horizons up to this long may be forecast from the recent trend alone (before a day of history).
    public static let trendHorizon: Seconds = 3600

    struct Model: Hashable, Sendable {
        var use = 0
        /// The highest use in each bucket, by bucket number modulo the ring's size.
        var peaks = [Int32](repeating: 0, count: InferenceDemand.ringSize)
        /// The latest bucket written; buckets after it until now held `use` throughout.
        var last = Int.min
        /// The first bucket with history.
        var first = Int.min
        /// Mean length of the inference runs that ended (seconds), and how many (capped, so that it follows).
        var meanRun: Double = 0
        var runsSeen = 0

        mutating func advance(to b: Int) {
            if last == Int.min {
                first = b
                last = b
                peaks[Self.slot(b)] = Int32(use)
                return
            }
            guard b > last else { return }
            // Buckets with no change held the use as it was.
            for k in (max(last + 1, b - InferenceDemand.ringSize + 1))...b { peaks[Self.slot(k)] = Int32(use) }
            last = b
        }

        static func slot(_ b: Int) -> Int {
            let r = b % InferenceDemand.ringSize
            return r < 0 ? r + InferenceDemand.ringSize : r
        }

        /// The highest use in buckets `from...to`, reading buckets after the latest written as the use now;
        /// nil when the history does not reach back to `from`.
        func peak(from: Int, to: Int) -> Int? {
            guard last != Int.min, from >= first, from > last - InferenceDemand.ringSize, from <= to else {
                return nil
            }
            var m = 0
            if from <= last { for b in from...min(to, last) { m = max(m, Int(peaks[Self.slot(b)])) } }
            if to > last { m = max(m, use) }
            return m
        }
    }

    var models: [String: Model] = [:]

    public init() {}

    /// `gpus` more (or fewer, when negative) GPUs of `model` held by inference from `t`.
    mutating func change(model: String, by gpus: Int, at t: Instant) {
        let b = Int((t.seconds / Self.bucket).rounded(.down))
        models[model, default: Model()].advance(to: b)
        models[model]!.use += gpus
        let s = Model.slot(max(b, models[model]!.last))
        models[model]!.peaks[s] = max(models[model]!.peaks[s], Int32(models[model]!.use))
    }

    /// An inference run of `seconds` on `model` ended: it feeds the expected length of a replica's run.
    mutating func ended(model: String, after seconds: Seconds) {
        guard seconds > 0 else { return }
        var m = models[model, default: Model()]
        m.runsSeen = min(m.runsSeen + 1, 200)
        m.meanRun += (seconds - m.meanRun) / Double(m.runsSeen)
        models[model] = m
    }

    /// GPUs of `model` inference holds now.
    public func inUse(_ model: String) -> Int { models[model]?.use ?? 0 }

    /// How long an inference run on `model` lasts on average, when any has ended.
    public func meanRun(_ model: String) -> Seconds? {
        guard let m = models[model], m.runsSeen > 0 else { return nil }
        return m.meanRun
    }

    /// What inference is expected to need of a model over a while.
    public struct Forecast: Hashable, Sendable {
        /// GPUs: the highest use expected in the window.
        public var peak: Int
        /// How it was found: "the same hours of the last N days", "the last hour's trend", or nil when nothing
        /// is known that far ahead (the forecast is then the whole reserve).
        public var basis: String?
    }

    /// The highest use of `model` by inference expected from `now` for `horizon` seconds, capped at `cap`
    /// (the reserve: a forecast beyond it changes nothing). No headroom is added: a burst beyond the forecast
    /// takes loans back within the loan grace, so the forecast only has to say which loans would be taken
    /// back, not to keep GPUs idle for inference.
    ///
    /// Three readings, the highest wins: the use now; the last hour's rise carried on (for horizons up to
    /// ``trendHorizon``); and, for each past day the history covers, that day's highest use in the same
    /// window, scaled by how today's last hour compares with that day's (never below 1). A horizon of a day or
    /// more reads whole days. With no past day and a horizon beyond the trend's, the forecast is `cap`.
    public func forecast(_ model: String, from now: Instant, for horizon: Seconds, cap: Int) -> Forecast {
        let m = models[model] ?? Model()
        let b = Int((now.seconds / Self.bucket).rounded(.down))
        let span = Int((min(max(horizon, 0), 86_400) / Self.bucket).rounded(.up))
        var expected = Double(m.use)
        var basis: String? = "the use now"
        let hour = Int(3600 / Self.bucket)
        let recent = m.peak(from: b - hour + 1, to: b) ?? m.use
        if horizon <= Self.trendHorizon {
            if let before = m.peak(from: b - 2 * hour + 1, to: b - hour) {
                let rise = Double(max(0, recent - before)) * horizon / 3600
                if Double(recent) + rise > expected {
                    expected = Double(recent) + rise
                    basis = "the last hour's trend"
                }
            } else if Double(recent) > expected {
                expected = Double(recent)
            }
        }
        var days = 0
        var daily = 0.0
        for d in 1...Self.days {
            let back = d * Self.bucketsPerDay
            guard let window = m.peak(from: b - back, to: b - back + span) else { break }
            let then = m.peak(from: b - back - hour + 1, to: b - back) ?? window
            let growth = then > 0 ? max(1, Double(recent) / Double(then)) : 1
            daily = max(daily, Double(window) * min(growth, 2))
            days += 1
        }
        if days > 0 {
            if daily > expected {
                expected = daily
                basis = days == 1 ? "the same hours yesterday" : "the same hours of the last \(days) days"
            }
        } else if horizon > Self.trendHorizon {
            return Forecast(peak: cap, basis: nil)
        }
        return Forecast(peak: min(cap, Int(expected.rounded(.up))), basis: basis)
    }
}
