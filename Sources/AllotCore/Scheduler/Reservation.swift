extension Pass {
    /// Gives the first job that cannot start a reservation (EASY backfill): the earliest time its GPUs are
    /// expected to be free, and which GPUs, from the running jobs' ends — walltimes for `backfill`, walltimes
    /// and estimates for `allot`, where GPUs lent from a reservation to jobs it goes before count as free
    /// (it takes them back). Where nodes declare CPUs and memory, the reservation holds those it will need
    /// beside its GPUs; a job of CPUs only reserves them alone, on the node where they free soonest.
    mutating func reserve(for row: PendingQueue.Row, rank: Priority, allowed: UInt64) {
        var view = restricted(adding((incoming[row.id] ?? []) + (held[row.id] ?? []), to: pool), for: row)
        var ends: [(end: Double, id: JobID, slices: [NodeMask])] = []
        // Where nodes declare CPUs and memory, those of the jobs that end count as free too.
        let host = ctx.tracksHost
        var credit: [Int: (cpu: Int, memory: Int)] = [:]
        // Jobs stopping for another job: what they free, that one takes.
        var noCredit: Set<JobID> = []
        let started = host ? Dictionary(startedEnds.map { ($0.id, $0.slices) }, uniquingKeysWith: { a, _ in a }) : [:]
        for v in running {
            // A shared GPU frees only when all its shares end: not counted on (a later reservation, never a
            // wrong one). A share's CPUs and memory free when it ends.
            if v.share > 0 {
                if host && policy != .fifo && v.preemptedFor == nil {
                    let end = policy == .backfill ? v.walltimeEnd : v.expectedEnd
                    if end.isFinite { ends.append((max(end, now.seconds), v.id, [])) }
                }
                continue
            }
            if incoming[row.id] != nil && v.preemptedFor == row.id { continue }
            if let p = v.preemptedFor, p != row.id {
                // Stopping for another job, which then runs on them.
                let slices = admittedOnly(v.slices, for: row)
                let next = state.pendingJobs.row(p).map { expectedRun($0, model: v.model) } ?? 0
                let end = max(v.expectedEnd, now.seconds) + next
                noCredit.insert(v.id)
                if end.isFinite && !slices.isEmpty { ends.append((end, v.id, slices)) }
                continue
            }
            if policy == .allot && !v.stopping
                && v.loans.contains(where: { if case .reservation = $0 { true } else { false } })
                && rank < priority(ofRunning: v.id)
            {
                view = adding(admittedOnly(v.slices, for: row), to: view)
                if host { giveBack(v.id, started: started, to: &credit) }
                continue
            }
            let end = policy == .backfill ? v.walltimeEnd : v.expectedEnd
            let slices = admittedOnly(v.slices, for: row)
            if end.isFinite && !slices.isEmpty { ends.append((max(end, now.seconds), v.id, slices)) }
        }
        // Started earlier in this pass, or held for a job waiting for its victims (it starts on them soon).
        for e in startedEnds where e.end.isFinite {
            let slices = admittedOnly(e.slices, for: row)
            if !slices.isEmpty { ends.append((e.end, e.id, slices)) }
        }
        for (id, masks) in held where id != row.id {
            let slices = admittedOnly(masks, for: row)
            guard !slices.isEmpty, let other = state.pendingJobs.row(id) else { continue }
            let m = state.nodes[slices[0].node].modelIndex
            let end = now.seconds + state.config.scheduler.interval + expectedRun(other, model: m)
            if end.isFinite { ends.append((end, id, slices)) }
        }
        ends.sort { $0.end != $1.end ? $0.end < $1.end : $0.id < $1.id }
        let order = ctx.order(for: row, now: now).filter { allowed & (1 << UInt64($0.model)) != 0 }
        var at: Double?
        var chosen: (model: Int, slices: [NodeMask])?
        // Whether it fits `view` (GPUs alone, or with CPUs and memory given back as `credit` says).
        func tryPlace(_ pass: inout Pass, view: FreePool, credit: [Int: (cpu: Int, memory: Int)]?) -> Bool {
            pass.hostCredit = credit ?? [:]
            defer { pass.hostCredit = [:] }
            if row.gpus == 0 {
                // A job of CPUs and memory only: no GPU to find (always "fits" on GPUs alone); with CPUs and
                // memory counted, the node it would go to.
                guard credit != nil else { return true }
                guard let i = pass.hostOnlyNode(row, allowed: allowed, view: view) else { return false }
                chosen = (pass.state.nodes[i].modelIndex, [NodeMask(node: i, mask: 0)])
                return true
            }
            for (m, _) in order {
                var p = view
                guard var slices = p.place(model: m, count: row.gpus, topology: row.topology) else { continue }
                if credit != nil
                    && !slices.allSatisfy({ pass.accepts(row, node: $0.node, gpus: $0.mask.nonzeroBitCount) })
                {
                    p = view
                    guard let placed = pass.placeWithHost(row, model: m, view: &p) else { continue }
                    slices = placed
                }
                chosen = (m, slices)
                return true
            }
            return false
        }
        // The first end from which its GPUs fit (-1: now).
        var first: Int?
        if tryPlace(&self, view: view, credit: nil) {
            first = -1
        } else {
            var v = view
            for (k, e) in ends.enumerated() {
                add(e.slices, to: &v)
                if tryPlace(&self, view: v, credit: nil) {
                    first = k
                    break
                }
            }
        }
        if let k0 = first, !host {
            at = k0 < 0 ? now.seconds : ends[k0].end
        } else if let k0 = first {
            // With CPUs and memory, placing costs a look at every node: the first end from which it fits is
            // found by halving (fitting only gets likelier as jobs end), not by a look per end.
            // The pool with the first j ends' GPUs, CPUs and memory given back, from `base` (with the first
            // `from` ends'): each end is added about once over the whole search.
            func advance(
                _ base: (FreePool, [Int: (cpu: Int, memory: Int)]),
                from: Int,
                to j: Int
            ) -> (
                FreePool, [Int: (cpu: Int, memory: Int)]
            ) {
                var (v, c) = base
                for e in ends[from..<j] {
                    add(e.slices, to: &v)
                    if !noCredit.contains(e.id) { giveBack(e.id, started: started, to: &c) }
                }
                return (v, c)
            }
            // Fits as soon as its GPUs do (most often)? Else, if it fits with all of them, the fewest that
            // it fits with, by halving.
            var lo = k0 + 1
            var hi = ends.count
            var low = advance((view, credit), from: 0, to: lo)
            var found: (credit: [Int: (cpu: Int, memory: Int)], chosen: (model: Int, slices: [NodeMask])?)?
            if tryPlace(&self, view: low.0, credit: low.1) {
                found = (low.1, chosen)
                hi = lo
            } else if lo < hi {
                low = advance(low, from: lo, to: lo + 1)
                lo += 1
                let all = advance(low, from: lo, to: hi)
                if tryPlace(&self, view: all.0, credit: all.1) { found = (all.1, chosen) }
            }
            if var found {
                while lo < hi {
                    let mid = lo + (hi - lo) / 2
                    let probe = advance(low, from: lo, to: mid)
                    if tryPlace(&self, view: probe.0, credit: probe.1) {
                        found = (probe.1, chosen)
                        hi = mid
                    } else {
                        low = advance(probe, from: mid, to: mid + 1)
                        lo = mid + 1
                    }
                }
                at = hi == 0 ? now.seconds : ends[hi - 1].end
                credit = found.credit
                chosen = found.chosen
            } else {
                chosen = nil
            }
        }
        guard let chosen else {
            reservation = Reservation(job: row.id, from: nil, allocation: nil)
            return
        }
        reservationEnd = at ?? .infinity
        // What it needs of its nodes' CPUs and memory beyond what the jobs ending before it give back: later
        // jobs that would outlast its start leave that alone.
        if host {
            for s in chosen.slices {
                let need = hostNeed(row, node: s.node, gpus: s.mask.nonzeroBitCount)
                let freed = credit[s.node] ?? (0, 0)
                let r = (cpu: max(0, (need.cpu ?? 0) - freed.cpu), memory: max(0, (need.memory ?? 0) - freed.memory))
                if r.cpu > 0 || r.memory > 0 { hostReserved[s.node] = r }
            }
        }
        reservation = Reservation(
            job: row.id,
            from: at.map { Instant(seconds: $0) },
            allocation: Allocation(
                model: ctx.models[chosen.model].name,
                slices: chosen.slices.map {
                    Allocation.Slice(node: state.nodes[$0.node].name, gpus: $0.mask.bitIndices)
                }
            )
        )
        var o = pool
        for s in chosen.slices {
            reservedMasks[s.node, default: 0] |= s.mask
            o.take(node: s.node, mask: s.mask)
        }
        open = o
    }

    /// Adds what job `id` holds of its nodes' CPUs and memory to `credit`: as allocated when it runs, as
    /// this pass placed it when it started in this pass.
    func giveBack(_ id: JobID, started: [JobID: [NodeMask]], to credit: inout [Int: (cpu: Int, memory: Int)]) {
        guard let job = state.jobs[id] else { return }
        if let a = job.allocation, job.state != .pending {
            for s in a.slices where s.cpuMilli != nil || s.memoryMiB != nil {
                guard let i = state.nodeIndex[s.node] else { continue }
                credit[i, default: (0, 0)].cpu += s.cpuMilli ?? 0
                credit[i, default: (0, 0)].memory += s.memoryMiB ?? 0
            }
        } else if let slices = started[id], let row = state.pendingJobs.row(id) {
            for s in slices {
                let need = hostNeed(row, node: s.node, gpus: s.mask.nonzeroBitCount)
                credit[s.node, default: (0, 0)].cpu += need.cpu ?? 0
                credit[s.node, default: (0, 0)].memory += need.memory ?? 0
            }
        }
    }

    /// How long a pending job is expected to run on model `m` once started: its walltime, else (`allot`) its
    /// estimate at the model's speed, else half the default estimate; unbounded for `backfill` without a
    /// walltime.
    func expectedRun(_ row: PendingQueue.Row, model m: Int) -> Double {
        if !row.walltime.isNaN { return row.walltime }
        if policy == .backfill { return .infinity }
        let settings = state.config.scheduler
        if !row.estimate.isNaN { return row.kind == .training ? row.estimate / ctx.speed(row, model: m) : row.estimate }
        return max(settings.interval, settings.defaultEstimate / 2)
    }
}
