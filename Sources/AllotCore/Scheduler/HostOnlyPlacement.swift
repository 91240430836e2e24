// MARK: Jobs of CPUs and memory only

extension Pass {
    /// Places and starts a job of 0 GPUs: on a node of an allowed model with its CPUs and memory free, the
    /// one with the fewest free GPUs first (CPUs taken beside free GPUs strand them: FGD's lesson), then the
    /// fullest CPUs (best fit), then node order — and, where GPUs are kept for inference, on a node where it
    /// strands none of them first. Stranding them, it borrows them (``reserveLoan(_:node:view:)``): it must be
    /// preemptible, and inference takes them back.
    mutating func tryStartHostOnly(
        _ row: PendingQueue.Row,
        allowed: UInt64,
        preemptible: Bool,
        loans: [Loan]
    ) -> StartOutcome {
        let cpu = row.cpuMilli >= 0 ? row.cpuMilli : nil
        let memory = row.memoryMiB >= 0 ? row.memoryMiB : nil
        let blocked = StartOutcome.blocked(.hostResources(needed: 0, cpuMilli: cpu, memoryMiB: memory), capacity: true)
        // Nothing frees in a pass (but held GPUs given back, which clears the memo): a job that asks no less
        // than one that found no node finds none either, without another look at every node.
        let key = HostOnlyKey(allowed: allowed, constraint: row.constraint, sparesReserved: sparesReservedHost(row))
        let ask = (cpu: cpu ?? 0, memory: memory ?? 0)
        if let failed = noHostOnlyRoom[key], failed.contains(where: { $0.cpu <= ask.cpu && $0.memory <= ask.memory }) {
            return blocked
        }
        guard let node = hostOnlyNode(row, allowed: allowed, view: pool) else {
            noHostOnlyRoom[key, default: []].append(ask)
            return blocked
        }
        var loans = loans
        if let loan = reserveLoan(row, node: node, view: pool) {
            if !preemptible { return .blocked(.mustBorrow(loan), capacity: false) }
            loans.append(loan)
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
    /// ``hostCredit``), one where it strands no GPU kept for inference first (``strandedGPUs(_:node:view:)``),
    /// then the one with the fewest free GPUs in `view`, then the fullest CPUs, then node order.
    func hostOnlyNode(_ row: PendingQueue.Row, allowed: UInt64, view: FreePool) -> Int? {
        var best: (strandsReserve: Bool, node: Int, freeGPUs: Int, cpuLeft: Int)?
        for (i, node) in state.nodes.enumerated()
        where node.schedulable && allowed & (1 << UInt64(node.modelIndex)) != 0 && admitted(row, node: i) {
            guard fitsHost(row, node: i, gpus: 0) else { continue }
            let freeGPUs = view.freeCount(i)
            let need = hostNeed(row, node: i, gpus: 0)
            let cpuLeft =
                node.cpuCapacity.map { $0 - node.cpuUsed - (hostTaken[i]?.cpu ?? 0) - (need.cpu ?? 0) } ?? Int.max
            let m = node.modelIndex
            let strands = m < reserve.count && reserve[m] > 0 && strandedGPUs(row, node: i, view: view) > 0
            if best == nil
                || (strands ? 1 : 0, freeGPUs, cpuLeft, i)
                    < (best!.strandsReserve ? 1 : 0, best!.freeGPUs, best!.cpuLeft, best!.node)
            {
                best = (strands, i, freeGPUs, cpuLeft)
            }
        }
        return best?.node
    }

    /// The free GPUs of node `i` in `view` that a job of 0 GPUs would leave without their share of the node's
    /// CPUs and memory (what a job of one GPU takes there by default): how many of them could start a job of
    /// one GPU before it takes its CPUs and memory, less how many after. 0 where the node declares neither.
    func strandedGPUs(_ row: PendingQueue.Row, node i: Int, view: FreePool) -> Int {
        let node = state.nodes[i]
        let free = view.freeCount(i)
        guard free > 0 else { return 0 }
        let share = node.hostResources(cpuMilli: nil, memoryMiB: nil, jobGPUs: 1, gpus: 1, worth: 1)
        let need = hostNeed(row, node: i, gpus: 0)
        let taken = passHostTaken(node: i)
        /// Free GPUs that can each have their share of what is left, when the job takes `cpu` and `memory`.
        func served(cpu: Int, memory: Int) -> Int {
            var n = free
            if let cap = node.cpuCapacity, let per = share.cpuMilli, per > 0 {
                n = min(n, max(0, cap - node.cpuUsed - taken.cpu - cpu) / per)
            }
            if let cap = node.memoryCapacity, let per = share.memoryMiB, per > 0 {
                n = min(n, max(0, cap - node.memoryUsed - taken.memory - memory) / per)
            }
            return n
        }
        return served(cpu: 0, memory: 0) - served(cpu: need.cpu ?? 0, memory: need.memory ?? 0)
    }

    /// The loan a job of 0 GPUs (not inference) takes on node `i`: the inference reserve of the node's model,
    /// when the GPUs it strands there (``strandedGPUs(_:node:view:)``), counted as used, take the jobs of
    /// other kinds beyond what the reserve leaves them. nil when it borrows nothing.
    mutating func reserveLoan(_ row: PendingQueue.Row, node i: Int, view: FreePool) -> Loan? {
        let m = state.nodes[i].modelIndex
        guard policy == .allot, row.kind != .inference, m < reserve.count, reserve[m] > 0 else { return nil }
        let stranded = strandedGPUs(row, node: i, view: view)
        guard stranded > 0, use(of: m, inference: false) + stranded > ctx.capacity[m] - reserve[m] else { return nil }
        return .inferenceReserve(model: ctx.models[m].name)
    }
}

/// Jobs of CPUs only that share which nodes they may use and whether they spare the reservation's CPUs and
/// memory (``Pass/noHostOnlyRoom``).
struct HostOnlyKey: Hashable {
    var allowed: UInt64
    var constraint: Int32
    var sparesReserved: Bool
}
