import AllotCore
import Foundation
import TOMLKit

/// The contents of an allot configuration file (`/etc/allot/allotd.toml`): the pool for both the daemon and
/// the simulator. See docs/configuration.md for every key.
public struct ConfigFile: Hashable, Sendable {
    /// GPU models, priority classes, tenants and scheduler settings.
    public var pool: PoolConfig
    /// Every node, with `[[node_group]]` entries expanded.
    public var nodes: [NodeSpec]
    /// The `[daemon]` section (allotd only).
    public var daemon: DaemonSettings
    /// The `[wal]` section (allotd only).
    public var wal: WALSettings
    /// Nodes whose GPUs allotd finds itself (`discover = "nvml"`), by name; allotd only.
    public var discovery: [String: GPUDiscovery]
    /// The `[cluster]` section (allotd with node agents); nil: no agents.
    public var cluster: ClusterSettings?
    /// The `[ha]` section (several controllers on etcd); nil: one controller, its log on local disk.
    public var ha: HASettings?
    /// Who may charge which tenant: each `[[tenant]]`'s `users`/`groups`, and `[accounts]` (allotd only).
    public var accounts = Accounts()
    /// Each tenant's default webhook (`[[tenant]] notify`), by tenant name (allotd only).
    public var tenantNotify: [String: String] = [:]

    public init(
        pool: PoolConfig,
        nodes: [NodeSpec],
        daemon: DaemonSettings = DaemonSettings(),
        wal: WALSettings = WALSettings(),
        discovery: [String: GPUDiscovery] = [:]
    ) {
        self.pool = pool
        self.nodes = nodes
        self.daemon = daemon
        self.wal = wal
        self.discovery = discovery
    }

