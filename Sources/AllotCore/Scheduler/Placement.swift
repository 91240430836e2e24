extension FreePool {
    /// Chooses `n` free GPUs on node `i`: inside the NVLink island that holds them most snugly when one can,
    /// else (unless `nvlink` is required) spread over the islands with the most free GPUs first.
    /// - Returns: the mask of chosen GPUs, or nil when the node cannot hold the request.
    func pick(node i: Int, count n: Int, nvlink: Bool) -> UInt64? {
        let f = free[i]
        guard f.nonzeroBitCount >= n else { return nil }
        let isl = islands[i]
        if isl.isEmpty { return nvlink ? nil : f.lowestBits(n) }
        var best: UInt64 = 0
        var bestCount = Int.max
        for island in isl {
            let c = (f & island).nonzeroBitCount
            if c >= n && c < bestCount {
                best = f & island
                bestCount = c
            }
        }
        if bestCount != Int.max { return best.lowestBits(n) }
        if nvlink { return nil }
        // No island holds it: take whole islands' free GPUs, fullest first, then GPUs outside any island.
        var groups = isl.map { f & $0 }
        groups.append(f & ~isl.reduce(0, |))
        groups.sort { $0.nonzeroBitCount > $1.nonzeroBitCount }
        var out: UInt64 = 0
        var left = n
        for g in groups where left > 0 {
            let take = g.lowestBits(left)
            out |= take
            left -= take.nonzeroBitCount
        }
        return out
    }

    /// Whether model `m` can hold `n` GPUs with `topology` now. O(1) except for `nvlink`, which looks at the
    /// nodes with enough free GPUs until one has them in one island.
    func fits(model m: Int, count n: Int, topology: Topology) -> Bool {
        guard totalFree[m] >= n else { return false }
        switch topology {
        case .any: return true
        case .singleNode: return bestFit(model: m, atLeast: n) != nil
        case .nvlink: return forEachFitting(model: m, atLeast: n) { pick(node: $0, count: n, nvlink: true) != nil }
        }
    }

    /// Takes `n` GPUs of model `m` for a gang, or takes nothing and returns nil.
    ///
    /// One node when one can hold the gang (best fit: the fewest free GPUs that suffice, so the largest
    /// holes stay open); otherwise (topology `any`) as few nodes as possible: the largest free nodes, and
    /// the remainder best-fit.
    /// - Returns: (node, GPU mask) per node used.
    mutating func place(model m: Int, count n: Int, topology: Topology) -> [NodeMask]? {
        guard n > 0, totalFree[m] >= n else { return nil }
        if topology == .nvlink {
            var chosen: (Int, UInt64)?
            _ = forEachFitting(model: m, atLeast: n) { i in
                if let mask = pick(node: i, count: n, nvlink: true) {
                    chosen = (i, mask)
                    return true
                }
                return false
            }
            guard let (i, mask) = chosen else { return nil }
            take(node: i, mask: mask)
            return [NodeMask(node: i, mask: mask)]
        }
        if let i = bestFit(model: m, atLeast: n), let mask = pick(node: i, count: n, nvlink: false) {
            take(node: i, mask: mask)
            return [NodeMask(node: i, mask: mask)]
        }
        guard topology == .any else { return nil }
        var slices: [NodeMask] = []
        var left = n
        while left > 0 {
            if let i = bestFit(model: m, atLeast: left), let mask = pick(node: i, count: left, nvlink: false) {
                take(node: i, mask: mask)
                slices.append(NodeMask(node: i, mask: mask))
                break
            }
            // totalFree >= n guarantees a non-empty node while GPUs are still wanted.
            let i = largest(model: m)!
            let mask = free[i]
            take(node: i, mask: mask)
            slices.append(NodeMask(node: i, mask: mask))
            left -= mask.nonzeroBitCount
        }
        return slices
    }
}
