/// The whole pool: config, nodes with their GPUs, jobs, and what tenants, models and kinds have used.
///
/// A value: cheap to copy for a what-if. It changes only through ``apply(_:)``, which is pure and total: an
/// event that does not fit is refused with a ``StateError`` and leaves the state as it was, and the same
/// events in the same order always give the same state.
public struct ClusterState: Hashable, Sendable {
    public internal(set) var config: PoolConfig
    /// The time of the latest event applied.
    public internal(set) var now: Instant
    /// Nodes in the order they were added.
    public internal(set) var nodes: [Node]
    /// Every job ever submitted and not forgotten, by id.
    public internal(set) var jobs: JobTable
    /// Jobs in state `pending` (not held), in the compact form the scheduler reads.
    public internal(set) var pendingJobs: PendingQueue
    /// Jobs holding GPUs: `running` or `stopping`.
    public internal(set) var activeJobs: Set<JobID>
    /// The id the next submitted job gets.
    public internal(set) var nextJobID: JobID
    public internal(set) var tenantUsage: [String: TenantUsage]
    public internal(set) var modelUsage: [String: Usage]
    public internal(set) var kindUsage: [JobKind: Usage]
    /// What archived jobs used, by day, tenant, user, model and kind.
    public internal(set) var archived = ArchivedUsage()
    /// Services by name.
    public internal(set) var services: [String: InferenceService] = [:]

    /// Jobs GPUs are held for (derived): pending jobs, freed for them by preemption, and jobs stopping to move
    /// to the GPUs held for them.
    var holding: Set<JobID> = []
    /// Pending jobs waiting for their dependencies, out of `pendingJobs` (derived).
    var dependencies = DependencyIndex()
    /// Jobs by the client's request id they were submitted with, per user (derived).
    var requests: [RequestKey: [JobID]] = [:]
    /// Node position by name (derived).
    var nodeIndex: [String: Int]
    /// The free GPUs of schedulable nodes, indexed for placement (derived, kept up to date by `apply`). While
    /// nodes are being added one by one it is stale, and rebuilt once when next needed.
    var storedFreePool: FreePool
    var freePoolStale = false
    /// What the nodes declare that passes need at once (derived, recomputed when nodes change).
    var nodeTraits = NodeTraits()
    /// GPUs with shares on them (derived, kept up to date by `apply`).
    var sharedGPUCount = 0
    /// Whole GPUs held by inference, by model, over the last days: what the inference reserve's loans are
    /// lent by (derived, kept up to date by `apply`, rebuilt from the jobs' runs when a state is loaded).
    public internal(set) var inferenceDemand = InferenceDemand()

    /// The free GPUs of schedulable nodes, indexed for placement.
    public var freePool: FreePool {
        freePoolStale ? FreePool(models: config.gpuModels.count, nodes: nodes) : storedFreePool
    }
    /// Model position in `config.gpuModels` by name (derived).
    var modelIndex: [String: Int]

    /// An empty pool with a config.
    public init(config: PoolConfig = PoolConfig(), now: Instant = .zero) {
        self.config = config
        self.now = now
        self.nodes = []
        self.jobs = JobTable()
        self.pendingJobs = PendingQueue()
        self.activeJobs = []
        self.nextJobID = JobID(1)
        self.tenantUsage = [:]
        self.modelUsage = [:]
        self.kindUsage = [:]
        self.nodeIndex = [:]
        self.modelIndex = Self.index(config.gpuModels)
        self.storedFreePool = FreePool(models: config.gpuModels.count, nodes: [])
    }

    /// Equal when the facts are equal; derived indexes (free pool, row order of the pending queue) do not count.
    public static func == (a: ClusterState, b: ClusterState) -> Bool {
        a.config == b.config && a.now == b.now && a.nodes == b.nodes && a.jobs == b.jobs
            && a.pendingJobs == b.pendingJobs && a.activeJobs == b.activeJobs && a.nextJobID == b.nextJobID
            && a.tenantUsage == b.tenantUsage && a.modelUsage == b.modelUsage && a.kindUsage == b.kindUsage
            && a.archived == b.archived && a.services == b.services
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(now)
        hasher.combine(nextJobID)
        hasher.combine(jobs.count)
        hasher.combine(nodes.count)
    }

