// The few words of a job request both allotctl's lean front and the core read: kinds, topologies, durations
// and paths. A module of its own so that the front links this and not the whole core (a process per job:
// every megabyte it maps costs page faults at start). AllotCore re-exports it.

/// A span of time in seconds.
public typealias Seconds = Double

/// Training runs are long, big and can be checkpointed; inference services are latency-critical.
public enum JobKind: String, Codable, Sendable, CaseIterable {
    case training
    case inference
}

/// Where a job's GPUs may be.
public enum Topology: String, Codable, Sendable, CaseIterable {
    /// Anywhere, across nodes if needed (as few nodes as possible).
    case any
    /// All on one node.
    case singleNode = "single-node"
    /// All within one NVLink island of one node.
    case nvlink
}

/// Sizes with a unit, as the config file and `allotctl submit --memory` write them.
public enum ByteSize {
    /// The bytes of a size with a unit: `64MiB`, `1 GiB`, `512k`, `2GB`, `1.5TiB` (K, M, G and T alone, and
    /// KiB…TiB, are binary; kB…TB decimal; B is bytes). Nil when there is no unit or the size is not above 0;
    /// what a bare number means is the caller's.
    public static func parse(withUnit text: String) -> Int? {
        let t = text.trimmingWhitespace().lowercased().filter { $0 != " " }
        let units: [(String, Double)] = [
            ("tib", 0x1p40), ("gib", 0x1p30), ("mib", 0x1p20), ("kib", 0x1p10), ("tb", 1e12), ("gb", 1e9),
            ("mb", 1e6), ("kb", 1e3), ("t", 0x1p40), ("g", 0x1p30), ("m", 0x1p20), ("k", 0x1p10), ("b", 1),
        ]
        for (unit, scale) in units where t.hasSuffix(unit) {
            guard let n = Double(t.dropLast(unit.count)), n > 0, n * scale < 0x1p62 else { return nil }
            return Int(n * scale)
        }
        return nil
    }
}

/// Parsing and printing of human durations such as `90s`, `15m`, `2h`, `1d`, `1h30m`.
public enum DurationText {
    /// Parses a duration: a plain number of seconds, one or more `<number><unit>` parts with units
    /// `ms`, `s`, `m`, `h`, `d`, `w` (`1h30m`), or one of Slurm's forms (`1:30:00`, `2-00:00:00`, `45:00`).
    /// Returns nil when the text is not a duration.
    public static func parse(_ text: String) -> Seconds? {
        let s = text.trimmingWhitespace()
        if s.isEmpty { return nil }
        if let plain = Double(s), plain.isFinite, plain >= 0 { return plain }
        if s.contains(":") || s.contains("-") { return slurm(s) }
        var total: Double = 0
        var number = ""
        var unit = ""
        var parts = 0
        func flush() -> Bool {
            guard let n = Double(number), n >= 0 else { return false }
            let scale: Double
            switch unit {
            case "ms": scale = 0.001
            case "s", "sec", "secs": scale = 1
            case "m", "min", "mins": scale = 60
            case "h", "hr", "hrs": scale = 3600
            case "d", "day", "days": scale = 86_400
            case "w", "week", "weeks": scale = 604_800
            default: return false
            }
            total += n * scale
            parts += 1
            number = ""
            unit = ""
            return true
        }
        for ch in s {
            if ch.isNumber || ch == "." {
                if !unit.isEmpty { guard flush() else { return nil } }
                number.append(ch)
            } else if ch.isLetter {
                guard !number.isEmpty else { return nil }
                unit.append(ch)
            } else {
                return nil
            }
        }
        guard !number.isEmpty, !unit.isEmpty, flush(), parts > 0 else { return nil }
        return total
    }

    /// Slurm's time forms: `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S` (whole numbers).
    static func slurm(_ s: String) -> Seconds? {
        func number(_ t: Substring) -> Double? {
            guard !t.isEmpty, t.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            return Double(t)
        }
        var days = 0.0
        var clock = Substring(s)
        if let dash = s.firstIndex(of: "-") {
            guard let d = number(s[..<dash]) else { return nil }
            days = d
            clock = s[s.index(after: dash)...]
        }
        let f = clock.split(separator: ":", omittingEmptySubsequences: false).map(number)
        guard !f.contains(where: { $0 == nil }) else { return nil }
        let v = f.map { $0! }
        let hasDays = s.contains("-")
        switch (hasDays, v.count) {
        case (true, 1): return days * 86_400 + v[0] * 3600
        case (true, 2): return days * 86_400 + v[0] * 3600 + v[1] * 60
        case (true, 3), (false, 3): return days * 86_400 + v[0] * 3600 + v[1] * 60 + v[2]
        case (false, 2): return v[0] * 60 + v[1]
        default: return nil
        }
    }

    /// Formats seconds compactly: `45s`, `12m`, `3h05m`, `2d04h`.
    public static func format(_ seconds: Seconds) -> String {
        if !seconds.isFinite { return "∞" }
        let s = Int(seconds.rounded())
        if s < 0 { return "-" + format(-seconds) }
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m" + (s % 60 == 0 ? "" : pad(s % 60) + "s") }
        if s < 86_400 { return "\(s / 3600)h" + pad((s % 3600) / 60) + "m" }
        return "\(s / 86_400)d" + pad((s % 86_400) / 3600) + "h"
    }

    private static func pad(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
}

/// Paths as a command line gives them.
public enum PathText {
    /// `path` made absolute against directory `dir`.
    public static func absolute(_ path: String, in dir: String) -> String {
        path.hasPrefix("/") ? path : (dir.hasSuffix("/") ? dir : dir + "/") + path
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces, tabs and newlines.
    public func trimmingWhitespace() -> String {
        var sub = Substring(self)
        while let f = sub.first, f.isWhitespace { sub = sub.dropFirst() }
        while let l = sub.last, l.isWhitespace { sub = sub.dropLast() }
        return String(sub)
    }
}

/// How long allotctl waits for allotd's answer to a request with nothing coming (not for what it follows:
/// `logs -f`, `watch`, `wait`): a daemon that accepted the connection and never answers (a socket-activated allotd failing to
/// start, a stopped process) must not hang a script forever. `ALLOT_TIMEOUT`: seconds, 0 for no limit.
public enum AnswerTimeout {
    public static let defaultSeconds: Double = 60

    /// The limit `ALLOT_TIMEOUT`'s text sets: the default for nil or empty text, nil for no limit (0); for
    /// text that is not a number of seconds, the default and a `problem` saying so.
    public static func seconds(_ text: String?) -> (seconds: Double?, problem: String?) {
        guard let text, !text.isEmpty else { return (defaultSeconds, nil) }
        guard let s = Double(text), s.isFinite, s >= 0 else {
            return (
                defaultSeconds,
                "ALLOT_TIMEOUT=\(text) is not a number of seconds (0: no limit); waiting \(Int(defaultSeconds)) s"
            )
        }
        return (s == 0 ? nil : s, nil)
    }

    /// What the user is told when the answer does not come.
    public static func message(socket: String, seconds: Double) -> String {
        "allotd at \(socket) accepted the request but did not answer within \(Int(seconds.rounded(.up))) s: it may be failing to start (under systemd: `systemctl status allotd`, `journalctl -u allotd`) or stopped. A change asked for may or may not have been made (a submit: check with `allotctl ls` before submitting again). ALLOT_TIMEOUT=SECONDS waits longer (0: no limit)."
    }
}
