// MARK: MIG instances

extension Pass {
    /// A MIG instance chosen for a job.
    struct MIGChoice {
        var node: Int
        var gpu: Int
        var start: Int
        /// Whether the GPU had no instance (a dynamic node then puts it in MIG mode).
        var fresh: Bool
        /// For ranking: the GPU's memory slices taken before, and the room for instances left after.
        var takenBefore: Int
        var roomAfter: Int
        /// The GPU's memory slices left free after (the placement note's).
        var slicesLeft: Int
    }

    /// Places and starts a MIG job: each allowed model in the job's order, each of its profiles in its order
    /// (cheapest first, as the user lists them), on the GPU that is already most broken into instances, at
    /// the start that leaves the most room for further instances; a fresh GPU (dynamic nodes) only when no
    /// broken one has room. Respects the cost limit, hard budget and the reservation's GPUs.
    mutating func tryStartMIG(_ row: PendingQueue.Row, allowed: UInt64, short: Bool, loans: [Loan]) -> StartOutcome {
        guard let spec = state.jobs[row.id]?.spec else { return .blocked(.noModelAllowed, capacity: false) }
        if migNodes == nil {
            var byModel = [[Int]](repeating: [], count: ctx.modelCount)
            for (i, node) in state.nodes.enumerated() where node.spec.mig != .off { byModel[node.modelIndex].append(i) }
            migNodes = byModel
        }
        // GPUs held for it (a whole-GPU job it preempted has gone) go back to the pool it looks in.
        if !held.isEmpty && held[row.id] != nil { release(heldFor: row.id, except: []) }
        let mayUseReserved = reservation == nil || short
        // The slices held for an earlier MIG job: usable only by a job whose walltime ends before it needs them.
        let hold = migHold.flatMap { h in
            h.job == row.id || (!row.walltime.isNaN && now.seconds + row.walltime <= h.from) ? nil : h
        }
        var passedHold = false
        var offered = false
        var closest: (detail: String, taken: Int)?
        var hostShort: Blocker?
        var rule: Blocker?
        var cheapestOverLimit = Double.infinity
        for (m, ruleName) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            let model = ctx.models[m]
            guard let table = model.mig, !migNodes![m].isEmpty else { continue }
            for p in spec.migProfiles(on: model) {
                let nodes = migNodes![m].filter { i in
                    admitted(row, node: i)
                        && (state.nodes[i].spec.mig == .dynamic
                            || state.nodes[i].spec.migLayout.contains { $0.profile == p.name })
                }
                if nodes.isEmpty { continue }
                offered = true
                let milli = MIGTable.priceMilli(p)
                let seconds = ctx.expectedSeconds(row, model: m)
                let cost = model.pricePerHour * Double(milli) / 1000 * seconds / 3600
                if !row.maxCostUSD.isNaN, cost > row.maxCostUSD {
                    cheapestOverLimit = min(cheapestOverLimit, cost)
                    continue
                }
                if policy == .allot, let b = hardBudgetBlocker(row, extraCost: cost) {
                    if rule == nil { rule = b }
                    continue
                }
                let found = bestMIGSlot(
                    row,
                    table: table,
                    profile: p,
                    milli: milli,
                    nodes: nodes,
                    reserved: !mayUseReserved,
                    hold: hold
                )
                passedHold = passedHold || found.passedHold
                if hostShort == nil, let i = found.hostShortOn {
                    let need = hostNeed(row, node: i, gpus: 1, worth: Double(milli) / 1000)
                    hostShort = .hostResources(needed: 1, cpuMilli: need.cpu, memoryMiB: need.memory)
                }
                guard let c = found.choice else {
                    if let d = found.closest, closest == nil || d.taken < closest!.taken {
                        closest = (d.detail, d.taken)
                    }
                    continue
                }
                let gpu = NodeGPU(node: c.node, gpu: c.gpu)
                if c.fresh && state.nodes[c.node].spec.mig == .dynamic {
                    takeEverywhere([NodeMask(node: c.node, mask: UInt64(1) << UInt64(c.gpu))])
                }
                migTaken[gpu, default: 0] |= p.mask(at: c.start)
                release(heldFor: row.id, except: [])
                let note = PlacementNote(
                    rule: ruleName,
                    model: model.name,
                    expectedSeconds: seconds,
                    estimatedCostUSD: cost,
                    holesLeft: c.slicesLeft
                )
                decideStart(
                    row,
                    model: m,
                    on: [(c.node, [c.gpu])],
                    note: note,
                    loans: loans,
                    freshGPUs: c.fresh,
                    mig: (MIGSlot(profile: p.name, start: c.start), milli)
                )
                return .started
            }
        }
        if let rule { return .blocked(rule, capacity: false) }
        if passedHold, let h = hold {
            return .blocked(.reserved(for: h.job, from: Instant(seconds: h.from)), capacity: false)
        }
        if cheapestOverLimit.isFinite {
            return .blocked(.overMaxCost(cheapestUSD: cheapestOverLimit, limitUSD: row.maxCostUSD), capacity: false)
        }
        if !offered {
            let never = Scheduler.migBlocker(for: spec, allowed: allowed, in: state)
            return .blocked(
                never ?? .noMIGRoom(detail: "no MIG node of an allowed model is up"),
                capacity: never == nil
            )
        }
        // Slices were free but not the CPUs or memory beside them: that is what it waits for.
        if let hostShort { return .blocked(hostShort, capacity: true) }
        return .blocked(.noMIGRoom(detail: closest?.detail ?? "every GPU with MIG is busy"), capacity: true)
    }

    /// The best start of profile `p` on `nodes`, or (when none has room) what the emptiest GPU has taken;
    /// never on the slices of `hold` (`passedHold`: a start there was free); `hostShortOn`: a node with a
    /// free start but not the job's CPUs or memory.
    func bestMIGSlot(
        _ row: PendingQueue.Row,
        table: MIGTable,
        profile p: MIGProfile,
        milli: Int,
        nodes: [Int],
        reserved: Bool,
        hold: MIGHold?
    ) -> (choice: MIGChoice?, closest: (detail: String, taken: Int)?, passedHold: Bool, hostShortOn: Int?) {
        var best: MIGChoice?
        var passedHold = false
        var hostShortOn: Int?
        var emptiest: (node: Int, gpu: Int, used: UInt8)?
        for i in nodes {
            let node = state.nodes[i]
            guard node.schedulable else { continue }
            let isStatic = node.spec.mig == .static
            for g in 0..<node.spec.gpus {
                let bit = UInt64(1) << UInt64(g)
                let gpu = NodeGPU(node: i, gpu: g)
                guard node.unhealthyMask & bit == 0, node.holder[g] == nil, node.shareUsed[g] == 0,
                    shareTaken[gpu] == nil
                else { continue }
                let used = node.migUsed[g] | (migTaken[gpu] ?? 0)
                if used == 0 && !isStatic {
                    // A fresh GPU: free in this pass, and not held for the reservation.
                    guard pool.free[i] & bit != 0, !reserved || (reservedMasks[i] ?? 0) & bit == 0 else { continue }
                }
                if emptiest == nil || used.nonzeroBitCount < emptiest!.used.nonzeroBitCount {
                    emptiest = (i, g, used)
                }
                let starts =
                    isStatic
                    ? node.spec.migLayout.filter { $0.profile == p.name }.map(\.start).filter {
                        used & p.mask(at: $0) == 0
                    }
                    : table.freeStarts(of: p, used: used)
                if starts.isEmpty { continue }
                guard fitsHost(row, node: i, gpus: 1, worth: Double(milli) / 1000) else {
                    hostShortOn = hostShortOn ?? i
                    continue
                }
                for s in starts {
                    if let hold, hold.gpu == gpu, hold.mask & p.mask(at: s) != 0 {
                        passedHold = true
                        continue
                    }
                    // On a static node, the room left is what the layout still offers.
                    let after = used | p.mask(at: s)
                    let room = isStatic ? 8 - after.nonzeroBitCount : table.room(left: after)
                    let c = MIGChoice(
                        node: i,
                        gpu: g,
                        start: s,
                        fresh: used == 0,
                        takenBefore: used.nonzeroBitCount,
                        roomAfter: room,
                        slicesLeft: MIGTable.memorySlices - after.nonzeroBitCount
                    )
                    if best == nil || Self.better(c, than: best!) { best = c }
                }
            }
        }
        if best != nil { return (best, nil, passedHold, nil) }
        let starts = p.starts.map { "\($0)–\($0 + p.memorySlices - 1)" }.joined(separator: " or ")
        let need =
            "MIG \(p.name) needs memory slices \(p.memorySlices == 1 ? p.starts.map(String.init).joined(separator: ", ") : starts) free"
        guard let e = emptiest else {
            return (nil, (need + "; every GPU with MIG is taken whole, shared or down", 9), passedHold, hostShortOn)
        }
        let taken = state.nodes[e.node].sharers[e.gpu].compactMap { state.jobs[$0]?.allocation?.mig?.description }
        let has = taken.isEmpty ? "its free slices do not fit" : "has \(taken.joined(separator: ", ")) taken"
        return (
            nil,
            (need + "; the emptiest GPU, \(state.nodes[e.node].name) GPU \(e.gpu), \(has)", e.used.nonzeroBitCount),
            passedHold,
            hostShortOn
        )
    }

    /// Broken GPUs before fresh ones; the fullest GPU first; then the start that leaves the most room; then
    /// node, GPU and start order.
    static func better(_ a: MIGChoice, than b: MIGChoice) -> Bool {
        if a.fresh != b.fresh { return !a.fresh }
        if a.takenBefore != b.takenBefore { return a.takenBefore > b.takenBefore }
        if a.roomAfter != b.roomAfter { return a.roomAfter > b.roomAfter }
        return (a.node, a.gpu, a.start) < (b.node, b.gpu, b.start)
    }
}

