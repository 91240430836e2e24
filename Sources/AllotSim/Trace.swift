import AllotCore
import Foundation

/// One job of a trace.
public struct TraceJob: Hashable, Sendable {
    /// The trace's own id, or the row number.
    public var id: String
    public var name: String
    public var kind: JobKind
    public var tenant: String
    public var gpus: Int
    /// A share of one GPU, in thousandths (then `gpus` is 1); nil for whole GPUs.
    public var gpuShare: Int?
    /// CPUs in thousandths, and memory in MiB, for the whole job; nil: a share of each node by GPUs.
    public var cpuMilli: Int?
    public var memoryMiB: Int?
    public var gpuModels: [String]
    /// Acceptable MIG profiles (then `gpus` is 1); empty for whole GPUs and shares.
    public var mig: [String]
    public var minGPUMemoryGiB: Double?
    public var topology: Topology
    public var priorityClass: String?
    /// Seconds from the start of the trace.
    public var submitTime: Double
    /// Training: seconds of work on a speed-1.0 GPU. Inference: the replica's lifetime in seconds.
    public var duration: Double
    public var walltime: Double?
    /// What the scheduler is told to expect; nil leaves it to walltime or the config default.
    public var estimate: Double?
    /// An elastic training job's range (`min_gpus`, `max_gpus`, `gpu_step`): it runs on any size from the
    /// fewest to the most, and `duration` is its work at `gpus` GPUs. Nil for a job of fixed size.
    public var elastic: Elastic?
    /// A training job's own speed per GPU model (`speeds`: `A100=4.4|T4=1`), on the scale of the models'
    /// `speed`: the job runs at them, and the scheduler is told them unless `speedsHidden`. Empty: the
    /// models' speeds.
    public var speeds: [String: Double]
    /// The job does not tell the scheduler its speeds (`allotctl simulate --hide-speeds`: users who never
    /// profiled their applications); it still runs at them.
    public var speedsHidden = false

    /// How fast the job works on each GPU count (trace column `speedup`: `1:0.55|2:1|4:1.8`, relative rates
    /// at some counts, e.g. from Pollux's or Sia's throughput profiles); between them the rate is
    /// interpolated, above the largest it stays, below the smallest it falls in proportion. Empty: the
    /// elastic range's curve (linear up to its knee).
    public var scaling: [ScalingPoint] = []

    /// A rate of work at a GPU count.
    public struct ScalingPoint: Hashable, Sendable {
        public var gpus: Int
        public var rate: Double
        public init(gpus: Int, rate: Double) {
            self.gpus = gpus
            self.rate = rate
        }
    }

    /// The job's relative rate of work on `n` GPUs.
    public func throughput(_ n: Int) -> Double {
        guard let first = scaling.first, let last = scaling.last else {
            return elastic?.throughput(n) ?? Double(n)
        }
        if n <= first.gpus { return first.rate * Double(n) / Double(first.gpus) }
        if n >= last.gpus { return last.rate }
        let hi = scaling.firstIndex { $0.gpus >= n }!
        let (a, b) = (scaling[hi - 1], scaling[hi])
        return a.rate + (b.rate - a.rate) * Double(n - a.gpus) / Double(b.gpus - a.gpus)
    }

    /// The job's true speed on `model`: its own, else the model's; 1 for a job of CPUs only.
    public func speed(on model: GPUModel) -> Double {
        gpus == 0 ? 1 : kind == .training ? speeds[model.name] ?? model.speed : model.speed
    }

    /// An elastic job's sizes and how it speeds up with GPUs: linearly up to `knee` GPUs, then each further
    /// GPU adds half as much (`knee_gpus`; default: linear over the whole range).
    public struct Elastic: Hashable, Sendable {
        public var fewest: Int
        public var most: Int
        public var step: Int?
        public var knee: Int?

        public init(fewest: Int, most: Int, step: Int? = nil, knee: Int? = nil) {
            self.fewest = fewest
            self.most = most
            self.step = step
            self.knee = knee
        }

