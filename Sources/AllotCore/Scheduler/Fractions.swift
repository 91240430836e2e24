/// Placement of requests that may take a fraction of a GPU, and CPUs and memory beside it: the node resource
/// vector, the recent mix of requests, the fragmentation measure of FGD (Weng et al., USENIX ATC'23), and
/// the rules that choose a node and GPUs. Quantities are integers: a GPU is 1000 milli-GPUs, CPUs are in
/// milli-CPUs, memory in MiB.
///
/// A request takes `gpus` GPUs of one node, `gpuMilli` of each (1000: whole GPUs; less: a share of one
/// GPU), plus its CPUs and memory on that node. A node's *fragment* for a request shape is the GPU capacity
/// that shape could not use there: all of the node's free GPU when the shape does not fit at all (wrong
/// model, too few CPUs or too little memory, too few GPUs with room), else the free milli-GPUs of the GPUs
/// with less room than one of the shape's GPUs needs. Weighted by how often each shape is asked for, that is
/// what the pool is expected to waste when the next request comes. The *stranded* capacity looks further: the
/// GPU left over once the node is filled with requests of one shape, as its GPUs, CPUs and memory allow. The
/// `allot` rule places each request where the two grow the least (see ``FractionPool/Rule/allot``).

/// What a request takes on one node.
public struct ResourceRequest: Hashable, Sendable, CustomStringConvertible {
    /// GPUs touched; 0 for a request of CPUs and memory only.
    public var gpus: Int
    /// Milli-GPUs taken on each of them: 1000 for whole GPUs, 1...999 for a share of one GPU (then `gpus` is 1).
    public var gpuMilli: Int
    public var cpuMilli: Int
    public var memoryMiB: Int
    /// Bit m set: the request may run on GPU model m. All bits set: any model.
    public var models: UInt64

    public init(gpus: Int, gpuMilli: Int = 1000, cpuMilli: Int = 0, memoryMiB: Int = 0, models: UInt64 = ~0) {
        self.gpus = gpus
        self.gpuMilli = gpus == 0 ? 0 : gpuMilli
        self.cpuMilli = cpuMilli
        self.memoryMiB = memoryMiB
        self.models = models
    }

    /// Milli-GPUs taken in all.
    public var totalGPUMilli: Int { gpus * gpuMilli }
    /// Whether the request takes a share of one GPU rather than whole GPUs.
    public var isShare: Bool { gpus == 1 && gpuMilli < FractionPool.milli }

    /// Problems with the request on its own; empty when it is valid.
    public func problems() -> [String] {
        var out: [String] = []
        if gpus < 0 || gpus > FreePool.maxGPUsPerNode {
            out.append("GPUs must be between 0 and \(FreePool.maxGPUsPerNode), got \(gpus)")
        }
        if gpus > 1 && gpuMilli != FractionPool.milli {
            out.append("a share of a GPU (\(gpuMilli) milli-GPUs) is for one GPU, not \(gpus)")
        }
        if gpus > 0 && (gpuMilli < 1 || gpuMilli > FractionPool.milli) {
            out.append("milli-GPUs per GPU must be between 1 and \(FractionPool.milli), got \(gpuMilli)")
        }
        if cpuMilli < 0 { out.append("CPUs must not be negative") }
        if memoryMiB < 0 { out.append("memory must not be negative") }
        if gpus == 0 && cpuMilli == 0 && memoryMiB == 0 { out.append("the request asks for nothing") }
        return out
    }

    /// `0.46 GPU, 6 CPUs, 12 GiB` or `2 GPUs, 8 CPUs, 64 GiB`.
    public var description: String {
        var parts: [String] = []
        if isShare {
            parts.append("\(Fraction.text(gpuMilli)) GPU")
        } else {
            parts.append("\(gpus) GPU\(gpus == 1 ? "" : "s")")
        }
        if cpuMilli > 0 { parts.append("\(Fraction.text(cpuMilli)) CPU\(cpuMilli == 1000 ? "" : "s")") }
        if memoryMiB > 0 { parts.append(Fraction.mebibytes(memoryMiB)) }
        return parts.joined(separator: ", ")
    }
}

/// Text for milli-units and MiB.
public enum Fraction {
    /// `0.25` for 250, `2` for 2000.
    public static func text(_ milli: Int) -> String {
        if milli % 1000 == 0 { return String(milli / 1000) }
        var s = String(format3(milli))
        while s.hasSuffix("0") { s.removeLast() }
        return s
    }

