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
        typealias Choice = (set: [Int], model: Int, cost: (Int, Int, Double, Int))
        var best: Choice?
        for (m, _) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            let onModel = candidates.indices.filter { candidates[$0].view.model == m }
            if onModel.isEmpty { continue }
            if row.topology == .any {
                if let set = cover(row, model: m, base: base, with: onModel, candidates, node: nil) {
                    consider(set, m, &best, candidates)
                }
                // One bigger victim may lose as little as several small ones, and is fewer.
                let short = row.gpus - base.freeGPUs(model: m)
                for i in onModel where candidates[i].view.gpus >= short {
                    if let b = best, candidates[i].view.risk > b.cost.2 { continue }
                    if cover(row, model: m, base: base, with: [i], candidates, node: nil) != nil {
                        consider([i], m, &best, candidates)
                    }
                }
            } else {
                var nodes = Set<Int>()
                for i in onModel { for s in candidates[i].view.slices { nodes.insert(s.node) } }
                for node in nodes.sorted() where admitted(row, node: node) {
                    let here = onModel.filter { candidates[$0].view.mask(on: node) != 0 }
                    if let set = cover(row, model: m, base: base, with: here, candidates, node: node) {
                        consider(set, m, &best, candidates)
                    }
                    let short = row.gpus - base.freeCount(node)
                    for i in here where candidates[i].view.mask(on: node).nonzeroBitCount >= short {
                        if let b = best, candidates[i].view.risk > b.cost.2 { continue }
                        if cover(row, model: m, base: base, with: [i], candidates, node: node) != nil {
                            consider([i], m, &best, candidates)
                        }
                    }
                }
            }
        }
        guard let best else { return nil }
        let rules = state.config.preemption
        let freed = self.freed(best.set, candidates)
        for i in best.set {
            let (v, reason) = candidates[i]
            victims.insert(v.id)
            decisions.append(
                .preempt(v.id, by: row.id, grace: reason.isReclaim ? rules.loanGrace : v.grace, reason: reason)
            )
        }
        // Hold the free GPUs its placement will use, so that nothing else takes them meanwhile.
        var view = adding(admittedOnly(freed, for: row), to: base)
        if let slices = view.place(model: best.model, count: row.gpus, topology: row.topology) {
            takeEverywhere(slices.map { NodeMask(node: $0.node, mask: $0.mask & pool.free[$0.node]) })
        }
        incoming[row.id, default: []].append(contentsOf: freed)
        return best.set.count
    }

    /// Adds candidates in order until `row` fits (on `node` when given), then drops those it can do without.
    func cover(
        _ row: PendingQueue.Row,
        model m: Int,
        base: FreePool,
        with order: [Int],
        _ candidates: [(view: RunView, reason: PreemptionReason)],
        node: Int?
    ) -> [Int]? {
        func fits(_ view: FreePool) -> Bool {
            if let node { return view.pick(node: node, count: row.gpus, nvlink: row.topology == .nvlink) != nil }
            return view.fits(model: m, count: row.gpus, topology: row.topology)
        }
        var chosen: [Int] = []
        var view = base
        var ok = false
        for i in order {
            chosen.append(i)
            view = adding(admittedOnly(freed(chosen, candidates), for: row), to: base)
            if fits(view) {
                ok = true
                break
            }
        }
        guard ok else { return nil }
        // Drop the costliest victims that turn out not to be needed.
        if chosen.count > 1 {
            for i in chosen.reversed() {
                let without = chosen.filter { $0 != i }
                if !without.isEmpty && fits(adding(admittedOnly(freed(without, candidates), for: row), to: base)) {
                    chosen = without
                }
            }
        }
        return chosen
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

    func consider(
        _ set: [Int],
        _ m: Int,
        _ best: inout (set: [Int], model: Int, cost: (Int, Int, Double, Int))?,
        _ candidates: [(view: RunView, reason: PreemptionReason)]
    ) {
        let worstKind = set.map { candidates[$0].reason.isReclaim ? 0 : 1 }.max() ?? 0
        let worstClass = set.map { candidates[$0].view.classValue }.max() ?? 0
        let risk = set.reduce(0.0) { $0 + candidates[$1].view.risk }
        let cost = (worstKind, worstClass, risk, set.count)
        if let b = best, !(cost < b.cost) { return }
        best = (set, m, cost)
    }
}
