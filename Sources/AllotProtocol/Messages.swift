import AllotCore
import Foundation

public struct HelloParams: Codable, Sendable {
    public var version: Int
    public var client: String?
    public init(version: Int = ControlProtocol.version, client: String? = nil) {
        self.version = version
        self.client = client
    }
}

public struct HelloResult: Codable, Sendable {
    public var version: Int
    public var server: String
    public var uid: UInt32
    public var admin: Bool
    public init(version: Int, server: String, uid: UInt32, admin: Bool) {
        self.version = version
        self.server = server
        self.uid = uid
        self.admin = admin
    }
}

/// A value that may be given as seconds or as text such as `"2h"`.
public struct WireDuration: Codable, Hashable, Sendable {
    public var seconds: Double
    public init(_ seconds: Double) { self.seconds = seconds }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let d = try? c.decode(Double.self) {
            seconds = d
        } else {
            let s = try c.decode(String.self)
            guard let d = DurationText.parse(s) else {
                throw DecodingError.dataCorruptedError(
                    in: c,
                    debugDescription: "\"\(s)\" is not a duration (e.g. 90s, 15m, 2h, 1d)"
                )
            }
            seconds = d
        }
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(seconds)
    }
}

/// A list of GPU models given as `"A,B"` or `["A", "B"]`.
public struct WireModels: Codable, Hashable, Sendable {
    public var names: [String]
    public init(_ names: [String]) { self.names = names }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let a = try? c.decode([String].self) {
            names = a
        } else {
            names = try c.decode(String.self).split(separator: ",").map { $0.trimmingWhitespace() }.filter {
                !$0.isEmpty
            }
        }
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(names)
    }
}

/// A training job's own speeds per GPU model on the wire: `"A100=4.4,T4=1"` or `{"A100": 4.4, "T4": 1}`.
public struct WireSpeeds: Codable, Hashable, Sendable {
    /// As given, in the string form.
    public var text: String
    public init(_ text: String) { self.text = text }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let table = try? c.decode([String: Double].self) {
            text = table.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        } else {
            text = try c.decode(String.self)
        }
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(text)
    }
}

/// A memory size on the wire: a string with a unit (`"64GiB"`) or a number of MiB.
public struct WireMemory: Codable, Hashable, Sendable {
    /// As given.
    public var text: String
    public init(_ text: String) { self.text = text }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Double.self) {
            text = n == n.rounded() && abs(n) < 1e15 ? String(Int(n)) : String(n)
        } else {
            text = try c.decode(String.self)
        }
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(text)
    }
    /// The size in MiB, or nil when it is not a size above zero.
    public var mebibytes: Int? { Fraction.mebibytes(parsing: text) }
}

/// What a user asks for: the job request of `submit` and of each line of `allotctl submit --file`.
public struct JobRequest: Codable, Hashable, Sendable {
    public var command: [String]?
    public var name: String?
    /// Whole GPUs (2), or a share of one GPU below 1 (0.25), in thousandths at most. For an elastic job: the
    /// fewest it runs with.
    public var gpus: Double?
    /// An elastic training job: the most GPUs it may grow to (above `gpus`).
    public var maxGPUs: Int?
    /// An elastic job's sizes go from `gpus` up by this many (default 1).
    public var gpuStep: Int?
    public var gpuModel: WireModels?
    public var minGPUMemory: Double?
    /// For a share of one GPU: the GPU memory it takes (`"10GiB"`, or MiB).
    public var gpuMemory: WireMemory?
    /// Acceptable MIG profiles, cheapest first (`"1g.10gb"`, `"1g.10gb,2g.20gb"` or an array).
    public var mig: WireModels?
    /// CPUs for the whole job (2.5); nil: a share of each node in proportion to its GPUs.
    public var cpus: Double?
    /// Memory for the whole job: a size (`"64GiB"`, `"512M"`) or a number of MiB.
    public var memory: WireMemory?
    public var kind: String?
    public var priorityClass: String?
    public var tenant: String?
    public var walltime: WireDuration?
    public var estimate: WireDuration?
    public var grace: WireDuration?
    public var preemptible: Bool?
    public var maxCost: Double?
    /// A training job's own speeds on GPU models, on the scale of the models' `speed`.
    public var speed: WireSpeeds?
    public var prefer: String?
    public var topology: String?
    public var workdir: String?
    public var output: String?
    public var env: [String: String]?
    public var hold: Bool?
    /// What must hold before it starts, in Slurm's form: `afterok:12:13,singleton`.
    public var dependency: String?
    /// A job array: one task per index, `0-999`, `0-999:2`, `1,3,5-7`, with `%10` for at most 10 at once.
    public var array: String?
    /// Slurm's partition (`-p`): taken as the priority class of that name, else the tenant of that name
    /// (when the request names neither); otherwise ignored with a warning.
    public var partition: String?
    /// Nodes the job may use: names or Slurm hostlists (`gpu[01-04],big1`).
    public var nodelist: String?
    /// Nodes the job must not use (names or hostlists).
    public var exclude: String?
    /// A condition on node labels: `ib&zone=a|nvme`.
    public var constraint: String?
    /// Points off the job's priority score (negative: admins only).
    public var nice: Int?
    /// An http:// URL told of the job's moments (a JSON POST each).
    public var notify: String?
    /// A mail address told of the job's moments through the local sendmail.
    public var mailUser: String?
    /// Which moments: `begin,end,fail,preempt,requeue`, `all` or `none` (default begin,end,fail,preempt).
    public var mailType: String?
    /// A run attached to the submitting terminal (`allotctl run`): `{"pty": true, "rows": 50, "cols": 120}`.
    public var interactive: Interactive?

