import AllotCore
import Foundation

/// A pool and its requests in the format of Alibaba's openb GPU-sharing trace (cluster-trace-gpu-v2023, the
/// trace of FGD, USENIX ATC'23): a node list (`sn,cpu_milli,memory_mib,gpu,model`) and a pod list
/// (`name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,…`).
public struct OpenbTrace: Sendable {
    public struct Node: Hashable, Sendable {
        public var name: String
        public var cpuMilli: Int
        public var memoryMiB: Int
        public var gpus: Int
        public var model: String
    }

    public struct Pod: Hashable, Sendable {
        public var name: String
        public var cpuMilli: Int
        public var memoryMiB: Int
        public var gpus: Int
        /// Milli-GPUs per GPU (1000 for whole GPUs).
        public var gpuMilli: Int
        /// Allowed GPU models; empty: any.
        public var gpuSpec: [String]
    }

    public var nodes: [Node]
    public var pods: [Pod]
    /// GPU model names, in first-seen order of the node list; a node's model index is its position here.
    public var models: [String]

    /// Reads the two CSV files. Errors name the file, line and column that are wrong.
    public static func load(nodes nodePath: String, pods podPath: String) throws -> OpenbTrace {
        func read(_ path: String) throws -> String {
            do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw TraceError(file: path, message: "cannot read the file: \(error.localizedDescription)")
            }
        }
        return try parse(nodes: read(nodePath), nodesName: nodePath, pods: read(podPath), podsName: podPath)
    }

    /// Parses the two CSV texts; `nodesName`/`podsName` name them in errors.
    public static func parse(nodes: String, nodesName: String, pods: String, podsName: String) throws -> OpenbTrace {
        let nodeRows = try CSVTable(
            text: nodes,
            name: nodesName,
            required: ["sn", "cpu_milli", "memory_mib", "gpu", "model"]
        )
        var models: [String] = []
        var out: [Node] = []
        for row in nodeRows.rows {
            let gpus = try row.int("gpu", min: 0, max: FreePool.maxGPUsPerNode)
            // A CPU-only node (no GPUs) holds no GPU and no model: the experiment measures GPUs.
            guard gpus > 0 else { continue }
            let model = try row.string("model")
            if !models.contains(model) {
                guard models.count < FreePool.maxModels else {
                    throw TraceError(
                        file: nodesName,
                        line: row.line,
                        column: "model",
                        message: "more than \(FreePool.maxModels) GPU models"
                    )
                }
                models.append(model)
            }
            out.append(
                Node(
                    name: try row.string("sn"),
                    cpuMilli: try row.int("cpu_milli", min: 0),
                    memoryMiB: try row.int("memory_mib", min: 0),
                    gpus: gpus,
                    model: model
                )
            )
        }
        guard !out.isEmpty else { throw TraceError(file: nodesName, message: "no node with GPUs") }
        let podRows = try CSVTable(
            text: pods,
            name: podsName,
            required: ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"]
        )
        var list: [Pod] = []
        list.reserveCapacity(podRows.rows.count)
        for row in podRows.rows {
            let gpus = try row.int("num_gpu", min: 0, max: FreePool.maxGPUsPerNode)
            var milli = gpus == 0 ? 0 : try row.int("gpu_milli", min: 0, max: FractionPool.milli)
            // The trace writes 0 (or 1000) for whole GPUs; a share is only ever of one GPU.
            if gpus > 0 && (milli == 0 || gpus > 1) { milli = FractionPool.milli }
            let spec = (row.optional("gpu_spec") ?? "").split(separator: "|").map(String.init).filter { !$0.isEmpty }
            // Kubernetes counts a request of no CPU or memory as 100 milli-CPUs and 200 MB.
            let cpu = try row.int("cpu_milli", min: 0)
            let memory = try row.int("memory_mib", min: 0)
            list.append(
                Pod(
                    name: try row.string("name"),
                    cpuMilli: cpu == 0 ? 100 : cpu,
                    memoryMiB: memory == 0 ? 200 : memory,
                    gpus: gpus,
                    gpuMilli: milli,
                    gpuSpec: spec
                )
            )
        }
        guard !list.isEmpty else { throw TraceError(file: podsName, message: "no pods") }
        return OpenbTrace(nodes: out, pods: list, models: models)
    }

    /// A pod as a request on this trace's pool. A `gpu_spec` naming only models the pool lacks allows none.
    public func request(_ p: Pod) -> ResourceRequest {
        var mask: UInt64 = ~0
        if !p.gpuSpec.isEmpty {
            mask = 0
            for name in p.gpuSpec { if let m = models.firstIndex(of: name) { mask |= 1 << UInt64(m) } }
        }
        return ResourceRequest(
            gpus: p.gpus,
            gpuMilli: p.gpuMilli,
            cpuMilli: p.cpuMilli,
            memoryMiB: p.memoryMiB,
            models: mask
        )
    }

    /// GPUs of the pool.
    public var gpus: Int { nodes.reduce(0) { $0 + $1.gpus } }
}

/// FGD's experiment (Weng et al., ATC'23, §6): requests arrive one by one and never leave; each is placed at
/// once or fails. The trace's pods are inflated (sampled again) or thinned to `demand` × the pool's GPU
/// capacity, shuffled by the seed, and placed in that order; the share of the pool's GPUs allocated is
/// recorded as the arrived GPU demand passes each whole percent of capacity.
public struct PackingExperiment: Sendable {
    public let trace: OpenbTrace
    /// Arrived GPU demand at the end, as a share of the pool's GPU capacity (FGD's `tune`, 1.3).
    public var demand: Double = 1.3
    /// The share of requests the expected mix keeps (FGD's typical pods: 95%).
    public var coverage: Double = 0.95

