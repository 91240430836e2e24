/// The free GPUs of a pool, indexed for placement: for each GPU model and each free count k, the set of
/// schedulable nodes with exactly k free healthy GPUs (a bitset over that model's nodes).
///
/// Best fit (the node with the fewest free GPUs that still holds a request) and "largest free node" are
/// O(max GPUs per node + nodes/64) lookups; taking GPUs is O(1). The state keeps one up to date as events
/// apply (O(1) per start or end, O(nodes) when nodes are added or removed); a scheduling pass works on a
/// copy, which costs nothing until the pass takes GPUs (copy-on-write).
public struct FreePool: Sendable {
    /// Most GPUs one node may have (one bit each in a 64-bit mask).
    public static let maxGPUsPerNode = 64
    /// Most GPU models a pool may declare (one bit each in a 64-bit mask).
    public static let maxModels = 64

    /// Per node: mask of free healthy GPUs; 0 for nodes that take no new jobs.
    private(set) var free: [UInt64]
    /// Per node: its model's index.
    let modelOf: [Int]
    /// Per node: its position in its model's node list.
    private let localPos: [Int]
    /// Per model: global indices of its nodes, in pool order.
    let modelNodes: [[Int]]
    /// Per model: bitset words per bucket.
    private let words: [Int]
    /// Per model: largest GPU count of its nodes.
    let maxK: [Int]
    /// Per model: free GPUs on schedulable nodes.
    private(set) var totalFree: [Int]
    /// Per model, bucket k: number of nodes with exactly k free GPUs. Index: model * 65 + k.
    private var bucketSize: [Int]
    /// Per model, bucket k: bitset over the model's nodes. Bucket (m, k) starts at `bucketBase[m] + k * words[m]`.
    private var bits: [UInt64]
    private let bucketBase: [Int]
    /// Per node: NVLink island masks.
    let islands: [[UInt64]]
    /// Per model: GPUs over all nodes, whatever their state (what the pool could ever offer).
    let capacity: [Int]
    /// Per model: the largest NVLink island.
    let largestIsland: [Int]

    /// Indexes the free GPUs of the schedulable nodes among `nodes`.
    init(models: Int, nodes: [Node]) {
        var modelOf = [Int](repeating: 0, count: nodes.count)
        var localPos = [Int](repeating: 0, count: nodes.count)
        var modelNodes = [[Int]](repeating: [], count: models)
        var maxK = [Int](repeating: 0, count: models)
        var capacity = [Int](repeating: 0, count: models)
        var largestIsland = [Int](repeating: 0, count: models)
        var islands = [[UInt64]]()
        islands.reserveCapacity(nodes.count)
        for (i, node) in nodes.enumerated() {
            let m = node.modelIndex
            modelOf[i] = m
            localPos[i] = modelNodes[m].count
            modelNodes[m].append(i)
            maxK[m] = max(maxK[m], node.spec.gpus)
            capacity[m] += node.spec.gpus
            for island in node.islandMasks { largestIsland[m] = max(largestIsland[m], island.nonzeroBitCount) }
            islands.append(node.islandMasks)
        }
        self.capacity = capacity
        self.largestIsland = largestIsland
        var words = [Int](repeating: 0, count: models)
        var base = [Int](repeating: 0, count: models)
        var total = 0
        for m in 0..<models {
            words[m] = (modelNodes[m].count + 63) / 64
            base[m] = total
            total += words[m] * (Self.maxGPUsPerNode + 1)
        }
        self.modelOf = modelOf
        self.localPos = localPos
        self.modelNodes = modelNodes
        self.words = words
        self.maxK = maxK
        self.bucketBase = base
        self.islands = islands
        self.bits = [UInt64](repeating: 0, count: total)
        self.bucketSize = [Int](repeating: 0, count: models * (Self.maxGPUsPerNode + 1))
        self.totalFree = [Int](repeating: 0, count: models)
        self.free = [UInt64](repeating: 0, count: nodes.count)
        for (i, node) in nodes.enumerated() where node.schedulable {
            let mask = node.freeMask
            free[i] = mask
            let k = mask.nonzeroBitCount
            totalFree[modelOf[i]] += k
            if k > 0 { insert(node: i, bucket: k) }
        }
    }

    /// Whether two pools index the same free GPUs the same way.
    func indexesTheSame(as other: FreePool) -> Bool {
        free == other.free && totalFree == other.totalFree && bucketSize == other.bucketSize && bits == other.bits
            && capacity == other.capacity && maxK == other.maxK
    }

    /// Free GPUs on node `i`.
    @inline(__always) func freeCount(_ i: Int) -> Int { free[i].nonzeroBitCount }

    /// Free GPUs of a model.
    public func freeGPUs(model m: Int) -> Int { totalFree[m] }

    /// Free GPUs of all models.
    public var totalFreeGPUs: Int { totalFree.reduce(0, +) }