        /// Relative throughput on `n` GPUs.
        public func throughput(_ n: Int) -> Double {
            let k = Double(knee ?? most)
            let x = Double(n)
            return min(x, k) + 0.5 * max(0, x - k)
        }
    }

    public init(
        id: String,
        name: String,
        kind: JobKind,
        tenant: String,
        gpus: Int,
        gpuShare: Int? = nil,
        cpuMilli: Int? = nil,
        memoryMiB: Int? = nil,
        gpuModels: [String] = [],
        mig: [String] = [],
        minGPUMemoryGiB: Double? = nil,
        topology: Topology = .any,
        priorityClass: String? = nil,
        submitTime: Double,
        duration: Double,
        walltime: Double? = nil,
        estimate: Double? = nil,
        elastic: Elastic? = nil,
        speeds: [String: Double] = [:],
        scaling: [ScalingPoint] = []
    ) {
        self.id = id
        self.name = name
        self.kind = kind
        self.tenant = tenant
        self.gpus = gpus
        self.gpuShare = gpuShare
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
        self.gpuModels = gpuModels
        self.mig = mig
        self.minGPUMemoryGiB = minGPUMemoryGiB
        self.topology = topology
        self.priorityClass = priorityClass
        self.submitTime = submitTime
        self.duration = duration
        self.walltime = walltime
        self.estimate = estimate
        self.elastic = elastic
        self.speeds = speeds
        self.scaling = scaling
    }

    /// The job spec the simulator submits (an elastic job's estimate is its work at its fewest GPUs).
    public var spec: JobSpec {
        var s = fixedSpec
        if let e = elastic, kind == .training {
            s.gpus = e.fewest
            s.maxGPUs = e.most
            s.gpuStep = e.step
            s.estimate = estimate.map { $0 * throughput(gpus) / throughput(e.fewest) }
        }
        return s
    }

    /// How much faster (or slower) the job works on `n` GPUs than on `gpus`: 1 for a job of fixed size.
    public func speedUp(on n: Int) -> Double {
        guard elastic != nil, kind == .training, n > 0 else { return 1 }
        return throughput(n) / throughput(gpus)
    }

    var fixedSpec: JobSpec {
        var s = JobSpec(
            name: name.isEmpty ? id : name,
            tenant: tenant,
            kind: kind,
            priorityClass: priorityClass,
            gpus: gpus,
            gpuShare: gpuShare,
            cpuMilli: cpuMilli,
            memoryMiB: memoryMiB,
            gpuModels: gpuModels,
            mig: mig,
            minGPUMemoryGiB: minGPUMemoryGiB,
            topology: topology,
            walltime: walltime,
            estimate: estimate
        )
        s.speeds = speedsHidden ? [:] : speeds
        return s
    }
}

extension Trace {
    /// Keeps every job's speeds from the scheduler: jobs still run at them (`allotctl simulate --hide-speeds`).
    public mutating func hideSpeeds() {
        for i in jobs.indices { jobs[i].speedsHidden = true }
    }

    /// Makes every training job of whole GPUs that has no range of its own elastic: N GPUs become N/`factor`
    /// (at least 1) to N×`factor`, linear (`allotctl simulate --elastic`). A job with a `speedup` curve asks
    /// for no more than the size where it runs fastest, as its owner who knows the curve would.
    public mutating func makeElastic(factor: Int) {
        for i in jobs.indices
        where jobs[i].kind == .training && jobs[i].elastic == nil && jobs[i].gpuShare == nil
            && jobs[i].mig.isEmpty && jobs[i].gpus >= 1
        {
            let n = jobs[i].gpus
            let fewest = max(1, n / factor)
            var most = n * factor
            if !jobs[i].scaling.isEmpty {
                most =
                    (n...most).max { a, b in
                        jobs[i].throughput(a) < jobs[i].throughput(b)
                            || (jobs[i].throughput(a) == jobs[i].throughput(b) && a > b)
                    } ?? n
            }
            if most > fewest { jobs[i].elastic = TraceJob.Elastic(fewest: fewest, most: most) }
        }
    }
}

