/// Elastic training jobs (`--gpus 4-16`, issue 17): a job starts with what is free at or above its fewest
/// GPUs, grows into GPUs that stay idle, and shrinks rather than stop when a job that may take its GPUs
/// needs them. A resize is a stop with notice (its grace, as for a preemption) and a start again at the new
/// size on GPUs held for it, as torchrun's elastic agent restarts its workers: the new GPUs are recorded
/// (`jobGPUsHeld`) before the notice, so they survive a restart of allotd. All of a job's GPUs stay on one
/// model. Not yet on nodes that declare CPUs or memory (the job keeps its start size there).
extension Pass {
    /// Whether elastic jobs may resize in this pass.
    var resizes: Bool { policy == .allot && !ctx.tracksHost }

    /// GPUs of model `m` a growing or moving job may take without a loan: free in `view` (not reserved),
    /// not waited for by a job with foresight, and not kept for inference.
    mutating func roomWithoutLoan(model m: Int, view: FreePool) -> Int {
        var r = view.freeGPUs(model: m) - claimed[m, default: 0]
        if m < reserve.count && reserve[m] > 0 {
            r = min(r, ctx.capacity[m] - reserve[m] - use(of: m, inference: false))
        }
        return r
    }

    /// `extra` more GPUs of model `m` for a job already on `slices`: on one of its nodes for a single-node
    /// job, anywhere for the others (nil for an NVLink-island job, or when they are not free). Takes
    /// nothing.
    func moreGPUs(
        _ extra: Int,
        model m: Int,
        topology: Topology,
        beside slices: [NodeMask],
        view: FreePool
    )
        -> [NodeMask]?
    {
        switch topology {
        case .nvlink: return nil
        case .singleNode:
            guard let node = slices.first?.node, let mask = view.pick(node: node, count: extra, nvlink: false) else {
                return nil
            }
            return [NodeMask(node: node, mask: mask)]
        case .any:
            var v = view
            return v.place(model: m, count: extra, topology: .any)
        }
    }

    /// Merges more GPUs into a job's slices (node by node).
    func merged(_ slices: [NodeMask], _ more: [NodeMask]) -> [NodeMask] {
        var out = slices
        for e in more {
            if let i = out.firstIndex(where: { $0.node == e.node }) {
                out[i] = NodeMask(node: e.node, mask: out[i].mask | e.mask)
            } else {
                out.append(e)
            }
        }
        return out
    }

    /// The first `n` GPUs of `masks`, node by node.
    func firstGPUs(_ n: Int, of masks: [NodeMask]) -> [NodeMask] {
        var left = n
        var out: [NodeMask] = []
        for s in masks where left > 0 {
            var mask: UInt64 = 0
            for g in s.mask.bitIndices where left > 0 {
                mask |= 1 << UInt64(g)
                left -= 1
            }
            out.append(NodeMask(node: s.node, mask: mask))
        }
        return out
    }

    func allocationSlices(_ masks: [NodeMask]) -> [Allocation.Slice] {
        masks.map { Allocation.Slice(node: state.nodes[$0.node].name, gpus: $0.mask.bitIndices) }
    }

    /// Elastic jobs started in this pass take what the walk left free, up to their most GPUs: jobs that
    /// wait had their pick first, and a job that has not started yet grows at no cost.
    mutating func extendElasticStarts() {
        guard resizes else { return }
        for i in decisions.indices {
            guard case .start(let id, let a, let note, let loans) = decisions[i], a.share == nil, a.mig == nil,
                let m = ctx.modelIndex[a.model]
            else { continue }
            let spec = state.jobs[existing: id].spec
            guard spec.isElastic else { continue }
            let view = open ?? pool
            let cur = a.gpuCount
            let room = roomWithoutLoan(model: m, view: view)
            guard room > 0, let size = spec.size(atMost: cur + room), size > cur else { continue }
            let have = a.slices.compactMap { s -> NodeMask? in
                guard let ni = state.nodeIndex[s.node] else { return nil }
                return NodeMask(node: ni, mask: s.gpus.reduce(UInt64(0)) { $0 | (1 << UInt64($1)) })
            }
            guard let more = moreGPUs(size - cur, model: m, topology: spec.topology, beside: have, view: view) else {
                continue
            }
            takeEverywhere(more)
            let all = merged(have, more)
            decisions[i] = .start(
                id,
                on: Allocation(model: a.model, slices: allocationSlices(all)),
                why: note,
                loans: loans
            )
            addMilli((size - cur) * 1000, tenant: spec.tenant)
            if !reserve.isEmpty { addUse(of: m, inference: false, gpus: size - cur) }
        }
    }