    private static func format3(_ milli: Int) -> String {
        let whole = milli / 1000
        let frac = milli % 1000
        let digits = String(frac)
        return "\(whole)." + String(repeating: "0", count: 3 - digits.count) + digits
    }

    /// `12 GiB` for 12288, `500 MiB` for 500.
    public static func mebibytes(_ mib: Int) -> String {
        mib % 1024 == 0 ? "\(mib / 1024) GiB" : "\(mib) MiB"
    }
}

/// The free resources of one node.
public struct NodeResources: Hashable, Sendable {
    /// The node's GPU model index.
    public let model: Int
    /// Free milli-GPUs per GPU, by index.
    public private(set) var gpuFree: [Int]
    public private(set) var cpuFree: Int
    public private(set) var memoryFree: Int
    public let cpuCapacity: Int
    public let memoryCapacity: Int

    public init(model: Int, gpus: Int, cpuMilli: Int, memoryMiB: Int) {
        self.model = model
        self.gpuFree = Array(repeating: FractionPool.milli, count: gpus)
        self.cpuFree = cpuMilli
        self.memoryFree = memoryMiB
        self.cpuCapacity = cpuMilli
        self.memoryCapacity = memoryMiB
    }

    /// Free milli-GPUs over all GPUs.
    public var freeGPUMilli: Int { gpuFree.reduce(0, +) }
    /// GPUs nobody holds any of.
    public var wholeFreeGPUs: Int { gpuFree.reduce(0) { $0 + ($1 == FractionPool.milli ? 1 : 0) } }
    /// Whether anything runs on the node.
    public var inUse: Bool {
        cpuFree < cpuCapacity || memoryFree < memoryCapacity || gpuFree.contains { $0 < FractionPool.milli }
    }

    /// Whether the node's model, CPUs and memory admit the request (its GPUs aside).
    @inline(__always) func admits(_ r: ResourceRequest) -> Bool {
        r.models & (1 << UInt64(model)) != 0 && cpuFree >= r.cpuMilli && memoryFree >= r.memoryMiB
    }

    /// Whether the node can hold the request now.
    public func canHost(_ r: ResourceRequest) -> Bool {
        guard admits(r) else { return false }
        if r.gpus == 0 { return true }
        var room = 0
        for g in gpuFree where g >= r.gpuMilli {
            room += 1
            if room >= r.gpus { return true }
        }
        return false
    }

    /// Takes the request on the given GPUs. The caller has checked that it fits.
    mutating func take(_ r: ResourceRequest, gpus: [Int]) {
        precondition(gpus.count == r.gpus, "a request of \(r.gpus) GPUs placed on \(gpus.count)")
        for g in gpus {
            precondition(gpuFree[g] >= r.gpuMilli, "GPU \(g) has \(gpuFree[g]) milli-GPUs free, not \(r.gpuMilli)")
            gpuFree[g] -= r.gpuMilli
        }
        precondition(cpuFree >= r.cpuMilli && memoryFree >= r.memoryMiB, "CPUs or memory oversubscribed")
        cpuFree -= r.cpuMilli
        memoryFree -= r.memoryMiB
    }

    /// Gives back what `take` took.
    mutating func give(_ r: ResourceRequest, gpus: [Int]) {
        for g in gpus {
            gpuFree[g] += r.gpuMilli
            precondition(gpuFree[g] <= FractionPool.milli, "GPU \(g) given back more than it has")
        }
        cpuFree += r.cpuMilli
        memoryFree += r.memoryMiB
        precondition(cpuFree <= cpuCapacity && memoryFree <= memoryCapacity, "CPUs or memory given back twice")
    }

    /// The GPUs a whole-GPU request takes: the lowest-numbered free ones. Nil when too few are free.
    func wholeGPUs(_ n: Int) -> [Int]? {
        var out: [Int] = []
        out.reserveCapacity(n)
        for (i, g) in gpuFree.enumerated() where g == FractionPool.milli {
            out.append(i)
            if out.count == n { return out }
        }
        return n == 0 ? [] : nil
    }
}

/// The shapes of the requests a pool expects, each with its share of requests: what fragmentation is
/// measured against.
public struct WorkloadMix: Sendable {
    public struct Shape: Hashable, Sendable {
        public var request: ResourceRequest
        /// The shape's share of requests; the shares add up to 1.
        public var weight: Double
    }

