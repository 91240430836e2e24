import AllotCore
import TOMLKit

/// Reads one TOML table with typed getters that fail with a ``ConfigError`` naming the key, its line and
/// what was expected, and refuses keys it was not asked about (typos do not pass silently).
struct TableReader {
    let table: TOMLTable
    /// The table's path, e.g. `node[2]`; empty for the root.
    let path: String
    let context: ConfigContext
    private var used: Set<String> = []

    init(_ table: TOMLTable, path: String, context: ConfigContext) {
        self.table = table
        self.path = path
        self.context = context
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func error(_ key: String, _ message: String) -> ConfigError {
        context.error(key.isEmpty ? path : keyPath(key), message)
    }

    private static func describe(_ v: any TOMLValueConvertible) -> String {
        switch v.type {
        case .string: return "\"\(v.string ?? "")\""
        case .table: return "a table"
        case .array: return "an array"
        default: return "\(v)"
        }
    }

    private mutating func value(
        _ key: String,
        required: Bool,
        expected: String
    ) throws(ConfigError) -> (
        any TOMLValueConvertible
    )? {
        used.insert(key)
        guard let v = table[key] else {
            if required {
                // A misspelt key is the likelier story than a forgotten one: say so.
                if let near = closest(key, in: table.keys.filter { $0 != key }), table[key] == nil {
                    throw error(near, "unknown key; did you mean \"\(key)\"? (\(key) is required: \(expected))")
                }
                throw error(key, "missing; expected \(expected)")
            }
            return nil
        }
        return v
    }

    mutating func string(_ key: String, required: Bool = false, nonEmpty: Bool = true) throws(ConfigError) -> String? {
        guard let v = try value(key, required: required, expected: "a string") else { return nil }
        guard let s = v.string else { throw error(key, "expected a string, got \(Self.describe(v))") }
        if nonEmpty && s.isEmpty { throw error(key, "must not be empty") }
        return s
    }

    mutating func int(
        _ key: String,
        required: Bool = false,
        in range: ClosedRange<Int>? = nil
    ) throws(ConfigError)
        -> Int?
    {
        let expected = range.map { "an integer from \($0.lowerBound) to \($0.upperBound)" } ?? "an integer"
        guard let v = try value(key, required: required, expected: expected) else { return nil }
        guard let i = v.int else { throw error(key, "expected \(expected), got \(Self.describe(v))") }
        if let range, !range.contains(i) { throw error(key, "expected \(expected), got \(i)") }
        return i
    }

    mutating func double(
        _ key: String,
        required: Bool = false,
        min: Double? = nil,
        exclusiveMin: Bool = false
    )
        throws(ConfigError) -> Double?
    {
        let bound = min.map { exclusiveMin ? " greater than \(fmt($0))" : " of at least \(fmt($0))" } ?? ""
        let expected = "a number\(bound)"
        guard let v = try value(key, required: required, expected: expected) else { return nil }
        guard let d = v.double ?? v.int.map(Double.init), d.isFinite else {
            throw error(key, "expected \(expected), got \(Self.describe(v))")
        }
        if let min, exclusiveMin ? !(d > min) : !(d >= min) { throw error(key, "expected \(expected), got \(fmt(d))") }
        return d
    }

    mutating func bool(_ key: String, required: Bool = false) throws(ConfigError) -> Bool? {
        guard let v = try value(key, required: required, expected: "true or false") else { return nil }
        guard let b = v.bool else { throw error(key, "expected true or false, got \(Self.describe(v))") }
        return b
    }

    /// A duration: a number of seconds, or a string such as `"90s"`, `"15m"`, `"7d"`.
    mutating func duration(
        _ key: String,
        required: Bool = false,
        allowZero: Bool = false,
        allowNever: Bool = false
    ) throws(ConfigError)
        -> Seconds?
    {
        let expected =
            "a duration such as \"30s\", \"15m\", \"2h\", \"7d\"\(allowNever ? ", \"never\"" : "") or a number of seconds"
        guard let v = try value(key, required: required, expected: expected) else { return nil }
        if allowNever, v.string == "never" { return .infinity }
        let d: Double?
        if let s = v.string { d = DurationText.parse(s) } else { d = v.double ?? v.int.map(Double.init) }
        guard let d, d.isFinite, allowZero ? d >= 0 : d > 0 else {
            throw error(key, "expected \(expected)\(allowZero ? "" : " (more than zero)"), got \(Self.describe(v))")
        }
        return d
    }

    mutating func oneOf<T: RawRepresentable & CaseIterable>(
        _ key: String,
        _: T.Type,
        required: Bool = false
    )
        throws(ConfigError) -> T? where T.RawValue == String
    {
        let names = T.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
        guard let s = try string(key, required: required) else { return nil }
        guard let t = T(rawValue: s) else { throw error(key, "expected one of \(names), got \"\(s)\"") }
        return t
    }

    mutating func stringArray(_ key: String) throws(ConfigError) -> [String]? {
        guard let v = try value(key, required: false, expected: "an array of strings") else { return nil }
        guard let a = v.array else { throw error(key, "expected an array of strings, got \(Self.describe(v))") }
        var out: [String] = []
        for (i, e) in a.enumerated() {
            guard let s = e.string else { throw error(key, "element \(i) must be a string, got \(Self.describe(e))") }
            out.append(s)
        }
        return out
    }