    /// Marks the free pool for a rebuild (after nodes or models change); it happens when next needed, so that
    /// adding a thousand nodes costs one rebuild, not a thousand.
    mutating func rebuildFreePool() {
        freePoolStale = true
        nodeTraits = NodeTraits(nodes)
    }

    /// Refreshes one node's entry in the free pool (after its state, health or holders change).
    mutating func refreshFree(node i: Int) {
        if freePoolStale {
            storedFreePool = FreePool(models: config.gpuModels.count, nodes: nodes)
            freePoolStale = false
        } else {
            storedFreePool.setFree(node: i, mask: nodes[i].schedulable ? nodes[i].freeMask : 0)
        }
    }

    static func index(_ models: [GPUModel]) -> [String: Int] {
        var m: [String: Int] = [:]
        for (i, model) in models.enumerated() { m[model.name] = i }
        return m
    }

    // MARK: Queries

    /// The node of that name.
    public func node(named name: String) -> Node? { nodeIndex[name].map { nodes[$0] } }

    /// Total GPUs in the pool, whatever their state.
    public var totalGPUs: Int { nodes.reduce(0) { $0 + $1.spec.gpus } }

    /// GPUs held by jobs.
    public var gpusInUse: Int { nodes.reduce(0) { $0 + $1.gpusInUse } }

    /// The class in force for a job: its own if the config declares it, else the default for its kind.
    public func priorityClass(of spec: JobSpec) -> PriorityClass {
        if let name = spec.priorityClass, let c = config.priorityClass(named: name) { return c }
        let fallback = spec.kind == .inference ? config.defaultInferenceClass : config.defaultTrainingClass
        return config.priorityClass(named: fallback)
            ?? PriorityClass(name: fallback, value: 0, preempts: false, preemptible: true)
    }

    /// Whether a job may be preempted: its own setting, else its class's.
    public func isPreemptible(_ spec: JobSpec) -> Bool {
        spec.preemptible ?? priorityClass(of: spec).preemptible
    }

    /// The grace period a job gets when told to stop.
    public func grace(of spec: JobSpec) -> Seconds { spec.grace ?? config.scheduler.defaultGrace }

    /// The run time assumed for planning and pricing, in reference seconds (training) or wall seconds
    /// (inference).
    public func estimate(of spec: JobSpec) -> Seconds {
        spec.estimate ?? spec.walltime ?? config.scheduler.defaultEstimate
    }

    /// The state as it stands at `t` when nothing has happened since its last event (for explanations that
    /// should speak of now, not of the last event's time).
    public func asOf(_ t: Instant) -> ClusterState {
        var s = self
        s.now = max(now, t)
        return s
    }

    /// The expected run time of a job on `model`: training work shrinks on faster GPUs, an inference service's
    /// lifetime does not.
    public func expectedSeconds(of spec: JobSpec, on model: GPUModel) -> Seconds {
        let est = estimate(of: spec)
        return spec.kind == .training ? est / spec.speed(on: model) : est
    }

    /// Indices of the models a job may run on: those it names (or all), with enough memory.
    public func allowedModels(for spec: JobSpec) -> [Int] {
        var out: [Int] = []
        for (i, m) in config.gpuModels.enumerated() {
            if !spec.gpuModels.isEmpty && !spec.gpuModels.contains(m.name) { continue }
            if let min = spec.minGPUMemoryGiB, m.memoryGiB < min { continue }
            out.append(i)
        }
        return out
    }

    /// A tenant's fair-share usage (decayed GPU-seconds) at `t`.
    public func decayedUsage(of tenant: String, at t: Instant) -> Double {
        tenantUsage[tenant]?.decayed.value(at: t, halfLife: config.scheduler.fairshareHalfLife) ?? 0
    }

    /// Money a tenant spent within the budget window holding `t`.
    public func spent(by tenant: String, in window: Budget.Window, at t: Instant) -> Double {
        tenantUsage[tenant]?.spent(in: window, at: t) ?? 0
    }

    /// GPUs of each model kept for inference: the config's reserve plus nodes marked for inference.
    public var inferenceReserve: [Int] {
        var r = [Int](repeating: 0, count: config.gpuModels.count)
        for res in config.inferenceReserve { if let m = modelIndex[res.gpuModel] { r[m] += res.gpus } }
        for node in nodes where node.spec.inferenceReserved { r[node.modelIndex] += node.spec.gpus }
        return r
    }