    public private(set) var shapes: [Shape]
    /// Every shape among the requests, each with its share of all of them: what the models' scarcity is
    /// measured on, since the rare shapes that only some models serve are what scarcity must protect.
    public private(set) var everyShape: [Shape]
    /// Per amount of room on one GPU (0...1000 thousandths): what no combination of the mix's share sizes
    /// fills; see ``unfillable(room:)``.
    private let unfillableRoom: [Int]

    /// The most common shapes among `requests` until they make up `coverage` of them (FGD's "typical pods",
    /// 95% by default), with their shares renormalised to 1.
    public init(requests: [ResourceRequest], coverage: Double = 0.95) {
        var count: [ResourceRequest: Int] = [:]
        for r in requests { count[r, default: 0] += 1 }
        let sorted = count.sorted { a, b in
            a.value != b.value
                ? a.value > b.value
                : (a.key.totalGPUMilli, a.key.cpuMilli, a.key.memoryMiB, a.key.models)
                    < (b.key.totalGPUMilli, b.key.cpuMilli, b.key.memoryMiB, b.key.models)
        }
        let total = Double(requests.count)
        var kept: [(ResourceRequest, Int)] = []
        var covered = 0
        for (r, n) in sorted {
            kept.append((r, n))
            covered += n
            if Double(covered) >= coverage * total { break }
        }
        let sum = Double(covered)
        shapes = kept.map { Shape(request: $0.0, weight: Double($0.1) / sum) }
        everyShape = sorted.map { Shape(request: $0.key, weight: Double($0.value) / total) }
        unfillableRoom = Self.unfillableTable(shapes)
    }

    /// A mix of the given shapes and shares (normalised to add up to 1).
    public init(shapes: [Shape]) {
        let sum = shapes.reduce(0) { $0 + $1.weight }
        self.shapes = shapes.map { Shape(request: $0.request, weight: sum > 0 ? $0.weight / sum : 0) }
        self.everyShape = self.shapes
        self.unfillableRoom = Self.unfillableTable(self.shapes)
    }

    /// The room of one GPU, in thousandths, that no combination of the mix's share sizes can take: beside
    /// shares of 0.47 and 0.32, 0.19 free is all lost, 0.53 free loses 0.06 (one 0.47 fits), 0.64 loses
    /// nothing (two 0.32). A GPU nobody holds any of loses nothing: whole-GPU requests take it.
    /// Unlike ``stranded(on:)``, which fills a node with each shape alone, this sees shares of different
    /// sizes sharing one GPU.
    public func unfillable(room: Int) -> Int { unfillableRoom[min(max(room, 0), FractionPool.milli)] }

    /// ``unfillable(room:)`` for every room: a knapsack over the share sizes among the shapes.
    private static func unfillableTable(_ shapes: [Shape]) -> [Int] {
        let sizes = Set(shapes.lazy.filter { $0.request.isShare }.map(\.request.gpuMilli)).sorted()
        var filled = [Int](repeating: 0, count: FractionPool.milli + 1)
        for room in 1...FractionPool.milli {
            for size in sizes where size <= room { filled[room] = max(filled[room], size + filled[room - size]) }
        }
        return (0...FractionPool.milli).map { $0 == FractionPool.milli ? 0 : $0 - filled[$0] }
    }

    /// The expected fragment of a node: the free milli-GPUs that each shape could not use there, weighted by
    /// the shape's share. Shapes without GPUs count the node's whole free GPU capacity, as FGD counts them (a
    /// constant for every placement of one request, so it changes no choice; it keeps the ratio comparable).
    public func fragment(of node: NodeResources) -> Double {
        let free = node.freeGPUMilli
        if free == 0 { return 0 }
        var out = 0.0
        for s in shapes {
            let r = s.request
            guard r.gpus > 0, node.admits(r) else {
                out += s.weight * Double(free)
                continue
            }
            var room = 0
            var below = 0
            for g in node.gpuFree {
                if g >= r.gpuMilli { room += 1 } else { below += g }
            }
            out += s.weight * Double(room >= r.gpus ? below : free)
        }
        return out
    }

