/// What an operator declares about a node.
public struct NodeSpec: Hashable, Codable, Sendable {
    public var name: String
    /// The name of the node's GPU model (all GPUs of a node are of one model).
    public var gpuModel: String
    /// Number of GPUs, 1...64.
    public var gpus: Int
    /// Groups of GPU indices connected by NVLink. Empty: the node has no NVLink, and jobs that ask for
    /// `nvlink` topology do not go there. A DGX-style node where every GPU reaches every other through
    /// NVSwitch is one island holding all its GPUs.
    public var nvlinkIslands: [[Int]]
    public var cpus: Int?
    public var memoryGiB: Double?
    public var labels: [String: String]
    /// Whether the daemon itself runs this node's jobs (rather than a node agent).
    public var local: Bool
    /// Whether the node's GPUs are kept for inference (lent to preemptible jobs while inference does not
    /// need them), adding to its model's inference reserve.
    public var inferenceReserved: Bool
    /// How shares of one GPU run here.
    public var sharing: GPUSharing
    /// Whether and how the node's GPUs are split into MIG instances.
    public var mig: MIGMode
    /// For `mig = static`: the instances on every GPU (the operator made them).
    public var migLayout: [MIGSlot]

    public init(
        name: String,
        gpuModel: String,
        gpus: Int,
        nvlinkIslands: [[Int]] = [],
        cpus: Int? = nil,
        memoryGiB: Double? = nil,
        labels: [String: String] = [:],
        local: Bool = false,
        inferenceReserved: Bool = false,
        sharing: GPUSharing = .timeSlice,
        mig: MIGMode = .off,
        migLayout: [MIGSlot] = []
    ) {
        self.name = name
        self.gpuModel = gpuModel
        self.gpus = gpus
        self.nvlinkIslands = nvlinkIslands
        self.cpus = cpus
        self.memoryGiB = memoryGiB
        self.labels = labels
        self.local = local
        self.inferenceReserved = inferenceReserved
        self.sharing = sharing
        self.mig = mig
        self.migLayout = migLayout
    }

    enum CodingKeys: String, CodingKey {
        case name, gpuModel, gpus, nvlinkIslands, cpus, memoryGiB, labels, local, inferenceReserved, sharing, mig,
            migLayout
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        gpuModel = try c.decode(String.self, forKey: .gpuModel)
        gpus = try c.decode(Int.self, forKey: .gpus)
        nvlinkIslands = try c.decodeIfPresent([[Int]].self, forKey: .nvlinkIslands) ?? []
        cpus = try c.decodeIfPresent(Int.self, forKey: .cpus)
        memoryGiB = try c.decodeIfPresent(Double.self, forKey: .memoryGiB)
        labels = try c.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
        local = try c.decodeIfPresent(Bool.self, forKey: .local) ?? false
        inferenceReserved = try c.decodeIfPresent(Bool.self, forKey: .inferenceReserved) ?? false
        sharing = try c.decodeIfPresent(GPUSharing.self, forKey: .sharing) ?? .timeSlice
        mig = try c.decodeIfPresent(MIGMode.self, forKey: .mig) ?? .off
        migLayout = try c.decodeIfPresent([MIGSlot].self, forKey: .migLayout) ?? []
    }

    /// Problems with this spec on its own (GPU count, islands); empty when it is valid.
    public func problems() -> [String] {
        var out: [String] = []
        if name.isEmpty { out.append("a node has an empty name") }
        if gpus < 1 || gpus > FreePool.maxGPUsPerNode {
            out.append("node \"\(name)\": gpus must be between 1 and \(FreePool.maxGPUsPerNode), got \(gpus)")
        }
        var seen = Set<Int>()
        for island in nvlinkIslands {
            if island.isEmpty { out.append("node \"\(name)\": an NVLink island is empty") }
            for g in island {
                if g < 0 || g >= gpus {
                    out.append("node \"\(name)\": NVLink island names GPU \(g), but the node has GPUs 0...\(gpus - 1)")
                } else if !seen.insert(g).inserted {
                    out.append("node \"\(name)\": GPU \(g) is in two NVLink islands")
                }
            }
        }
        return out
    }

    /// Bit masks of the islands' GPUs.
    var islandMasks: [UInt64] {
        nvlinkIslands.map { island in island.reduce(UInt64(0)) { $0 | (1 << UInt64($1)) } }
    }
}

/// How a node runs shares of one GPU.
public enum GPUSharing: String, Codable, Sendable, CaseIterable {
    /// The GPU's shares take turns, with no isolation of compute or memory (a share is a scheduling promise).
    case timeSlice = "time-slice"
    /// An MPS control daemon serves the GPU: each share's compute and memory are limited
    /// (`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`, `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`). An MPS server serves one
    /// user at a time, so the shares of one GPU all belong to one user.
    case mps
    /// No shares: the node's GPUs are given whole only.
    case off
}

/// The administrative and health state of a node.
public enum NodeState: String, Codable, Sendable, CaseIterable {
    /// Takes new jobs.
    case up
    /// Runs its jobs to the end but takes no new ones.
    case draining
    /// Drained: no jobs, takes none.
    case drained
    /// Unreachable or failed: takes no jobs.
    case down
}

/// The health of one GPU.
public enum GPUHealth: String, Codable, Sendable, CaseIterable {
    case healthy
    /// Taken out of scheduling (XID errors, ECC, lost from the bus, or by an operator).
    case unhealthy
}

