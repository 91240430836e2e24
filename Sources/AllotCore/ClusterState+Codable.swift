extension ClusterState: Codable {
    /// The version of the state encoding written by this build (snapshots). Readers accept older versions.
    public static let schemaVersion: UInt16 = 1

    private enum CodingKeys: String, CodingKey {
        case version, config, now, nextJobID, nodes, jobs, tenantUsage, modelUsage, kindUsage
    }

    /// A node as snapshots store it; which job holds which GPU is derived from the jobs.
    private struct NodeRecord: Codable {
        var spec: NodeSpec
        var state: NodeState
        var stateReason: String?
        var health: [GPUHealth]
        var healthReason: [String?]
    }

    private struct Named<Value: Codable>: Codable {
        var name: String
        var value: Value
    }

    /// Encodes deterministically: jobs by id, usage by name, so that equal states encode to equal bytes
    /// with a sorted-keys encoder.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Self.schemaVersion, forKey: .version)
        try c.encode(config, forKey: .config)
        try c.encode(now, forKey: .now)
        try c.encode(nextJobID, forKey: .nextJobID)
        try c.encode(
            nodes.map {
                NodeRecord(
                    spec: $0.spec,
                    state: $0.state,
                    stateReason: $0.stateReason,
                    health: $0.health,
                    healthReason: $0.healthReason
                )
            },
            forKey: .nodes
        )
        try c.encode(jobs.keys.sorted().map { jobs[$0]! }, forKey: .jobs)
        try c.encode(tenantUsage.keys.sorted().map { Named(name: $0, value: tenantUsage[$0]!) }, forKey: .tenantUsage)
        try c.encode(modelUsage.keys.sorted().map { Named(name: $0, value: modelUsage[$0]!) }, forKey: .modelUsage)
        try c.encode(
            kindUsage.keys.sorted { $0.rawValue < $1.rawValue }.map { Named(name: $0.rawValue, value: kindUsage[$0]!) },
            forKey: .kindUsage
        )
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let version = try c.decode(UInt16.self, forKey: .version)
        guard version <= Self.schemaVersion else {
            throw DecodingError.dataCorruptedError(
                forKey: .version,
                in: c,
                debugDescription:
                    "state version \(version) is newer than this allot reads (\(Self.schemaVersion)); upgrade allot"
            )
        }
        let config = try c.decode(PoolConfig.self, forKey: .config)
        self.init(config: config, now: try c.decode(Instant.self, forKey: .now))
        nextJobID = try c.decode(JobID.self, forKey: .nextJobID)
        for r in try c.decode([NodeRecord].self, forKey: .nodes) {
            guard let mi = modelIndex[r.spec.gpuModel], r.health.count == r.spec.gpus,
                r.healthReason.count == r.spec.gpus
            else {
                throw DecodingError.dataCorruptedError(
                    forKey: .nodes,
                    in: c,
                    debugDescription: "node \(r.spec.name) does not match its model or GPU count"
                )
            }
            var node = Node(spec: r.spec, modelIndex: mi)
            node.state = r.state
            node.stateReason = r.stateReason
            node.health = r.health
            node.healthReason = r.healthReason
            for (g, h) in r.health.enumerated() where h != .healthy { node.unhealthyMask |= 1 << UInt64(g) }
            nodeIndex[r.spec.name] = nodes.count
            nodes.append(node)
        }
        for job in try c.decode([Job].self, forKey: .jobs) {
            jobs[job.id] = job
            if job.state == .pending { pendingJobs.insert(job) }
            if job.state.holdsGPUs {
                activeJobs.insert(job.id)
                for slice in job.allocation?.slices ?? [] {
                    guard let ni = nodeIndex[slice.node] else {
                        throw DecodingError.dataCorruptedError(
                            forKey: .jobs,
                            in: c,
                            debugDescription: "job \(job.id) holds GPUs on unknown node \(slice.node)"
                        )
                    }
                    for g in slice.gpus where g >= 0 && g < nodes[ni].spec.gpus {
                        nodes[ni].holder[g] = job.id
                        nodes[ni].usedMask |= 1 << UInt64(g)
                    }
                }
            }
        }
        rebuildFreePool()
        for n in try c.decode([Named<TenantUsage>].self, forKey: .tenantUsage) { tenantUsage[n.name] = n.value }
        for n in try c.decode([Named<Usage>].self, forKey: .modelUsage) { modelUsage[n.name] = n.value }
        for n in try c.decode([Named<Usage>].self, forKey: .kindUsage) {
            if let k = JobKind(rawValue: n.name) { kindUsage[k] = n.value }
        }
    }
}