/// A bad trace: which row and column, and what was expected.
public struct TraceError: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String?
    /// 1-based line in the file (the header is line 1), when the error is about a row.
    public var line: Int?
    public var column: String?
    public var message: String

    public var description: String {
        var s = file ?? "trace"
        if let line { s += ":\(line)" }
        if let column { s += ": column \(column)" }
        return s + ": " + message
    }
}

/// A job trace: CSV with a header row, one job per row. See docs/trace-format.md.
public struct Trace: Hashable, Sendable {
    /// Jobs ordered by submit time (ties keep file order).
    public var jobs: [TraceJob]

    public init(jobs: [TraceJob]) {
        self.jobs = jobs.enumerated().sorted { a, b in
            a.element.submitTime != b.element.submitTime
                ? a.element.submitTime < b.element.submitTime : a.offset < b.offset
        }.map(\.element)
    }

    /// Column names and the other names accepted for them (those of the public traces).
    static let aliases: [String: [String]] = [
        "submit_time": ["submit_time", "timestamp", "submit", "submitted_time", "arrival_time"],
        "duration": ["duration", "runtime", "run_time"],
        "gpus": ["gpus", "num_gpus", "gpu_num", "num_gpu"],
        "tenant": ["tenant", "cluster", "vc", "virtual_cluster", "user"],
        "id": ["id", "job_id", "jobid"],
        "name": ["name", "job_name"],
        "kind": ["kind", "type"],
        "gpu_model": ["gpu_model", "gpu_type", "gpu_spec"],
        "gpu_milli": ["gpu_milli"],
        "cpus": ["cpus", "num_cpus"],
        "cpu_milli": ["cpu_milli"],
        "memory_mib": ["memory_mib", "mem_mib"],
        "priority": ["priority", "class", "priority_class"],
        "walltime": ["walltime", "time_limit"],
        "estimate": ["estimate"],
        "topology": ["topology"],
        "min_gpu_memory": ["min_gpu_memory", "min_gpu_memory_gib"],
        "mig": ["mig", "mig_profile"],
        "min_gpus": ["min_gpus"],
        "max_gpus": ["max_gpus"],
        "gpu_step": ["gpu_step"],
        "knee_gpus": ["knee_gpus"],
        "speeds": ["speeds", "speed"],
        "speedup": ["speedup", "scaling"],
    ]

