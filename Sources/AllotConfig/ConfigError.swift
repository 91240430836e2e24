import AllotCore

/// A problem in a configuration file: where it is, which key, and what was expected.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file, when the config came from one.
    public var file: String?
    /// The line, when known.
    public var line: Int?
    /// The key's path, e.g. `node[2].gpus`; empty for the file as a whole.
    public var key: String
    /// What was wrong and what was expected.
    public var message: String

    public init(file: String? = nil, line: Int? = nil, key: String, message: String) {
        self.file = file
        self.line = line
        self.key = key
        self.message = message
    }

    /// `allotd.toml:34: node[2].gpus: expected an integer from 1 to 64, got "eight"`.
    public var description: String {
        var where_ = file ?? "config"
        if let line { where_ += ":\(line)" }
        return key.isEmpty ? "\(where_): \(message)" : "\(where_): \(key): \(message)"
    }
}

/// Where each key of a TOML document stands, found by reading its lines. TOMLKit does not report the
/// positions of values, so this follows table headers (`[scheduler]`, `[[node]]`) and `key =` lines; it
/// is used only to point at lines in error messages.
struct LineIndex {
    private var lines: [String: Int] = [:]

    init(_ text: String) {
        var table = ""
        var arrayCounts: [String: Int] = [:]
        var inMultiline = false
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNo = n + 1
            let line = raw.trimmingWhitespace()
            let quotes = line.components(of: "\"\"\"") + line.components(of: "'''")
            if inMultiline {
                if quotes % 2 == 1 { inMultiline = false }
                continue
            }
            if quotes % 2 == 1 { inMultiline = true }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[[") {
                let name = Self.header(line, open: 2)
                let i = arrayCounts[name, default: 0]
                arrayCounts[name] = i + 1
                table = "\(name)[\(i)]"
                lines[table] = lineNo
                lines[name] = lines[name] ?? lineNo
            } else if line.hasPrefix("[") {
                table = Self.header(line, open: 1)
                lines[table] = lineNo
            } else if let eq = line.firstIndex(of: "=") {
                var key = String(line[..<eq]).trimmingWhitespace()
                if key.hasPrefix("\"") && key.hasSuffix("\"") && key.count >= 2 {
                    key = String(key.dropFirst().dropLast())
                }
                let path = table.isEmpty ? key : "\(table).\(key)"
                lines[path] = lines[path] ?? lineNo
            }
        }
    }

    private static func header(_ line: String, open: Int) -> String {
        var s = Substring(line).dropFirst(open)
        if let close = s.firstIndex(of: "]") { s = s[..<close] }
        return s.trimmingWhitespace()
    }

    /// The line of a key path, or of the closest enclosing table.
    func line(of path: String) -> Int? {
        var p = Substring(path)
        while !p.isEmpty {
            if let l = lines[String(p)] { return l }
            guard let dot = p.lastIndex(of: ".") else { break }
            p = p[..<dot]
        }
        return nil
    }
}

extension String {
    func components(of needle: String) -> Int {
        var count = 0
        var rest = Substring(self)
        while let r = rest.range(of: needle) {
            count += 1
            rest = rest[r.upperBound...]
        }
        return count
    }
}

extension Substring {
    func range(of needle: String) -> Range<Substring.Index>? {
        guard !needle.isEmpty, count >= needle.count else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}
