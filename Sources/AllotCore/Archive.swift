/// What the jobs taken out of the state used (archived once ended longer than the retention; their full
/// records go to the daemon's archive files): totals by the day they ended and by tenant, user, model and
/// kind, so that cost reports over any window still count them.
public struct ArchivedUsage: Hashable, Sendable {
    public struct Key: Hashable, Sendable, Comparable, Codable {
        /// Days since 1970-01-01 (UTC) of the job's end.
        public var day: Int
        public var tenant: String
        public var user: String
        public var model: String
        public var kind: String
        /// The service the jobs were replicas of; nil for jobs of their own.
        public var service: String?

        public init(day: Int, tenant: String, user: String, model: String, kind: String, service: String? = nil) {
            self.day = day
            self.tenant = tenant
            self.user = user
            self.model = model
            self.kind = kind
            self.service = service
        }

        public static func < (a: Key, b: Key) -> Bool {
            (a.day, a.tenant, a.user, a.model, a.kind, a.service ?? "")
                < (b.day, b.tenant, b.user, b.model, b.kind, b.service ?? "")
        }
    }

    public struct Totals: Hashable, Sendable, Codable {
        public var jobs: Int
        public var gpuSeconds: Double
        public var usd: Double

        public init(jobs: Int = 0, gpuSeconds: Double = 0, usd: Double = 0) {
            self.jobs = jobs
            self.gpuSeconds = gpuSeconds
            self.usd = usd
        }
    }

    public internal(set) var rows: [Key: Totals] = [:]
    /// Jobs archived so far.
    public internal(set) var jobs = 0
    /// The latest end among them.
    public internal(set) var lastEnd: Instant?

    public init() {}

    /// Rows in key order (snapshots, tests).
    public var sortedRows: [(Key, Totals)] { rows.keys.sorted().map { ($0, rows[$0]!) } }

    /// Rebuilds it from its rows (a snapshot).
    public init(rows: [(Key, Totals)], jobs: Int, lastEnd: Instant?) {
        for (k, t) in rows { self.rows[k] = t }
        self.jobs = jobs
        self.lastEnd = lastEnd
    }

    /// Adds an ended job's use.
    mutating func add(_ job: Job, at t: Instant) {
        let end = job.endTime ?? t
        let key = Key(
            day: Int((end.seconds / 86_400).rounded(.down)),
            tenant: job.spec.tenant,
            user: job.spec.user ?? String(job.spec.uid),
            model: job.allocation?.model ?? job.placement?.model ?? "none",
            kind: job.spec.kind.rawValue,
            service: job.spec.service
        )
        rows[key, default: Totals()].jobs += 1
        rows[key, default: Totals()].gpuSeconds += job.pastGPUSeconds
        rows[key, default: Totals()].usd += job.pastCostUSD
        jobs += 1
        if lastEnd.map({ end > $0 }) ?? true { lastEnd = end }
    }
}

extension ArchivedUsage: Codable {
    private struct Row: Codable {
        var key: Key
        var totals: Totals
    }

    private enum CodingKeys: String, CodingKey { case rows, jobs, lastEnd }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sortedRows.map { Row(key: $0.0, totals: $0.1) }, forKey: .rows)
        try c.encode(jobs, forKey: .jobs)
        try c.encodeIfPresent(lastEnd, forKey: .lastEnd)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            rows: try c.decode([Row].self, forKey: .rows).map { ($0.key, $0.totals) },
            jobs: try c.decode(Int.self, forKey: .jobs),
            lastEnd: try c.decodeIfPresent(Instant.self, forKey: .lastEnd)
        )
    }
}