    /// Reads a trace file.
    public static func load(path: String) throws(TraceError) -> Trace {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw TraceError(file: path, message: "cannot read the file: \(error.localizedDescription)")
        }
        return try parse(text, file: path)
    }

    /// Parses trace CSV.
    /// - Throws: ``TraceError`` naming the row and column of the first bad value.
    public static func parse(_ text: String, file: String? = nil) throws(TraceError) -> Trace {
        var rows = CSVReader(text)
        guard let header = rows.next() else {
            throw TraceError(file: file, line: 1, message: "the file is empty; it needs a header row")
        }
        var col: [String: Int] = [:]
        for (i, raw) in header.fields.enumerated() {
            let name = raw.trimmingWhitespace().lowercased()
            for (canonical, names) in aliases where names.contains(name) && col[canonical] == nil { col[canonical] = i }
        }
        for required in ["submit_time", "duration", "gpus"] where col[required] == nil {
            throw TraceError(
                file: file,
                line: 1,
                column: required,
                message:
                    "the header has no \(required) column (accepted names: \(aliases[required]!.joined(separator: ", ")))"
            )
        }
        var jobs: [TraceJob] = []
        var absolute: [Bool] = []
        var rowNumber = 0
        while let row = rows.next() {
            if row.fields.allSatisfy({ $0.trimmingWhitespace().isEmpty }) { continue }
            rowNumber += 1
            func field(_ c: String) -> String? {
                guard let i = col[c], i < row.fields.count else { return nil }
                let v = row.fields[i].trimmingWhitespace()
                return v.isEmpty ? nil : v
            }
            func bad(_ c: String, _ message: String) -> TraceError {
                TraceError(file: file, line: row.line, column: c, message: message)
            }
            func number(_ c: String, positive: Bool) throws(TraceError) -> Double? {
                guard let s = field(c) else { return nil }
                guard let d = Double(s), d.isFinite, positive ? d > 0 : d >= 0 else {
                    throw bad(
                        c,
                        "expected a number\(positive ? " above 0" : " of at least 0") or nothing, got \"\(s)\""
                    )
                }
                return d
            }
            guard let submitText = field("submit_time") else { throw bad("submit_time", "is empty") }
            let submit: Double
            if let s = Double(submitText), s.isFinite {
                submit = s
                absolute.append(false)
            } else if let s = CivilTime.parse(submitText) {
                submit = s
                absolute.append(true)
            } else {
                throw bad(
                    "submit_time",
                    "expected seconds from the trace start or YYYY-MM-DD HH:MM:SS, got \"\(submitText)\""
                )
            }
            guard let durationText = field("duration") else { throw bad("duration", "is empty") }
            guard let duration = DurationText.parse(durationText), duration >= 0 else {
                throw bad("duration", "expected seconds (a number of at least 0), got \"\(durationText)\"")
            }
            guard let gpusText = field("gpus"), let gpusD = Double(gpusText) else {
                throw bad("gpus", "expected a number of GPUs, got \"\(field("gpus") ?? "")\"")
            }
            var amount: (gpus: Int, share: Int?)
            switch Fraction.gpuAmount(gpusD) {
            case .success(let a): amount = a
            case .failure(let problem): throw bad("gpus", problem.message)
            }
            // openb's gpu_milli: thousandths of each GPU; below 1000 on one GPU, a share of it.
            if let milli = try number("gpu_milli", positive: true) {
                guard milli == milli.rounded(), milli <= 1000 else {
                    throw bad("gpu_milli", "expected thousandths of a GPU from 1 to 1000, got \(field("gpu_milli")!)")
                }
                if milli < 1000 {
                    guard amount.gpus == 1, amount.share == nil else {
                        throw bad("gpu_milli", "a share below 1000 is of one GPU; this row asks for \(gpusText) GPUs")
                    }
                    amount.share = Int(milli)
                }
            }
            var cpuMilli: Int?
            if let c = try number("cpus", positive: true) { cpuMilli = Int((c * 1000).rounded(.up)) }
            if let c = try number("cpu_milli", positive: true) { cpuMilli = Int(c.rounded(.up)) }
            let memoryMiB = try number("memory_mib", positive: true).map { Int($0.rounded(.up)) }
            var kind = JobKind.training
            if let k = field("kind") {
                guard let parsed = JobKind(rawValue: k.lowercased()) else {
                    throw bad("kind", "expected training or inference, got \"\(k)\"")
                }
                kind = parsed
            }
            var topology = Topology.any
            if let t = field("topology") {
                guard let parsed = Topology(rawValue: t.lowercased()) else {
                    throw bad("topology", "expected any, single-node or nvlink, got \"\(t)\"")
                }
                topology = parsed
            }
            let models = field("gpu_model").map { $0.split(separator: "|").map { $0.trimmingWhitespace() } } ?? []
            let mig = field("mig").map { $0.split(separator: "|").map { $0.trimmingWhitespace() } } ?? []
            for p in mig where MIGSlot(parsing: p + "@0") == nil {
                throw bad("mig", "expected MIG profiles such as 1g.10gb or 1g.10gb|2g.20gb, got \"\(p)\"")
            }
            if !mig.isEmpty && (amount.gpus != 1 || amount.share != nil) {
                throw bad("mig", "a MIG instance is one device: gpus must be 1 (or empty) beside it")
            }
            var elastic: TraceJob.Elastic?
            if let most = try number("max_gpus", positive: true) {
                let fewest = try number("min_gpus", positive: true) ?? Double(amount.gpus)
                guard most == most.rounded(), fewest == fewest.rounded(), fewest >= 1, most > fewest,
                    Int(fewest) <= amount.gpus, amount.gpus <= Int(most), kind == .training, amount.share == nil
                else {
                    throw bad(
                        "max_gpus",
                        "an elastic training job's range is whole GPUs, min_gpus ≤ gpus ≤ max_gpus, fewest below most; got \(field("min_gpus") ?? "")-\(field("max_gpus")!) for \(gpusText) GPUs"
                    )
                }
                let step = try number("gpu_step", positive: true).map { Int($0) }
                let knee = try number("knee_gpus", positive: true).map { Int($0) }
                elastic = TraceJob.Elastic(fewest: Int(fewest), most: Int(most), step: step, knee: knee)
            }
            var speeds: [String: Double] = [:]
            if let text = field("speeds") {
                switch JobSpec.parseSpeeds(text, separator: "|") {
                case .success(let s): speeds = s
                case .failure(let problem): throw bad("speeds", problem.message)
                }
                if kind != .training { throw bad("speeds", "speeds are for training jobs; this row is \(kind)") }
            }
            var scaling: [TraceJob.ScalingPoint] = []
            if let text = field("speedup") {
                for part in text.split(separator: "|") {
                    let pair = part.split(separator: ":", maxSplits: 1)
                    guard pair.count == 2, let n = Int(pair[0].trimmingWhitespace()), n >= 1,
                        let r = Double(pair[1].trimmingWhitespace()), r > 0, r.isFinite,
                        n > scaling.last?.gpus ?? 0
                    else {
                        throw bad(
                            "speedup",
                            "expected GPUS:RATE points by growing GPU count, such as 1:0.55|2:1|4:1.8, got \"\(part)\""
                        )
                    }
                    scaling.append(TraceJob.ScalingPoint(gpus: n, rate: r))
                }
                if kind != .training {
                    throw bad("speedup", "a speed-up with GPUs is for training jobs; this row is \(kind)")
                }
            }
            jobs.append(
                TraceJob(
                    id: field("id") ?? String(rowNumber),
                    name: field("name") ?? "",
                    kind: kind,
                    tenant: field("tenant") ?? "default",
                    gpus: amount.gpus,
                    gpuShare: amount.share,
                    cpuMilli: cpuMilli,
                    memoryMiB: memoryMiB,
                    gpuModels: models,
                    mig: mig,
                    minGPUMemoryGiB: try number("min_gpu_memory", positive: false),
                    topology: topology,
                    priorityClass: field("priority"),
                    submitTime: submit,
                    duration: duration,
                    walltime: try number("walltime", positive: true),
                    estimate: try number("estimate", positive: true),
                    elastic: elastic,
                    speeds: speeds,
                    scaling: scaling
                )
            )
        }
        if Set(absolute).count > 1 {
            throw TraceError(file: file, column: "submit_time", message: "mixes date-times and seconds; use one form")
        }
        if absolute.first == true, let start = jobs.map(\.submitTime).min() {
            for i in jobs.indices { jobs[i].submitTime -= start }
        }
        return Trace(jobs: jobs)
    }
}

