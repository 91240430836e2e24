extension ClusterState {
    /// Everything a state holds that is not derived: what a snapshot stores. Derived indexes (which job holds
    /// which GPU, the free-GPU index, the pending queue) are rebuilt from it.
    public struct Image: Hashable, Sendable {
        /// A node's declared spec and its changeable facts.
        public struct NodeImage: Hashable, Sendable, Codable {
            public var spec: NodeSpec
            public var state: NodeState
            public var stateReason: String?
            public var health: [GPUHealth]
            public var healthReason: [String?]

            public init(
                spec: NodeSpec,
                state: NodeState,
                stateReason: String?,
                health: [GPUHealth],
                healthReason: [String?]
            ) {
                self.spec = spec
                self.state = state
                self.stateReason = stateReason
                self.health = health
                self.healthReason = healthReason
            }
        }

        public var config: PoolConfig
        public var now: Instant
        public var nextJobID: JobID
        public var nodes: [NodeImage]
        /// Jobs in id order.
        public var jobs: [Job]
        /// Usage tables in key order.
        public var tenantUsage: [(String, TenantUsage)]
        public var modelUsage: [(String, Usage)]
        public var kindUsage: [(JobKind, Usage)]
        /// What archived jobs used.
        public var archived = ArchivedUsage()
        /// Services by name.
        public var services: [InferenceService] = []

        public init(
            config: PoolConfig,
            now: Instant,
            nextJobID: JobID,
            nodes: [NodeImage],
            jobs: [Job],
            tenantUsage: [(String, TenantUsage)],
            modelUsage: [(String, Usage)],
            kindUsage: [(JobKind, Usage)],
            archived: ArchivedUsage = ArchivedUsage(),
            services: [InferenceService] = []
        ) {
            self.config = config
            self.now = now
            self.nextJobID = nextJobID
            self.nodes = nodes
            self.jobs = jobs
            self.tenantUsage = tenantUsage
            self.modelUsage = modelUsage
            self.kindUsage = kindUsage
            self.archived = archived
            self.services = services
        }

        public static func == (a: Image, b: Image) -> Bool {
            a.config == b.config && a.now == b.now && a.nextJobID == b.nextJobID && a.nodes == b.nodes
                && a.jobs == b.jobs && a.tenantUsage.elementsEqual(b.tenantUsage, by: { $0 == $1 })
                && a.modelUsage.elementsEqual(b.modelUsage, by: { $0 == $1 })
                && a.kindUsage.elementsEqual(b.kindUsage, by: { $0 == $1 }) && a.archived == b.archived
                && a.services == b.services
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(now)
            hasher.combine(nextJobID)
            hasher.combine(jobs.count)
        }
    }

    /// The state's image, deterministic: jobs by id, usage by key.
    public var image: Image {
        Image(
            config: config,
            now: now,
            nextJobID: nextJobID,
            nodes: nodes.map {
                Image.NodeImage(
                    spec: $0.spec,
                    state: $0.state,
                    stateReason: $0.stateReason,
                    health: $0.health,
                    healthReason: $0.healthReason
                )
            },
            jobs: Array(jobs),
            tenantUsage: tenantUsage.keys.sorted().map { ($0, tenantUsage[$0]!) },
            modelUsage: modelUsage.keys.sorted().map { ($0, modelUsage[$0]!) },
            kindUsage: kindUsage.keys.sorted { $0.rawValue < $1.rawValue }.map { ($0, kindUsage[$0]!) },
            archived: archived,
            services: services.keys.sorted().map { services[$0]! }
        )
    }

    /// Rebuilds a state from its image.
    /// - Throws: ``StateError`` when the image contradicts itself (a node of an undeclared model, a job
    ///   holding GPUs on an unknown node or twice).
    public init(image: Image) throws(StateError) {
        if let problem = image.config.problems().first { throw StateError(.invalidConfig, problem) }
        self.init(config: image.config, now: image.now)
        nextJobID = image.nextJobID
        archived = image.archived
        for s in image.services {
            guard services[s.spec.name] == nil else {
                throw StateError(.duplicate, "service \(s.spec.name) appears twice")
            }
            services[s.spec.name] = s
        }
        for r in image.nodes {
            guard let mi = modelIndex[r.spec.gpuModel] else {
                throw StateError(
                    .unknownModel,
                    "node \(r.spec.name) has GPU model \(r.spec.gpuModel), which the config does not declare"
                )
            }
            guard r.health.count == r.spec.gpus, r.healthReason.count == r.spec.gpus, nodeIndex[r.spec.name] == nil
            else {
                throw StateError(
                    .invalidSpec,
                    "node \(r.spec.name) is duplicated or its health does not match its GPU count"
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
        var pending: [JobID] = []
        for job in image.jobs {
            guard jobs[job.id] == nil, jobs.accepts(job.id) else {
                throw StateError(.duplicate, "job \(job.id) appears twice or out of order")
            }
            jobs[job.id] = job
            noteRequest(of: job.spec, id: job.id)
            if job.state == .pending { pending.append(job.id) }
            if (job.state == .pending || job.state == .stopping) && !job.heldGPUs.isEmpty { holding.insert(job.id) }
            guard job.state.holdsGPUs else { continue }
            activeJobs.insert(job.id)
            guard let allocation = job.allocation else {
                throw StateError(.invalidAllocation, "job \(job.id) is \(job.state.rawValue) but holds no GPUs")
            }
            for slice in allocation.slices {
                guard let ni = nodeIndex[slice.node] else {
                    throw StateError(.unknownNode, "job \(job.id) holds GPUs on unknown node \(slice.node)")
                }
                nodes[ni].cpuUsed += slice.cpuMilli ?? 0
                nodes[ni].memoryUsed += slice.memoryMiB ?? 0
                for g in slice.gpus {
                    let instance = allocation.mig.map { self.migMask($0, model: allocation.model) }
                    guard g >= 0, g < nodes[ni].spec.gpus, nodes[ni].holder[g] == nil,
                        instance.map({ $0 != 0 && nodes[ni].migUsed[g] & $0 == 0 && nodes[ni].shareUsed[g] == 0 })
                            ?? (nodes[ni].migUsed[g] == 0),
                        allocation.share.map({ nodes[ni].shareUsed[g] + $0 <= 1000 })
                            ?? (nodes[ni].shareUsed[g] == 0)
                    else {
                        throw StateError(
                            .invalidAllocation,
                            "job \(job.id) holds GPU \(g) of \(slice.node), which is not free"
                        )
                    }
                    if let instance {
                        nodes[ni].migUsed[g] |= instance
                        let at = nodes[ni].sharers[g].firstIndex { $0 > job.id } ?? nodes[ni].sharers[g].count
                        nodes[ni].sharers[g].insert(job.id, at: at)
                    } else if let share = allocation.share {
                        if nodes[ni].shareUsed[g] == 0 { sharedGPUCount += 1 }
                        nodes[ni].shareUsed[g] += share
                        let at = nodes[ni].sharers[g].firstIndex { $0 > job.id } ?? nodes[ni].sharers[g].count
                        nodes[ni].sharers[g].insert(job.id, at: at)
                    } else {
                        nodes[ni].holder[g] = job.id
                    }
                    nodes[ni].usedMask |= 1 << UInt64(g)
                }
            }
        }
        // Once every job is in: whether a pending job waits for its dependencies depends on others.
        for id in activeJobs.sorted() where jobs[existing: id].spec.array != nil { activate(id) }
        for id in pending { enqueue(id) }
        rebuildFreePool()
        inferenceDemand = Self.demand(of: image.jobs, at: image.now)
        for (k, v) in image.tenantUsage { tenantUsage[k] = v }
        for (k, v) in image.modelUsage { modelUsage[k] = v }
        for (k, v) in image.kindUsage { kindUsage[k] = v }
    }

    /// The inference demand the runs of `jobs` show, as `apply` would have kept it: each run of an inference
    /// job on whole GPUs in the history's window, a start and an end, in time order.
    static func demand(of jobs: [Job], at now: Instant) -> InferenceDemand {
        let since = now.seconds - Double(InferenceDemand.days + 1) * 86_400
        var changes: [(t: Double, model: String, gpus: Int, ran: Double?)] = []
        for job in jobs where job.spec.kind == .inference {
            var runs: [(Instant, Instant?, Allocation?)] = job.history.map { ($0.start, $0.end, $0.allocation) }
            if let start = job.startTime {
                runs.append((start, job.state.holdsGPUs ? nil : job.endTime, job.allocation))
            }
            for (start, end, a) in runs {
                guard let a, a.share == nil, a.mig == nil, (end?.seconds ?? now.seconds) >= since else { continue }
                changes.append((start.seconds, a.model, a.gpuCount, nil))
                if let end { changes.append((end.seconds, a.model, -a.gpuCount, end - start)) }
            }
        }
        // Ends before starts at the same instant, as a pass frees GPUs before it fills them.
        changes.sort { $0.t != $1.t ? $0.t < $1.t : $0.gpus < $1.gpus }
        var demand = InferenceDemand()
        for c in changes {
            demand.change(model: c.model, by: c.gpus, at: Instant(seconds: c.t))
            if let ran = c.ran { demand.ended(model: c.model, after: ran) }
        }
        return demand
    }
}
