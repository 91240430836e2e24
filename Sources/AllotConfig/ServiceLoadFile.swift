import AllotCore
import Foundation
import TOMLKit

/// The services `allotctl simulate --services` runs beside a training trace: each one's request trace, its
/// replicas' size, its latency goal, and how fast a replica serves on each GPU model (docs/services.md).
public struct ServiceLoadFile: Sendable {
    /// How fast one replica serves on one GPU model.
    public struct Replica: Hashable, Sendable {
        public var gpuModel: String
        /// Prompt tokens per second the replica reads (prefill), one request at a time.
        public var prefillTokensPerSecond: Double
        /// Output tokens per second each request gets while the replica serves `concurrency` of them.
        public var decodeTokensPerSecond: Double
        /// Requests the replica serves at once (its batch); more wait.
        public var concurrency: Int
        /// From the replica's start to serving: loading the model.
        public var coldStart: Seconds

        public init(
            gpuModel: String,
            prefillTokensPerSecond: Double,
            decodeTokensPerSecond: Double,
            concurrency: Int,
            coldStart: Seconds
        ) {
            self.gpuModel = gpuModel
            self.prefillTokensPerSecond = prefillTokensPerSecond
            self.decodeTokensPerSecond = decodeTokensPerSecond
            self.concurrency = concurrency
            self.coldStart = coldStart
        }

        /// Seconds one request takes on a slot: its prompt read, then its output written.
        public func serviceTime(context: Int, generated: Int) -> Double {
            Double(context) / prefillTokensPerSecond + Double(generated) / decodeTokensPerSecond
        }
    }

    public struct Service: Sendable {
        public var name: String
        /// The request trace (Azure LLM inference CSV, or `time,context_tokens,generated_tokens`), resolved
        /// against the file's folder.
        public var requests: String
        public var tenant: String
        /// GPUs per replica, or a share of one (thousandths; then `gpus` is 1).
        public var gpus: Int
        public var gpuShare: Int?
        public var priorityClass: String?
        /// The longest a request may wait for a replica to take it and still count as served in time.
        public var slo: Seconds
        public var minReplicas: Int
        public var maxReplicas: Int
        /// allot's autoscaler for it; nil: sized by slots (the first replica model's concurrency), at most
        /// 1% of requests waiting, with Knative's windows and a 10-minute scale-down delay (bursts come back).
        public var autoscale: Autoscale?
        /// The autoscaler the knative column runs for it (Knative's knobs tuned, e.g. `target=2.8,
        /// down-delay=10m`); nil: Knative's defaults.
        public var knative: Autoscale? = nil
        /// By GPU model, in order of preference; replicas run only on these models.
        public var replicas: [Replica]

        /// The autoscaler allot's column runs.
        public var allotAutoscale: Autoscale {
            if let autoscale { return autoscale }
            var a = Autoscale(slots: replicas.first?.concurrency ?? 1, waiting: 0.01)
            a.downDelay = 600
            return a
        }

        /// The knative column's autoscaler: the service's `knative` setting, else Knative's defaults on a
        /// replica's concurrency: a target of 70% of it, a 60 s stable window, a 6 s panic window at twice
        /// the size, no scale-down delay.
        public var knativeAutoscale: Autoscale {
            knative ?? Autoscale(target: 0.7 * Double(replicas.first?.concurrency ?? 1))
        }

        /// The replica model of a GPU model, if replicas may run there.
        public func replica(on model: String) -> Replica? { replicas.first { $0.gpuModel == model } }
    }

    public var services: [Service]

    public init(services: [Service]) { self.services = services }

