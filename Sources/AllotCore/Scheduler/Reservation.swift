extension Pass {
    /// Gives the first job that cannot start a reservation (EASY backfill): the earliest time its GPUs are
    /// expected to be free, and which GPUs, from the running jobs' ends — walltimes for `backfill`, walltimes
    /// and estimates for `allot`, where GPUs lent from a reservation to jobs it goes before count as free
    /// (it takes them back).
    mutating func reserve(for row: PendingQueue.Row, rank: Priority, allowed: UInt64) {
        var view = restricted(adding((incoming[row.id] ?? []) + (held[row.id] ?? []), to: pool), for: row)
        var ends: [(end: Double, id: JobID, slices: [NodeMask])] = []
        for v in running {
            // A shared GPU frees only when all its shares end: not counted on (a later reservation, never a
            // wrong one).
            if v.share > 0 { continue }
            if incoming[row.id] != nil && v.preemptedFor == row.id { continue }
            if let p = v.preemptedFor, p != row.id {
                // Stopping for another job, which then runs on them.
                let slices = admittedOnly(v.slices, for: row)
                let next = state.pendingJobs.row(p).map { expectedRun($0, model: v.model) } ?? 0
                let end = max(v.expectedEnd, now.seconds) + next
                if end.isFinite && !slices.isEmpty { ends.append((end, v.id, slices)) }
                continue
            }
            if policy == .allot && !v.stopping
                && v.loans.contains(where: { if case .reservation = $0 { true } else { false } })
                && rank < priority(ofRunning: v.id)
            {
                view = adding(admittedOnly(v.slices, for: row), to: view)
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
        func tryPlace() -> Bool {
            for (m, _) in order {
                var p = view
                if let slices = p.place(model: m, count: row.gpus, topology: row.topology) {
                    chosen = (m, slices)
                    return true
                }
            }
            return false
        }
        if !tryPlace() {
            for e in ends {
                view = adding(e.slices, to: view)
                if tryPlace() {
                    at = e.end
                    break
                }
            }
        } else {
            at = now.seconds
        }
        guard let chosen else {
            reservation = Reservation(job: row.id, from: nil, allocation: nil)
            return
        }
        reservationEnd = at ?? .infinity
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
