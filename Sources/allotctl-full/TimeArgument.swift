import AllotCore
import AllotProtocol
import ArgumentParser
import Foundation

/// Times as people type them on a command line (`--since`, `--until`): `2026-11-01` (UTC midnight),
/// `2026-11-01T09:30` or RFC 3339, `now`, `today`, `yesterday`, or a span ago: `-2h`, `2h`, `90m ago`.
enum TimeArgument {
    static let help =
        "a time: 2026-11-01 (UTC), 2026-11-01T09:30:00Z, today, yesterday, now, or a span ago such as -2h or 3d"

    /// The time in seconds since the epoch, or nil when the text is none of the forms.
    static func seconds(_ text: String, now: Double = Date().timeIntervalSince1970) -> Double? {
        let t = text.trimmingWhitespace().lowercased()
        let midnight = (now / 86_400).rounded(.down) * 86_400
        switch t {
        case "now": return now
        case "today": return midnight
        case "yesterday": return midnight - 86_400
        default: break
        }
        if t.count == 10, t.dropFirst(4).first == "-", let d = WireTime.parse(text + "T00:00:00Z") { return d }
        if t.count == 16, t.dropFirst(10).first == "t" || t.dropFirst(10).first == " ",
            let d = WireTime.parse(text + ":00")
        {
            return d
        }
        if let d = WireTime.parse(text) { return d }
        var span = Substring(t)
        if span.hasSuffix(" ago") { span = span.dropLast(4) }
        if span.hasPrefix("-") { span = span.dropFirst() }
        // A bare number is not a span here: it reads as a year or an id too easily.
        guard Double(span) == nil, let s = DurationText.parse(String(span)) else { return nil }
        return now - s
    }

    /// The time as RFC 3339 for the wire; a validation error naming `option` when it is none of the forms.
    static func wire(_ text: String?, option: String) throws -> String? {
        guard let text else { return nil }
        guard let s = seconds(text) else {
            throw ValidationError("\(option): \"\(text)\" is not \(help)")
        }
        return WireTime.format(s)
    }
}
