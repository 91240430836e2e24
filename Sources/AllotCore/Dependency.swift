/// One condition a job waits for before its first start, as Slurm's `--dependency` names them:
/// `afterok:12:13` (12 and 13 completed), `afterany:12` (12 ended, however), `afternotok:12` (12 failed,
/// was cancelled or timed out), `after:12` (12 started, or ended without starting) and `singleton` (every
/// earlier job of the same user and name has ended). A job's conditions must all hold; once they have, it
/// is an ordinary pending job (they are not checked again when it is requeued).
public struct Dependency: Hashable, Sendable, Codable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        case after, afterany, afterok, afternotok, singleton
    }

    public var kind: Kind
    /// The jobs it names (none for `singleton`).
    public var jobs: [JobID]

    public init(_ kind: Kind, _ jobs: [JobID] = []) {
        self.kind = kind
        self.jobs = jobs
    }

    /// `afterok:12:13`.
    public var description: String {
        jobs.isEmpty ? kind.rawValue : kind.rawValue + ":" + jobs.map(\.description).joined(separator: ":")
    }

    /// Most conditions and jobs named in one spec.
    public static let maxJobs = 1_000

    /// Reads `afterok:12:13,afterany:14,singleton` (Slurm's form; every condition must hold).
    /// - Returns: the conditions, or a sentence on what is wrong.
    public static func parse(_ text: String) -> Result<[Dependency], RequestTextError> {
        func bad(_ s: String) -> Result<[Dependency], RequestTextError> { .failure(RequestTextError(message: s)) }
        let trimmed = blanksTrimmed(Substring(text))
        if trimmed.isEmpty { return .success([]) }
        if trimmed.contains("?") {
            return bad(
                "\"\(text)\": conditions joined by ? (any one of them) are not supported; join them by , (all of them)"
            )
        }
        var out: [Dependency] = []
        var named = 0
        for part in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            let fields = part.split(separator: ":", omittingEmptySubsequences: false).map(blanksTrimmed)
            guard let kind = Kind(rawValue: fields[0].lowercased()) else {
                let known = Kind.allCases.map(\.rawValue).joined(separator: ", ")
                return bad(
                    "\"\(part)\": expected a condition such as afterok:12 or singleton; the conditions are \(known)"
                )
            }
            if kind == .singleton {
                guard fields.count == 1 else { return bad("\"\(part)\": singleton names no jobs") }
                if !out.contains(Dependency(.singleton)) { out.append(Dependency(.singleton)) }
                continue
            }
            guard fields.count > 1 else {
                return bad(
                    "\"\(part)\": name the jobs it waits for, e.g. \(kind.rawValue):12 or \(kind.rawValue):12:13"
                )
            }
            var ids: [JobID] = []
            for f in fields.dropFirst() {
                if f.contains("+") {
                    return bad("\"\(part)\": a delay after a job (+minutes) is not supported")
                }
                guard let n = UInt64(f), n > 0 else {
                    return bad("\"\(part)\": \"\(f)\" is not a job id (a number from 1)")
                }
                if !ids.contains(JobID(n)) { ids.append(JobID(n)) }
            }
            named += ids.count
            out.append(Dependency(kind, ids))
        }
        if named > maxJobs { return bad("at most \(maxJobs) jobs may be named in a dependency, not \(named)") }
        return .success(out)
    }

    /// The text form of several conditions: `afterok:12,singleton`.
    public static func text(_ deps: [Dependency]) -> String { deps.map(\.description).joined(separator: ",") }

    public init(from decoder: any Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard case .success(let d) = Self.parse(s), d.count == 1 else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "\"\(s)\" is not one dependency")
            )
        }
        self = d[0]
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// What is wrong with the text of a job request's dependency or array indices.
public struct RequestTextError: Error, Hashable, Sendable {
    public var message: String
}

/// Where a job's dependencies stand.
public enum DependencyStatus: Hashable, Sendable {
    /// All hold: the job may start.
    case met
    /// It waits for job `on`, for the reason given (e.g. "afterok:12: job 12 is running").
    case waiting(on: JobID, why: String)
    /// One can never hold (e.g. "afterok:12: job 12 failed (exit code 1)").
    case never(why: String)
}

/// `s` without blanks at either end (AllotCore does without Foundation).
func blanksTrimmed(_ s: Substring) -> String {
    var s = s
    while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
    while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
    return String(s)
}