    public init() {}

    /// The keys a request may have, as spelled on the wire and in `submit --file` lines.
    public static let keys: [String] = CodingKeys.allCases.map(\.rawValue)

    /// A key no request has (`"gpu": 2`): refused, since a job run without what was asked is worse than
    /// one refused.
    public struct UnknownKey: Error, CustomStringConvertible {
        public let key: String
        public var description: String {
            let hint = closest(key, in: JobRequest.keys).map { " (did you mean \"\($0)\"?)" } ?? ""
            return "unknown key \"\(key)\"\(hint); known keys: \(JobRequest.keys.sorted().joined(separator: ", "))"
        }
    }

    private struct AnyKey: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    /// Decodes a request, refusing unknown keys (``UnknownKey``).
    public init(from decoder: any Decoder) throws {
        for key in try decoder.container(keyedBy: AnyKey.self).allKeys.sorted(by: { $0.stringValue < $1.stringValue })
        where CodingKeys(rawValue: key.stringValue) == nil {
            throw UnknownKey(key: key.stringValue)
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        command = try c.decodeIfPresent([String].self, forKey: .command)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        gpus = try c.decodeIfPresent(Double.self, forKey: .gpus)
        maxGPUs = try c.decodeIfPresent(Int.self, forKey: .maxGPUs)
        gpuStep = try c.decodeIfPresent(Int.self, forKey: .gpuStep)
        gpuModel = try c.decodeIfPresent(WireModels.self, forKey: .gpuModel)
        minGPUMemory = try c.decodeIfPresent(Double.self, forKey: .minGPUMemory)
        gpuMemory = try c.decodeIfPresent(WireMemory.self, forKey: .gpuMemory)
        mig = try c.decodeIfPresent(WireModels.self, forKey: .mig)
        cpus = try c.decodeIfPresent(Double.self, forKey: .cpus)
        memory = try c.decodeIfPresent(WireMemory.self, forKey: .memory)
        kind = try c.decodeIfPresent(String.self, forKey: .kind)
        priorityClass = try c.decodeIfPresent(String.self, forKey: .priorityClass)
        tenant = try c.decodeIfPresent(String.self, forKey: .tenant)
        walltime = try c.decodeIfPresent(WireDuration.self, forKey: .walltime)
        estimate = try c.decodeIfPresent(WireDuration.self, forKey: .estimate)
        grace = try c.decodeIfPresent(WireDuration.self, forKey: .grace)
        preemptible = try c.decodeIfPresent(Bool.self, forKey: .preemptible)
        maxCost = try c.decodeIfPresent(Double.self, forKey: .maxCost)
        speed = try c.decodeIfPresent(WireSpeeds.self, forKey: .speed)
        prefer = try c.decodeIfPresent(String.self, forKey: .prefer)
        topology = try c.decodeIfPresent(String.self, forKey: .topology)
        workdir = try c.decodeIfPresent(String.self, forKey: .workdir)
        output = try c.decodeIfPresent(String.self, forKey: .output)
        env = try c.decodeIfPresent([String: String].self, forKey: .env)
        hold = try c.decodeIfPresent(Bool.self, forKey: .hold)
        dependency = try c.decodeIfPresent(String.self, forKey: .dependency)
        array = try c.decodeIfPresent(String.self, forKey: .array)
        partition = try c.decodeIfPresent(String.self, forKey: .partition)
        nodelist = try c.decodeIfPresent(String.self, forKey: .nodelist)
        exclude = try c.decodeIfPresent(String.self, forKey: .exclude)
        constraint = try c.decodeIfPresent(String.self, forKey: .constraint)
        nice = try c.decodeIfPresent(Int.self, forKey: .nice)
        notify = try c.decodeIfPresent(String.self, forKey: .notify)
        mailUser = try c.decodeIfPresent(String.self, forKey: .mailUser)
        mailType = try c.decodeIfPresent(String.self, forKey: .mailType)
        interactive = try c.decodeIfPresent(Interactive.self, forKey: .interactive)
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case command, name, gpus, kind, tenant, walltime, estimate, grace, preemptible, prefer, topology, workdir, env,
            hold, output, cpus, memory, mig, dependency, array, partition, nodelist, exclude, constraint, nice, notify,
            interactive, speed
        case mailUser = "mail_user"
        case mailType = "mail_type"
        case gpuModel = "gpu_model"
        case minGPUMemory = "min_gpu_memory"
        case gpuMemory = "gpu_memory"
        case priorityClass = "class"
        case maxCost = "max_cost"
        case maxGPUs = "max_gpus"
        case gpuStep = "gpu_step"
    }

    /// The notifications asked for by `notify`, `mail_user` and `mail_type` (also for `update`).
    static func notify(url: String?, mailUser: String?, mailType: String?) throws(RPCError) -> JobNotify? {
        var events = JobNotify.defaultEvents
        if let mailType {
            switch JobNotify.parseEvents(mailType) {
            case .success(let e): events = e
            case .failure(let e): throw .invalidParams("mail_type: \(e.message)")
            }
        }
        let n = JobNotify(url: url.flatMap { $0.isEmpty ? nil : $0 }, mailUser: mailUser, events: events)
        if let problem = n.problems.first { throw .invalidParams(problem) }
        // mail_type alone chooses what the tenant's default webhook is told ("none": nothing).
        return n.url == nil && n.mailUser == nil && mailType == nil ? nil : n
    }

    /// The job spec this request asks for, submitted by `uid`; `defaultTenant`: the tenant when the request
    /// names none (the user's name when nil).
    /// - Throws: ``RPCError`` (invalid params) naming the field and what was expected.
    public func spec(
        uid: UInt32,
        user: String?,
        defaultTenant: String? = nil
    ) throws(RPCError) -> (
        spec: JobSpec, held: Bool
    ) {
        guard let command, !command.isEmpty, !command[0].isEmpty else {
            throw .invalidParams("command: a job needs a command (a non-empty array of strings)")
        }
        var s = JobSpec(uid: uid, user: user)
        s.command = command
        s.name = name ?? URL(fileURLWithPath: command[0]).lastPathComponent
        if let gpus {
            switch Fraction.gpuAmount(gpus) {
            case .success(let amount):
                s.gpus = amount.gpus
                s.gpuShare = amount.share
            case .failure(let problem): throw .invalidParams("gpus: \(problem.message)")
            }
        }
        s.maxGPUs = maxGPUs
        s.gpuStep = gpuStep
        s.gpuModels = gpuModel?.names ?? []
        if let m = minGPUMemory {
            guard m >= 0 && m.isFinite else { throw .invalidParams("min_gpu_memory: expected GiB ≥ 0, got \(m)") }
            s.minGPUMemoryGiB = m
        }
        if let gpuMemory {
            guard let mib = gpuMemory.mebibytes else {
                throw .invalidParams(
                    "gpu_memory: expected a size above 0 such as \"10GiB\" or \"512MiB\", got \(gpuMemory.text)"
                )
            }
            guard s.gpus == 1 else {
                throw .invalidParams(
                    s.gpus == 0
                        ? "gpu_memory is the GPU memory of a share of one GPU; a job of 0 gpus has no GPU"
                        : "gpu_memory is the GPU memory of a share of one GPU; for \(s.gpus) GPUs with at least some memory each, use min_gpu_memory"
                )
            }
            s.gpuMemoryMiB = mib
        }
        if let mig {
            guard !mig.names.isEmpty else { throw .invalidParams("mig: expected MIG profiles such as \"1g.10gb\"") }
            guard s.gpus == 1 && s.gpuShare == nil && s.gpuMemoryMiB == nil else {
                throw .invalidParams(
                    "mig: a MIG instance is one device; it takes no gpus above 1, share or gpu_memory beside it"
                )
            }
            for p in mig.names where MIGSlot(parsing: p + "@0") == nil || p.count > 32 {
                throw .invalidParams("mig: \"\(p)\" is not a MIG profile name such as \"1g.10gb\"")
            }
            s.mig = mig.names
        }
        if let dependency {
            switch Dependency.parse(dependency) {
            case .success(let d): s.dependencies = d
            case .failure(let e): throw .invalidParams("dependency: \(e.message)")
            }
        }
        if let cpus {
            guard cpus.isFinite, cpus >= 0.001, cpus <= 1e9 else {
                throw .invalidParams("cpus: expected CPUs above 0 (e.g. 4 or 0.5), got \(cpus)")
            }
            s.cpuMilli = Int((cpus * 1000).rounded(.up))
        }
        // A job of CPUs only takes one CPU unless it says otherwise, as in Slurm.
        if s.gpus == 0 && s.cpuMilli == nil { s.cpuMilli = 1000 }
        if let memory {
            guard let mib = memory.mebibytes else {
                throw .invalidParams(
                    "memory: expected a size above 0 such as \"64GiB\" or \"512MiB\", got \(memory.text)"
                )
            }
            s.memoryMiB = mib
        }
        if let kind {
            guard let k = JobKind(rawValue: kind) else {
                throw .invalidParams("kind: expected training or inference, got \"\(kind)\"")
            }
            s.kind = k
        }
        s.priorityClass = priorityClass
        if let tenant {
            guard !tenant.isEmpty else { throw .invalidParams("tenant: must not be empty") }
            s.tenant = tenant
        } else {
            s.tenant = defaultTenant ?? user ?? "default"
        }
        for (field, value) in [("walltime", walltime), ("estimate", estimate)] {
            if let v = value, !(v.seconds > 0) { throw .invalidParams("\(field): expected a duration above zero") }
        }
        s.walltime = walltime?.seconds
        s.estimate = estimate?.seconds
        if let g = grace {
            guard g.seconds >= 0 else { throw .invalidParams("grace: expected a duration of at least zero") }
            s.grace = g.seconds
        }
        s.preemptible = preemptible
        if let c = maxCost {
            guard c >= 0 && c.isFinite else { throw .invalidParams("max_cost: expected USD ≥ 0, got \(c)") }
            s.maxCostUSD = c
        }
        if let speed {
            switch JobSpec.parseSpeeds(speed.text) {
            case .success(let table): s.speeds = table
            case .failure(let problem): throw .invalidParams("speed: \(problem.message)")
            }
        }
        if let p = prefer {
            switch p {
            case "cheapest": s.prefer = .cheapest
            case "fastest": s.prefer = .fastest
            default:
                guard p.hasPrefix("deadline:"), let t = WireTime.parse(String(p.dropFirst("deadline:".count))) else {
                    throw .invalidParams(
                        p.hasPrefix("deadline:")
                            ? "prefer: \"\(p)\": the deadline must be an RFC 3339 time, e.g. deadline:2026-12-03T18:00:00Z"
                            : "prefer: expected cheapest, fastest or deadline:<RFC 3339 time>, got \"\(p)\""
                    )
                }
                s.prefer = .deadline(Instant(seconds: t))
            }
        }
        if let t = topology {
            guard let top = Topology(rawValue: t) else {
                throw .invalidParams("topology: expected any, single-node or nvlink, got \"\(t)\"")
            }
            s.topology = top
        }
        s.workingDirectory = workdir
        if let o = output {
            guard o.hasPrefix("/") else { throw .invalidParams("output: expected an absolute path, got \"\(o)\"") }
            s.output = o
        }
        s.environment = env ?? [:]
        for key in s.environment.keys where key.isEmpty || key.contains("=") {
            throw .invalidParams("env: \"\(key)\" is not a variable name")
        }
        switch NodeSelection.parse(nodelist: nodelist, exclude: exclude, constraint: constraint) {
        case .success(let n): s.nodes = n
        case .failure(let e): throw .invalidParams(e.message)
        }
        s.nice = nice ?? 0
        s.notify = try Self.notify(url: notify, mailUser: mailUser, mailType: mailType)
        if let i = interactive {
            guard (1...65535).contains(i.rows), (1...65535).contains(i.cols) else {
                throw .invalidParams("interactive: rows and cols must be 1 to 65535")
            }
            guard array == nil else {
                throw .invalidParams("interactive: a job array cannot be attached to a terminal")
            }
            s.interactive = i
        }
        return (s, hold ?? false)
    }
}

public struct SubmitParams: Codable, Sendable {
    public var job: JobRequest
    /// The client's id of this submit: a retry with the same id (by the same user) is answered with the
    /// job the first made, never a second one (a request in flight during a failover, docs/ha.md).
    public var requestID: String?
    public init(job: JobRequest, requestID: String? = nil) {
        self.job = job
        self.requestID = requestID
    }
    enum CodingKeys: String, CodingKey {
        case job
        case requestID = "request_id"
    }
}

public struct SubmitResult: Codable, Sendable {
    public var id: UInt64
    /// What the submitter should know although the job was accepted (e.g. no model can meet its walltime).
    public var warnings: [String]?
    public init(id: UInt64, warnings: [String]? = nil) {
        self.id = id
        self.warnings = warnings
    }
}

public struct SubmitManyParams: Codable, Sendable {
    public var jobs: [JobRequest]
    /// As ``SubmitParams/requestID``, for the whole request.
    public var requestID: String?
    public init(jobs: [JobRequest], requestID: String? = nil) {
        self.jobs = jobs
        self.requestID = requestID
    }
    enum CodingKeys: String, CodingKey {
        case jobs
        case requestID = "request_id"
    }
}

public struct SubmitManyResult: Codable, Sendable {
    public var ids: [UInt64]
    /// As ``SubmitResult/warnings``, each starting "job ID: ".
    public var warnings: [String]?
    public init(ids: [UInt64], warnings: [String]? = nil) {
        self.ids = ids
        self.warnings = warnings
    }
}

public struct ListParams: Codable, Sendable {
    public var states: [String]?
    public var user: String?
    public var tenant: String?
    public var kind: String?
    public var limit: Int?
    /// Jobs whose name matches (`*` matches any run of characters).
    public var name: String?
    /// Jobs that ran (their current or last run) on this node.
    public var node: String?
    /// Jobs that were in the pool at some time in [since, until] (RFC 3339): submitted before `until`, and
    /// not ended before `since`.
    public var since: String?
    public var until: String?
    /// Fold the waiting tasks of a job array that wait for the same reason, one after another, into one
    /// object (the first task's, with `array_tasks`): what a table shows, at a fraction of the cost.
    public var fold: Bool?

