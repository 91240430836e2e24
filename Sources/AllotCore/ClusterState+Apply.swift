extension ClusterState {
    /// Applies one event.
    ///
    /// Pure and total: every check comes before any change, so a refused event leaves the state as it was.
    /// - Throws: ``StateError`` naming what does not fit (an unknown job, an illegal transition, a GPU
    ///   already held, …).
    public mutating func apply(_ event: Event) throws(StateError) {
        let t = max(event.time, now)
        switch event.body {
        case .configApplied(let config):
            try applyConfig(config, at: t)
        case .nodeAdded(let spec):
            let problems = spec.problems()
            if let first = problems.first { throw StateError(.invalidSpec, first) }
            if nodeIndex[spec.name] != nil { throw StateError(.duplicate, "node \(spec.name) already exists") }
            guard let mi = modelIndex[spec.gpuModel] else {
                throw StateError(
                    .unknownModel,
                    "node \(spec.name) names GPU model \(spec.gpuModel), which the config does not declare"
                )
            }
            nodeIndex[spec.name] = nodes.count
            nodes.append(Node(spec: spec, modelIndex: mi))
            rebuildFreePool()
        case .nodeRemoved(let name):
            let ni = try nodePosition(name)
            if nodes[ni].usedMask != 0 {
                throw StateError(
                    .nodeBusy,
                    "node \(name) still runs jobs; drain it and wait for them to end before removing it"
                )
            }
            nodes.remove(at: ni)
            nodeIndex = [:]
            for (i, n) in nodes.enumerated() { nodeIndex[n.name] = i }
            rebuildFreePool()
        case .nodeStateChanged(let name, let state, let reason):
            let ni = try nodePosition(name)
            nodes[ni].state = (state == .draining && nodes[ni].usedMask == 0) ? .drained : state
            nodes[ni].stateReason = reason
            refreshFree(node: ni)
        case .gpuHealthChanged(let name, let gpu, let health, let reason):
            let ni = try nodePosition(name)
            guard gpu >= 0, gpu < nodes[ni].spec.gpus else {
                throw StateError(.invalidSpec, "node \(name) has GPUs 0...\(nodes[ni].spec.gpus - 1), not GPU \(gpu)")
            }
            nodes[ni].health[gpu] = health
            nodes[ni].healthReason[gpu] = health == .healthy ? nil : reason
            let bit = UInt64(1) << UInt64(gpu)
            if health == .healthy { nodes[ni].unhealthyMask &= ~bit } else { nodes[ni].unhealthyMask |= bit }
            refreshFree(node: ni)
        case .jobSubmitted(let id, let spec, let held):
            if jobs[id] != nil { throw StateError(.duplicate, "job \(id) already exists") }
            if let problem = Self.specProblems(spec).first { throw StateError(.invalidSpec, problem) }
            jobs[id] = Job(id: id, spec: spec, submitTime: t, held: held)
            if !held { pendingJobs.insert(jobs[id]!) }
            if id >= nextJobID { nextJobID = JobID(id.rawValue + 1) }
        case .jobHeld(let id):
            try expect(id, in: [.pending], to: "hold")
            jobs[id]!.state = .held
            pendingJobs.remove(id)
        case .jobReleased(let id):
            try expect(id, in: [.held], to: "release")
            jobs[id]!.state = .pending
            pendingJobs.insert(jobs[id]!)
        case .jobStarted(let id, let allocation):
            try expect(id, in: [.pending], to: "start")
            let placed = try validate(allocation, for: jobs[id]!)
            start(id, allocation: allocation, nodes: placed, at: t)
        case .jobPreempted(let id, let by, let grace):
            try expect(id, in: [.running], to: "preempt")
            guard jobs[by] != nil else { throw StateError(.unknownJob, "preemptor job \(by) does not exist") }
            jobs[id]!.state = .stopping
            jobs[id]!.stopReason = .preempted(by: by)
            jobs[id]!.stopRequestedAt = t
            jobs[id]!.grace = grace
            jobs[id]!.preemptions += 1
        case .jobCancelled(let id, let by, let grace):
            let job = try expect(id, in: [.pending, .held, .running, .stopping], to: "cancel")
            switch job.state {
            case .pending, .held:
                jobs[id]!.state = .cancelled
                jobs[id]!.endTime = t
                jobs[id]!.stopReason = .cancelled(by: by)
                pendingJobs.remove(id)
            case .running:
                jobs[id]!.state = .stopping
                jobs[id]!.stopReason = .cancelled(by: by)
                jobs[id]!.stopRequestedAt = t
                jobs[id]!.grace = grace
            default:
                // Already stopping: it ends as cancelled, by the earlier of the two deadlines.
                jobs[id]!.stopReason = .cancelled(by: by)
                let oldDeadline = (job.stopRequestedAt ?? t) + (job.grace ?? grace)
                if t + grace < oldDeadline {
                    jobs[id]!.stopRequestedAt = t
                    jobs[id]!.grace = grace
                }
            }
        case .jobTimedOut(let id, let grace):
            try expect(id, in: [.running], to: "time out")
            jobs[id]!.state = .stopping
            jobs[id]!.stopReason = .walltime
            jobs[id]!.stopRequestedAt = t
            jobs[id]!.grace = grace
        case .jobFinished(let id, let exit):
            let job = try expect(id, in: [.running, .stopping], to: "finish")
            release(id, at: t)
            jobs[id]!.exit = exit
            switch job.stopReason {
            case .preempted?:
                requeue(id, note: job.stopReason!.description)
            case .cancelled?:
                finish(id, as: .cancelled, at: t)
            case .walltime?:
                finish(id, as: .timedOut, at: t)
            case nil:
                if case .exited(code: 0) = exit {
                    finish(id, as: .completed, at: t)
                } else {
                    finish(id, as: .failed, at: t)
                    jobs[id]!.note = exit.description
                }
            }
        case .jobRequeued(let id, let reason):
            try expect(id, in: [.running, .stopping], to: "requeue")
            release(id, at: t)
            requeue(id, note: reason)
        case .clockTick:
            break
        }
        now = t
    }

    /// Applies events in order, stopping at the first refused one.
    public mutating func apply(_ events: some Sequence<Event>) throws(StateError) {
        for e in events { try apply(e) }
    }

    /// Problems with a job spec on its own; empty when it is valid.
    public static func specProblems(_ spec: JobSpec) -> [String] {
        var out: [String] = []
        if spec.gpus < 1 { out.append("a job needs at least 1 GPU, not \(spec.gpus)") }
        if spec.gpus > 65_536 { out.append("a job may ask for at most 65536 GPUs, not \(spec.gpus)") }
        if spec.tenant.isEmpty { out.append("a job needs a tenant") }
        if let w = spec.walltime, !(w > 0) { out.append("walltime must be > 0, not \(w)") }
        if let e = spec.estimate, !(e > 0) { out.append("estimate must be > 0, not \(e)") }
        if let g = spec.grace, !(g >= 0) { out.append("grace must be >= 0, not \(g)") }
        if let m = spec.maxCostUSD, !(m >= 0) { out.append("max cost must be >= 0, not \(m)") }
        if let m = spec.minGPUMemoryGiB, !(m >= 0) { out.append("minimum GPU memory must be >= 0, not \(m)") }
        return out
    }

    // MARK: Helpers

    func nodePosition(_ name: String) throws(StateError) -> Int {
        guard let i = nodeIndex[name] else { throw StateError(.unknownNode, "node \(name) does not exist") }
        return i
    }

    @discardableResult
    func expect(_ id: JobID, in states: [JobState], to verb: String) throws(StateError) -> Job {
        guard let job = jobs[id] else { throw StateError(.unknownJob, "job \(id) does not exist") }
        guard states.contains(job.state) else {
            throw StateError(.illegalTransition, "cannot \(verb) job \(id): it is \(job.state.rawValue)")
        }
        return job
    }

    /// Checks an allocation against the job and the nodes.
    /// - Returns: the node positions of its slices.
    func validate(_ a: Allocation, for job: Job) throws(StateError) -> [Int] {
        func bad(_ s: String) -> StateError { StateError(.invalidAllocation, "cannot start job \(job.id): \(s)") }
        guard let mi = modelIndex[a.model] else { throw bad("GPU model \(a.model) is not declared") }
        guard a.gpuCount == job.spec.gpus else {
            throw bad("it asks for \(job.spec.gpus) GPUs, the allocation has \(a.gpuCount)")
        }
        guard allowedModels(for: job.spec).contains(mi) else {
            throw bad("its constraints do not allow GPU model \(a.model)")
        }
        if job.spec.topology != .any && a.slices.count != 1 {
            throw bad("its topology is \(job.spec.topology.rawValue), the allocation spans \(a.slices.count) nodes")
        }
        var positions: [Int] = []
        var seenNodes = Set<Int>()
        for slice in a.slices {
            guard let ni = nodeIndex[slice.node] else { throw bad("node \(slice.node) does not exist") }
            guard seenNodes.insert(ni).inserted else { throw bad("node \(slice.node) appears twice") }
            let node = nodes[ni]
            guard node.modelIndex == mi else {
                throw bad("node \(slice.node) has \(node.spec.gpuModel) GPUs, not \(a.model)")
            }
            guard node.schedulable else { throw bad("node \(slice.node) is \(node.state.rawValue)") }
            guard !slice.gpus.isEmpty else { throw bad("the slice on \(slice.node) is empty") }
            var mask: UInt64 = 0
            for g in slice.gpus {
                guard g >= 0, g < node.spec.gpus else { throw bad("node \(slice.node) has no GPU \(g)") }
                let bit = UInt64(1) << UInt64(g)
                guard mask & bit == 0 else { throw bad("GPU \(g) of \(slice.node) is listed twice") }
                mask |= bit
                if let holder = node.holder[g] { throw bad("GPU \(g) of \(slice.node) is held by job \(holder)") }
                guard node.health[g] == .healthy else { throw bad("GPU \(g) of \(slice.node) is unhealthy") }
            }
            if job.spec.topology == .nvlink && !node.islandMasks.contains(where: { $0 & mask == mask }) {
                throw bad(
                    "its topology is nvlink, and GPUs \(Allocation.ranges(slice.gpus)) of \(slice.node) are not in one NVLink island"
                )
            }
            positions.append(ni)
        }
        return positions
    }

    mutating func start(_ id: JobID, allocation a: Allocation, nodes placed: [Int], at t: Instant) {
        for (slice, ni) in zip(a.slices, placed) {
            for g in slice.gpus {
                nodes[ni].holder[g] = id
                nodes[ni].usedMask |= UInt64(1) << UInt64(g)
            }
            refreshFree(node: ni)
        }
        let price = config.gpuModels[modelIndex[a.model]!].pricePerHour
        let rate = price / 3600 * Double(a.gpuCount)
        var job = jobs[id]!
        job.state = .running
        job.allocation = a
        job.startTime = t
        if job.firstStartTime == nil { job.firstStartTime = t }
        job.runs += 1
        job.costRate = rate
        job.stopReason = nil
        job.stopRequestedAt = nil
        job.grace = nil
        job.exit = nil
        jobs[id] = job
        pendingJobs.remove(id)
        activeJobs.insert(id)
        let halfLife = config.scheduler.fairshareHalfLife
        tenantUsage[job.spec.tenant, default: TenantUsage()].usage.start(gpus: a.gpuCount, costPerSecond: rate, at: t)
        tenantUsage[job.spec.tenant]!.decayed.changeRate(by: Double(a.gpuCount), at: t, halfLife: halfLife)
        modelUsage[a.model, default: Usage()].start(gpus: a.gpuCount, costPerSecond: rate, at: t)
        kindUsage[job.spec.kind, default: Usage()].start(gpus: a.gpuCount, costPerSecond: rate, at: t)
    }

    /// Frees a running or stopping job's GPUs and settles its accounting.
    mutating func release(_ id: JobID, at t: Instant) {
        var job = jobs[id]!
        let a = job.allocation!
        for slice in a.slices {
            let ni = nodeIndex[slice.node]!
            for g in slice.gpus {
                nodes[ni].holder[g] = nil
                nodes[ni].usedMask &= ~(UInt64(1) << UInt64(g))
            }
            if nodes[ni].state == .draining && nodes[ni].usedMask == 0 { nodes[ni].state = .drained }
            refreshFree(node: ni)
        }
        let ran = max(0, t - (job.startTime ?? t))
        job.pastRunSeconds += ran
        job.pastGPUSeconds += ran * Double(a.gpuCount)
        job.pastCostUSD += ran * job.costRate
        let rate = job.costRate
        job.costRate = 0
        job.endTime = t
        jobs[id] = job
        activeJobs.remove(id)
        let halfLife = config.scheduler.fairshareHalfLife
        tenantUsage[job.spec.tenant]!.usage.stop(gpus: a.gpuCount, costPerSecond: rate, at: t)
        tenantUsage[job.spec.tenant]!.decayed.changeRate(by: -Double(a.gpuCount), at: t, halfLife: halfLife)
        modelUsage[a.model]!.stop(gpus: a.gpuCount, costPerSecond: rate, at: t)
        kindUsage[job.spec.kind]!.stop(gpus: a.gpuCount, costPerSecond: rate, at: t)
    }

    mutating func requeue(_ id: JobID, note: String) {
        jobs[id]!.state = .pending
        jobs[id]!.allocation = nil
        jobs[id]!.endTime = nil
        jobs[id]!.stopReason = nil
        jobs[id]!.stopRequestedAt = nil
        jobs[id]!.grace = nil
        jobs[id]!.note = note
        pendingJobs.insert(jobs[id]!)
    }

    mutating func finish(_ id: JobID, as state: JobState, at t: Instant) {
        jobs[id]!.state = state
        jobs[id]!.endTime = t
    }

    mutating func applyConfig(_ new: PoolConfig, at t: Instant) throws(StateError) {
        if let problem = new.problems().first { throw StateError(.invalidConfig, problem) }
        let newIndex = Self.index(new.gpuModels)
        for node in nodes where newIndex[node.spec.gpuModel] == nil {
            throw StateError(.invalidConfig, "GPU model \(node.spec.gpuModel) is still used by node \(node.name)")
        }
        // Settle decayed usage under the old half-life before a new one takes over.
        let oldHalfLife = config.scheduler.fairshareHalfLife
        for name in tenantUsage.keys {
            tenantUsage[name]!.decayed.changeRate(by: 0, at: t, halfLife: oldHalfLife)
        }
        config = new
        modelIndex = newIndex
        for i in nodes.indices { nodes[i].modelIndex = newIndex[nodes[i].spec.gpuModel]! }
        rebuildFreePool()
    }
}