    /// Running elastic jobs below their most GPUs (preemptible: growing stops them for a moment) grow into
    /// GPUs still free after the walk, when the
    /// restart pays: the rest of the run at the new size (linear speed-up) plus the stop, a restart and the
    /// work since the last checkpoint must save twice the stop and restart. A job that reports checkpoints
    /// grows just after one.
    mutating func growElastic() {
        guard resizes else { return }
        var view = open ?? pool
        guard view.totalFreeGPUs > 0 else { return }
        let interval = state.config.scheduler.interval
        for v in running
        where v.elastic && !v.stopping && v.gpus > 0 && v.preemptible && !v.shielded && !victims.contains(v.id) {
            let spec = state.jobs[existing: v.id].spec
            guard spec.isElastic, let most = spec.maxGPUs, v.gpus < most else { continue }
            if v.checkpoints && v.risk > Double(v.gpus) * Self.checkpointWindow { continue }
            let room = roomWithoutLoan(model: v.model, view: view)
            guard room > 0, let size = spec.size(atMost: v.gpus + room), size > v.gpus else { continue }
            let left = v.expectedEnd - now.seconds
            let stop = v.grace + Self.restartSeconds
            let redo = v.checkpoints ? v.risk / Double(v.gpus) : 0
            let there = stop + (left + redo) * Double(v.gpus) / Double(size)
            guard left - there > 2 * stop + interval else { continue }
            guard
                let more = moreGPUs(
                    size - v.gpus,
                    model: v.model,
                    topology: spec.topology,
                    beside: v.slices,
                    view: view
                )
            else { continue }
            takeEverywhere(more)
            view = open ?? pool
            victims.insert(v.id)
            addMilli((size - v.gpus) * 1000, tenant: v.tenant)
            if !reserve.isEmpty { addUse(of: v.model, inference: false, gpus: size - v.gpus) }
            decisions.append(.preempt(v.id, by: v.id, grace: v.grace, reason: .resize))
            decisions.append(.hold(v.id, on: allocationSlices(merged(v.slices, more))))
        }
    }

