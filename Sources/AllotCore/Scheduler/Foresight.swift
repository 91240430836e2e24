extension Pass {
    /// The longest a job waits for a faster model while a slower one has room: idle GPUs are waste.
    static let longestWaitForFaster: Seconds = 7200

    /// Model choice with foresight (policy `allot`, training that prefers the fastest model): when the
    /// fastest model the job may use has no room now but is expected to free enough GPUs soon enough that
    /// waiting for it ends the job sooner than starting now on the slower model that has room, the job waits
    /// for it. Returns the models it then waits for (those as fast as that one) and why, or nil to place it
    /// as usual.
    /// GPUs that earlier jobs of this pass wait for are counted as theirs, so that the next job expects
    /// them later.
    mutating func fasterModelSoon(_ row: PendingQueue.Row, allowed: UInt64) -> (mask: UInt64, why: Blocker)? {
        // A job that can move starts now where there is room, and moves when the faster model frees
        // (``migrate()``): its GPUs work meanwhile.
        if state.config.preemption.maxMoves > 0 && classes.preemptible(row)
            && ctx.nodeAllowed[Int(row.constraint)] == nil
        {
            return nil
        }
        let order = ctx.fastest(for: row).filter { allowed & (1 << UInt64($0.0)) != 0 }.map(\.0)
        guard let f = order.first else { return nil }
        let view = restricted(adding(held[row.id] ?? [], to: pool), for: row)
        if view.fits(model: f, count: row.gpus, topology: row.topology) { return nil }
        guard let s = order.dropFirst().first(where: { view.fits(model: $0, count: row.gpus, topology: row.topology) })
        else { return nil }
        let fast = ctx.expectedSeconds(row, model: f)
        let slow = ctx.expectedSeconds(row, model: s)
        guard slow > fast else { return nil }
        let need = row.gpus + claimed[f, default: 0]
        var have = view.freeGPUs(model: f)
        var eta = now.seconds
        if have < need {
            var found = false
            for e in endsOn(model: f) {
                have += e.gpus
                if have >= need {
                    eta = e.end
                    found = true
                    break
                }
            }
            if !found { return nil }
        }
        // Waiting must pay clearly (by 30% of the slow run): when the GPUs free is a rough estimate.
        let gain = (now.seconds + slow) - (eta + fast)
        guard gain > 0.3 * slow + state.config.scheduler.interval, eta - now.seconds <= Self.longestWaitForFaster else {
            return nil
        }
        claimed[f, default: 0] += row.gpus
        var mask: UInt64 = 0
        for m in order where ctx.expectedSeconds(row, model: m) <= fast { mask |= 1 << UInt64(m) }
        let why = Blocker.fasterModelSoon(
            model: ctx.models[f].name,
            at: Instant(seconds: eta),
            instead: ctx.models[s].name,
            saves: gain
        )
        return (mask, why)
    }

    /// When the whole-GPU jobs running on model `m` are expected to end, soonest first, with their GPUs:
    /// built once per pass and model.
    mutating func endsOn(model m: Int) -> [(end: Double, gpus: Int)] {
        if let e = runningEnds[m] { return e }
        var ends: [(end: Double, gpus: Int)] = []
        for v in running where v.model == m && v.share == 0 && v.expectedEnd.isFinite {
            ends.append((max(v.expectedEnd, now.seconds), v.gpus))
        }
        ends.sort { $0.end < $1.end }
        runningEnds[m] = ends
        return ends
    }
}