    /// The expected stranded capacity of a node: for each shape, the free milli-GPUs left over if the node
    /// were filled with requests of that shape alone — as many as its GPUs, CPUs and memory hold — weighted
    /// by the shape's share. Unlike ``fragment(of:)``, which asks whether one more request fits, it sees the
    /// GPUs that the node's CPUs or memory cannot feed, and the room that shares cannot fill exactly.
    public func stranded(on node: NodeResources) -> Double {
        let free = node.freeGPUMilli
        if free == 0 { return 0 }
        var out = 0.0
        for s in shapes {
            let r = s.request
            guard r.gpus > 0, r.models & (1 << UInt64(node.model)) != 0 else {
                out += s.weight * Double(free)
                continue
            }
            var fit = 0
            if r.isShare {
                for g in node.gpuFree { fit += g / r.gpuMilli }
            } else {
                var whole = 0
                for g in node.gpuFree where g == FractionPool.milli { whole += 1 }
                fit = whole / r.gpus
            }
            if r.cpuMilli > 0 { fit = min(fit, node.cpuFree / r.cpuMilli) }
            if r.memoryMiB > 0 { fit = min(fit, node.memoryFree / r.memoryMiB) }
            out += s.weight * Double(free - fit * r.totalGPUMilli)
        }
        return out
    }
}

/// A pool of nodes for requests that may take fractions of GPUs: which node and GPUs each request gets,
/// under one of the placement rules, and the pool's allocation and fragmentation.
public struct FractionPool: Sendable {
    /// Milli-GPUs in one GPU.
    public static let milli = 1000

    /// How to choose among the nodes that can hold a request.
    public enum Rule: String, Sendable, CaseIterable {
        /// The least harm, measured exactly: the growth of the node's expected stranded capacity (the GPU its
        /// CPUs, memory and share sizes leave unusable once filled with any expected shape), plus ten times the
        /// growth of FGD's fragment, plus twice the growth of the GPU's room that no mix of the expected share
        /// sizes fills, plus the scarcity of the GPU model taken; ties to the lowest-numbered node.
        /// Shares try each distinct amount of room among the node's GPUs.
        case allot
        /// FGD as published: the fragment's growth scored 0...100 through a sigmoid, ties to the first node.
        case fgd
        /// Kubernetes' best fit on CPU and GPU left over (scored 0...100, ties to the first node); shares on the
        /// fullest GPU that holds them.
        case bestfit
        /// GPU packing: shared GPUs first, then free GPUs on used nodes, then fresh nodes.
        case packing
        /// Any node that fits, at random.
        case random
    }

    public private(set) var nodes: [NodeResources]
    public let mix: WorkloadMix
    public let rule: Rule
    /// Per node: its current expected fragment.
    private var fragmentNow: [Double]
    /// Expected fragments of node states already seen (by a packed key of the state).
    private var memo: [StateKey: Double] = [:]
    /// Per node: its current expected stranded capacity (the `allot` rule's measure), and its memo.
    private var strandedNow: [Double]
    private var strandedMemo: [StateKey: Double] = [:]
    private var rng: SplitMix64

    /// Per model: how much the expected requests need its GPUs, relative to the pool's average (1).
    let modelPrice: [Double]

    public init(nodes: [NodeResources], mix: WorkloadMix, rule: Rule, seed: UInt64 = 0) {
        // Scarcity of each model: the GPU demand of every shape seen that may use it (not only the typical
        // ones: a third of gpuspec33's tasks name models, in many rare shapes), each spread over the capacity
        // it may use; 1 on average over the pool's GPUs.
        var capacity = [Double](repeating: 0, count: 64)
        for n in nodes { capacity[n.model] += Double(n.gpuFree.count * Self.milli) }
        var price = [Double](repeating: 0, count: 64)
        for sh in mix.everyShape where sh.request.gpus > 0 {
            var reach = 0.0
            for m in 0..<64 where sh.request.models & (1 << UInt64(m)) != 0 { reach += capacity[m] }
            guard reach > 0 else { continue }
            for m in 0..<64 where sh.request.models & (1 << UInt64(m)) != 0 {
                price[m] += sh.weight * Double(sh.request.totalGPUMilli) / reach
            }
        }
        let total = capacity.reduce(0, +)
        let mean = zip(price, capacity).reduce(0) { $0 + $1.0 * $1.1 } / max(total, 1)
        self.modelPrice = price.map { mean > 0 ? $0 / mean : 1 }
        self.nodes = nodes
        self.mix = mix
        self.rule = rule
        self.rng = SplitMix64(seed: seed)
        self.fragmentNow = []
        self.strandedNow = []
        self.fragmentNow = nodes.map { fragmentOf($0) }
        if rule == .allot { self.strandedNow = nodes.map { strandedOf($0) } }
    }