    /// Reads and checks a configuration file.
    /// - Throws: ``ConfigError`` naming the file, line, key and what was expected.
    public static func load(path: String) throws(ConfigError) -> ConfigFile {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(file: path, key: "", message: "cannot read the file: \(error.localizedDescription)")
        }
        return try parse(text, file: path)
    }

    /// Parses and checks configuration text.
    /// - Parameters:
    ///   - text: TOML.
    ///   - file: the name to use in error messages.
    /// - Throws: ``ConfigError`` naming the key, its line if known, and what was expected.
    public static func parse(_ text: String, file: String? = nil) throws(ConfigError) -> ConfigFile {
        let (root, ctx) = try ConfigContext.parse(text, file: file)
        var r = TableReader(root, path: "", context: ctx)
        try r.refuseUnknown([
            "scheduler", "gpu_model", "priority_class", "tenant", "accounts", "preemption", "inference_reserve",
            "node", "node_group", "daemon", "wal", "cluster", "ha",
        ])

        var pool = PoolConfig()
        var accounts = Accounts()
        var tenantNotify: [String: String] = [:]
        var defaultTraining = "training"
        var defaultInference = "inference"
        if var s = try r.subtable("scheduler") {
            var d = SchedulerSettings()
            d.fairshareHalfLife = try s.duration("fairshare_half_life") ?? d.fairshareHalfLife
            d.ageWeight = try s.double("age_weight", min: 0) ?? d.ageWeight
            d.maxAge = try s.duration("max_age") ?? d.maxAge
            d.fairshareWeight = try s.double("fairshare_weight", min: 0) ?? d.fairshareWeight
            d.sizeWeight = try s.double("size_weight", min: 0) ?? d.sizeWeight
            d.sizeFavor = try s.oneOf("size_favor", SizeFavor.self) ?? d.sizeFavor
            d.defaultGrace = try s.duration("default_grace", allowZero: true) ?? d.defaultGrace
            d.defaultEstimate = try s.duration("default_estimate") ?? d.defaultEstimate
            d.interval = try s.duration("interval") ?? d.interval
            d.overBudgetPenalty = try s.double("over_budget_penalty", min: 0) ?? d.overBudgetPenalty
            // GPU-hours in the file, GPU-seconds in the settings.
            d.serviceQueues = try s.ascendingNumbers("service_queues")?.map { $0 * 3600 } ?? d.serviceQueues
            d.starvationFactor = try s.double("starvation_factor", min: 0) ?? d.starvationFactor
            d.starvationMinimum = try s.duration("starvation_minimum", allowZero: true) ?? d.starvationMinimum
            defaultTraining = try s.string("default_training_class") ?? defaultTraining
            defaultInference = try s.string("default_inference_class") ?? defaultInference
            try s.finish()
            pool.scheduler = d
        }

        var models: [GPUModel] = []
        for var t in try r.tableArray("gpu_model") {
            var m = GPUModel(
                name: try t.string("name", required: true)!,
                memoryGiB: try t.double("memory_gib", required: true, min: 0, exclusiveMin: true)!,
                pricePerHour: try t.double("price_per_hour", required: true, min: 0)!,
                speed: try t.double("speed", min: 0, exclusiveMin: true) ?? 1.0
            )
            m.mig = try migTable(&t, model: m)
            try t.finish()
            if models.contains(where: { $0.name == m.name }) {
                throw t.error("name", "GPU model \"\(m.name)\" is declared twice")
            }
            models.append(m)
        }
        if models.isEmpty { throw ctx.error("gpu_model", "no [[gpu_model]] is declared; declare at least one") }
        if models.count > FreePool.maxModels {
            throw ctx.error(
                "gpu_model",
                "at most \(FreePool.maxModels) GPU models are supported, found \(models.count)"
            )
        }
        pool.gpuModels = models

        var classes: [PriorityClass] = []
        for var t in try r.tableArray("priority_class") {
            let c = PriorityClass(
                name: try t.string("name", required: true)!,
                value: try t.int("value", required: true)!,
                preempts: try t.bool("preempts") ?? false,
                preemptible: try t.bool("preemptible") ?? true
            )
            try t.finish()
            if classes.contains(where: { $0.name == c.name }) {
                throw t.error("name", "priority class \"\(c.name)\" is declared twice")
            }
            classes.append(c)
        }
        pool.priorityClasses = classes.isEmpty ? PriorityClass.defaults : classes
        for (key, name) in [("default_training_class", defaultTraining), ("default_inference_class", defaultInference)]
        where pool.priorityClass(named: name) == nil {
            let known = pool.priorityClasses.map(\.name).joined(separator: ", ")
            throw ctx.error("scheduler.\(key)", "priority class \"\(name)\" is not declared (declared: \(known))")
        }
        pool.defaultTrainingClass = defaultTraining
        pool.defaultInferenceClass = defaultInference

        for var t in try r.tableArray("tenant") {
            var tenant = Tenant(name: try t.string("name", required: true)!)
            tenant.shares = try t.double("shares", min: 0, exclusiveMin: true) ?? 1
            tenant.gpuQuota = try t.int("gpu_quota", in: 0...Int(Int32.max))
            tenant.borrowLimit = try t.int("borrow_limit", in: 0...Int(Int32.max))
            if var b = try t.subtable("budget") {
                tenant.budget = Budget(
                    usd: try b.double("usd", required: true, min: 0)!,
                    window: try b.oneOf("window", Budget.Window.self) ?? .month,
                    enforcement: try b.oneOf("enforcement", Budget.Enforcement.self) ?? .soft
                )
                try b.finish()
            }
            if let url = try t.string("notify") {
                guard WebhookURL(url) != nil else {
                    throw t.error("notify", "\"\(url)\" is not an http:// URL (http://HOST[:PORT]/PATH)")
                }
                tenantNotify[tenant.name] = url
            }
            accounts.access[tenant.name] = Accounts.Access(
                users: Set(try t.stringArray("users") ?? []),
                groups: Set(try t.stringArray("groups") ?? [])
            )
            try t.finish()
            if pool.tenants.contains(where: { $0.name == tenant.name }) {
                throw t.error("name", "tenant \"\(tenant.name)\" is declared twice")
            }
            pool.tenants.append(tenant)
        }
        if var a = try r.subtable("accounts") {
            accounts.defaultTenant = try a.string("default_tenant")
            accounts.userDefaults = try a.stringMap("user_defaults") ?? [:]
            for (user, tenant) in accounts.userDefaults.sorted(by: { $0.key < $1.key })
            where accounts.refusal(user: user, groups: [], admin: false, tenant: tenant) != nil
                && accounts.access[tenant].map({ !$0.groups.isEmpty }) != true
            {
                throw a.error(
                    "user_defaults",
                    "\(user)'s default tenant \(tenant) is not one \(user) may use; add \(user) to its [[tenant]] users"
                )
            }
            try a.finish()
        }

        if var p = try r.subtable("preemption") {
            var d = PreemptionSettings()
            d.minRuntime = try p.duration("min_runtime", allowZero: true) ?? d.minRuntime
            d.maxPreemptions = try p.int("max_preemptions", in: 1...1_000_000) ?? d.maxPreemptions
            d.protection = try p.duration("protection", allowZero: true) ?? d.protection
            d.loanGrace = try p.duration("loan_grace", allowZero: true) ?? d.loanGrace
            d.maxMoves = try p.int("max_moves", in: 0...1_000) ?? d.maxMoves
            d.loanCheckpointEvery = try p.duration("loan_checkpoint_every", allowZero: true) ?? d.loanCheckpointEvery
            try p.finish()
            pool.preemption = d
        }
        for var t in try r.tableArray("inference_reserve") {
            let model = try t.string("gpu_model", required: true)!
            guard models.contains(where: { $0.name == model }) else {
                let hint = closest(model, in: models.map(\.name)).map { "; did you mean \"\($0)\"?" } ?? ""
                throw t.error("gpu_model", "GPU model \"\(model)\" is not declared\(hint)")
            }
            pool.inferenceReserve.append(
                InferenceReserve(gpuModel: model, gpus: try t.int("gpus", required: true, in: 0...10_000_000)!)
            )
            try t.finish()
        }

        var nodes: [NodeSpec] = []
        var nodeKeys: [String: String] = [:]
        var discovery: [String: GPUDiscovery] = [:]
        func add(_ spec: NodeSpec, _ t: TableReader, _ discover: GPUDiscovery?) throws(ConfigError) {
            if let first = nodeKeys[spec.name] {
                throw t.error("", "node \"\(spec.name)\" is already declared by \(first)")
            }
            nodeKeys[spec.name] = t.path
            nodes.append(spec)
            if let discover { discovery[spec.name] = discover }
        }
        for var t in try r.tableArray("node") {
            let discover = try t.oneOf("discover", GPUDiscovery.self)
            let spec = try nodeSpec(&t, name: try t.string("name", required: true)!, models: models, discover: discover)
            try t.finish()
            try add(spec, t, discover)
        }
        for var t in try r.tableArray("node_group") {
            let prefix = try t.string("prefix", required: true, nonEmpty: false)!
            let count = try t.int("count", required: true, in: 1...100_000)!
            let start = try t.int("start", in: 0...10_000_000) ?? 1
            let digits = try t.int("digits", in: 1...9) ?? 2
            let discover = try t.oneOf("discover", GPUDiscovery.self)
            let template = try nodeSpec(&t, name: prefix, models: models, discover: discover)
            try t.finish()
            for i in start..<(start + count) {
                var spec = template
                let n = String(i)
                spec.name = prefix + String(repeating: "0", count: max(0, digits - n.count)) + n
                try add(spec, t, discover)
            }
        }
        if nodes.isEmpty { throw ctx.error("node", "no [[node]] or [[node_group]] is declared; declare at least one") }
        for (i, res) in pool.inferenceReserve.enumerated() {
            let capacity = nodes.filter { $0.gpuModel == res.gpuModel }.reduce(0) { $0 + $1.gpus }
            if res.gpus > capacity {
                throw ctx.error(
                    "inference_reserve[\(i)].gpus",
                    "reserves \(res.gpus) \(res.gpuModel) GPUs, but the pool has \(capacity)"
                )
            }
        }
        var daemon = DaemonSettings()
        if var d = try r.subtable("daemon") {
            daemon.stateDir = try d.string("state_dir") ?? daemon.stateDir
            daemon.socket = try d.string("socket") ?? daemon.socket
            if let mode = try d.string("socket_mode") {
                guard let m = UInt32(mode, radix: 8), m <= 0o777 else {
                    throw d.error("socket_mode", "expected an octal mode such as \"0666\", got \"\(mode)\"")
                }
                daemon.socketMode = m
            }
            if let g = try d.string("admin_group", nonEmpty: false) { daemon.adminGroup = g.isEmpty ? nil : g }
            daemon.maxMessageBytes = try d.bytes("max_message_bytes") ?? daemon.maxMessageBytes
            daemon.maxConnections = try d.int("max_connections", in: 1...1_000_000) ?? daemon.maxConnections
            daemon.idleTimeout = try d.duration("idle_timeout") ?? daemon.idleTimeout
            daemon.logDir = try d.string("log_dir")
            daemon.hostname = try d.string("hostname")
            daemon.metricsListen = try d.string("metrics_listen")
            daemon.localNodes = try d.stringArray("local_nodes") ?? []
            daemon.nvmlLibrary = try d.string("nvml_library") ?? daemon.nvmlLibrary
            daemon.nvidiaSMI = try d.string("nvidia_smi") ?? daemon.nvidiaSMI
            daemon.sendmail = try d.string("sendmail") ?? daemon.sendmail
            daemon.runHangup = try d.duration("run_hangup") ?? daemon.runHangup
            daemon.jobRetention = try d.duration("job_retention", allowNever: true) ?? daemon.jobRetention
            daemon.gpuCheckInterval = try d.duration("gpu_check_interval") ?? daemon.gpuCheckInterval
            daemon.onGPUFailure = try d.oneOf("on_gpu_failure", GPUFailureAction.self) ?? daemon.onGPUFailure
            daemon.stopSignal = try d.oneOf("stop_signal", StopSignal.self) ?? daemon.stopSignal
            daemon.onDependencyNeverMet =
                try d.oneOf("on_dependency_never_met", DependencyNeverMetAction.self) ?? daemon.onDependencyNeverMet
            try d.finish()
        }
        var wal = WALSettings()
        if var w = try r.subtable("wal") {
            wal.sync = try w.oneOf("sync", WALSettings.Sync.self) ?? wal.sync
            wal.segmentBytes = try w.bytes("segment_size") ?? wal.segmentBytes
            wal.snapshotEveryRecords =
                try w.int("snapshot_every_records", in: 1...Int(Int32.max)) ?? wal.snapshotEveryRecords
            wal.snapshotEveryBytes = try w.bytes("snapshot_every_bytes") ?? wal.snapshotEveryBytes
            try w.finish()
        }
        var cluster: ClusterSettings?
        if var c = try r.subtable("cluster") {
            var s = ClusterSettings(listen: try c.string("listen", required: true)!)
            guard s.listen.contains(":"), let port = Int(s.listen.split(separator: ":").last ?? ""),
                (1...65535).contains(port)
            else { throw c.error("listen", "expected host:port such as \"0.0.0.0:7450\", got \"\(s.listen)\"") }
            s.ca = try c.string("ca") ?? s.ca
            s.certificate = try c.string("certificate") ?? s.certificate
            s.key = try c.string("key") ?? s.key
            s.heartbeatInterval = try c.duration("heartbeat_interval") ?? s.heartbeatInterval
            s.nodeTimeout = try c.duration("node_timeout") ?? s.nodeTimeout
            s.onNodeLoss = try c.oneOf("on_node_loss", NodeLossAction.self) ?? s.onNodeLoss
            if s.nodeTimeout < 2 * s.heartbeatInterval {
                throw c.error(
                    "node_timeout",
                    "must be at least twice heartbeat_interval (\(s.heartbeatInterval) s), got \(s.nodeTimeout) s"
                )
            }
            try c.finish()
            cluster = s
        }
        var ha: HASettings?
        if var h = try r.subtable("ha") {
            let urls = try h.stringArray("etcd") ?? []
            if urls.isEmpty { throw h.error("etcd", "give etcd's client URLs, as [\"http://10.0.0.1:2379\", …]") }
            for u in urls where !(u.hasPrefix("http://") || u.hasPrefix("https://")) {
                throw h.error("etcd", "\"\(u)\" is not a URL: write http://HOST:2379 or https://HOST:2379")
            }
            var s = HASettings(etcd: urls)
            s.cluster = try h.string("cluster") ?? s.cluster
            if s.cluster.isEmpty
                || !s.cluster.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." })
            {
                throw h.error("cluster", "letters, digits, '-', '_' and '.' only, got \"\(s.cluster)\"")
            }
            s.name = try h.string("name")
            s.leaseTTL = try h.duration("lease_ttl") ?? s.leaseTTL
            if s.leaseTTL < 2 { throw h.error("lease_ttl", "at least 2s (etcd keeps leases in whole seconds)") }
            s.ca = try h.string("ca")
            s.certificate = try h.string("certificate")
            s.key = try h.string("key")
            if (s.certificate == nil) != (s.key == nil) {
                throw h.error(s.certificate == nil ? "certificate" : "key", "certificate and key go together")
            }
            s.user = try h.string("user")
            s.passwordFile = try h.string("password_file")
            try h.finish()
            ha = s
        }
        try r.finish()
        if let problem = pool.problems().first { throw ConfigError(file: file, key: "", message: problem) }
        var result = ConfigFile(pool: pool, nodes: nodes, daemon: daemon, wal: wal, discovery: discovery)
        result.cluster = cluster
        result.ha = ha
        result.accounts = accounts
        result.tenantNotify = tenantNotify
        return result
    }

    private static func nodeSpec(
        _ t: inout TableReader,
        name: String,
        models: [GPUModel],
        discover: GPUDiscovery?
    ) throws(ConfigError) -> NodeSpec {
        let model = try t.string("gpu_model", required: true)!
        guard models.contains(where: { $0.name == model }) else {
            let known = models.map { "\"\($0.name)\"" }.joined(separator: ", ")
            let hint = closest(model, in: models.map(\.name)).map { "; did you mean \"\($0)\"?" } ?? ""
            throw t.error("gpu_model", "GPU model \"\(model)\" is not declared\(hint) (declared: \(known))")
        }
        var spec = NodeSpec(
            name: name,
            gpuModel: model,
            // With discovery the count may be left out: the node is then held down until its GPUs are found.
            gpus: try t.int("gpus", required: discover == nil, in: 1...FreePool.maxGPUsPerNode) ?? 1,
            nvlinkIslands: try t.intArrays("nvlink_islands") ?? [],
            cpus: try t.int("cpus", in: 1...1_000_000),
            memoryGiB: try t.double("memory_gib", min: 0, exclusiveMin: true),
            labels: try t.stringMap("labels") ?? [:],
            local: try t.bool("local") ?? false,
            inferenceReserved: try t.bool("inference_reserved") ?? false,
            sharing: try t.oneOf("sharing", GPUSharing.self) ?? .timeSlice
        )
        spec.mig = try t.oneOf("mig", MIGMode.self) ?? .off
        let table = models.first { $0.name == model }!.mig
        if spec.mig != .off && table == nil {
            throw t.error(
                "mig",
                "GPU model \"\(model)\" has no MIG profiles (built in for A100 40/80 GB, H100 80 GB, H200; "
                    + "or give [[gpu_model.mig_profile]])"
            )
        }
        for (i, text) in (try t.stringArray("mig_layout") ?? []).enumerated() {
            guard spec.mig == .static else { throw t.error("mig_layout", "a layout needs mig = \"static\"") }
            let names = table!.profiles.map(\.name).joined(separator: ", ")
            guard let slot = MIGSlot(parsing: text) else {
                throw t.error("mig_layout", "element \(i): expected PROFILE@START, e.g. \"3g.40gb@4\", got \"\(text)\"")
            }
            guard let p = table!.profile(named: slot.profile) else {
                throw t.error("mig_layout", "element \(i): no MIG profile \"\(slot.profile)\" on \(model) (\(names))")
            }
            guard p.starts.contains(slot.start) else {
                let starts = p.starts.map(String.init).joined(separator: ", ")
                throw t.error("mig_layout", "element \(i): \(p.name) may start at \(starts), not \(slot.start)")
            }
            if let other = spec.migLayout.first(where: { q in
                table!.profile(named: q.profile)!.mask(at: q.start) & p.mask(at: slot.start) != 0
            }) {
                throw t.error("mig_layout", "element \(i): \(slot) overlaps \(other)")
            }
            spec.migLayout.append(slot)
        }
        if spec.mig == .static && spec.migLayout.isEmpty {
            throw t.error(
                "mig_layout",
                "mig = \"static\" needs the layout of every GPU, e.g. [\"3g.40gb@0\", \"3g.40gb@4\"]"
            )
        }
        if let problem = spec.problems().first { throw t.error("nvlink_islands", problem) }
        return spec
    }

    /// A model's MIG profiles: `[[gpu_model.mig_profile]]` when given, else the built-in table for its name
    /// and memory unless `mig = false`.
    private static func migTable(_ t: inout TableReader, model: GPUModel) throws(ConfigError) -> MIGTable? {
        let enabled = try t.bool("mig")
        var profiles: [MIGProfile] = []
        for var p in try t.tableArray("mig_profile") {
            profiles.append(
                MIGProfile(
                    name: try p.string("name", required: true)!,
                    compute: try p.int("compute", required: true, in: 1...MIGTable.computeSlices)!,
                    memorySlices: try p.int("memory_slices", required: true, in: 1...MIGTable.memorySlices)!,
                    memoryGiB: try p.double("memory_gib", required: true, min: 0, exclusiveMin: true)!,
                    starts: try p.intArray("starts") ?? []
                )
            )
            try p.finish()
        }
        if enabled == false {
            if !profiles.isEmpty { throw t.error("mig", "mig = false, yet [[gpu_model.mig_profile]] are given") }
            return nil
        }
        if !profiles.isEmpty {
            let table = MIGTable(profiles: profiles)
            if let problem = table.problems(model: model.name).first { throw t.error("mig_profile", problem) }
            return table
        }
        let builtIn = MIGTable.builtIn(forModel: model.name, memoryGiB: model.memoryGiB)
        if enabled == true && builtIn == nil {
            throw t.error(
                "mig",
                "no built-in MIG profiles for \"\(model.name)\" with \(model.memoryGiB) GiB "
                    + "(known: A100 40/80 GB, H100 80 GB, H200 141 GB); give [[gpu_model.mig_profile]]"
            )
        }
        return builtIn
    }

    /// The events that bring an empty state to this config: the config, then every node.
    public func initialEvents(at time: Instant) -> [Event] {
        [Event(time: time, .configApplied(config: pool))] + nodes.map { Event(time: time, .nodeAdded(spec: $0)) }
    }

    /// A state holding this config's pool and no jobs.
    public func makeState(at time: Instant = .zero) throws(StateError) -> ClusterState {
        var state = ClusterState(now: time)
        try state.apply(initialEvents(at: time))
        return state
    }
}

extension ConfigFile {
    /// What the simulator models but allotd cannot run: a MIG node that allotd runs itself without reaching
    /// its GPUs through NVML (a node agent makes its node's instances, given `--discover nvml`). Nil when
    /// allotd can run this config on `hostname`.
    public func allotdRefusal(path: String?, hostname: String) -> ConfigError? {
        for node in nodes where node.mig != .off {
            func refuse(_ why: String) -> ConfigError {
                ConfigError(
                    file: path,
                    key: "mig",
                    message: "node \(node.name) has mig = \"\(node.mig.rawValue)\": \(why)"
                )
            }
            if daemon.isLocal(node, hostname: hostname) {
                if discovery[node.name] != .nvml {
                    return refuse("allotd makes and finds MIG instances through NVML; add discover = \"nvml\"")
                }
            } else if cluster == nil {
                // A node agent finds its node's GPUs itself (`allotd agent --discover nvml`).
                return refuse(
                    "nothing here makes its MIG instances: run it from allotd (local = true, discover = \"nvml\") or from a node agent ([cluster])"
                )
            }
        }
        return nil
    }
}