    /// Reads and checks a services file.
    /// - Throws: ``ConfigError`` naming the file, line, key and what was expected.
    public static func load(path: String, models: [GPUModel]) throws(ConfigError) -> ServiceLoadFile {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(file: path, key: "", message: "cannot read the file: \(error.localizedDescription)")
        }
        let folder = (path as NSString).deletingLastPathComponent
        return try parse(text, file: path, folder: folder.isEmpty ? "." : folder, models: models)
    }

    /// Parses a services file; `folder` resolves relative request paths, `models` are the pool's GPU models.
    public static func parse(
        _ text: String,
        file: String? = nil,
        folder: String = ".",
        models: [GPUModel]
    ) throws(ConfigError) -> ServiceLoadFile {
        let (root, ctx) = try ConfigContext.parse(text, file: file)
        var r = TableReader(root, path: "", context: ctx)
        try r.refuseUnknown(["service"])
        var services: [Service] = []
        let tables = try r.tableArray("service")
        if tables.isEmpty { throw ctx.error("service", "no [[service]]: name at least one service") }
        for var t in tables {
            try t.refuseUnknown([
                "name", "requests", "tenant", "gpus", "gpu_share", "priority_class", "slo", "min", "max", "autoscale",
                "knative", "replica",
            ])
            let name = try t.string("name", required: true)!
            if let problem = ServiceSpec.nameProblem(name) { throw t.error("name", problem) }
            if services.contains(where: { $0.name == name }) { throw t.error("name", "a second service \"\(name)\"") }
            var requests = try t.string("requests", required: true)!
            if !requests.hasPrefix("/") { requests = folder + "/" + requests }
            let tenant = try t.string("tenant") ?? "default"
            let gpus = try t.int("gpus", in: 1...1024) ?? 1
            let share = try t.double("gpu_share", min: 0, exclusiveMin: true)
            if let share, share >= 1 { throw t.error("gpu_share", "a share of one GPU, below 1 (e.g. 0.5)") }
            if share != nil && gpus != 1 { throw t.error("gpu_share", "a share of a GPU takes gpus = 1") }
            let priorityClass = try t.string("priority_class")
            let slo = try t.duration("slo") ?? 2
            let minReplicas = try t.int("min", in: 0...ServiceSpec.maxReplicasLimit) ?? 1
            let maxReplicas = try t.int("max", in: 1...ServiceSpec.maxReplicasLimit) ?? 100
            if maxReplicas < max(1, minReplicas) {
                throw t.error("max", "must be at least min (\(minReplicas)) and at least 1")
            }
            var autoscale: Autoscale?
            var knative: Autoscale?
            for key in ["autoscale", "knative"] {
                guard let text = try t.string(key) else { continue }
                switch Autoscale.parse(text) {
                case .success(let a): if key == "autoscale" { autoscale = a } else { knative = a }
                case .failure(let e): throw t.error(key, e.message)
                }
            }
            if knative?.slots != nil {
                throw t.error("knative", "Knative sizes by a target per replica (target=N), not by slots")
            }
            var replicas: [Replica] = []
            let replicaTables = try t.tableArray("replica")
            if replicaTables.isEmpty {
                throw t.error("replica", "no [[service.replica]]: say how fast a replica serves on each GPU model")
            }
            for var m in replicaTables {
                try m.refuseUnknown([
                    "gpu_model", "prefill_tokens_per_s", "decode_tokens_per_s", "concurrency", "cold_start",
                ])
                let model = try m.string("gpu_model", required: true)!
                guard models.contains(where: { $0.name == model }) else {
                    let known = models.map(\.name).joined(separator: ", ")
                    throw m.error("gpu_model", "the pool has no GPU model \"\(model)\" (it has \(known))")
                }
                if replicas.contains(where: { $0.gpuModel == model }) {
                    throw m.error("gpu_model", "\"\(model)\" is described twice")
                }
                replicas.append(
                    Replica(
                        gpuModel: model,
                        prefillTokensPerSecond: try m.double(
                            "prefill_tokens_per_s",
                            required: true,
                            min: 0,
                            exclusiveMin: true
                        )!,
                        decodeTokensPerSecond: try m.double(
                            "decode_tokens_per_s",
                            required: true,
                            min: 0,
                            exclusiveMin: true
                        )!,
                        concurrency: try m.int("concurrency", required: true, in: 1...100_000)!,
                        coldStart: try m.duration("cold_start", allowZero: true) ?? 60
                    )
                )
                try m.finish()
            }
            try t.finish()
            services.append(
                Service(
                    name: name,
                    requests: requests,
                    tenant: tenant,
                    gpus: gpus,
                    gpuShare: share.map { Int(($0 * 1000).rounded()) },
                    priorityClass: priorityClass,
                    slo: slo,
                    minReplicas: minReplicas,
                    maxReplicas: maxReplicas,
                    autoscale: autoscale,
                    knative: knative,
                    replicas: replicas
                )
            )
        }
        return ServiceLoadFile(services: services)
    }
}