    /// Jobs in a given state, ordered by id.
    public func jobs(in state: JobState) -> [Job] {
        switch state {
        case .pending: return pendingJobs.ids.union(dependencies.waiting).sorted().map { jobs[$0]! }
        case .running, .stopping:
            return activeJobs.sorted().compactMap { jobs[$0]!.state == state ? jobs[$0] : nil }
        default: return jobs.filter { $0.state == state }
        }
    }

    /// Checks the internal invariants: every held GPU belongs to an active job whose allocation names it,
    /// no GPU is given twice, and the job sets match the job states. Meant for tests and `--paranoid` runs.
    /// - Returns: a sentence per broken invariant; empty when all hold.
    public func invariantViolations() -> [String] {
        var out: [String] = []
        // A service's replicas are its jobs that have not ended, each listed once; none is listed elsewhere.
        for (name, s) in services {
            for id in s.members {
                guard let job = jobs[id] else {
                    out.append("service \(name) lists job \(id), which is missing")
                    continue
                }
                if job.spec.service != name {
                    out.append("service \(name) lists job \(id), a job of \(job.spec.service ?? "its own")")
                }
                if job.state.isTerminal { out.append("service \(name) lists job \(id), which has ended") }
            }
            if Set(s.members).count != s.members.count { out.append("service \(name) lists a job twice") }
        }
        var seen: [String: UInt64] = [:]
        var shares: [NodeGPU: Int] = [:]
        var migSeen: [NodeGPU: UInt8] = [:]
        var host: [Int: (cpu: Int, memory: Int)] = [:]
        for id in activeJobs.sorted() {
            guard let job = jobs[id] else {
                out.append("active job \(id) is missing")
                continue
            }
            if !job.state.holdsGPUs { out.append("job \(id) is in the active set but \(job.state)") }
            guard let alloc = job.allocation else {
                out.append("active job \(id) has no allocation")
                continue
            }
            if job.spec.size(atMost: alloc.gpuCount) != alloc.gpuCount
                || (!job.spec.isElastic && alloc.gpuCount != job.spec.gpus)
            {
                out.append("job \(id) holds \(alloc.gpuCount) GPUs but asked for \(job.spec.gpus)")
            }
            let models = Set(alloc.slices.compactMap { nodeIndex[$0.node].map { nodes[$0].modelIndex } })
            if models.count > 1 { out.append("job \(id) holds GPUs of \(models.count) models") }
            for slice in alloc.slices {
                guard let ni = nodeIndex[slice.node] else {
                    out.append("job \(id) holds GPUs on unknown node \(slice.node)")
                    continue
                }
                host[ni, default: (0, 0)].cpu += slice.cpuMilli ?? 0
                host[ni, default: (0, 0)].memory += slice.memoryMiB ?? 0
                for g in slice.gpus {
                    let bit = UInt64(1) << UInt64(g)
                    if let slot = alloc.mig {
                        let mask = migMask(slot, model: alloc.model)
                        if mask == 0 || migSeen[NodeGPU(node: ni, gpu: g), default: 0] & mask != 0 {
                            out.append(
                                "MIG instance \(slot) of job \(id) on GPU \(g) of \(slice.node) overlaps another"
                            )
                        }
                        migSeen[NodeGPU(node: ni, gpu: g), default: 0] |= mask
                        if !nodes[ni].sharers[g].contains(id) {
                            out.append("GPU \(g) of \(slice.node) does not record job \(id)")
                        }
                    } else if let share = alloc.share {
                        shares[NodeGPU(node: ni, gpu: g), default: 0] += share
                        if !nodes[ni].sharers[g].contains(id) {
                            out.append("GPU \(g) of \(slice.node) does not record job \(id)")
                        }
                    } else {
                        if (seen[slice.node] ?? 0) & bit != 0 {
                            out.append("GPU \(g) of \(slice.node) is given to two jobs")
                        }
                        if nodes[ni].holder[g] != id {
                            out.append("GPU \(g) of \(slice.node) does not record job \(id)")
                        }
                    }
                    seen[slice.node, default: 0] |= bit
                }
            }
        }
        for (ni, node) in nodes.enumerated() {
            let held = host[ni] ?? (0, 0)
            if held.cpu != node.cpuUsed || held.memory != node.memoryUsed {
                out.append(
                    "node \(node.name) records \(node.cpuUsed) milli-CPUs and \(node.memoryUsed) MiB used, jobs hold \(held.cpu) and \(held.memory)"
                )
            }
            for g in 0..<node.spec.gpus {
                let share = shares[NodeGPU(node: ni, gpu: g)] ?? 0
                if share != node.shareUsed[g] || share > 1000 || (share > 0 && node.holder[g] != nil) {
                    out.append(
                        "GPU \(g) of \(node.name) records \(node.shareUsed[g]) thousandths shared, jobs hold \(share)"
                    )
                }
                let mig = migSeen[NodeGPU(node: ni, gpu: g)] ?? 0
                if mig != node.migUsed[g] || (mig != 0 && (node.holder[g] != nil || share > 0)) {
                    out.append("GPU \(g) of \(node.name) records MIG slices \(node.migUsed[g]), jobs hold \(mig)")
                }
            }
        }
        let shared = nodes.reduce(0) { n, node in n + node.shareUsed.reduce(0) { $0 + ($1 > 0 ? 1 : 0) } }
        if shared != sharedGPUCount { out.append("\(sharedGPUCount) GPUs counted shared, \(shared) are") }
        for node in nodes where node.usedMask != (seen[node.name] ?? 0) {
            out.append("node \(node.name) marks GPUs used that no active job holds")
        }
        for job in jobs {
            let id = job.id
            let queued = pendingJobs.contains(id)
            let waiting = dependencies.waiting.contains(id)
            if (job.state == .pending) != (queued || waiting) || (queued && waiting) {
                out.append("job \(id) pending set mismatch")
            }
            // Queued jobs and those waiting under their array's limit have their dependencies met.
            let throttled = dependencies.throttled.contains(id)
            if throttled && !waiting { out.append("job \(id) waits for its array's limit outside the waiting set") }
            if (!waiting || throttled) != (dependencyStatus(of: id) == .met) && job.state == .pending {
                out.append(
                    "job \(id) \(waiting ? "waits for dependencies that are met" : "is queued before its dependencies are met")"
                )
            }
            if job.state.holdsGPUs != activeJobs.contains(id) { out.append("job \(id) active set mismatch") }
        }
        if !freePool.indexesTheSame(as: FreePool(models: config.gpuModels.count, nodes: nodes)) {
            out.append("the free-GPU index differs from the nodes")
        }
        for row in pendingJobs.rows {
            guard let job = jobs[row.id] else {
                out.append("pending row for missing job \(row.id)")
                continue
            }
            if row.gpus != job.spec.gpus || row.submitTime != job.submitTime.seconds || row.kind != job.spec.kind {
                out.append("pending row of job \(row.id) does not match the job")
            }
        }
        return out
    }
}