    /// Room for `row` by shrinking elastic jobs it may take GPUs from (the same rules as for stopping them:
    /// ``victimReason(_:for:rank:tenant:cls:allowed:)``), never below their fewest GPUs, all on one model:
    /// each is told to stop and is held the GPUs it keeps; the others are held for `row`, as a preemption's.
    /// Tried before stopping jobs whole. Only for a gang that may spread (`any`) over any node.
    /// - Returns: the number of jobs told to shrink, or nil when shrinking makes no room.
    mutating func shrink(
        for row: PendingQueue.Row,
        rank: Priority,
        allowed: UInt64,
        cls: ClassInfo,
        reclaimOnly: Bool
    )
        -> Int?
    {
        guard resizes, row.topology == .any, ctx.nodeAllowed[Int(row.constraint)] == nil, row.gpus > 0,
            !row.isShare, !row.isMIG
        else { return nil }
        if elasticOrderCache == nil {
            let views = running
            elasticOrderCache = victimOrder().filter { views[$0].elastic }
        }
        guard let elasticOrder = elasticOrderCache, !elasticOrder.isEmpty else { return nil }
        let tenant = state.pendingJobs.tenants.values[Int(row.tenant)]
        let base = adding((incoming[row.id] ?? []) + (held[row.id] ?? []), to: pool)
        for (m, _) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            let free = base.freeGPUs(model: m)
            var need = row.gpus - free
            if need <= 0 { continue }
            var chosen: [(view: RunView, reason: PreemptionReason, keep: Int)] = []
            for i in elasticOrder {
                let v = running[i]
                guard v.model == m, !v.stopping, !victims.contains(v.id) else { continue }
                let spec = state.jobs[existing: v.id].spec
                guard spec.isElastic, v.gpus > spec.gpus,
                    let r = victimReason(v, for: row, rank: rank, tenant: tenant, cls: cls, allowed: allowed)
                        ?? givesBack(v, to: row, rank: rank, cls: cls),
                    !reclaimOnly || r.isReclaim
                else { continue }
                // Not below its fewest, nor where the rest of its run would outlast its walltime (each run
                // has its own), at the smallest of its sizes that gives what is needed.
                var floor = max(spec.gpus, v.gpus - need)
                if let w = spec.walltime, w > 0 {
                    let left = max(0, v.expectedEnd - now.seconds)
                    floor = max(floor, Int((left * Double(v.gpus) / w).rounded(.up)))
                }
                let step = max(1, spec.gpuStep ?? 1)
                let keep = spec.gpus + (floor - spec.gpus + step - 1) / step * step
                guard keep < v.gpus else { continue }
                chosen.append((v, r, keep))
                need -= v.gpus - keep
                if need <= 0 { break }
            }
            guard need <= 0 else { continue }
            let rules = state.config.preemption
            var freed: [NodeMask] = []
            for (v, reason, keep) in chosen {
                // It keeps its first GPUs, node by node.
                let kept = firstGPUs(keep, of: v.slices)
                for s in v.slices {
                    let mask = s.mask & ~(kept.first { $0.node == s.node }?.mask ?? 0)
                    if mask != 0 { freed.append(NodeMask(node: s.node, mask: mask)) }
                }
                victims.insert(v.id)
                decisions.append(
                    .preempt(v.id, by: row.id, grace: reason.isReclaim ? rules.loanGrace : v.grace, reason: reason)
                )
                decisions.append(.hold(v.id, on: allocationSlices(kept)))
            }
            // Hold the free GPUs its placement will use, so that nothing else takes them meanwhile.
            var view = adding(freed, to: base)
            if let slices = view.place(model: m, count: row.gpus, topology: row.topology) {
                takeEverywhere(slices.map { NodeMask(node: $0.node, mask: $0.mask & pool.free[$0.node]) })
            }
            incoming[row.id, default: []].append(contentsOf: freed)
            return chosen.count
        }
        return nil
    }

    /// Whether elastic job `v`, above its fewest GPUs, gives back GPUs it grew into to `row`, which waits:
    /// GPUs an elastic job grows into were idle, and a job of its class or a higher one that arrives later
    /// does not wait for them behind it — unless it has used more GPU-hours (a later attained-service
    /// queue). Not in its first minutes (the minimum runtime), and a job that reports checkpoints only just
    /// after one; the thrash protection of jobs preempted often does not keep GPUs it grew into (it keeps
    /// its fewest).
    func givesBack(_ v: RunView, to row: PendingQueue.Row, rank: Priority, cls: ClassInfo) -> PreemptionReason? {
        guard policy == .allot, v.elastic, v.preemptible, !v.young, cls.value >= v.classValue,
            row.kind != .training || max(Int(rank.queue), 0) <= v.queue,
            !v.checkpoints || v.risk <= Double(max(1, v.gpus)) * Self.checkpointWindow
        else { return nil }
        return .resize
    }

    /// An elastic job restarting after a resize starts on the GPUs held for it, at the largest of its sizes
    /// they hold (all on one model).
    mutating func startOnHeld(_ row: PendingQueue.Row, allowed: UInt64, loans: [Loan]) -> Bool {
        guard row.elastic, let mine = held[row.id], let first = mine.first else { return false }
        let m = state.nodes[first.node].modelIndex
        guard allowed & (1 << UInt64(m)) != 0, mine.allSatisfy({ state.nodes[$0.node].modelIndex == m }) else {
            return false
        }
        let spec = state.jobs[existing: row.id].spec
        let count = merged([], mine).reduce(0) { $0 + $1.mask.nonzeroBitCount }
        guard let size = spec.size(atMost: count) else { return false }
        let slices = firstGPUs(size, of: merged([], mine))
        if spec.topology == .singleNode && Set(slices.map(\.node)).count > 1 { return false }
        let seconds = ctx.expectedSeconds(row, model: m) * Double(row.gpus) / Double(size)
        let note = PlacementNote(
            rule: .soonest,
            model: ctx.models[m].name,
            expectedSeconds: seconds,
            estimatedCostUSD: ctx.models[m].pricePerHour * Double(size) * seconds / 3600,
            holesLeft: 0
        )
        if policy == .allot && hardBudgetBlocker(row, extraCost: note.estimatedCostUSD) != nil { return false }
        record(row, model: m, slices: slices, note: note, loans: loans)
        return true
    }
}
