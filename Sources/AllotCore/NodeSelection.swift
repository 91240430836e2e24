/// Which nodes a job may run on, as Slurm's `--nodelist`, `--exclude` and `--constraint` say it: only the
/// named nodes (when any are named), never the excluded ones, and only nodes whose labels satisfy the
/// constraint. Kept in the job's spec in its text forms (what the user wrote, hostlists expanded), so that a
/// node added or relabelled later is judged by the same words.
public struct NodeSelection: Hashable, Sendable, Codable {
    /// Node names the job may use; empty: any node.
    public var nodes: [String]
    /// Node names the job must not use.
    public var exclude: [String]
    /// A constraint on node labels (``LabelConstraint``'s text form); empty for none.
    public var constraint: String

    public init(nodes: [String] = [], exclude: [String] = [], constraint: String = "") {
        self.nodes = nodes
        self.exclude = exclude
        self.constraint = constraint
    }

    /// Whether it selects nothing at all (every node).
    public var isEmpty: Bool { nodes.isEmpty && exclude.isEmpty && constraint.isEmpty }

    /// Most node names one selection may list.
    public static let maxNodes = 10_000

    /// Whether each of `pool`'s nodes is one the job may use, by position (the lists hashed and the
    /// constraint read once, not once per node).
    func admits(_ pool: [Node]) -> [Bool] {
        let listed = nodes.isEmpty ? nil : Set(nodes)
        let excluded = Set(exclude)
        var labels: LabelConstraint?
        if !constraint.isEmpty, case .success(let c) = LabelConstraint.parse(constraint) { labels = c }
        return pool.map { n in
            (listed?.contains(n.spec.name) ?? true) && !excluded.contains(n.spec.name)
                && (labels?.admits(n.spec.labels) ?? true)
        }
    }

    /// The selection built from the options' texts: `--nodelist gpu[01-04],big1`, `--exclude …`,
    /// `--constraint 'ib&zone=a|nvme'`.
    /// - Returns: nil for an empty selection, or a sentence naming what is wrong.
    public static func parse(
        nodelist: String?,
        exclude: String?,
        constraint: String?
    ) -> Result<
        NodeSelection?, RequestTextError
    > {
        var s = NodeSelection()
        if let nodelist {
            switch Hostlist.expand(nodelist) {
            case .success(let n): s.nodes = n
            case .failure(let e): return .failure(RequestTextError(message: "--nodelist: \(e.message)"))
            }
        }
        if let exclude {
            switch Hostlist.expand(exclude) {
            case .success(let n): s.exclude = n
            case .failure(let e): return .failure(RequestTextError(message: "--exclude: \(e.message)"))
            }
        }
        if let constraint {
            switch LabelConstraint.parse(constraint) {
            case .success(let c): s.constraint = c.description
            case .failure(let e): return .failure(RequestTextError(message: "--constraint: \(e.message)"))
            }
        }
        if s.nodes.count + s.exclude.count > maxNodes {
            return .failure(RequestTextError(message: "at most \(maxNodes) nodes may be listed"))
        }
        if let both = s.nodes.first(where: { s.exclude.contains($0) }) {
            return .failure(RequestTextError(message: "node \(both) is both in --nodelist and in --exclude"))
        }
        return .success(s.isEmpty ? nil : s)
    }

    /// `nodes gpu01,gpu02; not gpu03; labels ib&zone=a`: for `show` and `why`.
    public var description: String {
        var parts: [String] = []
        if !nodes.isEmpty { parts.append("nodes " + Hostlist.compress(nodes)) }
        if !exclude.isEmpty { parts.append("not " + Hostlist.compress(exclude)) }
        if !constraint.isEmpty { parts.append("labels " + constraint) }
        return parts.joined(separator: "; ")
    }
}