    public init(
        states: [String]? = nil,
        user: String? = nil,
        tenant: String? = nil,
        kind: String? = nil,
        limit: Int? = nil,
        name: String? = nil,
        node: String? = nil,
        since: String? = nil,
        until: String? = nil
    ) {
        self.states = states
        self.user = user
        self.tenant = tenant
        self.kind = kind
        self.limit = limit
        self.name = name
        self.node = node
        self.since = since
        self.until = until
    }
}

public struct IDParams: Codable, Sendable {
    /// A job, or a task of an array (`"12_7"`).
    public var id: JobRef
    public init(id: JobRef) { self.id = id }
}

/// Params of `update`: the job and what changes (absent: unchanged).
public struct UpdateParams: Codable, Sendable {
    public var id: UInt64
    public var walltime: WireDuration?
    public var estimate: WireDuration?
    public var priorityClass: String?
    public var gpus: Double?
    public var gpuModel: WireModels?
    public var name: String?
    /// New dependencies in Slurm's form; "" for none.
    public var dependency: String?
    /// New node selections (each replaces its part; "" clears it).
    public var nodelist: String?
    public var exclude: String?
    public var constraint: String?
    /// New points off its priority score (negative: admins only).
    public var nice: Int?
    /// New speeds per GPU model (as submit's); "" for none.
    public var speed: WireSpeeds?