// MARK: Walking MIG GPUs

/// A GPU of a MIG node that a MIG job may use, with what looking at it needs.
struct MIGGPU {
    var model: Int
    var table: MIGTable
    /// The job's acceptable profiles on this model, in its order.
    var profiles: [MIGProfile]
    var gpu: NodeGPU
    /// The node's MIG layout when it is static (then only its instances may start), else nil.
    var layout: [MIGSlot]?

    var isStatic: Bool { layout != nil }

    /// Where profile `p` may start on this GPU: its layout's starts for it, or NVIDIA's placements.
    func starts(of p: MIGProfile) -> [Int] {
        layout.map { $0.filter { $0.profile == p.name }.map(\.start) } ?? p.starts
    }
}

extension Pass {
    /// Calls `body` for each healthy GPU without shares on the schedulable MIG nodes a MIG job may use, in
    /// its model order (``migNodes`` must be built).
    func forEachMIGGPU(_ row: PendingQueue.Row, spec: JobSpec, allowed: UInt64, _ body: (MIGGPU) -> Void) {
        guard let migNodes else { return }
        for (m, _) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            guard let table = ctx.models[m].mig else { continue }
            let profiles = spec.migProfiles(on: ctx.models[m])
            for i in migNodes[m] where admitted(row, node: i) {
                let node = state.nodes[i]
                guard node.schedulable else { continue }
                let layout = node.spec.mig == .static ? node.spec.migLayout : nil
                for g in 0..<node.spec.gpus {
                    let gpu = NodeGPU(node: i, gpu: g)
                    guard node.unhealthyMask & (UInt64(1) << UInt64(g)) == 0, node.shareUsed[g] == 0,
                        shareTaken[gpu] == nil
                    else { continue }
                    body(MIGGPU(model: m, table: table, profiles: profiles, gpu: gpu, layout: layout))
                }
            }
        }
    }

    /// The MIG instances on a GPU, with their memory slices.
    func migInstances(on gpu: NodeGPU, table: MIGTable) -> [(id: JobID, mask: UInt8)] {
        state.nodes[gpu.node].sharers[gpu.gpu].compactMap { id in
            guard let slot = state.jobs[id]?.allocation?.mig, let p = table.profile(named: slot.profile) else {
                return nil
            }
            return (id, p.mask(at: slot.start))
        }
    }
}