/// A condition on node labels, Slurm's `--constraint` on allot's `labels`: terms joined by `&` (and) and
/// `|` (or; `&` binds tighter). A term is `NAME` (the node has that label, with any value but "false"),
/// `NAME=VALUE`, `NAME!=VALUE` or `!NAME`.
public struct LabelConstraint: Hashable, Sendable, CustomStringConvertible {
    public enum Term: Hashable, Sendable {
        case has(String)
        case lacks(String)
        case equals(String, String)
        case differs(String, String)
    }

    /// Alternatives, each a conjunction of terms.
    public var anyOf: [[Term]]

    public func admits(_ labels: [String: String]) -> Bool {
        anyOf.contains { all in
            all.allSatisfy { term in
                switch term {
                case .has(let k): labels[k].map { $0.lowercased() != "false" } ?? false
                case .lacks(let k): labels[k].map { $0.lowercased() == "false" } ?? true
                case .equals(let k, let v): labels[k] == v
                case .differs(let k, let v): labels[k] != v
                }
            }
        }
    }

    public var description: String {
        anyOf.map { all in
            all.map { term in
                switch term {
                case .has(let k): k
                case .lacks(let k): "!" + k
                case .equals(let k, let v): k + "=" + v
                case .differs(let k, let v): k + "!=" + v
                }
            }.joined(separator: "&")
        }.joined(separator: "|")
    }

    public static func parse(_ text: String) -> Result<LabelConstraint, RequestTextError> {
        func bad(_ s: String) -> Result<LabelConstraint, RequestTextError> { .failure(RequestTextError(message: s)) }
        func name(_ s: String) -> Bool {
            !s.isEmpty && s.allSatisfy { $0.isLetter || $0.isNumber || "-_./:".contains($0) }
        }
        var anyOf: [[Term]] = []
        for alternative in text.split(separator: "|", omittingEmptySubsequences: false) {
            var all: [Term] = []
            for raw in alternative.split(separator: "&", omittingEmptySubsequences: false) {
                let t = blanksTrimmed(raw)
                if t.isEmpty {
                    return bad("\"\(text)\": an empty term; write labels joined by & (and) or | (or), e.g. ib&zone=a")
                }
                let bang = t.indices.first {
                    t[$0] == "!" && t.index(after: $0) < t.endIndex && t[t.index(after: $0)] == "="
                }
                if let b = bang {
                    let (k, v) = (blanksTrimmed(t[..<b]), blanksTrimmed(t[t.index(b, offsetBy: 2)...]))
                    guard name(k), name(v) else { return bad("\"\(t)\": expected LABEL!=VALUE") }
                    all.append(.differs(String(k), String(v)))
                } else if let eq = t.firstIndex(of: "=") {
                    let (k, v) = (blanksTrimmed(t[..<eq]), blanksTrimmed(t[t.index(after: eq)...]))
                    guard name(k), name(v) else { return bad("\"\(t)\": expected LABEL=VALUE") }
                    all.append(.equals(String(k), String(v)))
                } else if t.hasPrefix("!") {
                    let k = blanksTrimmed(t.dropFirst()[...])
                    guard name(k) else { return bad("\"\(t)\": expected !LABEL") }
                    all.append(.lacks(String(k)))
                } else {
                    guard name(t) else {
                        return bad(
                            "\"\(t)\": not a label; a term is LABEL, LABEL=VALUE, LABEL!=VALUE or !LABEL (parentheses are not supported)"
                        )
                    }
                    all.append(.has(String(t)))
                }
            }
            anyOf.append(all)
        }
        return .success(LabelConstraint(anyOf: anyOf))
    }
}

/// Slurm's hostlist expressions: `gpu[01-04,07],big1` is gpu01, gpu02, gpu03, gpu04, gpu07 and big1.
public enum Hostlist {
    /// Most names one expression may stand for.
    public static let maxNames = NodeSelection.maxNodes