    public init(id: UInt64) { self.id = id }

    enum CodingKeys: String, CodingKey {
        case id, walltime, estimate, gpus, name, dependency, nodelist, exclude, constraint, nice, speed
        case priorityClass = "class"
        case gpuModel = "gpu_model"
    }
}

public struct IDsParams: Codable, Sendable {
    public var ids: [JobRef]
    public init(ids: [JobRef]) { self.ids = ids }
}

/// A job as a command names it: `12` (a job; for a job array, every task of it) or `12_7` (task 7 of
/// array 12). On the wire a number or that text.
public enum JobRef: Hashable, Sendable, Codable, CustomStringConvertible {
    case job(UInt64)
    case task(array: UInt64, index: Int)

    /// `12` or `12_7`; nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: "_", omittingEmptySubsequences: false)
        guard let id = UInt64(parts[0]), id > 0 else { return nil }
        switch parts.count {
        case 1: self = .job(id)
        case 2:
            guard let i = Int(parts[1]), i >= 0 else { return nil }
            self = .task(array: id, index: i)
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .job(let id): "\(id)"
        case .task(let a, let i): "\(a)_\(i)"
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(UInt64.self) {
            self = .job(n)
            return
        }
        let s = try c.decode(String.self)
        guard let r = JobRef(s) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "\"\(s)\" is not a job id such as 12 or 12_7")
            )
        }
        self = r
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .job(let id): try c.encode(id)
        case .task: try c.encode(description)
        }
    }
}