// MARK: Holding slices for a MIG job

/// Memory slices of one GPU held for a MIG job that waits for the instances over them to end.
struct MIGHold: Hashable, Sendable {
    var job: JobID
    var gpu: NodeGPU
    var model: Int
    var slot: MIGSlot
    /// Its memory slices there.
    var mask: UInt8
    /// When the instances over them are expected to have ended (seconds; finite).
    var from: Double
}

extension Pass {
    /// Holds, for a MIG job that found no room, the start of one of its profiles whose instances are expected
    /// to end soonest (their walltimes or estimates): later MIG jobs in this pass may not take those slices
    /// unless they end before then (EASY backfill, on one GPU's slices); the rest of the GPU stays open. A GPU
    /// that frees whole, or instances made in this pass, are not counted on.
    mutating func holdMIG(for row: PendingQueue.Row, allowed: UInt64) {
        guard let spec = state.jobs[row.id]?.spec else { return }
        var ends: [JobID: Double] = [:]
        for v in running where v.slices.count == 1 { ends[v.id] = max(v.expectedEnd, now.seconds) }
        var best: MIGHold?
        forEachMIGGPU(row, spec: spec, allowed: allowed) { g in
            guard state.nodes[g.gpu.node].holder[g.gpu.gpu] == nil else { return }
            let instances = migInstances(on: g.gpu, table: g.table)
            if instances.isEmpty { return }
            let fresh = migTaken[g.gpu] ?? 0
            for p in g.profiles {
                for s in g.starts(of: p) where fresh & p.mask(at: s) == 0 {
                    let mask = p.mask(at: s)
                    let at = instances.filter { $0.mask & mask != 0 }.reduce(now.seconds) {
                        max($0, ends[$1.id] ?? .infinity)
                    }
                    guard at.isFinite else { continue }
                    if best == nil || at < best!.from
                        || (at == best!.from
                            && (g.gpu.node, g.gpu.gpu, s) < (best!.gpu.node, best!.gpu.gpu, best!.slot.start))
                    {
                        best = MIGHold(
                            job: row.id,
                            gpu: g.gpu,
                            model: g.model,
                            slot: MIGSlot(profile: p.name, start: s),
                            mask: mask,
                            from: at
                        )
                    }
                }
            }
        }
        migHold = best
    }
}