extension ClusterState {
    /// The GPUs shared by share jobs, by model index, in node and GPU order.
    func sharedGPUs(models: Int) -> [[NodeGPU]] {
        var out = [[NodeGPU]](repeating: [], count: models)
        for (ni, node) in nodes.enumerated() {
            for g in 0..<node.spec.gpus where node.shareUsed[g] > 0 {
                out[node.modelIndex].append(NodeGPU(node: ni, gpu: g))
            }
        }
        return out
    }

}

/// Facts about the nodes that every pass needs, derived once when the nodes change (not per pass: a pass
/// must not walk a thousand nodes for them).
struct NodeTraits: Sendable {
    /// Whether any node declares its CPUs or memory.
    var tracksHost = false
    /// Whether any node takes no shares of GPUs.
    var anyNodeWithoutShares = false
    /// The models with a node that takes shares.
    var shareModels: UInt64 = 0
    /// Whether any node has MIG (a MIG job may then start with no GPU free).
    var anyMIGNode = false

    init() {}

    init(_ nodes: [Node]) {
        for node in nodes {
            if node.spec.cpus != nil || node.spec.memoryGiB != nil { tracksHost = true }
            if node.spec.mig != .off { anyMIGNode = true }
            if node.spec.sharing == .off {
                anyNodeWithoutShares = true
            } else {
                shareModels |= 1 << UInt64(node.modelIndex)
            }
        }
    }
}