public struct ItemResult: Codable, Sendable {
    public var id: UInt64
    public var ok: Bool
    public var error: RPCError?
    public init(id: UInt64, ok: Bool, error: RPCError? = nil) {
        self.id = id
        self.ok = ok
        self.error = error
    }
}

public struct ItemsResult: Codable, Sendable {
    public var results: [ItemResult]
    public init(results: [ItemResult]) { self.results = results }
}

public struct WhyResult: Codable, Sendable {
    public var id: UInt64
    public var state: String
    public var lines: [String]
    public var estimatedStart: String?
    public init(id: UInt64, state: String, lines: [String], estimatedStart: String?) {
        self.id = id
        self.state = state
        self.lines = lines
        self.estimatedStart = estimatedStart
    }
    enum CodingKeys: String, CodingKey {
        case id, state, lines
        case estimatedStart = "estimated_start"
    }
}

public struct LogsParams: Codable, Sendable {
    public var id: JobRef
    public var follow: Bool?
    public var offset: Int?
    public init(id: JobRef, follow: Bool = false, offset: Int = 0) {
        self.id = id
        self.follow = follow
        self.offset = offset
    }
}

public struct LogsResult: Codable, Sendable {
    public var path: String
    public var size: Int
    public init(path: String, size: Int) {
        self.path = path
        self.size = size
    }
}