    public init(trace: OpenbTrace) { self.trace = trace }

    /// One run's curves, indexed by the arrived demand in whole percent of capacity (0...100 × `demand`).
    public struct Run: Hashable, Sendable, Codable {
        public var rule: String
        public var seed: UInt64
        /// Percent of the pool's GPU capacity allocated.
        public var allocation: [Double]
        /// Percent of the free GPU capacity that is fragment.
        public var fragmentation: [Double]
        public var arrived: Int
        public var placed: Int
        public var failed: Int
    }

    /// The pods in arrival order for a seed: the trace inflated or thinned to the demand, then shuffled.
    public func arrivals(seed: UInt64) -> [OpenbTrace.Pod] {
        var rng = SplitMix64(seed: seed)
        let capacity = Double(trace.gpus * FractionPool.milli)
        let target = demand * capacity
        var pods = trace.pods
        var total = pods.reduce(0) { $0 + $1.gpus * $1.gpuMilli }
        if Double(total) > target {
            while Double(total) > target, !pods.isEmpty {
                let p = pods.remove(at: Int(rng.next() % UInt64(pods.count)))
                total -= p.gpus * p.gpuMilli
            }
        } else if total > 0 {
            while true {
                let p = trace.pods[Int(rng.next() % UInt64(trace.pods.count))]
                if Double(total + p.gpus * p.gpuMilli) > target { break }
                total += p.gpus * p.gpuMilli
                pods.append(p)
            }
        }
        pods.shuffle(using: &rng)
        return pods
    }

    /// Runs one rule with one seed.
    public func run(rule: FractionPool.Rule, seed: UInt64) -> Run {
        let mix = WorkloadMix(requests: trace.pods.map(trace.request), coverage: coverage)
        let modelIndex = Dictionary(uniqueKeysWithValues: trace.models.enumerated().map { ($1, $0) })
        let nodes = trace.nodes.map {
            NodeResources(model: modelIndex[$0.model]!, gpus: $0.gpus, cpuMilli: $0.cpuMilli, memoryMiB: $0.memoryMiB)
        }
        var pool = FractionPool(nodes: nodes, mix: mix, rule: rule, seed: seed)
        let capacity = pool.capacityGPUMilli
        let points = Int((demand * 100).rounded())
        var allocation: [Double] = []
        var fragmentation: [Double] = []
        var arrivedMilli = 0
        var placed = 0
        var failed = 0
        func record() {
            allocation.append(100 * Double(pool.allocatedGPUMilli) / Double(capacity))
            fragmentation.append(100 * pool.fragmentRatio)
        }
        record()
        let pods = arrivals(seed: seed)
        for p in pods {
            let r = trace.request(p)
            if pool.place(r) != nil { placed += 1 } else { failed += 1 }
            arrivedMilli += r.totalGPUMilli
            while allocation.count <= points && arrivedMilli * 100 >= allocation.count * capacity { record() }
        }
        while allocation.count <= points { record() }
        return Run(
            rule: rule.rawValue,
            seed: seed,
            allocation: allocation,
            fragmentation: fragmentation,
            arrived: pods.count,
            placed: placed,
            failed: failed
        )
    }
}

/// A CSV file with a header row, read by column name.
struct CSVTable {
    struct Row {
        let line: Int
        let name: String
        let columns: [String: Int]
        let fields: [Substring]

        func optional(_ column: String) -> String? {
            guard let i = columns[column], i < fields.count else { return nil }
            return String(fields[i]).trimmingCharacters(in: .whitespaces)
        }

        func string(_ column: String) throws -> String {
            guard let v = optional(column) else {
                throw TraceError(file: name, line: line, column: column, message: "no value")
            }
            return v
        }

        func int(_ column: String, min: Int, max: Int = .max) throws -> Int {
            let v = try string(column)
            guard let n = Int(v) ?? Double(v).flatMap({ $0.isFinite ? Int(exactly: $0.rounded()) : nil }) else {
                throw TraceError(file: name, line: line, column: column, message: "\"\(v)\" is not a whole number")
            }
            guard n >= min && n <= max else {
                throw TraceError(file: name, line: line, column: column, message: "\(n) is outside \(min)...\(max)")
            }
            return n
        }
    }

    let rows: [Row]

    init(text: String, name: String, required: [String]) throws {
        // Empty lines are kept so that every row knows its line number.
        var lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        guard let first = lines.first, !first.allSatisfy(\.isWhitespace) else {
            throw TraceError(file: name, message: "the file is empty or its first line (the header) is blank")
        }
        let header = lines.removeFirst().split(separator: ",", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        var columns: [String: Int] = [:]
        for (i, h) in header.enumerated() { columns[h] = i }
        for c in required where columns[c] == nil {
            throw TraceError(
                file: name,
                line: 1,
                message: "the header has no column \"\(c)\" (it has: \(header.joined(separator: ", ")))"
            )
        }
        rows = lines.enumerated().compactMap { k, l in
            l.allSatisfy(\.isWhitespace)
                ? nil
                : Row(
                    line: k + 2,
                    name: name,
                    columns: columns,
                    fields: l.split(separator: ",", omittingEmptySubsequences: false)
                )
        }
    }
}