    /// Where a request went: the node's index and the GPUs taken there.
    public struct Choice: Hashable, Sendable {
        public var node: Int
        public var gpus: [Int]
    }

    /// Chooses a node and GPUs for the request by the pool's rule and takes them. Nil (taking nothing) when
    /// no node can hold it.
    public mutating func place(_ r: ResourceRequest) -> Choice? {
        guard let c = choose(r) else { return nil }
        nodes[c.node].take(r, gpus: c.gpus)
        fragmentNow[c.node] = fragmentOf(nodes[c.node])
        if rule == .allot { strandedNow[c.node] = strandedOf(nodes[c.node]) }
        return c
    }

    /// Gives back what a request took.
    public mutating func release(_ r: ResourceRequest, from c: Choice) {
        nodes[c.node].give(r, gpus: c.gpus)
        fragmentNow[c.node] = fragmentOf(nodes[c.node])
        if rule == .allot { strandedNow[c.node] = strandedOf(nodes[c.node]) }
    }

    /// Milli-GPUs held by requests, over the whole pool.
    public var allocatedGPUMilli: Int { nodes.reduce(0) { $0 + $1.gpuFree.count * Self.milli - $1.freeGPUMilli } }
    /// Milli-GPUs of the whole pool.
    public var capacityGPUMilli: Int { nodes.reduce(0) { $0 + $1.gpuFree.count * Self.milli } }
    /// The pool's expected fragment (milli-GPUs).
    public var fragment: Double { fragmentNow.reduce(0, +) }
    /// The expected fragment as a share of the free GPU capacity (0 when nothing is free).
    public var fragmentRatio: Double {
        let free = capacityGPUMilli - allocatedGPUMilli
        return free > 0 ? fragment / Double(free) : 0
    }

    // MARK: Choosing

    private mutating func choose(_ r: ResourceRequest) -> Choice? {
        switch rule {
        case .allot: return chooseLeastGrowth(r)
        case .fgd: return chooseFGD(r)
        case .bestfit, .packing: return chooseByScore(r)
        case .random: return chooseRandom(r)
        }
    }

    /// For each node that can hold the request: the GPUs the request would take there, one set per distinct
    /// outcome (for a share: each distinct amount of room among the GPUs that hold it; for whole GPUs: the
    /// lowest-numbered free ones).
    private func options(on i: Int, for r: ResourceRequest) -> [[Int]] {
        let n = nodes[i]
        guard n.admits(r) else { return [] }
        if r.gpus == 0 { return [[]] }
        if r.isShare {
            var seen: [Int] = []
            var out: [[Int]] = []
            for (g, free) in n.gpuFree.enumerated() where free >= r.gpuMilli && !seen.contains(free) {
                seen.append(free)
                out.append([g])
            }
            return out
        }
        return n.wholeGPUs(r.gpus).map { [$0] } ?? []
    }

    /// How much worse node i gets if the request took `gpus` there. For FGD: the growth of its expected
    /// fragment. For allot: the growth of its expected stranded capacity, plus the growth of its fragment
    /// (weighted `fragmentWeight`), plus what the request takes of a model in short supply (its milli-GPUs
    /// times the model's scarcity above the pool's average, weighted `scarcityWeight`).
    private mutating func growth(node i: Int, _ r: ResourceRequest, gpus: [Int]) -> Double {
        var after = nodes[i]
        after.take(r, gpus: gpus)
        let fragment = fragmentOf(after) - fragmentNow[i]
        guard rule == .allot else { return fragment }
        var unfillable = 0
        if r.isShare {
            for g in gpus {
                unfillable += mix.unfillable(room: after.gpuFree[g]) - mix.unfillable(room: nodes[i].gpuFree[g])
            }
        }
        return strandedOf(after) - strandedNow[i] + Self.fragmentWeight * fragment
            + Self.unfillableWeight * Double(unfillable)
            + Self.scarcityWeight * (modelPrice[nodes[i].model] - 1) * Double(r.totalGPUMilli)
    }