/// The answer to `attach`: whose terminal the connection now carries.
public struct AttachResult: Codable, Sendable {
    public var node: String
    public var run: Int
    public init(node: String, run: Int) {
        self.node = node
        self.run = run
    }
}

public struct LogsData: Codable, Sendable {
    public var data: String
    public init(data: String) { self.data = data }
}

/// The end of a log stream: the job's state then, and for an ended job how it ended.
public struct LogsEnd: Codable, Sendable {
    public var state: String
    /// Its exit code (128 + signal when killed), when it ran and ended.
    public var exitCode: Int32?
    /// How it ended, in a few words (as in `ls`).
    public var reason: String?
    public init(state: String, exitCode: Int32? = nil, reason: String? = nil) {
        self.state = state
        self.exitCode = exitCode
        self.reason = reason
    }
    enum CodingKeys: String, CodingKey {
        case state, reason
        case exitCode = "exit_code"
    }
}

public struct WatchResult: Codable, Sendable {
    public var watching: Bool
    public init() { watching = true }
}

public struct WatchEvent: Codable, Sendable {
    public var time: String
    public var event: String
    public var job: JobObject
    public init(time: String, event: String, job: JobObject) {
        self.time = time
        self.event = event
        self.job = job
    }
}

public struct NodeParams: Codable, Sendable {
    public var node: String
    public var reason: String?
    public init(node: String, reason: String? = nil) {
        self.node = node
        self.reason = reason
    }
}

public struct CostParams: Codable, Sendable {
    public var by: String?
    public var since: String?
    public var until: String?
    public init(by: String? = nil, since: String? = nil, until: String? = nil) {
        self.by = by
        self.since = since
        self.until = until
    }
}

