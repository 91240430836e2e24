extension Pass {
    /// A move must pay clearly, estimates being rough: the job is expected to end sooner by this share of
    /// what is left of its run where it is, after the move's costs.
    static let moveGain = 0.3

    /// Moves to faster GPUs (policy `allot`, issue 17's migration at checkpoints): after the walk — so that
    /// pending jobs have had their pick — a preemptible training job running on a slower model than one
    /// that now has room (not reserved, claimed by a job waiting for it, nor lent from the inference
    /// reserve) is told to stop and is held those GPUs, when it is expected to end sooner there by more than
    /// `moveGain` of its remaining run, counting its stop (the grace), a restart and the work since its last
    /// checkpoint. A job that reports checkpoints moves only just after one; each job moves at most
    /// `max_moves` times, and a move is not a preemption (it does not count toward `max_preemptions`).
    /// The jobs that gain most move first: long runs on the slowest models.
    mutating func migrate() {
        let rules = state.config.preemption
        guard policy == .allot, rules.maxMoves > 0, ctx.fastest.count > 1 else { return }
        var view = open ?? pool
        guard view.totalFreeGPUs > 0 else { return }
        // Free GPUs of each model a move may take.
        var room: [Int] = []
        for m in 0..<ctx.modelCount { room.append(roomWithoutLoan(model: m, view: view)) }
        guard room.contains(where: { $0 > 0 }) else { return }
        let interval = state.config.scheduler.interval
        var moves: [(gain: Double, view: RunView, model: Int)] = []
        for v in running
        where v.kind == .training && !v.stopping && v.share == 0 && v.gpus > 0 && v.preemptible && !v.shielded
            && !victims.contains(v.id)
        {
            let job = state.jobs[existing: v.id]
            guard job.moves < rules.maxMoves, job.spec.nodes == nil, !job.spec.isMIG, !job.spec.isShare else {
                continue
            }
            // At a checkpoint-friendly moment: just after one, for a job that reports them.
            if v.checkpoints && v.risk > Double(v.gpus) * Self.checkpointWindow { continue }
            let left = v.expectedEnd - now.seconds
            let speed = ctx.speed(job.spec, model: v.model)
            guard left > 0, speed > 0 else { continue }
            let allowed = PassContext.mask(ctx.models, job.spec.gpuModels, job.spec.minGPUMemoryGiB)
            for (f, _) in ctx.fastest(for: job.spec) where allowed & (1 << UInt64(f)) != 0 {
                let faster = ctx.speed(job.spec, model: f)
                if faster <= speed { break }
                if room[f] < v.gpus { continue }
                let redo = v.checkpoints ? v.risk / Double(v.gpus) : 0
                let there = v.grace + Self.restartSeconds + (redo + left) * speed / faster
                let gain = left - there
                if gain > Self.moveGain * left + interval { moves.append((gain, v, f)) }
                break
            }
        }
        moves.sort { $0.gain != $1.gain ? $0.gain > $1.gain : $0.view.id < $1.view.id }
        for (_, v, f) in moves where room[f] >= v.gpus {
            let job = state.jobs[existing: v.id]
            let row = PendingQueue.row(of: job, tenant: -1, priorityClass: -1, constraint: -1)
            var p = view
            let placed: [NodeMask]?
            if ctx.tracksHost {
                placed = placeWithHost(row, model: f, view: &p)
            } else {
                placed = p.place(model: f, count: v.gpus, topology: job.spec.topology)
            }
            guard let slices = placed else { continue }
            view = p
            takeEverywhere(slices)
            room[f] -= v.gpus
            victims.insert(v.id)
            if !reserve.isEmpty { addUse(of: f, inference: false, gpus: v.gpus) }
            decisions.append(.preempt(v.id, by: v.id, grace: v.grace, reason: .migration))
            decisions.append(.hold(v.id, on: allocationSlices(slices)))
        }
    }
}