    /// The largest number of free GPUs on one node of model `m`.
    public func largestBlock(model m: Int) -> Int {
        var k = maxK[m]
        while k > 0 {
            if bucketSize[m * 65 + k] > 0 { return k }
            k -= 1
        }
        return 0
    }

    /// The node of model `m` with the fewest free GPUs that still has at least `n` (lowest index on ties).
    func bestFit(model m: Int, atLeast n: Int) -> Int? {
        guard n <= maxK[m] else { return nil }
        for k in max(n, 1)...maxK[m] where bucketSize[m * 65 + k] > 0 {
            return firstNode(model: m, bucket: k)
        }
        return nil
    }

    /// Calls `body` with each node of model `m` having at least `n` free GPUs, fewest free first, until it
    /// returns true. Returns whether it did.
    func forEachFitting(model m: Int, atLeast n: Int, _ body: (Int) -> Bool) -> Bool {
        guard n <= maxK[m] else { return false }
        for k in max(n, 1)...maxK[m] where bucketSize[m * 65 + k] > 0 {
            let start = bucketBase[m] + k * words[m]
            for w in 0..<words[m] {
                var word = bits[start + w]
                while word != 0 {
                    let b = word.trailingZeroBitCount
                    word &= word - 1
                    if body(modelNodes[m][w * 64 + b]) { return true }
                }
            }
        }
        return false
    }

    /// The node of model `m` with the most free GPUs (lowest index on ties).
    func largest(model m: Int) -> Int? {
        let k = largestBlock(model: m)
        return k > 0 ? firstNode(model: m, bucket: k) : nil
    }

    /// This pool with only the nodes `admits` (by position) offering their free GPUs.
    func keeping(_ admits: [Bool]) -> FreePool {
        var v = self
        for (i, ok) in admits.enumerated() where !ok && v.free[i] != 0 { v.setFree(node: i, mask: 0) }
        return v
    }

    /// Marks GPUs of node `i` as taken.
    mutating func take(node i: Int, mask: UInt64) { setFree(node: i, mask: free[i] & ~mask) }

    /// Sets which GPUs of node `i` a new job could take (none when the node takes no new jobs).
    mutating func setFree(node i: Int, mask: UInt64) {
        let before = free[i].nonzeroBitCount
        free[i] = mask
        let after = mask.nonzeroBitCount
        guard after != before else { return }
        if before > 0 { remove(node: i, bucket: before) }
        if after > 0 { insert(node: i, bucket: after) }
        totalFree[modelOf[i]] += after - before
    }

    // MARK: Bitsets

    private func firstNode(model m: Int, bucket k: Int) -> Int? {
        let start = bucketBase[m] + k * words[m]
        for w in 0..<words[m] {
            let word = bits[start + w]
            if word != 0 { return modelNodes[m][w * 64 + word.trailingZeroBitCount] }
        }
        return nil
    }

    private mutating func insert(node i: Int, bucket k: Int) {
        let m = modelOf[i]
        let p = localPos[i]
        bits[bucketBase[m] + k * words[m] + p / 64] |= UInt64(1) << UInt64(p % 64)
        bucketSize[m * 65 + k] += 1
    }

    private mutating func remove(node i: Int, bucket k: Int) {
        let m = modelOf[i]
        let p = localPos[i]
        bits[bucketBase[m] + k * words[m] + p / 64] &= ~(UInt64(1) << UInt64(p % 64))
        bucketSize[m * 65 + k] -= 1
    }
}

extension UInt64 {
    /// The `n` lowest set bits of the mask (all of them if it has fewer).
    @inline(__always) func lowestBits(_ n: Int) -> UInt64 {
        var rest = self
        var out: UInt64 = 0
        var left = n
        while left > 0 && rest != 0 {
            let low = rest & (0 &- rest)
            out |= low
            rest &= rest - 1
            left -= 1
        }
        return out
    }

    /// The indices of the set bits, ascending, without an array: `for i in mask.setBits`.
    var setBits: SetBits { SetBits(rest: self) }

    /// The indices of the set bits, ascending.
    var bitIndices: [Int] {
        var out: [Int] = []
        out.reserveCapacity(nonzeroBitCount)
        var rest = self
        while rest != 0 {
            out.append(rest.trailingZeroBitCount)
            rest &= rest - 1
        }
        return out
    }
}

/// The set bits of a 64-bit mask, lowest first (a GPU set on a node, a set of models).
struct SetBits: Sequence, IteratorProtocol {
    var rest: UInt64

    mutating func next() -> Int? {
        guard rest != 0 else { return nil }
        defer { rest &= rest - 1 }
        return rest.trailingZeroBitCount
    }
}

/// Some GPUs of one node, by the node's position in the state and a mask of GPU indices.
struct NodeMask: Hashable, Sendable {
    var node: Int
    var mask: UInt64
}

/// One GPU: a node position and a GPU index on it.
struct NodeGPU: Hashable, Sendable {
    var node: Int
    var gpu: Int
}