/// One row of `cost`, in full precision (clients round for display).
public struct CostRow: Codable, Sendable {
    public var key: String
    /// The job's name, when rows are by job.
    public var name: String?
    public var gpuHours: Double
    public var costUSD: Double
    public init(key: String, name: String? = nil, gpuHours: Double, costUSD: Double) {
        self.key = key
        self.name = name
        self.gpuHours = gpuHours
        self.costUSD = costUSD
    }
    enum CodingKeys: String, CodingKey {
        case key, name
        case gpuHours = "gpu_hours"
        case costUSD = "cost_usd"
    }
}

public struct CostResult: Codable, Sendable {
    public var by: String
    public var rows: [CostRow]
    public init(by: String, rows: [CostRow]) {
        self.by = by
        self.rows = rows
    }
}

public struct ReloadResult: Codable, Sendable {
    public var changes: [String]
    public init(changes: [String]) { self.changes = changes }
}

public struct JobFinishedParams: Codable, Sendable {
    public var id: UInt64
    public var exitCode: Int32?
    public var signal: Int32?
    public init(id: UInt64, exitCode: Int32? = nil, signal: Int32? = nil) {
        self.id = id
        self.exitCode = exitCode
        self.signal = signal
    }
    enum CodingKeys: String, CodingKey {
        case id, signal
        case exitCode = "exit_code"
    }
}

public struct GPUCounts: Codable, Sendable {
    public var total: Int
    public var used: Int
    public var free: Int
    public var lent: Int
    public var unhealthy: Int
    public init(total: Int, used: Int, free: Int, lent: Int, unhealthy: Int) {
        self.total = total
        self.used = used
        self.free = free
        self.lent = lent
        self.unhealthy = unhealthy
    }
}

public struct LogStatus: Codable, Sendable {
    public var lastLSN: UInt64
    public var durableLSN: UInt64
    public var failed: String?
    /// With several controllers (`[ha]`): "leader" or "follower" (absent with one controller).
    public var role: String?
    /// Who leads, as a follower knows it.
    public var leader: String?
    public init(lastLSN: UInt64, durableLSN: UInt64, failed: String?, role: String? = nil, leader: String? = nil) {
        self.lastLSN = lastLSN
        self.durableLSN = durableLSN
        self.failed = failed
        self.role = role
        self.leader = leader
    }
    enum CodingKeys: String, CodingKey {
        case failed, role, leader
        case lastLSN = "last_lsn"
        case durableLSN = "durable_lsn"
    }
}

public struct StatusResult: Codable, Sendable {
    public var gpus: [String: GPUCounts]
    public var jobs: [String: Int]
    public var queue: [String: [String: Int]]
    public var spendTodayUSD: Double
    public var log: LogStatus
    public var nodes: [String: Int]
    public init(
        gpus: [String: GPUCounts],
        jobs: [String: Int],
        queue: [String: [String: Int]],
        spendTodayUSD: Double,
        log: LogStatus,
        nodes: [String: Int]
    ) {
        self.gpus = gpus
        self.jobs = jobs
        self.queue = queue
        self.spendTodayUSD = spendTodayUSD
        self.log = log
        self.nodes = nodes
    }
    enum CodingKeys: String, CodingKey {
        case gpus, jobs, queue, log, nodes
        case spendTodayUSD = "spend_today_usd"
    }
}

/// Params of `top`: which jobs to list, in what order, how many.
public struct TopParams: Codable, Sendable {
    public var tenant: String?
    /// A user name or uid.
    public var user: String?
    /// `training` or `inference`.
    public var kind: String?
    /// `priority` (the queue in the scheduler's order, running jobs newest first), `time` (longest waiting;
    /// soonest to end), `gpus` (largest first), `cost` (dearest first).
    public var sort: String?
    /// Rows per list (default 50, at most 1,000).
    public var limit: Int?

    public init(tenant: String? = nil, user: String? = nil, kind: String? = nil, sort: String? = nil, limit: Int? = nil)
    {
        self.tenant = tenant
        self.user = user
        self.kind = kind
        self.sort = sort
        self.limit = limit
    }

    public static let sorts = ["priority", "time", "gpus", "cost"]
}

/// The answer to `top`.
public struct TopResult: Codable, Sendable {
    public var time: String
    /// GPUs by what they do now: `total`, `training`, `inference`, `lent` (running on loan), `stopping`,
    /// `reserved` (free, held for a job or for inference), `free`, `draining`, `unhealthy`, `down`.
    public var gpus: [String: Int]
    /// Every node, one character per GPU (see ``TopNode/cells``).
    public var nodes: [TopNode]
    /// Waiting jobs that match the filter, and the first `limit` of them in the chosen order.
    public var pending: Int
    public var queue: [TopJob]
    /// Running (and stopping) jobs that match the filter, and the first `limit`.
    public var runningCount: Int
    public var running: [TopJob]
    public var tenants: [TopTenant]
    /// Loans, reclaims, preemptions, nodes lost, newest last.
    public var moments: [TopMoment]

