extension Scheduler {
    /// GPUs that are idle although pending jobs could use them now: what a greedy pass — every job in
    /// priority order on whatever free GPUs fit it, ignoring reservations, budgets, quotas and the inference
    /// reserve — would fill. The simulator's measure of waste.
    public static func usableIdleGPUs(_ state: ClusterState, at now: Instant) -> Int {
        var pool = state.freePool
        let ctx = PassContext(state: state, policy: .backfill)
        let rows = state.pendingJobs.rows
        var filled = 0
        var memo = [Int](repeating: .max, count: ctx.allowed.count * 3)
        for p in Scheduler(policy: .backfill).rankedPending(state, at: now) {
            let row = rows[p.slot]
            let key = Int(row.constraint) * 3 + row.topology.ordinal
            if row.gpus >= memo[key] { continue }
            let allowed = ctx.allowed[Int(row.constraint)]
            var placed = false
            for i in allowed.setBits where pool.place(model: i, count: row.gpus, topology: row.topology) != nil {
                placed = true
                filled += row.gpus
                break
            }
            if !placed { memo[key] = min(memo[key], row.gpus) }
            if (0..<ctx.modelCount).allSatisfy({ pool.freeGPUs(model: $0) == 0 }) { break }
        }
        return filled
    }
}

extension Scheduler {
    /// What would keep a job with `spec` from ever starting in this pool, whatever runs: no GPU model meets
    /// its constraints, or it wants more GPUs (on one node, one NVLink island, or of one model) than the pool
    /// has. Nil when it could start once enough GPUs are free. Daemons refuse such jobs at submit time.
    public static func permanentBlocker(for spec: JobSpec, in state: ClusterState) -> Blocker? {
        let models = state.config.gpuModels
        var allowed = PassContext.mask(models, spec.gpuModels, spec.minGPUMemoryGiB)
        if spec.isMIG {
            if let b = migBlocker(for: spec, allowed: allowed, in: state) { return b }
            // Its instance's CPUs and memory must fit beside it on a MIG node of an allowed model.
            var withMIG: UInt64 = 0
            for n in state.nodes where n.spec.mig != .off { withMIG |= 1 << UInt64(n.modelIndex) }
            let cheapest = (allowed & withMIG).setBits.flatMap { spec.migProfiles(on: models[$0]) }
                .map(MIGTable.priceMilli).min()
            return state.hostNeverFits(
                cpuMilli: spec.cpuMilli,
                memoryMiB: spec.memoryMiB,
                gpus: 1,
                share: cheapest ?? 0,
                topology: .any,
                allowed: allowed & withMIG
            )
        }
        for i in allowed.setBits where spec.shareMilli(on: models[i]) == 0 { allowed &= ~(1 << UInt64(i)) }
        if spec.isShare { allowed &= state.nodeTraits.shareModels }
        if allowed == 0 { return .noModelAllowed }
        var pool = state.freePool
        if let s = spec.nodes {
            // What the pool could ever offer it: the nodes it may use, whatever their state.
            let admitted = zip(state.nodes, s.admits(state.nodes)).filter(\.1).map(\.0)
            var withNode: UInt64 = 0
            for n in admitted { withNode |= 1 << UInt64(n.modelIndex) }
            if allowed & withNode == 0 { return .noNodeSelected(s.description) }
            allowed &= withNode
            pool = FreePool(models: models.count, nodes: admitted)
        }
        let holding = models.indices.filter { i in
            allowed & (1 << UInt64(i)) != 0 && spec.gpus <= largestHold(model: i, topology: spec.topology, pool)
        }
        guard !holding.isEmpty else {
            let largest =
                models.indices.filter { allowed & (1 << UInt64($0)) != 0 }
                .map { largestHold(model: $0, topology: spec.topology, pool) }.max() ?? 0
            return spec.topology == .any
                ? .exceedsPool(needed: spec.gpus, total: largest)
                : .exceedsNodeSize(needed: spec.gpus, largest: largest)
        }
        if let b = state.hostNeverFits(
            cpuMilli: spec.cpuMilli,
            memoryMiB: spec.memoryMiB,
            gpus: spec.gpus,
            share: spec.gpuShare ?? 0,
            topology: spec.topology,
            allowed: allowed
        ) {
            return b
        }
        if let limit = spec.maxCostUSD {
            let priced = holding.map { i in
                let seconds = state.expectedSeconds(of: spec, on: models[i])
                return (i, seconds, models[i].pricePerHour * Double(spec.gpus) * seconds / 3600)
            }
            if let (i, seconds, cheapest) = priced.min(by: { $0.2 < $1.2 }), cheapest > limit {
                return .maxCostBelowAnyPrice(
                    cheapestUSD: cheapest,
                    model: models[i].name,
                    expectedSeconds: seconds,
                    limitUSD: limit
                )
            }
        }
        return nil
    }

    /// The most GPUs of model `i` one job with `topology` could ever get in this pool.
    private static func largestHold(model i: Int, topology: Topology, _ pool: FreePool) -> Int {
        guard i < pool.capacity.count else { return 0 }
        switch topology {
        case .any: return pool.capacity[i]
        case .singleNode: return pool.maxK[i]
        case .nvlink: return pool.largestIsland[i]
        }
    }

