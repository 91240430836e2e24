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
            if jobs.contains(id) { throw StateError(.duplicate, "job \(id) already exists") }
            guard jobs.accepts(id) else {
                throw StateError(
                    .invalidSpec,
                    "job id \(id) is out of order: ids are handed out in order, the next is \(nextJobID)"
                )
            }
            if let problem = Self.specProblems(spec).first ?? dependencyProblems(spec, id: id).first {
                throw StateError(.invalidSpec, problem)
            }
            if let name = spec.service, services[name] == nil {
                throw StateError(.invalidSpec, "job \(id) is a replica of service \(name), which does not exist")
            }
            jobs[id] = Job(id: id, spec: spec, submitTime: t, held: held)
            noteName(of: id)
            noteRequest(of: spec, id: id)
            if !held { enqueue(id) }
            if id >= nextJobID { nextJobID = JobID(id.rawValue + 1) }
        case .jobHeld(let id):
            try expect(id, in: [.pending], to: "hold")
            jobs[existing: id].state = .held
            jobs[existing: id].heldGPUs = []
            holding.remove(id)
            dequeue(id)
            leaveArray(id)
        case .jobReleased(let id):
            try expect(id, in: [.held], to: "release")
            jobs[existing: id].state = .pending
            enqueue(id)
        case .jobStarted(let id, let allocation, let note, let loans):
            try expect(id, in: [.pending], to: "start")
            let placed = try validate(allocation, for: id)
            if dependencies.throttled.contains(id) { activate(id) }
            dequeue(id)
            start(id, allocation: allocation, nodes: placed, at: t)
            jobs[existing: id].placement = note
            jobs[existing: id].loans = loans
            jobs[existing: id].heldGPUs = []
            holding.remove(id)
            dependencyMoved(id)
        case .jobPreempted(let id, let by, let grace, let reason):
            try expect(id, in: [.running], to: "preempt")
            guard jobs.contains(by) else { throw StateError(.unknownJob, "preemptor job \(by) does not exist") }
            guard reason != .migration || by == id else {
                throw StateError(.invalidSpec, "job \(id) moves by itself, not by job \(by)")
            }
            guard reason != .resize || jobs[existing: id].spec.isElastic else {
                throw StateError(.invalidSpec, "job \(id) is not elastic: it does not grow")
            }
            Self.stop(&jobs[existing: id], .preempted(by: by, reason: reason), at: t, grace: grace)
            if reason == .migration {
                jobs[existing: id].moves += 1
            } else if reason == .resize {
                // A growth, or giving back GPUs it grew into (by another job), is neither a move nor a
                // preemption.
            } else {
                jobs[existing: id].preemptions += 1
                jobs[existing: id].moves = 0
            }
        case .jobGPUsHeld(let id, let slices):
            try expect(id, in: [.stopping], to: "hold GPUs for")
            let job = jobs[existing: id]
            guard case .preempted(let by, let reason)? = job.stopReason,
                reason == .migration || reason == .resize || (by != id && job.spec.isElastic)
            else {
                throw StateError(
                    .illegalTransition,
                    "GPUs are held only for a job moving to them or an elastic job resizing, and job \(id) is neither"
                )
            }
            for slice in slices {
                let ni = try nodePosition(slice.node)
                for g in slice.gpus {
                    // Free, or its own (an elastic job keeps some of its GPUs).
                    guard g >= 0, g < nodes[ni].spec.gpus,
                        nodes[ni].usedMask & (1 << UInt64(g)) == 0 || nodes[ni].holder[g] == id
                    else {
                        throw StateError(
                            .invalidAllocation,
                            "GPU \(g) of node \(slice.node) is not free to hold for job \(id)"
                        )
                    }
                }
            }
            jobs[existing: id].heldGPUs = slices
            holding.insert(id)
        case .jobCheckpointed(let id):
            try expect(id, in: [.running, .stopping], to: "checkpoint")
            jobs[existing: id].lastCheckpoint = t
        case .jobCancelled(let id, let by, let grace):
            let state = try expect(id, in: [.pending, .held, .running, .stopping], to: "cancel")
            switch state {
            case .pending, .held:
                if by == nil, dependencies.never.contains(id), case .never(let why) = dependencyStatus(of: id) {
                    jobs[existing: id].note = "its dependency can never be met: \(why)"
                }
                Self.end(&jobs[existing: id], as: .cancelled, at: t)
                jobs[existing: id].heldGPUs = []
                holding.remove(id)
                jobs[existing: id].stopReason = .cancelled(by: by)
                dequeue(id)
                dependencyMoved(id)
                leaveArray(id)
            case .running:
                Self.stop(&jobs[existing: id], .cancelled(by: by), at: t, grace: grace)
            default:
                // Already stopping: it ends as cancelled, by the earlier of the two deadlines.
                Self.recancel(&jobs[existing: id], by: by, at: t, grace: grace)
            }
        case .jobTimedOut(let id, let grace):
            try expect(id, in: [.running], to: "time out")
            Self.stop(&jobs[existing: id], .walltime, at: t, grace: grace)
        case .jobsArchived(let ids):
            for id in ids {
                guard let job = jobs[id] else { throw StateError(.unknownJob, "job \(id) does not exist") }
                guard job.state.isTerminal else {
                    throw StateError(.illegalTransition, "cannot archive job \(id): it is \(job.state.rawValue)")
                }
            }
            guard Set(ids).count == ids.count else { throw StateError(.duplicate, "a job is archived twice") }
            for id in ids {
                archived.add(jobs[existing: id], at: t)
                forgetRequest(of: jobs[existing: id].spec, id: id)
                jobs[id] = nil
            }
        case .jobRequeueing(let id, let by, let grace):
            try expect(id, in: [.running], to: "requeue")
            Self.stop(&jobs[existing: id], .requeued(by: by), at: t, grace: grace)
        case .jobGPUFailed(let id, let reason, let grace):
            try expect(id, in: [.running], to: "stop for a failed GPU")
            Self.stop(&jobs[existing: id], .gpuFailed(reason: reason), at: t, grace: grace)
        case .jobFinished(let id, let exit, let endedAt):
            try expect(id, in: [.running, .stopping], to: "finish")
            holdForPreemptor(id)
            let start = jobs[existing: id].startTime ?? t
            let end = endedAt.map { min(max($0, start), t) } ?? t
            release(id, at: t, ranUntil: end)
            if Self.finish(&jobs[existing: id], exit: exit, at: end) {
                enqueue(id)
            } else {
                jobs[existing: id].heldGPUs = []
                holding.remove(id)
                dependencyMoved(id)
                leaveArray(id)
            }
        case .jobRequeued(let id, let reason):
            let was = try expect(
                id,
                in: [.running, .stopping, .completed, .failed, .cancelled, .timedOut],
                to: "requeue"
            )
            if was.holdsGPUs {
                holdForPreemptor(id)
                release(id, at: t)
                Self.requeue(&jobs[existing: id], note: reason, at: t)
            } else {
                // An ended job: its last run goes to its history as it ended, and it waits again.
                let ended = Self.endText(jobs[existing: id])
                let end = jobs[existing: id].endTime ?? t
                let ran = jobs[existing: id].startTime != nil
                Self.requeue(&jobs[existing: id], note: reason, at: end)
                if ran { jobs[existing: id].history[jobs[existing: id].history.count - 1].ended = ended }
                jobs[existing: id].exit = nil
                noteName(of: id)
            }
            enqueue(id)
        case .jobUpdated(let id, let spec, _):
            let state = try expect(id, in: [.pending, .held, .running, .stopping], to: "update")
            let old = jobs[existing: id].spec
            guard spec.uid == old.uid, spec.array == old.array, spec.service == old.service else {
                throw StateError(.invalidSpec, "job \(id)'s owner, place in its array and service do not change")
            }
            if state.holdsGPUs {
                var same = spec
                same.walltime = old.walltime
                guard same == old else {
                    throw StateError(.illegalTransition, "job \(id) is \(state.rawValue): only its walltime may change")
                }
            }
            if let problem = Self.specProblems(spec).first ?? dependencyProblems(spec, id: id).first {
                throw StateError(.invalidSpec, problem)
            }
            let queued = state == .pending
            if queued {
                dequeue(id)
                jobs[existing: id].heldGPUs = []
                holding.remove(id)
            }
            if spec.name != old.name, !dependencies.byName.isEmpty {
                dependencies.byName[NameKey(uid: old.uid, name: old.name)]?.remove(id)
            }
            jobs[existing: id].spec = spec
            noteName(of: id)
            if queued { enqueue(id) }
        case .clockTick:
            break
        case .serviceCreated, .serviceScaled, .serviceDeleted, .serviceUpdated, .serviceRolloutHalted:
            try applyService(event.body, at: t)
        }
        if !services.isEmpty, let id = event.body.jobID { noteReplica(id, at: t) }
        now = t
    }

    /// Applies events in order, stopping at the first refused one.
    public mutating func apply(_ events: some Sequence<Event>) throws(StateError) {
        for e in events { try apply(e) }
    }

    /// Problems with a job spec on its own; empty when it is valid.
    public static func specProblems(_ spec: JobSpec) -> [String] {
        var out: [String] = []
        if spec.gpus < 0 { out.append("a job needs 0 GPUs or more, not \(spec.gpus)") }
        if spec.gpus == 0 {
            if spec.isShare || spec.isMIG { out.append("a job of 0 GPUs takes no share of a GPU or MIG instance") }
            if spec.topology != .any { out.append("a job of 0 GPUs takes no topology (\(spec.topology.rawValue))") }
        }
        if spec.gpus > 65_536 { out.append("a job may ask for at most 65536 GPUs, not \(spec.gpus)") }
        if let most = spec.maxGPUs {
            let range = "\(spec.gpus)-\(most)"
            if most <= spec.gpus || spec.gpus < 1 {
                out.append("an elastic job's GPUs are a range from 1 up, fewest first (e.g. 4-16), not \(range)")
            } else if most > 65_536 {
                out.append("a job may ask for at most 65536 GPUs, not \(most)")
            } else if spec.kind != .training || spec.isShare || spec.isMIG {
                out.append("only training on whole GPUs is elastic: \(range) GPUs for a \(spec.kind.rawValue) job")
            } else if let step = spec.gpuStep, step < 1 || (most - spec.gpus) % step != 0 {
                out.append("the GPU step \(step) must be at least 1 and lead from \(spec.gpus) to \(most) GPUs")
            }
        } else if let step = spec.gpuStep {
            out.append("a GPU step (\(step)) is for an elastic job, whose GPUs are a range such as 4-16")
        }
        if !spec.speeds.isEmpty {
            if spec.kind != .training {
                out.append("speeds per GPU model are for training jobs, not \(spec.kind.rawValue)")
            }
            for (m, v) in spec.speeds.sorted(by: { $0.key < $1.key }) where !(v > 0) || !v.isFinite {
                out.append("the speed on \(m) must be above 0, not \(v)")
            }
        }
        if spec.tenant.isEmpty { out.append("a job needs a tenant") }
        if let w = spec.walltime, !(w > 0) { out.append("walltime must be > 0, not \(w)") }
        if let e = spec.estimate, !(e > 0) { out.append("estimate must be > 0, not \(e)") }
        if let g = spec.grace, !(g >= 0) { out.append("grace must be >= 0, not \(g)") }
        if let m = spec.maxCostUSD, !(m >= 0) { out.append("max cost must be >= 0, not \(m)") }
        if let m = spec.minGPUMemoryGiB, !(m >= 0) { out.append("minimum GPU memory must be >= 0, not \(m)") }
        if let c = spec.cpuMilli, c < 1 { out.append("CPUs must be above 0, not \(Fraction.text(c))") }
        if let m = spec.memoryMiB, m < 1 { out.append("memory must be above 0, not \(m) MiB") }
        if let s = spec.gpuShare, !(1...999).contains(s) {
            out.append("a share of a GPU must be between 0.001 and 0.999 of it, not \(Fraction.text(max(0, s)))")
        }
        if let m = spec.gpuMemoryMiB, m < 1 { out.append("GPU memory must be above 0, not \(m) MiB") }
        if spec.isShare {
            if spec.gpus != 1 { out.append("a share is of one GPU; the job asks for \(spec.gpus)") }
            if spec.topology != .any { out.append("a share of one GPU takes no topology (\(spec.topology.rawValue))") }
        }
        if spec.isMIG {
            if spec.isShare { out.append("a job asks for a MIG instance or a share of a GPU, not both") }
            if spec.gpus != 1 { out.append("a MIG instance is one device; the job asks for \(spec.gpus) GPUs") }
            if spec.topology != .any { out.append("a MIG instance takes no topology (\(spec.topology.rawValue))") }
            if spec.mig.count > 8 { out.append("at most 8 acceptable MIG profiles, not \(spec.mig.count)") }
            for p in spec.mig where p.isEmpty || p.count > 32 { out.append("\"\(p)\" is not a MIG profile name") }
        }
        if !(-10_000...10_000).contains(spec.nice) {
            out.append("nice must be between -10000 and 10000, not \(spec.nice)")
        }
        if let n = spec.notify { out.append(contentsOf: n.problems) }
        if let s = spec.nodes {
            if s.nodes.count + s.exclude.count > NodeSelection.maxNodes {
                out.append("at most \(NodeSelection.maxNodes) nodes may be listed")
            }
            if !s.constraint.isEmpty, case .failure(let e) = LabelConstraint.parse(s.constraint) {
                out.append("constraint: \(e.message)")
            }
            if let both = s.nodes.first(where: { s.exclude.contains($0) }) {
                out.append("node \(both) is both in the nodelist and excluded")
            }
        }
        return out
    }

    // MARK: Helpers

    func nodePosition(_ name: String) throws(StateError) -> Int {
        guard let i = nodeIndex[name] else { throw StateError(.unknownNode, "node \(name) does not exist") }
        return i
    }

    /// Checks that a job exists and is in one of `states`.
    /// - Returns: its state.
    @discardableResult
    func expect(_ id: JobID, in states: [JobState], to verb: String) throws(StateError) -> JobState {
        guard jobs.contains(id) else { throw StateError(.unknownJob, "job \(id) does not exist") }
        let state = jobs[existing: id].state
        guard states.contains(state) else {
            throw StateError(.illegalTransition, "cannot \(verb) job \(id): it is \(state.rawValue)")
        }
        return state
    }

    /// When a job preempted for a pending job ends, its GPUs are held for that job — but for those it keeps
    /// for itself (an elastic job shrinking for it).
    mutating func holdForPreemptor(_ id: JobID) {
        guard case .preempted(let by, _)? = jobs[existing: id].stopReason, by != id, jobs.contains(by),
            jobs[existing: by].state == .pending, let a = jobs[existing: id].allocation
        else { return }
        let kept = jobs[existing: id].heldGPUs
        for slice in a.slices {
            let mine = Set(kept.filter { $0.node == slice.node }.flatMap(\.gpus))
            let given = slice.gpus.filter { !mine.contains($0) }
            if !given.isEmpty { jobs[existing: by].heldGPUs.append(Allocation.Slice(node: slice.node, gpus: given)) }
        }
        holding.insert(by)
    }

    static func stop(_ job: inout Job, _ reason: StopReason, at t: Instant, grace: Seconds) {
        job.state = .stopping
        job.stopReason = reason
        job.stopRequestedAt = t
        job.grace = grace
    }

    static func recancel(_ job: inout Job, by: UInt32?, at t: Instant, grace: Seconds) {
        job.stopReason = .cancelled(by: by)
        let oldDeadline = (job.stopRequestedAt ?? t) + (job.grace ?? grace)
        if t + grace < oldDeadline {
            job.stopRequestedAt = t
            job.grace = grace
        }
    }

    static func end(_ job: inout Job, as state: JobState, at t: Instant) {
        job.state = state
        job.endTime = t
    }

    /// Settles a finished job: its next state follows from why it was stopping.
    /// - Returns: whether it went back to pending.
    static func finish(_ job: inout Job, exit: ExitStatus, at t: Instant) -> Bool {
        job.exit = exit
        switch job.stopReason {
        case .preempted?, .requeued?:
            requeue(&job, note: job.stopText!, at: t)
            return true
        case .cancelled?:
            end(&job, as: .cancelled, at: t)
        case .walltime?:
            end(&job, as: .timedOut, at: t)
        case .gpuFailed(let reason)?:
            // Requeued instead (a `jobRequeued` event) when `on_gpu_failure` says so.
            end(&job, as: .failed, at: t)
            job.note = reason
        case nil:
            if case .exited(code: 0) = exit {
                end(&job, as: .completed, at: t)
            } else {
                end(&job, as: .failed, at: t)
                job.note = exit.description
            }
        }
        return false
    }

    /// Checks an allocation against the job and the nodes.
    /// - Returns: the node positions of its slices.
    func validate(_ a: Allocation, for id: JobID) throws(StateError) -> [Int] {
        func bad(_ s: String) -> StateError { StateError(.invalidAllocation, "cannot start job \(id): \(s)") }
        guard let mi = modelIndex[a.model] else { throw bad("GPU model \(a.model) is not declared") }
        let spec = jobs[existing: id].spec
        let gpus = spec.gpus
        let topology = spec.topology
        if spec.isElastic {
            guard spec.size(atMost: a.gpuCount) == a.gpuCount else {
                throw bad(
                    "it runs on \(gpus)-\(spec.maxGPUs ?? gpus) GPUs\(spec.gpuStep.map { " in steps of \($0)" } ?? ""), the allocation has \(a.gpuCount)"
                )
            }
        } else {
            guard a.gpuCount == gpus else { throw bad("it asks for \(gpus) GPUs, the allocation has \(a.gpuCount)") }
        }
        let share = jobs[existing: id].spec.shareMilli(on: config.gpuModels[mi])
        guard share != 0 else {
            throw bad(
                "its share of GPU memory does not fit a \(a.model) GPU (\(Blocker.trim(config.gpuModels[mi].memoryGiB)) GiB)"
            )
        }
        guard a.share == share else {
            throw bad(
                "it asks for \(share.map { "a share of \(Fraction.text($0))" } ?? "whole GPUs"), the allocation gives \(a.share.map { "a share of \(Fraction.text($0))" } ?? "whole GPUs")"
            )
        }
        let model = config.gpuModels[mi]
        let allowed = jobs[existing: id].spec.gpuModels
        let minMemory = jobs[existing: id].spec.minGPUMemoryGiB
        guard (allowed.isEmpty || allowed.contains(model.name)) && model.memoryGiB >= (minMemory ?? 0) else {
            throw bad("its constraints do not allow GPU model \(a.model)")
        }
        if topology != .any && a.slices.count != 1 {
            throw bad("its topology is \(topology.rawValue), the allocation spans \(a.slices.count) nodes")
        }
        var positions: [Int] = []
        positions.reserveCapacity(a.slices.count)
        for slice in a.slices {
            guard let ni = nodeIndex[slice.node] else { throw bad("node \(slice.node) does not exist") }
            guard !positions.contains(ni) else { throw bad("node \(slice.node) appears twice") }
            guard nodes[ni].modelIndex == mi else {
                throw bad("node \(slice.node) has \(nodes[ni].spec.gpuModel) GPUs, not \(a.model)")
            }
            guard nodes[ni].schedulable else { throw bad("node \(slice.node) is \(nodes[ni].state.rawValue)") }
            guard !slice.gpus.isEmpty || (gpus == 0 && a.slices.count == 1) else {
                throw bad("the slice on \(slice.node) is empty")
            }
            var mask: UInt64 = 0
            let count = nodes[ni].spec.gpus
            for g in slice.gpus {
                guard g >= 0, g < count else { throw bad("node \(slice.node) has no GPU \(g)") }
                let bit = UInt64(1) << UInt64(g)
                guard mask & bit == 0 else { throw bad("GPU \(g) of \(slice.node) is listed twice") }
                mask |= bit
            }
            if a.share != nil, let g = slice.gpus.first {
                let uid = jobs[existing: id].spec.uid
                guard nodes[ni].acceptsShare(uid: uid, onGPU: g, owners: { self.jobs[$0]?.spec.uid }) else {
                    throw bad(
                        nodes[ni].spec.sharing == .off
                            ? "node \(slice.node) takes no shares of GPUs (sharing = \"off\")"
                            : "GPU \(g) of \(slice.node) runs MPS for another user's shares (an MPS server serves one user at a time)"
                    )
                }
            }
            if let slot = a.mig {
                // A MIG instance joins others on free slices.
                try validateMIG(slot, milli: a.migMilli, for: id, node: ni, gpus: slice.gpus, model: mi)
            } else if jobs[existing: id].spec.isMIG {
                throw bad("it asks for a MIG instance, the allocation gives none")
            } else if nodes[ni].spec.mig == .static {
                throw bad("node \(slice.node) gives only its MIG instances (mig = \"static\")")
            } else if let share = a.share, let g = slice.gpus.first, nodes[ni].holder[g] == nil,
                nodes[ni].migUsed[g] == 0
            {
                // A share may join other shares on a GPU that has room for it.
                if nodes[ni].shareUsed[g] + share > 1000 {
                    throw bad(
                        "GPU \(g) of \(slice.node) has \(Fraction.text(1000 - nodes[ni].shareUsed[g])) free, the job's share is \(Fraction.text(share))"
                    )
                }
            } else if mask & nodes[ni].usedMask != 0 {
                let g = (mask & nodes[ni].usedMask).trailingZeroBitCount
                let by = nodes[ni].jobs(onGPU: g).map { "job \($0)" }.joined(separator: ", ")
                throw bad("GPU \(g) of \(slice.node) is held by \(by)")
            }
            if !nodes[ni].hostFits(cpu: slice.cpuMilli, memory: slice.memoryMiB) {
                let n = nodes[ni]
                throw bad(
                    "node \(slice.node) has \(Fraction.text((n.cpuCapacity ?? 0) - n.cpuUsed)) CPUs and \(Fraction.mebibytes((n.memoryCapacity ?? 0) - n.memoryUsed)) free, the job takes \(Fraction.text(slice.cpuMilli ?? 0)) CPUs and \(Fraction.mebibytes(slice.memoryMiB ?? 0)) there"
                )
            }
            if mask & nodes[ni].unhealthyMask != 0 {
                throw bad("GPU \((mask & nodes[ni].unhealthyMask).trailingZeroBitCount) of \(slice.node) is unhealthy")
            }
            if topology == .nvlink && !nodes[ni].islandMasks.contains(where: { $0 & mask == mask }) {
                throw bad(
                    "its topology is nvlink, and GPUs \(Allocation.ranges(slice.gpus)) of \(slice.node) are not in one NVLink island"
                )
            }
            positions.append(ni)
        }
        return positions
    }

    /// Checks a MIG job's instance: a profile it accepts, a valid start, free slices on a GPU given to no
    /// whole or share job, the node's layout when static, and the price.
    func validateMIG(
        _ slot: MIGSlot,
        milli: Int?,
        for id: JobID,
        node ni: Int,
        gpus: [Int],
        model mi: Int
    )
        throws(StateError)
    {
        func bad(_ s: String) -> StateError { StateError(.invalidAllocation, "cannot start job \(id): \(s)") }
        let spec = jobs[existing: id].spec
        let node = nodes[ni]
        guard spec.isMIG else { throw bad("it asks for no MIG instance, the allocation gives \(slot)") }
        guard spec.mig.contains(slot.profile) else {
            throw bad("it accepts MIG \(spec.mig.joined(separator: ", ")), the allocation gives \(slot.profile)")
        }
        guard node.spec.mig != .off else { throw bad("node \(node.name) has no MIG (mig = \"off\")") }
        guard let table = config.gpuModels[mi].mig, let p = table.profile(named: slot.profile) else {
            throw bad("GPU model \(config.gpuModels[mi].name) has no MIG profile \(slot.profile)")
        }
        guard p.starts.contains(slot.start) else {
            throw bad(
                "MIG \(p.name) may start at memory slice \(p.starts.map(String.init).joined(separator: ", ")), not \(slot.start)"
            )
        }
        guard node.spec.mig != .static || node.spec.migLayout.contains(slot) else {
            throw bad("node \(node.name)'s MIG layout has no \(slot)")
        }
        guard milli == MIGTable.priceMilli(p) else {
            throw bad(
                "MIG \(p.name) is priced at \(MIGTable.priceMilli(p)) thousandths, the allocation says \(milli ?? 0)"
            )
        }
        guard gpus.count == 1, let g = gpus.first else { throw bad("a MIG instance is on one GPU") }
        guard node.holder[g] == nil, node.shareUsed[g] == 0 else {
            throw bad(
                "GPU \(g) of \(node.name) is given \(node.holder[g] != nil ? "whole" : "as shares") to job \(node.jobs(onGPU: g).map(String.init(describing:)).joined(separator: ", "))"
            )
        }
        if node.migUsed[g] & p.mask(at: slot.start) != 0 {
            throw bad(
                "memory slices \(slot.start)–\(slot.start + p.memorySlices - 1) of GPU \(g) of \(node.name) are taken by job \(node.sharers[g].map(String.init(describing:)).joined(separator: ", "))"
            )
        }
    }

    mutating func start(_ id: JobID, allocation a: Allocation, nodes placed: [Int], at t: Instant) {
        for (slice, ni) in zip(a.slices, placed) {
            nodes[ni].cpuUsed += slice.cpuMilli ?? 0
            nodes[ni].memoryUsed += slice.memoryMiB ?? 0
            for g in slice.gpus {
                if let slot = a.mig {
                    nodes[ni].migUsed[g] |= migMask(slot, model: a.model)
                    let at = nodes[ni].sharers[g].firstIndex { $0 > id } ?? nodes[ni].sharers[g].count
                    nodes[ni].sharers[g].insert(id, at: at)
                } else if let share = a.share {
                    if nodes[ni].shareUsed[g] == 0 { sharedGPUCount += 1 }
                    nodes[ni].shareUsed[g] += share
                    let at = nodes[ni].sharers[g].firstIndex { $0 > id } ?? nodes[ni].sharers[g].count
                    nodes[ni].sharers[g].insert(id, at: at)
                } else {
                    nodes[ni].holder[g] = id
                }
                nodes[ni].usedMask |= UInt64(1) << UInt64(g)
            }
            refreshFree(node: ni)
        }
        let price = config.gpuModels[modelIndex[a.model]!].pricePerHour
        let rate = price / 3600 * a.gpuEquivalent
        Self.begin(&jobs[existing: id], on: a, rate: rate, at: t)
        activeJobs.insert(id)
        let tenant = jobs[existing: id].spec.tenant
        let kind = jobs[existing: id].spec.kind
        let halfLife = config.scheduler.fairshareHalfLife
        tenantUsage[tenant, default: TenantUsage()].start(
            gpus: a.gpuCount,
            worth: a.gpuEquivalent,
            costPerSecond: rate,
            at: t,
            halfLife: halfLife
        )
        let worth = a.gpuEquivalent
        modelUsage[a.model, default: Usage()].start(gpus: a.gpuCount, worth: worth, costPerSecond: rate, at: t)
        kindUsage[kind, default: Usage()].start(gpus: a.gpuCount, worth: worth, costPerSecond: rate, at: t)
        if kind == .inference && a.share == nil && a.mig == nil {
            inferenceDemand.change(model: a.model, by: a.gpuCount, at: t)
        }
    }

    static func begin(_ job: inout Job, on a: Allocation, rate: Double, at t: Instant) {
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
    }

    /// The memory slices a MIG instance takes (its model and profile were checked at its start).
    func migMask(_ slot: MIGSlot, model: String) -> UInt8 {
        config.gpuModels[modelIndex[model]!].mig?.profile(named: slot.profile)?.mask(at: slot.start) ?? 0
    }

    /// Frees a running or stopping job's GPUs and settles its accounting.
    /// Frees a job's GPUs at `t` and settles its run, which used them until `end` (≤ `t`: a run that ended
    /// while allotd was down is charged only until its real end).
    mutating func release(_ id: JobID, at t: Instant, ranUntil end: Instant? = nil) {
        let share = jobs[existing: id].allocation!.share
        let mig = jobs[existing: id].allocation!.mig
        for slice in jobs[existing: id].allocation!.slices {
            let ni = nodeIndex[slice.node]!
            nodes[ni].cpuUsed -= slice.cpuMilli ?? 0
            nodes[ni].memoryUsed -= slice.memoryMiB ?? 0
            for g in slice.gpus {
                if let mig {
                    nodes[ni].migUsed[g] &= ~migMask(mig, model: jobs[existing: id].allocation!.model)
                    nodes[ni].sharers[g].removeAll { $0 == id }
                    if !nodes[ni].sharers[g].isEmpty { continue }
                } else if let share {
                    nodes[ni].shareUsed[g] -= share
                    nodes[ni].sharers[g].removeAll { $0 == id }
                    if !nodes[ni].sharers[g].isEmpty { continue }
                    sharedGPUCount -= 1
                } else {
                    nodes[ni].holder[g] = nil
                }
                nodes[ni].usedMask &= ~(UInt64(1) << UInt64(g))
            }
            if nodes[ni].state == .draining && nodes[ni].usedMask == 0 { nodes[ni].state = .drained }
            refreshFree(node: ni)
        }
        let gpus = jobs[existing: id].allocation!.gpuCount
        let worth = jobs[existing: id].allocation!.gpuEquivalent
        let model = jobs[existing: id].allocation!.model
        let end = min(end ?? t, t)
        let started = jobs[existing: id].startTime ?? end
        let rate = Self.settle(&jobs[existing: id], worth: worth, at: end)
        activeJobs.remove(id)
        let tenant = jobs[existing: id].spec.tenant
        let kind = jobs[existing: id].spec.kind
        if kind == .inference && share == nil && mig == nil {
            inferenceDemand.change(model: model, by: -gpus, at: end)
            inferenceDemand.ended(model: model, after: end - started)
        }
        let halfLife = config.scheduler.fairshareHalfLife
        tenantUsage[tenant]!.stop(gpus: gpus, worth: worth, costPerSecond: rate, at: t, halfLife: halfLife)
        modelUsage[model]!.stop(gpus: gpus, worth: worth, costPerSecond: rate, at: t)
        kindUsage[kind]!.stop(gpus: gpus, worth: worth, costPerSecond: rate, at: t)
        let overcharged = t - end
        if overcharged > 0 {
            // The usage accrued at the run's rate until `t`; take back what it did not use after `end`.
            tenantUsage[tenant]!.refund(
                gpus: gpus,
                worth: worth,
                costPerSecond: rate,
                for: overcharged,
                at: t,
                halfLife: halfLife
            )
            modelUsage[model]!.refund(gpus: gpus, worth: worth, costPerSecond: rate, for: overcharged, at: t)
            kindUsage[kind]!.refund(gpus: gpus, worth: worth, costPerSecond: rate, for: overcharged, at: t)
        }
    }

    /// Adds the run that ends at `t` to the job's totals. Returns the run's cost rate.
    static func settle(_ job: inout Job, worth: Double, at t: Instant) -> Double {
        let ran = max(0, t - (job.startTime ?? t))
        job.pastRunSeconds += ran
        job.pastGPUSeconds += ran * worth
        job.pastCostUSD += ran * job.costRate
        let rate = job.costRate
        job.costRate = 0
        job.endTime = t
        job.loans = []
        return rate
    }

    static func requeue(_ job: inout Job, note: String, at t: Instant) {
        if let start = job.startTime {
            var ended = note
            if let e = job.exit { ended += "; \(e)" }
            job.history.append(PastRun(start: start, end: t, allocation: job.allocation, ended: ended))
            if job.history.count > PastRun.kept { job.history.removeFirst(job.history.count - PastRun.kept) }
        }
        job.state = .pending
        job.allocation = nil
        job.endTime = nil
        job.stopReason = nil
        job.stopRequestedAt = nil
        job.grace = nil
        job.note = note
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