    /// The weights of the `allot` rule's terms, chosen on FGD's 17 openb workloads (docs/fractional-gpus.md):
    /// the fragment's growth sees the next request, the stranded capacity sees the node filled up, the
    /// unfillable room sees a GPU's room filled by shares of mixed sizes. Scarcity's weight lifts gpuspec33
    /// from 90.1% (1) to 94.2% (3), and no further above.
    static let fragmentWeight = 10.0
    static let unfillableWeight = 2.0
    static let scarcityWeight = 3.0
    /// Growths closer than this (milli-GPUs) are ties, which go to the lowest-numbered node.
    static let tieTolerance = 1e-6

    private mutating func chooseLeastGrowth(_ r: ResourceRequest) -> Choice? {
        var best: Choice?
        var bestGrowth = Double.infinity
        for i in nodes.indices {
            for gpus in options(on: i, for: r) {
                let d = growth(node: i, r, gpus: gpus)
                if d < bestGrowth - Self.tieTolerance {
                    bestGrowth = d
                    best = Choice(node: i, gpus: gpus)
                }
            }
        }
        return best
    }

    private mutating func chooseFGD(_ r: ResourceRequest) -> Choice? {
        var best: Choice?
        var bestScore = Int.min
        for i in nodes.indices {
            var nodeBest: Choice?
            var nodeScore = Int.min
            for gpus in options(on: i, for: r) {
                let d = growth(node: i, r, gpus: gpus)
                let score = Int(100 / (1 + Math.exp(d / 1000)))
                // FGD keeps the first GPU with the highest score on the node.
                if score > nodeScore {
                    nodeScore = score
                    nodeBest = Choice(node: i, gpus: gpus)
                }
            }
            // Ties go to the first node, as in FGD's simulator (the lowest name).
            if let c = nodeBest, nodeScore > bestScore {
                bestScore = nodeScore
                best = c
            }
        }
        return best
    }

    private mutating func chooseByScore(_ r: ResourceRequest) -> Choice? {
        var best = -1
        var bestScore = Int.min
        for i in nodes.indices where nodes[i].canHost(r) {
            let score = rule == .bestfit ? bestFitScore(nodes[i], r) : packingScore(nodes[i], r)
            if score > bestScore {
                bestScore = score
                best = i
            }
        }
        guard best >= 0 else { return nil }
        return Choice(node: best, gpus: fullestGPUs(nodes[best], r))
    }

    private mutating func chooseRandom(_ r: ResourceRequest) -> Choice? {
        var fitting: [Int] = []
        for i in nodes.indices where nodes[i].canHost(r) { fitting.append(i) }
        guard !fitting.isEmpty else { return nil }
        let i = fitting[Int(rng.next() % UInt64(fitting.count))]
        if r.isShare {
            let gpus = nodes[i].gpuFree.indices.filter { nodes[i].gpuFree[$0] >= r.gpuMilli }
            return Choice(node: i, gpus: [gpus[Int(rng.next() % UInt64(gpus.count))]])
        }
        return Choice(node: i, gpus: nodes[i].wholeGPUs(r.gpus)!)
    }

    /// Best fit's GPUs: for a share, the GPU with the least room that holds it; whole GPUs as always.
    private func fullestGPUs(_ n: NodeResources, _ r: ResourceRequest) -> [Int] {
        guard r.isShare else { return n.wholeGPUs(r.gpus)! }
        var best = -1
        for (g, free) in n.gpuFree.enumerated() where free >= r.gpuMilli && (best < 0 || free < n.gpuFree[best]) {
            best = g
        }
        return [best]
    }

    /// Kubernetes' best fit: 100 × (1 − the mean of CPU and GPU left over, each over the largest node's).
    private func bestFitScore(_ n: NodeResources, _ r: ResourceRequest) -> Int {
        let cpu = Double(n.cpuFree - r.cpuMilli) / 128_000
        let gpu = Double(n.freeGPUMilli - r.totalGPUMilli) / 8_000
        return Int((1 - 0.5 * cpu - 0.5 * gpu) * 100)
    }

    /// GPU packing's score: shared GPUs first (the fuller the better), then free GPUs on a used node, then a
    /// fresh node (the fewer GPUs the better).
    private func packingScore(_ n: NodeResources, _ r: ResourceRequest) -> Int {
        guard r.gpus > 0 else { return 0 }
        let whole = n.wholeFreeGPUs
        if whole == n.gpuFree.count { return max(33 - whole, whole) }
        let order = n.gpuFree.indices.sorted { n.gpuFree[$0] < n.gpuFree[$1] }
        var left = r.gpus
        var freshUsed = 0
        var roomUsed = 0
        for g in order where left > 0 && n.gpuFree[g] >= r.gpuMilli {
            left -= 1
            if n.gpuFree[g] == Self.milli { freshUsed += 1 }
            roomUsed += n.gpuFree[g] * 100 / Self.milli
        }
        if freshUsed > 0 { return max(50 - freshUsed, 33) }
        return max(100 - roomUsed / 10, 50)
    }