// MARK: Preemption for MIG instances

extension Pass {
    /// Preemption for a MIG job that finds no room (policy `allot`): the cheapest set of running jobs whose
    /// stop frees a start of one of its profiles on an allowed MIG GPU — a whole-GPU job on a dynamic node
    /// (its GPU comes back fresh), or the instances over one start's memory slices (dynamic or static). The
    /// same victims and order as for whole GPUs: loans before lower classes, then the least work at risk,
    /// then the fewest jobs. Tells them to stop and counts their GPUs as coming to the job (`incoming`), so
    /// that later passes wait for them rather than look for more victims.
    /// - Returns: the number of jobs told to stop, or nil when no set of victims makes room.
    mutating func preemptForMIG(_ row: PendingQueue.Row, rank: Priority, allowed: UInt64, cls: ClassInfo) -> Int? {
        guard let spec = state.jobs[row.id]?.spec, let migNodes else { return nil }
        let tenant = state.pendingJobs.tenants.values[Int(row.tenant)]
        var onMIG = Set<Int>()
        for m in 0..<migNodes.count where allowed & (1 << UInt64(m)) != 0 { onMIG.formUnion(migNodes[m]) }
        var reasons: [JobID: (view: RunView, reason: PreemptionReason)] = [:]
        for v in running where v.slices.contains(where: { onMIG.contains($0.node) }) {
            guard let r = victimReason(v, for: row, rank: rank, tenant: tenant, cls: cls, allowed: allowed) else {
                continue
            }
            reasons[v.id] = (v, r)
        }
        if reasons.isEmpty { return nil }
        var best: (ids: [JobID], cost: (Int, Int, Double, Int))?
        func consider(_ ids: [JobID]) {
            let set = ids.map { reasons[$0]! }
            let cost = (
                set.map { $0.reason.isReclaim ? 0 : 1 }.max() ?? 0,
                set.map(\.view.classValue).max() ?? 0,
                set.reduce(0.0) { $0 + $1.view.risk },
                set.count
            )
            if let b = best, !(cost < b.cost) { return }
            best = (ids, cost)
        }
        forEachMIGGPU(row, spec: spec, allowed: allowed) { g in
            guard migTaken[g.gpu] == nil else { return }
            if let whole = state.nodes[g.gpu.node].holder[g.gpu.gpu] {
                // A whole-GPU job: its stop gives back a fresh GPU, where any profile starts.
                if !g.isStatic && reasons[whole] != nil && !g.profiles.isEmpty { consider([whole]) }
                return
            }
            let instances = migInstances(on: g.gpu, table: g.table)
            if instances.isEmpty { return }
            for p in g.profiles {
                for s in g.starts(of: p) {
                    let over = instances.filter { $0.mask & p.mask(at: s) != 0 }.map(\.id)
                    if !over.isEmpty && over.allSatisfy({ reasons[$0] != nil }) { consider(over) }
                }
            }
        }
        guard let best else { return nil }
        let rules = state.config.preemption
        for id in best.ids {
            let (v, reason) = reasons[id]!
            victims.insert(id)
            decisions.append(
                .preempt(id, by: row.id, grace: reason.isReclaim ? rules.loanGrace : v.grace, reason: reason)
            )
            incoming[row.id, default: []].append(contentsOf: v.slices)
        }
        return best.ids.count
    }
}
