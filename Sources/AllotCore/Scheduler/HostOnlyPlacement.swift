// MARK: Jobs of CPUs and memory only

extension Pass {
    /// Places and starts a job of 0 GPUs: on a node of an allowed model with its CPUs and memory free, the
    /// one with the fewest free GPUs first (CPUs taken beside free GPUs strand them: FGD's lesson), then the
    /// fullest CPUs (best fit), then node order.
    mutating func tryStartHostOnly(_ row: PendingQueue.Row, allowed: UInt64, loans: [Loan]) -> StartOutcome {
        guard let node = hostOnlyNode(row, allowed: allowed, view: pool) else {
            let cpu = row.cpuMilli >= 0 ? row.cpuMilli : nil
            let memory = row.memoryMiB >= 0 ? row.memoryMiB : nil
            return .blocked(.hostResources(needed: 0, cpuMilli: cpu, memoryMiB: memory), capacity: true)
        }
        let m = state.nodes[node].modelIndex
        let note = PlacementNote(
            rule: .firstFit,
            model: ctx.models[m].name,
            expectedSeconds: ctx.expectedSeconds(row, model: m),
            estimatedCostUSD: 0,
            holesLeft: pool.freeCount(node)
        )
        release(heldFor: row.id, except: [])
        decideStart(row, model: m, on: [(node, [])], note: note, loans: loans, freshGPUs: false)
        return .started
    }

    /// The node a job of 0 GPUs goes to: of an allowed model, admitted, with its CPUs and memory free (counting
    /// ``hostCredit``), the one with the fewest free GPUs in `view` first, then the fullest CPUs, then node order.
    func hostOnlyNode(_ row: PendingQueue.Row, allowed: UInt64, view: FreePool) -> Int? {
        var best: (node: Int, freeGPUs: Int, cpuLeft: Int)?
        for (i, node) in state.nodes.enumerated()
        where node.schedulable && allowed & (1 << UInt64(node.modelIndex)) != 0 && admitted(row, node: i) {
            guard fitsHost(row, node: i, gpus: 0) else { continue }
            let freeGPUs = view.freeCount(i)
            let need = hostNeed(row, node: i, gpus: 0)
            let cpuLeft =
                node.cpuCapacity.map { $0 - node.cpuUsed - (hostTaken[i]?.cpu ?? 0) - (need.cpu ?? 0) } ?? Int.max
            if best == nil || (freeGPUs, cpuLeft, i) < (best!.freeGPUs, best!.cpuLeft, best!.node) {
                best = (i, freeGPUs, cpuLeft)
            }
        }
        return best?.node
    }
}