/// A node as the state holds it: its spec, its state, and which job holds each GPU.
public struct Node: Hashable, Sendable {
    public var spec: NodeSpec
    /// Index of the node's model in `PoolConfig.gpuModels`.
    public internal(set) var modelIndex: Int
    public internal(set) var state: NodeState
    public internal(set) var stateReason: String?
    /// Per-GPU health, by index.
    public internal(set) var health: [GPUHealth]
    /// Why each unhealthy GPU is unhealthy, by index (nil for healthy ones).
    public internal(set) var healthReason: [String?]
    /// The job holding each GPU, or nil.
    public internal(set) var holder: [JobID?]
    /// Thousandths of each GPU held by share jobs (0 where none; such a GPU has no whole holder).
    public internal(set) var shareUsed: [Int]
    /// The share jobs (or MIG jobs) on each GPU, ascending.
    public internal(set) var sharers: [[JobID]]
    /// The memory slices taken by MIG instances on each GPU (0 where none).
    public internal(set) var migUsed: [UInt8]
    /// CPUs held by running jobs, in thousandths.
    public internal(set) var cpuUsed: Int
    /// Memory held by running jobs, in MiB.
    public internal(set) var memoryUsed: Int
    /// Bit i set: GPU i is held by a job, or shared by some.
    public internal(set) var usedMask: UInt64
    /// Bit i set: GPU i is unhealthy.
    public internal(set) var unhealthyMask: UInt64
    let islandMasks: [UInt64]

    init(spec: NodeSpec, modelIndex: Int) {
        self.spec = spec
        self.modelIndex = modelIndex
        self.state = .up
        self.stateReason = nil
        self.health = Array(repeating: .healthy, count: spec.gpus)
        self.healthReason = Array(repeating: nil, count: spec.gpus)
        self.holder = Array(repeating: nil, count: spec.gpus)
        self.shareUsed = Array(repeating: 0, count: spec.gpus)
        self.sharers = Array(repeating: [], count: spec.gpus)
        self.migUsed = Array(repeating: 0, count: spec.gpus)
        self.cpuUsed = 0
        self.memoryUsed = 0
        self.usedMask = 0
        self.unhealthyMask = 0
        self.islandMasks = spec.islandMasks
    }

    public var name: String { spec.name }
    /// Mask of all the node's GPUs.
    public var allMask: UInt64 { spec.gpus == 64 ? ~0 : (1 << UInt64(spec.gpus)) - 1 }
    /// GPUs that a new job could take whole or as shares: healthy and free (ignores the node's state). None
    /// on a node with a static MIG layout, whose GPUs take only MIG jobs.
    public var freeMask: UInt64 { spec.mig == .static ? 0 : allMask & ~usedMask & ~unhealthyMask }
    /// Whether the node takes new jobs.
    public var schedulable: Bool { state == .up }
    /// Number of GPUs held by jobs (a shared GPU counts once).
    public var gpusInUse: Int { usedMask.nonzeroBitCount }
    /// The node's CPUs in thousandths, when declared.
    public var cpuCapacity: Int? { spec.cpus.map { $0 * 1000 } }
    /// The node's memory in MiB, when declared.
    public var memoryCapacity: Int? { spec.memoryGiB.map { Int(($0 * 1024).rounded(.down)) } }

    /// What a job takes of this node's CPUs and memory with `gpus` of its `jobGPUs` GPUs here (`worth`: GPUs'
    /// worth taken here, the share for a share job): its own requests (nil: none) split by GPUs, else a share
    /// of the node in proportion to the GPUs taken. Nil for what the node does not declare.
    func hostResources(
        cpuMilli: Int?,
        memoryMiB: Int?,
        jobGPUs: Int,
        gpus: Int,
        worth: Double
    )
        -> (cpuMilli: Int?, memoryMiB: Int?)
    {
        if jobGPUs == 0 {
            // A job of CPUs and memory only takes what it asks for: nothing is in proportion to no GPUs.
            return (cpuCapacity == nil ? nil : cpuMilli, memoryCapacity == nil ? nil : memoryMiB)
        }
        let fraction = worth / Double(spec.gpus)
        func split(_ total: Int) -> Int { (total * gpus + jobGPUs - 1) / max(1, jobGPUs) }
        func proportional(_ cap: Int) -> Int { Int((Double(cap) * fraction).rounded(.down)) }
        return (
            cpuCapacity.map { cap in cpuMilli.map(split) ?? proportional(cap) },
            memoryCapacity.map { cap in memoryMiB.map(split) ?? proportional(cap) }
        )
    }

    /// Whether `cpu` thousandths of CPUs and `memory` MiB are free here, beyond `extraCPU`/`extraMemory` already
    /// promised.
    public func hostFits(cpu: Int?, memory: Int?, extraCPU: Int = 0, extraMemory: Int = 0) -> Bool {
        if let cpu, let cap = cpuCapacity, cpuUsed + extraCPU + cpu > cap { return false }
        if let memory, let cap = memoryCapacity, memoryUsed + extraMemory + memory > cap { return false }
        return true
    }

    /// Whether a share of job owner `uid` may go on GPU `g` as the node's sharing mode allows (its room aside).
    public func acceptsShare(uid: UInt32, onGPU g: Int, owners: (JobID) -> UInt32?) -> Bool {
        switch spec.sharing {
        case .off: false
        case .timeSlice: true
        case .mps: sharers[g].allSatisfy { owners($0) == uid }
        }
    }

    /// The jobs on GPU `g`: its holder, or its share jobs.
    public func jobs(onGPU g: Int) -> [JobID] { holder[g].map { [$0] } ?? sharers[g] }
}