/// A minimal RFC 4180 reader: commas, double-quoted fields with "" escapes, CRLF or LF.
struct CSVReader: IteratorProtocol {
    struct Row {
        var fields: [String]
        /// 1-based line where the row starts.
        var line: Int
    }

    private let bytes: [UInt8]
    private var i = 0
    private var line = 1

    init(_ text: String) { bytes = Array(text.utf8) }

    mutating func next() -> Row? {
        guard i < bytes.count else { return nil }
        let startLine = line
        var fields: [String] = []
        var field: [UInt8] = []
        var quoted = false
        while i < bytes.count {
            let c = bytes[i]
            i += 1
            if quoted {
                if c == 34 {
                    if i < bytes.count && bytes[i] == 34 {
                        field.append(34)
                        i += 1
                    } else {
                        quoted = false
                    }
                } else {
                    if c == 10 { line += 1 }
                    field.append(c)
                }
            } else if c == 34 && field.isEmpty {
                quoted = true
            } else if c == 44 {
                fields.append(String(decoding: field, as: UTF8.self))
                field.removeAll(keepingCapacity: true)
            } else if c == 10 {
                line += 1
                break
            } else if c != 13 {
                field.append(c)
            }
        }
        fields.append(String(decoding: field, as: UTF8.self))
        return Row(fields: fields, line: startLine)
    }
}