    /// How a job's walltime fits the models it may use that could ever hold it; nil when it has no walltime
    /// or every such model is expected to finish it in time. The pass does not place a job where it would
    /// outrun its walltime while another model could meet it.
    public static func walltimeFit(for spec: JobSpec, in state: ClusterState) -> WalltimeFit? {
        // A job of CPUs only runs no faster on one model's nodes than another's.
        guard let walltime = spec.walltime, spec.gpus > 0 else { return nil }
        let models = state.config.gpuModels
        let pool = state.freePool
        var fit = WalltimeFit(walltime: walltime)
        for i in state.allowedModels(for: spec)
        where spec.gpus <= largestHold(model: i, topology: spec.topology, pool) {
            let expected = state.expectedSeconds(of: spec, on: models[i])
            if expected > walltime {
                fit.late.append((models[i].name, expected))
            } else {
                fit.inTime.append(models[i].name)
            }
        }
        return fit.late.isEmpty ? nil : fit
    }
}

/// Which GPU models can finish a job within its walltime (see ``Scheduler/walltimeFit(for:in:)``).
public struct WalltimeFit: Sendable {
    public var walltime: Seconds
    /// Models expected to finish it in time.
    public var inTime: [String] = []
    /// Models on which it is expected to outrun its walltime, with the expected run time there.
    public var late: [(model: String, expected: Seconds)] = []

    /// A sentence for `why` and for the warning at submit.
    public var sentence: String {
        let w = DurationText.format(walltime)
        let lateText = late.map { "\($0.model) (expected \(DurationText.format($0.expected)))" }
            .joined(separator: ", ")
        if inTime.isEmpty {
            let best = late.min { $0.expected < $1.expected }!
            return
                "no GPU model it may use can finish it within its walltime \(w): the fastest, \(best.model), is expected to take \(DurationText.format(best.expected)), so it will be stopped at its walltime; raise --walltime (or give --estimate if it runs shorter)"
        }
        return
            "its walltime \(w) rules out \(lateText): it waits for \(inTime.joined(separator: ", ")), which can finish it in time"
    }
}

extension ClusterState {
    /// ``Blocker/exceedsNodeResources(cpuMilli:memoryMiB:)`` when no set of nodes of one allowed model could
    /// ever hold a job's CPUs and memory beside its GPUs, even idle; nil when some could (or the job asks for
    /// neither, or no node declares them).
    func hostNeverFits(
        cpuMilli: Int?,
        memoryMiB: Int?,
        gpus: Int,
        share: Int,
        topology: Topology,
        allowed: UInt64
    ) -> Blocker? {
        guard cpuMilli != nil || memoryMiB != nil else { return nil }
        if gpus == 0 {
            // CPUs and memory only: one node must hold them.
            for node in nodes where allowed & (1 << UInt64(node.modelIndex)) != 0 {
                if (cpuMilli ?? 0) <= (node.cpuCapacity ?? .max) && (memoryMiB ?? 0) <= (node.memoryCapacity ?? .max) {
                    return nil
                }
            }
            return .exceedsNodeResources(cpuMilli: cpuMilli, memoryMiB: memoryMiB)
        }
        var total = [Int](repeating: 0, count: config.gpuModels.count)
        for node in nodes where allowed & (1 << UInt64(node.modelIndex)) != 0 {
            // The most of the job's GPUs this node could hold, idle.
            var k = min(gpus, node.spec.gpus)
            while k > 0 {
                let need = node.hostResources(
                    cpuMilli: cpuMilli,
                    memoryMiB: memoryMiB,
                    jobGPUs: gpus,
                    gpus: k,
                    worth: share > 0 ? Double(share) / 1000 : Double(k)
                )
                if (need.cpuMilli ?? 0) <= (node.cpuCapacity ?? .max)
                    && (need.memoryMiB ?? 0) <= (node.memoryCapacity ?? .max)
                {
                    break
                }
                k -= 1
            }
            if topology != .any && k >= gpus { return nil }
            total[node.modelIndex] += k
        }
        if topology == .any && total.contains(where: { $0 >= gpus }) { return nil }
        return .exceedsNodeResources(cpuMilli: cpuMilli, memoryMiB: memoryMiB)
    }
}

extension Scheduler {
    /// For a MIG job: ``Blocker/noMIGProfile(detail:)`` when no node of an allowed model offers one of its
    /// profiles (with MIG off everywhere, or a static layout without them).
    static func migBlocker(for spec: JobSpec, allowed: UInt64, in state: ClusterState) -> Blocker? {
        let models = state.config.gpuModels
        var offers: [String] = []
        for m in allowed.setBits {
            let nodes = state.nodes.filter { $0.modelIndex == m && $0.spec.mig != .off }
            if nodes.isEmpty { continue }
            let profiles = spec.migProfiles(on: models[m])
            if nodes.contains(where: { n in
                n.spec.mig == .dynamic ? !profiles.isEmpty : n.spec.migLayout.contains { spec.mig.contains($0.profile) }
            }) {
                return nil
            }
            var names = Set(nodes.flatMap { $0.spec.migLayout.map(\.profile) })
            if nodes.contains(where: { $0.spec.mig == .dynamic }) {
                names.formUnion(models[m].mig?.profiles.map(\.name) ?? [])
            }
            let ordered = models[m].mig?.profiles.map(\.name).filter(names.contains) ?? []
            offers.append("\(models[m].name): \(ordered.joined(separator: ", "))")
        }
        let wants = "MIG \(spec.mig.joined(separator: " or "))"
        return .noMIGProfile(
            detail: offers.isEmpty
                ? "no node of an allowed GPU model has MIG (mig = \"dynamic\" or \"static\"), and the job asks for \(wants)"
                : "no MIG node offers \(wants) (offered: \(offers.joined(separator: "; ")))"
        )
    }
}