    public init(
        time: String,
        gpus: [String: Int],
        nodes: [TopNode],
        pending: Int,
        queue: [TopJob],
        runningCount: Int,
        running: [TopJob],
        tenants: [TopTenant],
        moments: [TopMoment]
    ) {
        self.time = time
        self.gpus = gpus
        self.nodes = nodes
        self.pending = pending
        self.queue = queue
        self.runningCount = runningCount
        self.running = running
        self.tenants = tenants
        self.moments = moments
    }

    enum CodingKeys: String, CodingKey {
        case time, gpus, nodes, pending, queue, running, tenants, moments
        case runningCount = "running_count"
    }
}

/// A node in `top`.
public struct TopNode: Codable, Sendable, Equatable {
    public var name: String
    public var model: String
    public var state: String
    /// One character per GPU: `T` training, `I` inference (lower case: a share or MIG slice of it), `L`
    /// running on loan, `S` stopping, `r` reserved, `.` free, `d` free on a draining node, `X` unhealthy,
    /// `-` down.
    public var cells: String

    public init(name: String, model: String, state: String, cells: String) {
        self.name = name
        self.model = model
        self.state = state
        self.cells = cells
    }
}

/// A job in `top`'s lists.
public struct TopJob: Codable, Sendable, Equatable {
    public var id: UInt64
    public var name: String
    public var user: String
    public var tenant: String
    public var kind: String
    /// GPUs (a fraction for a share).
    public var gpus: Double
    public var model: String?
    public var node: String?
    /// Why it waits (the first blocker), or how it stops.
    public var reason: String?
    /// Seconds waited so far (pending), run so far (running).
    public var waitS: Double?
    public var ranS: Double?
    /// Seconds to its walltime, when it has one.
    public var leftS: Double?
    /// What it costs per hour while it runs.
    public var usdPerHour: Double?

    public init(
        id: UInt64,
        name: String,
        user: String,
        tenant: String,
        kind: String,
        gpus: Double,
        model: String? = nil,
        node: String? = nil,
        reason: String? = nil,
        waitS: Double? = nil,
        ranS: Double? = nil,
        leftS: Double? = nil,
        usdPerHour: Double? = nil
    ) {
        self.id = id
        self.name = name
        self.user = user
        self.tenant = tenant
        self.kind = kind
        self.gpus = gpus
        self.model = model
        self.node = node
        self.reason = reason
        self.waitS = waitS
        self.ranS = ranS
        self.leftS = leftS
        self.usdPerHour = usdPerHour
    }

    enum CodingKeys: String, CodingKey {
        case id, name, user, tenant, kind, gpus, model, node, reason
        case waitS = "wait_s"
        case ranS = "ran_s"
        case leftS = "left_s"
        case usdPerHour = "usd_per_hour"
    }
}

/// A tenant's burn in `top`.
public struct TopTenant: Codable, Sendable, Equatable {
    public var name: String
    public var gpus: Int
    public var running: Int
    public var pending: Int
    public var usdPerHour: Double
    /// Spent in its budget's window (today when it has no budget).
    public var spentUSD: Double
    public var budgetUSD: Double?
    /// `day`, `week` or `month`.
    public var window: String

    public init(
        name: String,
        gpus: Int,
        running: Int,
        pending: Int,
        usdPerHour: Double,
        spentUSD: Double,
        budgetUSD: Double?,
        window: String
    ) {
        self.name = name
        self.gpus = gpus
        self.running = running
        self.pending = pending
        self.usdPerHour = usdPerHour
        self.spentUSD = spentUSD
        self.budgetUSD = budgetUSD
        self.window = window
    }

    enum CodingKeys: String, CodingKey {
        case name, gpus, running, pending, window
        case usdPerHour = "usd_per_hour"
        case spentUSD = "spent_usd"
        case budgetUSD = "budget_usd"
    }
}

/// Something that happened, in `top`'s recent list.
public struct TopMoment: Codable, Sendable, Equatable {
    public var time: String
    public var text: String
    public init(time: String, text: String) {
        self.time = time
        self.text = text
    }
}