    mutating func intArray(_ key: String) throws(ConfigError) -> [Int]? {
        guard let v = try value(key, required: false, expected: "an array of integers") else { return nil }
        guard let a = v.array else { throw error(key, "expected an array of integers, got \(Self.describe(v))") }
        var out: [Int] = []
        for (i, e) in a.enumerated() {
            guard let x = e.int else { throw error(key, "element \(i) must be an integer, got \(Self.describe(e))") }
            out.append(x)
        }
        return out
    }

    /// An array of positive numbers in strictly ascending order (thresholds), possibly empty.
    mutating func ascendingNumbers(_ key: String) throws(ConfigError) -> [Double]? {
        let expected = "an array of positive numbers in ascending order, e.g. [4, 64]"
        guard let v = try value(key, required: false, expected: expected) else { return nil }
        guard let a = v.array else { throw error(key, "expected \(expected), got \(Self.describe(v))") }
        var out: [Double] = []
        for (i, e) in a.enumerated() {
            guard let d = e.double ?? e.int.map(Double.init), d.isFinite, d > 0 else {
                throw error(key, "element \(i) must be a positive number, got \(Self.describe(e))")
            }
            if let last = out.last, d <= last {
                throw error(key, "expected \(expected); \(fmt(d)) does not come after \(fmt(last))")
            }
            out.append(d)
        }
        return out
    }

    mutating func intArrays(_ key: String) throws(ConfigError) -> [[Int]]? {
        let expected = "an array of arrays of GPU indices, e.g. [[0, 1, 2, 3], [4, 5, 6, 7]]"
        guard let v = try value(key, required: false, expected: expected) else { return nil }
        guard let a = v.array else { throw error(key, "expected \(expected), got \(Self.describe(v))") }
        var out: [[Int]] = []
        for e in a {
            guard let inner = e.array else { throw error(key, "expected \(expected)") }
            var group: [Int] = []
            for x in inner {
                guard let i = x.int else {
                    throw error(key, "expected \(expected); \(Self.describe(x)) is not an index")
                }
                group.append(i)
            }
            out.append(group)
        }
        return out
    }

    mutating func stringMap(_ key: String) throws(ConfigError) -> [String: String]? {
        guard let v = try value(key, required: false, expected: "a table of strings") else { return nil }
        guard let t = v.table else { throw error(key, "expected a table of strings, got \(Self.describe(v))") }
        var out: [String: String] = [:]
        for (k, e) in t {
            guard let s = e.string else { throw error(key, "\(k) must be a string, got \(Self.describe(e))") }
            out[k] = s
        }
        return out
    }

    mutating func subtable(_ key: String) throws(ConfigError) -> TableReader? {
        guard let v = try value(key, required: false, expected: "a table") else { return nil }
        guard let t = v.table else { throw error(key, "expected a table, got \(Self.describe(v))") }
        return TableReader(t, path: keyPath(key), context: context)
    }

    /// The tables of an array of tables (`[[node]]`).
    mutating func tableArray(_ key: String) throws(ConfigError) -> [TableReader] {
        guard let v = try value(key, required: false, expected: "an array of tables") else { return [] }
        guard let a = v.array else { throw error(key, "expected [[\(key)]] tables, got \(Self.describe(v))") }
        var out: [TableReader] = []
        for (i, e) in a.enumerated() {
            guard let t = e.table else { throw error(key, "element \(i) must be a table, got \(Self.describe(e))") }
            out.append(TableReader(t, path: "\(keyPath(key))[\(i)]", context: context))
        }
        return out
    }

    /// Refuses, before anything is read, keys that are not among `known` (a top-level table's misspelt name
    /// is reported as such, not as what its absence breaks later).
    func refuseUnknown(_ known: [String]) throws(ConfigError) {
        for key in table.keys.sorted() where !known.contains(key) {
            let hint = closest(key, in: known).map { "; did you mean \"\($0)\"?" } ?? ""
            throw error(key, "unknown key\(hint) (known here: \(known.sorted().joined(separator: ", ")))")
        }
    }

    /// Refuses keys nobody asked about.
    func finish() throws(ConfigError) {
        for key in table.keys.sorted() where !used.contains(key) {
            let hint = closest(key, in: Array(used)).map { "; did you mean \"\($0)\"?" } ?? ""
            let known = used.sorted().joined(separator: ", ")
            throw error(key, "unknown key\(hint) (known here: \(known))")
        }
    }

    private func fmt(_ d: Double) -> String { d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d) }
}

/// What error messages need: the file name and its line index.
struct ConfigContext {
    /// Parses TOML text: its root table, and the context its errors name.
    static func parse(_ text: String, file: String?) throws(ConfigError) -> (TOMLTable, ConfigContext) {
        do {
            return (try TOMLTable(string: text), ConfigContext(file: file, lines: LineIndex(text)))
        } catch let e as TOMLParseError {
            throw ConfigError(
                file: file,
                line: e.source.begin.line,
                key: "",
                message: "not valid TOML: \(e.description)"
            )
        } catch {
            throw ConfigError(file: file, key: "", message: "not valid TOML: \(error)")
        }
    }

    let file: String?
    let lines: LineIndex

    func error(_ path: String, _ message: String) -> ConfigError {
        ConfigError(file: file, line: lines.line(of: path), key: path, message: message)
    }
}
