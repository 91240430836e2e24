extension ClusterState: Codable {
    /// The version of the state encoding written by this build (snapshots). Readers accept older versions.
    public static let schemaVersion: UInt16 = 1

    private enum CodingKeys: String, CodingKey {
        case version, config, now, nextJobID, nodes, jobs, tenantUsage, modelUsage, kindUsage, archived, services
    }

    private struct Named<Value: Codable>: Codable {
        var name: String
        var value: Value
    }

    /// Encodes deterministically (jobs by id, usage by name), through ``image``.
    public func encode(to encoder: any Encoder) throws {
        let image = self.image
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Self.schemaVersion, forKey: .version)
        try c.encode(image.config, forKey: .config)
        try c.encode(image.now, forKey: .now)
        try c.encode(image.nextJobID, forKey: .nextJobID)
        try c.encode(image.nodes, forKey: .nodes)
        try c.encode(image.jobs, forKey: .jobs)
        try c.encode(image.tenantUsage.map { Named(name: $0.0, value: $0.1) }, forKey: .tenantUsage)
        try c.encode(image.modelUsage.map { Named(name: $0.0, value: $0.1) }, forKey: .modelUsage)
        try c.encode(image.kindUsage.map { Named(name: $0.0.rawValue, value: $0.1) }, forKey: .kindUsage)
        if image.archived.jobs > 0 { try c.encode(image.archived, forKey: .archived) }
        if !image.services.isEmpty { try c.encode(image.services, forKey: .services) }
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
        var image = Image(
            config: try c.decode(PoolConfig.self, forKey: .config),
            now: try c.decode(Instant.self, forKey: .now),
            nextJobID: try c.decode(JobID.self, forKey: .nextJobID),
            nodes: try c.decode([Image.NodeImage].self, forKey: .nodes),
            jobs: try c.decode([Job].self, forKey: .jobs),
            tenantUsage: try c.decode([Named<TenantUsage>].self, forKey: .tenantUsage).map { ($0.name, $0.value) },
            modelUsage: try c.decode([Named<Usage>].self, forKey: .modelUsage).map { ($0.name, $0.value) },
            kindUsage: try c.decode([Named<Usage>].self, forKey: .kindUsage).compactMap { n in
                JobKind(rawValue: n.name).map { ($0, n.value) }
            }
        )
        image.archived = try c.decodeIfPresent(ArchivedUsage.self, forKey: .archived) ?? ArchivedUsage()
        image.services = try c.decodeIfPresent([InferenceService].self, forKey: .services) ?? []
        do {
            try self.init(image: image)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: error.message))
        }
    }
}
