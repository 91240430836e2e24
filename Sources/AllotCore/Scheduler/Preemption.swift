extension Pass {
    /// How soon after a reported checkpoint a job may be preempted for attained service.
    static let checkpointWindow: Seconds = 300

    /// Why a running job may be stopped for `row`, if it may: a loan `row` may take back, or a lower,
    /// preemptible class when `row`'s class may preempt.
    mutating func victimReason(
        _ v: RunView,
        for row: PendingQueue.Row,
        rank: Priority,
        tenant: String,
        cls: ClassInfo,
        allowed: UInt64
    ) -> PreemptionReason? {
        if v.stopping || victims.contains(v.id) || allowed & (1 << UInt64(v.model)) == 0 { return nil }
        for loan in v.loans {
            switch loan {
            case .reservation:
                // The first job that cannot start holds the reservation and takes back what was lent from
                // it — from jobs it goes before, never from one that would go before it once requeued.
                if reservation == nil && rank < priority(ofRunning: v.id) { return .reservation }
            case .inferenceReserve(let model):
                if row.kind == .inference, let m = ctx.modelIndex[model], m < reserve.count,
                    use(of: m, inference: true) + row.gpus <= reserve[m]
                {
                    return .inference
                }
            case .quota(let lender):
                // A job within its tenant's guarantee takes back GPUs borrowed beyond quotas: another tenant's
                // (never below that tenant's own quota), or, for a job that is not preemptible, its own
                // tenant's preemptible borrowers.
                let preemptible = classes.preemptible(row)
                guard state.config.quotasInForce, withinQuota(row, tenant: tenant, preemptible: preemptible) else {
                    break
                }
                if lender == tenant {
                    if !preemptible { return .quota }
                } else if milliInUse(by: lender) - v.milli >= (state.config.tenant(named: lender).gpuQuota ?? 0) * 1000
                {
                    return .quota
                }
            }
        }
        if cls.preempts && v.preemptible && v.classValue < cls.value && !v.shielded { return .priority }
        // Attained service (Tiresias): among training jobs of one class, a job of an earlier queue takes the
        // GPUs of one of a later queue; a job promoted for waiting too long counts as the first queue.
        // It is no emergency: a job that reports checkpoints is taken only just after one (a job that reports
        // none is expected to save on the notice, as for any preemption).
        if policy == .allot && row.kind == .training && v.kind == .training && v.preemptible && !v.shielded
            && v.classValue == cls.value && v.queue > max(Int(rank.queue), 0)
            && (!v.checkpoints || v.risk <= Double(max(1, v.gpus)) * Self.checkpointWindow)
        {
            return .service
        }
        return nil
    }

    /// Running jobs by (class, work at risk, id): the order victims are tried in. Sorted once per pass.
    mutating func victimOrder() -> [Int] {
        if let o = victimOrderCache { return o }
        let r = running
        let o = r.indices.sorted { a, b in
            if r[a].classValue != r[b].classValue { return r[a].classValue < r[b].classValue }
            if r[a].risk != r[b].risk { return r[a].risk < r[b].risk }
            return r[a].id < r[b].id
        }
        victimOrderCache = o
        return o
    }

    /// Finds the victims whose GPUs let `row` start with the least lost — loans before class victims, lower
    /// classes first, then least work at risk, then fewest jobs — tells them to stop, and holds the free GPUs
    /// `row` will use.
    /// - Parameter reclaimOnly: take back loans only; preempt nobody by class.
    /// - Returns: the number of jobs told to stop, or nil when no set of victims makes room.
    mutating func preempt(
        for row: PendingQueue.Row,
        rank: Priority,
        allowed: UInt64,
        cls: ClassInfo,
        reclaimOnly: Bool = false
    )
        -> Int?
    {
        if let n = shrink(for: row, rank: rank, allowed: allowed, cls: cls, reclaimOnly: reclaimOnly) { return n }
        let tenant = state.pendingJobs.tenants.values[Int(row.tenant)]
        var reclaims: [(view: RunView, reason: PreemptionReason)] = []
        var others: [(view: RunView, reason: PreemptionReason)] = []
        let views = running
        let selects = ctx.nodeAllowed[Int(row.constraint)] != nil
        for i in victimOrder() {
            if selects && !views[i].slices.contains(where: { admitted(row, node: $0.node) }) { continue }
            guard let r = victimReason(views[i], for: row, rank: rank, tenant: tenant, cls: cls, allowed: allowed)
            else {
                continue
            }
            if r.isReclaim {
                reclaims.append((views[i], r))
            } else if !reclaimOnly {
                others.append((views[i], r))
            }
        }
        // Cheapest to stop first: loans, then lower classes, then less work at risk (the order above).
        let candidates = reclaims + others
        if candidates.isEmpty { return nil }
        let base = restricted(adding((incoming[row.id] ?? []) + (held[row.id] ?? []), to: pool), for: row)
        // Where nodes declare CPUs and memory, the victims must free those too, beside the GPUs (counting what
        // jobs already stopping for it give back): a job short of CPUs alone stops only jobs that hold some.
        let host = ctx.tracksHost
        let stopping = host ? stoppingCredit(for: row.id) : [:]
        /// What a set of candidates and the jobs already stopping for it give back of CPUs and memory, by node.
        func credit(_ set: [Int]) -> [Int: (cpu: Int, memory: Int)] {
            var c = stopping
            for k in set { giveBack(candidates[k].view.id, started: [:], to: &c) }
            return c
        }
        var best: Choice?
        for (m, _) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            let onModel = candidates.indices.filter { candidates[$0].view.model == m }
            if onModel.isEmpty { continue }
            if (row.topology != .any || host) && row.gpus <= ctx.largestNode[m] {
                // On one node: the candidates there (with CPUs and memory, also those holding no GPU). Nodes in
                // the order of their first candidate, whose (kind, class, work at risk) is the least any set of
                // theirs could cost (candidates come cheapest first): once that is no less than the best found,
                // no later node does better.
                var byNode: [Int: [Int]] = [:]
                var nodes: [(bound: (Int, Int, Double, Int), node: Int)] = []
                for i in onModel {
                    for sl in candidates[i].view.slices where sl.mask != 0 || host {
                        if selects && !admitted(row, node: sl.node) { continue }
                        if byNode[sl.node] == nil {
                            guard state.nodes[sl.node].schedulable else { continue }
                            nodes.append((singleCost(candidates[i]), sl.node))
                        }
                        byNode[sl.node, default: []].append(i)
                    }
                }
                for (bound, node) in nodes {
                    if let b = best, !(bound < b.cost) { break }
                    let here = byNode[node]!
                    let unhealthy = state.nodes[node].unhealthyMask
                    func fits(_ set: [Int]) -> Bool {
                        var free = base.free[node]
                        for k in set { free |= candidates[k].view.mask(on: node) & ~unhealthy }
                        if row.topology == .nvlink {
                            var view = base
                            view.setFree(node: node, mask: free)
                            if view.pick(node: node, count: row.gpus, nvlink: true) == nil { return false }
                        } else if free.nonzeroBitCount < row.gpus {
                            return false
                        }
                        // A shared GPU frees only with all its shares: counted by `freed`.
                        if set.contains(where: { candidates[$0].view.share > 0 }) {
                            let view = adding(admittedOnly(freed(set, candidates), for: row), to: base)
                            if view.pick(node: node, count: row.gpus, nvlink: row.topology == .nvlink) == nil {
                                return false
                            }
                        }
                        return !host || fitsHost(row, node: node, gpus: row.gpus, plus: credit(set)[node] ?? (0, 0))
                    }
                    if let set = cover(here, fits) { consider(set, m, host ? node : nil, &best, candidates) }
                    let short = row.gpus - base.freeCount(node)
                    for i in here where host || candidates[i].view.mask(on: node).nonzeroBitCount >= short {
                        if let b = best, !(singleCost(candidates[i]) < b.cost) { continue }
                        if fits([i]) { consider([i], m, host ? node : nil, &best, candidates) }
                    }
                }
            }
            // (No set costs less than its cheapest candidate alone: when that is no less than the best found, no
            // set on any nodes does better.)
            if row.topology == .any && row.gpus > 0
                && best.map({ singleCost(candidates[onModel[0]]) < $0.cost }) ?? true
            {
                // On any nodes: GPUs first (with CPUs and memory, the job is then placed on what a set frees, a
                // bounded number of times per search; sets on one node were looked at above).
                var hostLooks = 0
                func fits(_ set: [Int]) -> Bool {
                    adding(admittedOnly(freed(set, candidates), for: row), to: base)
                        .fits(model: m, count: row.gpus, topology: row.topology)
                }
                func placesWithHost(_ set: [Int]) -> Bool {
                    if hostLooks >= Self.maxHostLooks { return false }
                    hostLooks += 1
                    let view = adding(admittedOnly(freed(set, candidates), for: row), to: base)
                    return placeWithHost(row, model: m, view: view, credit: credit(set)) != nil
                }
                if let set = cover(onModel, fits), !host || placesWithHost(set) {
                    consider(set, m, nil, &best, candidates)
                }
                // One bigger victim may lose as little as several small ones, and is fewer.
                let short = row.gpus - base.freeGPUs(model: m)
                for i in onModel where candidates[i].view.gpus >= short {
                    if let b = best, !(singleCost(candidates[i]) < b.cost) { continue }
                    if fits([i]) && (!host || placesWithHost([i])) { consider([i], m, nil, &best, candidates) }
                }
            }
        }
        guard let best else { return nil }
        let rules = state.config.preemption
        let freeing = freed(best.set, candidates)
        for i in best.set {
            let (v, reason) = candidates[i]
            victims.insert(v.id)
            decisions.append(
                .preempt(v.id, by: row.id, grace: reason.isReclaim ? rules.loanGrace : v.grace, reason: reason)
            )
        }
        // Hold the free GPUs its placement will use (and, with CPUs and memory, the part of those the victims
        // do not give back), so that nothing else takes them meanwhile.
        let view = adding(admittedOnly(freeing, for: row), to: base)
        if host {
            holdWithHost(row, model: best.model, node: best.node, view: view, credit: credit(best.set))
        } else {
            var v = view
            if let slices = v.place(model: best.model, count: row.gpus, topology: row.topology) {
                takeEverywhere(slices.map { NodeMask(node: $0.node, mask: $0.mask & pool.free[$0.node]) })
            }
        }
        // (An empty list for victims that free no GPU: it still says that jobs are stopping for it.)
        incoming[row.id, default: []].append(contentsOf: freeing)
        return best.set.count
    }

    typealias Choice = (set: [Int], model: Int, node: Int?, cost: (Int, Int, Double, Int))

    /// How many sets of victims on any nodes one search places a job of CPUs and memory on (each a look at
    /// every node of the model).
    static let maxHostLooks = 8

    /// Adds candidates in `order` until `fits` says the set makes room, then drops those it can do without.
    func cover(_ order: [Int], _ fits: ([Int]) -> Bool) -> [Int]? {
        var chosen: [Int] = []
        var ok = false
        for i in order {
            chosen.append(i)
            if fits(chosen) {
                ok = true
                break
            }
        }
        guard ok else { return nil }
        // Drop the costliest victims that turn out not to be needed.
        if chosen.count > 1 {
            for i in chosen.reversed() {
                let without = chosen.filter { $0 != i }
                if !without.isEmpty && fits(without) { chosen = without }
            }
        }
        return chosen
    }

    /// The CPUs and memory that jobs stopping for job `id` give back, by node position (not an elastic job's
    /// that shrinks for it and goes on running).
    mutating func stoppingCredit(for id: JobID) -> [Int: (cpu: Int, memory: Int)] {
        var credit: [Int: (cpu: Int, memory: Int)] = [:]
        for v in running where v.preemptedFor == id && state.jobs[v.id]?.heldGPUs.isEmpty != false {
            giveBack(v.id, started: [:], to: &credit)
        }
        return credit
    }

    /// Places a job where nodes declare CPUs and memory on `view` (on `node` when given), counting `credit` as
    /// given back; nil when it does not fit.
    mutating func placeWithHost(
        _ row: PendingQueue.Row,
        model m: Int,
        view: FreePool,
        credit: [Int: (cpu: Int, memory: Int)],
        node: Int? = nil
    ) -> [NodeMask]? {
        hostCredit = credit
        defer { hostCredit = [:] }
        if let node {
            guard state.nodes[node].modelIndex == m, admitted(row, node: node) else { return nil }
            if row.gpus == 0 { return fitsHost(row, node: node, gpus: 0) ? [NodeMask(node: node, mask: 0)] : nil }
            guard accepts(row, node: node, gpus: row.gpus),
                let mask = view.pick(node: node, count: row.gpus, nvlink: row.topology == .nvlink)
            else { return nil }
            return [NodeMask(node: node, mask: mask)]
        }
        if row.gpus == 0 {
            for i in credit.keys.sorted()
            where state.nodes[i].modelIndex == m && state.nodes[i].schedulable && admitted(row, node: i)
                && fitsHost(row, node: i, gpus: 0)
            {
                return [NodeMask(node: i, mask: 0)]
            }
            return nil
        }
        var p = view
        return placeWithHost(row, model: m, view: &p)
    }

    /// Holds for a job waiting for its victims the free GPUs its placement on `view` uses and, of its nodes'
    /// CPUs and memory, what `credit` (the victims) does not give back; false when it does not fit.
    @discardableResult
    mutating func holdWithHost(
        _ row: PendingQueue.Row,
        model m: Int,
        node: Int?,
        view: FreePool,
        credit: [Int: (cpu: Int, memory: Int)]
    ) -> Bool {
        guard let slices = placeWithHost(row, model: m, view: view, credit: credit, node: node) else { return false }
        takeEverywhere(slices.map { NodeMask(node: $0.node, mask: $0.mask & pool.free[$0.node]) })
        for s in slices {
            let need = hostNeed(row, node: s.node, gpus: s.mask.nonzeroBitCount)
            let back = credit[s.node] ?? (0, 0)
            hostTaken[s.node, default: (0, 0)].cpu += max(0, (need.cpu ?? 0) - back.cpu)
            hostTaken[s.node, default: (0, 0)].memory += max(0, (need.memory ?? 0) - back.memory)
        }
        return true
    }

    /// The GPUs that stopping a set of candidates frees: a whole-GPU job's GPUs, and a shared GPU once every
    /// share on it is in the set (or already told to stop in this pass) — stopping one share frees nothing.
    func freed(_ set: [Int], _ candidates: [(view: RunView, reason: PreemptionReason)]) -> [NodeMask] {
        var out: [NodeMask] = []
        var shares: [NodeGPU: [JobID]] = [:]
        for i in set {
            let v = candidates[i].view
            if v.share == 0 {
                out.append(contentsOf: v.slices)
            } else {
                for s in v.slices {
                    shares[NodeGPU(node: s.node, gpu: s.mask.trailingZeroBitCount), default: []].append(v.id)
                }
            }
        }
        for (gpu, ids) in shares.sorted(by: { ($0.key.node, $0.key.gpu) < ($1.key.node, $1.key.gpu) })
        where state.nodes[gpu.node].sharers[gpu.gpu].allSatisfy({ ids.contains($0) || victims.contains($0) }) {
            out.append(NodeMask(node: gpu.node, mask: 1 << UInt64(gpu.gpu)))
        }
        return out
    }

    /// What stopping one candidate alone costs, as ``consider`` weighs sets.
    func singleCost(_ c: (view: RunView, reason: PreemptionReason)) -> (Int, Int, Double, Int) {
        (c.reason.isReclaim ? 0 : 1, c.view.classValue, c.view.risk, 1)
    }

    func consider(
        _ set: [Int],
        _ m: Int,
        _ node: Int?,
        _ best: inout Choice?,
        _ candidates: [(view: RunView, reason: PreemptionReason)]
    ) {
        let worstKind = set.map { candidates[$0].reason.isReclaim ? 0 : 1 }.max() ?? 0
        let worstClass = set.map { candidates[$0].view.classValue }.max() ?? 0
        let risk = set.reduce(0.0) { $0 + candidates[$1].view.risk }
        let cost = (worstKind, worstClass, risk, set.count)
        if let b = best, !(cost < b.cost) { return }
        best = (set, m, node, cost)
    }
}