    public static func expand(_ text: String) -> Result<[String], RequestTextError> {
        func bad(_ s: String) -> Result<[String], RequestTextError> { .failure(RequestTextError(message: s)) }
        var out: [String] = []
        var seen = Set<String>()
        // Split on commas outside brackets.
        var items: [Substring] = []
        var depth = 0
        var start = text.startIndex
        for i in text.indices {
            switch text[i] {
            case "[": depth += 1
            case "]": depth -= 1
            case "," where depth == 0:
                items.append(text[start..<i])
                start = text.index(after: i)
            default: break
            }
            if depth < 0 || depth > 1 { return bad("\"\(text)\": unbalanced or nested brackets") }
        }
        if depth != 0 { return bad("\"\(text)\": a [ without its ]") }
        items.append(text[start...])
        for raw in items {
            let item = blanksTrimmed(raw)
            if item.isEmpty { continue }
            guard let open = item.firstIndex(of: "[") else {
                guard !item.contains("]"), !item.contains(where: \.isWhitespace) else {
                    return bad("\"\(item)\" is not a node name")
                }
                if seen.insert(String(item)).inserted { out.append(String(item)) }
                continue
            }
            guard let close = item.firstIndex(of: "]"), close > open else {
                return bad("\"\(item)\": a ] before its [")
            }
            let prefix = item[..<open]
            let suffix = item[item.index(after: close)...]
            if suffix.contains("[") { return bad("\"\(item)\": one bracket group per name") }
            for part in item[item.index(after: open)..<close].split(separator: ",", omittingEmptySubsequences: false) {
                let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
                guard (1...2).contains(bounds.count),
                    bounds.allSatisfy({ (b: Substring) in !b.isEmpty && b.allSatisfy { $0.isASCII && $0.isNumber } }),
                    let lo = Int(bounds[0]), let hi = Int(bounds.last!), lo >= 0, hi >= lo
                else {
                    return bad("\"\(item)\": \"\(part)\" is not a number or a range such as 01-04")
                }
                if hi - lo >= maxNames { return bad("\"\(item)\" stands for more than \(maxNames) nodes") }
                let width = bounds[0].count
                for n in lo...hi {
                    var digits = String(n)
                    if digits.count < width { digits = String(repeating: "0", count: width - digits.count) + digits }
                    let name = String(prefix) + digits + String(suffix)
                    if seen.insert(name).inserted { out.append(name) }
                }
                if out.count > maxNames { return bad("\"\(text)\" stands for more than \(maxNames) nodes") }
            }
        }
        return .success(out)
    }

    /// Names folded into ranges where they share a prefix: gpu01,gpu02,gpu03,big1 → `gpu[01-03],big1`.
    public static func compress(_ names: [String]) -> String {
        var groups: [(prefix: Substring, width: Int, numbers: [Int])] = []
        var plain: [String] = []
        var out: [String] = []
        func flush() {
            for g in groups {
                let ns = g.numbers.sorted()
                var ranges: [String] = []
                var i = 0
                func pad(_ n: Int) -> String {
                    let s = String(n)
                    return s.count < g.width ? String(repeating: "0", count: g.width - s.count) + s : s
                }
                while i < ns.count {
                    var j = i
                    while j + 1 < ns.count && ns[j + 1] == ns[j] + 1 { j += 1 }
                    ranges.append(i == j ? pad(ns[i]) : pad(ns[i]) + "-" + pad(ns[j]))
                    i = j + 1
                }
                out.append(ns.count == 1 ? g.prefix + pad(ns[0]) : g.prefix + "[" + ranges.joined(separator: ",") + "]")
            }
            groups = []
        }
        for name in names {
            let digits = name.reversed().prefix { $0.isASCII && $0.isNumber }.count
            guard digits > 0, digits < 10 else {
                plain.append(name)
                continue
            }
            let prefix = name.dropLast(digits)
            let width = name.count - prefix.count
            let n = Int(name.suffix(digits))!
            if let g = groups.firstIndex(where: { $0.prefix == prefix && $0.width == width }) {
                groups[g].numbers.append(n)
            } else {
                groups.append((prefix, width, [n]))
            }
        }
        flush()
        return (out + plain).joined(separator: ",")
    }
}
