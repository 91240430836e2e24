/// A span of time in seconds. Durations in specs, configs and events are plain seconds so that they read
/// naturally in JSON and TOML.

/// A point in time, in seconds from an epoch chosen by the caller.
///
/// The core never reads a clock: the daemon passes the wall clock (seconds since the Unix epoch) and the
/// simulator passes virtual time (seconds since the start of its trace).
public struct Instant: Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    /// Seconds since the epoch.
    public var seconds: Double

    @inlinable public init(seconds: Double) { self.seconds = seconds }

    /// The epoch itself.
    public static let zero = Instant(seconds: 0)

    @inlinable public static func < (a: Instant, b: Instant) -> Bool { a.seconds < b.seconds }
    @inlinable public static func + (a: Instant, d: Seconds) -> Instant { Instant(seconds: a.seconds + d) }
    @inlinable public static func - (a: Instant, d: Seconds) -> Instant { Instant(seconds: a.seconds - d) }
    @inlinable public static func - (a: Instant, b: Instant) -> Seconds { a.seconds - b.seconds }

    public init(from decoder: any Decoder) throws {
        self.seconds = try decoder.singleValueContainer().decode(Double.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(seconds)
    }

    public var description: String { "t=\(seconds)" }
}

/// Civil (proleptic Gregorian, UTC) date-time conversion without Foundation.
public enum CivilTime {
    /// Parses `YYYY-MM-DD HH:MM:SS[.fff]` (or with `T` between date and time, optional trailing `Z`) as UTC
    /// and returns seconds since the Unix epoch, or nil when the text is not such a date-time.
    public static func parse(_ text: String) -> Double? {
        var s = Substring(text.trimmingWhitespace())
        if s.hasSuffix("Z") { s = s.dropLast() }
        let u = Array(s.utf8)
        guard u.count >= 19, u[4] == 45, u[7] == 45, u[10] == 32 || u[10] == 84, u[13] == 58, u[16] == 58
        else { return nil }
        func num(_ r: Range<Int>) -> Int? {
            var v = 0
            for i in r {
                let c = u[i]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            return v
        }
        guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13),
            let mi = num(14..<16), let se = num(17..<19), (1...12).contains(mo), (1...31).contains(d), h < 24,
            mi < 60, se < 61
        else { return nil }
        var frac = 0.0
        if u.count > 19 {
            guard u[19] == 46, u.count > 20 else { return nil }
            var scale = 0.1
            for i in 20..<u.count {
                let c = u[i]
                guard c >= 48, c <= 57 else { return nil }
                frac += Double(c - 48) * scale
                scale /= 10
            }
        }
        let days = daysFromCivil(year: y, month: mo, day: d)
        return Double(days * 86_400 + h * 3600 + mi * 60 + se) + frac
    }

    /// Formats seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
    public static func format(_ epochSeconds: Double) -> String {
        let total = Int(epochSeconds.rounded(.down))
        var days = total / 86_400
        var rem = total % 86_400
        if rem < 0 {
            rem += 86_400
            days -= 1
        }
        let (y, m, d) = civilFromDays(days)
        func p2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(y)-\(p2(m))-\(p2(d)) \(p2(rem / 3600)):\(p2((rem % 3600) / 60)):\(p2(rem % 60))"
    }

    /// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ z0: Int) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
