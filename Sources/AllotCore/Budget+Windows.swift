extension Budget.Window {
    /// The start of the window holding `t` (UTC calendar: midnight, Monday midnight, the 1st at midnight).
    public func start(containing t: Instant) -> Instant {
        let days = Int((t.seconds / 86_400).rounded(.down))
        switch self {
        case .day:
            return Instant(seconds: Double(days) * 86_400)
        case .week:
            // 1970-01-01 was a Thursday: Monday-based weekday = (days + 3) mod 7.
            let weekday = ((days + 3) % 7 + 7) % 7
            return Instant(seconds: Double(days - weekday) * 86_400)
        case .month:
            let (y, m, _) = CivilTime.civilFromDays(days)
            return Instant(seconds: Double(CivilTime.daysFromCivil(year: y, month: m, day: 1)) * 86_400)
        }
    }

    /// The end of the window holding `t` (the start of the next).
    public func end(containing t: Instant) -> Instant {
        let s = start(containing: t)
        switch self {
        case .day: return s + 86_400
        case .week: return s + 7 * 86_400
        case .month:
            let (y, m, _) = CivilTime.civilFromDays(Int(s.seconds / 86_400))
            let (ny, nm) = m == 12 ? (y + 1, 1) : (y, m + 1)
            return Instant(seconds: Double(CivilTime.daysFromCivil(year: ny, month: nm, day: 1)) * 86_400)
        }
    }
}

/// A tenant's spending at the start of its current day, week and month, so that the spend within any
/// budget window is exact whichever window the config names (and if it changes).
///
/// Marks move forward only when the tenant's cost rate changes (a job of the tenant starts or ends): since
/// the rate was constant from the last change until then, the spend at a window boundary in between is
/// exact.
public struct WindowMarks: Hashable, Codable, Sendable {
    public var starts: [Instant] = [.zero, .zero, .zero]
    public var spent: [Double] = [0, 0, 0]

    public init() {}

    public init(starts: [Instant], spent: [Double]) {
        self.starts = starts
        self.spent = spent
    }

    static func slot(_ w: Budget.Window) -> Int {
        switch w {
        case .day: 0
        case .week: 1
        case .month: 2
        }
    }

    /// Moves each mark to the window holding `t`. Call before the cost rate changes at `t`.
    mutating func roll(to t: Instant, cost: Accrual) {
        for w in Budget.Window.allCases {
            let i = Self.slot(w)
            let b = w.start(containing: t)
            if b > starts[i] {
                spent[i] = cost.value(at: b)
                starts[i] = b
            }
        }
    }

    /// Money spent within the window holding `t`.
    public func spent(in w: Budget.Window, at t: Instant, cost: Accrual) -> Double {
        let i = Self.slot(w)
        let b = w.start(containing: t)
        let base = b > starts[i] ? cost.value(at: b) : spent[i]
        return max(0, cost.value(at: t) - base)
    }
}