    // MARK: The memo of fragments

    /// A node state packed for the memo: model, CPUs, memory, and the free milli-GPUs of each GPU in
    /// ascending order, 10 bits each (up to 12 GPUs; larger nodes are measured without the memo).
    private struct StateKey: Hashable {
        var model: Int32
        var cpu: Int32
        var memory: Int64
        var low: UInt64
        var high: UInt64
    }

    private mutating func fragmentOf(_ n: NodeResources) -> Double {
        guard let key = Self.key(n) else { return mix.fragment(of: n) }
        if let f = memo[key] { return f }
        let f = mix.fragment(of: n)
        memo[key] = f
        return f
    }

    private mutating func strandedOf(_ n: NodeResources) -> Double {
        guard let key = Self.key(n) else { return mix.stranded(on: n) }
        if let f = strandedMemo[key] { return f }
        let f = mix.stranded(on: n)
        strandedMemo[key] = f
        return f
    }

    private static func key(_ n: NodeResources) -> StateKey? {
        guard n.gpuFree.count <= 12, n.cpuFree < Int(Int32.max) else { return nil }
        let sorted = n.gpuFree.sorted()
        var low: UInt64 = 0
        var high: UInt64 = UInt64(sorted.count)
        for (k, g) in sorted.enumerated() {
            if k < 6 {
                low |= UInt64(g) << UInt64(k * 10)
            } else {
                high |= UInt64(g) << UInt64((k - 6) * 10 + 4)
            }
        }
        return StateKey(model: Int32(n.model), cpu: Int32(n.cpuFree), memory: Int64(n.memoryFree), low: low, high: high)
    }
}

extension Fraction {
    /// Why a GPU amount was refused.
    public struct AmountProblem: Error, Sendable, Hashable {
        public let message: String
    }

    /// Reads a GPU amount: whole GPUs (1 to 65536), a share of one GPU (above 0, below 1, in thousandths:
    /// 0.25, 0.125), or 0 for a job of CPUs and memory only.
    public static func gpuAmount(_ v: Double) -> Result<(gpus: Int, share: Int?), AmountProblem> {
        let text = v.isFinite && v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : String(v)
        func problem(_ s: String) -> Result<(gpus: Int, share: Int?), AmountProblem> {
            .failure(AmountProblem(message: s))
        }
        if v == 0 { return .success((0, nil)) }
        guard v.isFinite, v > 0 else {
            return problem(
                "must be whole GPUs (1 to 65536), a share of one GPU (e.g. 0.25), or 0 for CPUs only, not \(text)"
            )
        }
        if v >= 1 {
            guard v == v.rounded() else {
                return problem(
                    "\(text) is neither whole GPUs nor a share of one GPU below 1; ask for whole GPUs (e.g. 2) or a share (e.g. 0.5)"
                )
            }
            guard v <= 65_536 else { return problem("must be at most 65536 GPUs, not \(text)") }
            return .success((Int(v), nil))
        }
        let milli = (v * 1000).rounded()
        guard abs(v * 1000 - milli) < 1e-6, milli >= 1 else {
            return problem("a share of one GPU is given in thousandths (0.001 to 0.999), not \(text)")
        }
        return .success((1, Int(milli)))
    }
}

extension Fraction {
    /// Reads a memory size in MiB: `64GiB`, `64G`, `512MiB`, `512M`, `1.5TiB` (``ByteSize``), or a bare number
    /// of MiB, as Slurm's `--mem` reads it; rounded up to whole MiB. Nil when it is not a size above zero.
    public static func mebibytes(parsing text: String) -> Int? {
        if let bytes = ByteSize.parse(withUnit: text) { return bytes > 0 ? (bytes + (1 << 20) - 1) >> 20 : nil }
        guard let v = Double(text.trimmingWhitespace()), v.isFinite, v > 0, v < 1e12 else { return nil }
        return Int(v.rounded(.up))
    }
}
