/// The GPUs given to a job: some GPUs on each of one or more nodes, all of one model.
public struct Allocation: Hashable, Codable, Sendable, CustomStringConvertible {
    /// The GPUs taken on one node.
    public struct Slice: Hashable, Codable, Sendable, CustomStringConvertible {
        public var node: String
        /// GPU indices on that node, ascending.
        public var gpus: [Int]
        /// CPUs taken there, in thousandths (nil where the node does not declare its CPUs).
        public var cpuMilli: Int?
        /// Memory taken there, in MiB (nil where the node does not declare its memory).
        public var memoryMiB: Int?
        public init(node: String, gpus: [Int], cpuMilli: Int? = nil, memoryMiB: Int? = nil) {
            self.node = node
            self.gpus = gpus
            self.cpuMilli = cpuMilli
            self.memoryMiB = memoryMiB
        }

        /// `h100-01[0-3]`; `cpu-01` for a job of CPUs only.
        public var description: String { gpus.isEmpty ? node : "\(node)[\(Allocation.ranges(gpus))]" }
    }

    /// The GPU model of every GPU in the allocation.
    public var model: String
    /// Per-node slices, in the order they were chosen.
    public var slices: [Slice]
    /// For a share of one GPU: the thousandths of that GPU taken (1–999). Nil for whole GPUs.
    public var share: Int?
    /// For a MIG job: its instance on the one GPU of the allocation. Nil otherwise.
    public var mig: MIGSlot? { migPart?.slot }
    /// For a MIG job: the thousandths of its GPU its instance is priced at (``MIGTable/priceMilli(_:)``).
    public var migMilli: Int? { migPart.map { Int($0.milli) } }
    /// Both, boxed: one word in every allocation (most are not MIG), where the two fields took five.
    private var migPart: MIGPart?

    final class MIGPart: Hashable, Sendable {
        let slot: MIGSlot
        let milli: Int32
        init(slot: MIGSlot, milli: Int) {
            self.slot = slot
            self.milli = Int32(clamping: milli)
        }
        static func == (a: MIGPart, b: MIGPart) -> Bool { a.slot == b.slot && a.milli == b.milli }
        func hash(into h: inout Hasher) {
            h.combine(slot)
            h.combine(milli)
        }
    }

    public init(model: String, slices: [Slice], share: Int? = nil, mig: MIGSlot? = nil, migMilli: Int? = nil) {
        self.model = model
        self.slices = slices
        self.share = share
        self.migPart = mig.map { MIGPart(slot: $0, milli: migMilli ?? 0) }
    }

    enum CodingKeys: String, CodingKey { case model, slices, share, mig, migMilli }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decode(String.self, forKey: .model)
        slices = try c.decode([Slice].self, forKey: .slices)
        share = try c.decodeIfPresent(Int.self, forKey: .share)
        let slot = try c.decodeIfPresent(MIGSlot.self, forKey: .mig)
        let milli = try c.decodeIfPresent(Int.self, forKey: .migMilli)
        migPart = slot.map { MIGPart(slot: $0, milli: milli ?? 0) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model)
        try c.encode(slices, forKey: .slices)
        try c.encodeIfPresent(share, forKey: .share)
        try c.encodeIfPresent(mig, forKey: .mig)
        try c.encodeIfPresent(migMilli, forKey: .migMilli)
    }

    /// GPUs touched (a share touches one).
    public var gpuCount: Int { slices.reduce(0) { $0 + $1.gpus.count } }
    /// GPUs' worth taken: the share for a share of one GPU, else the GPU count. Prices and GPU-hours use it.
    public var gpuEquivalent: Double {
        (share ?? migMilli).map { Double($0) / 1000 } ?? Double(gpuCount)
    }
    public var nodeNames: [String] { slices.map(\.node) }

    /// `h100-01[0-3]+h100-02[0,1]`; a share: `l4-01[3]@0.25`; a MIG instance: `a100-01[3]:1g.10gb@2`.
    public var description: String {
        let text = slices.map(\.description).joined(separator: "+")
        if let mig { return text + ":" + mig.description }
        return share.map { text + "@" + Fraction.text($0) } ?? text
    }

    /// `0-3,6` for [0,1,2,3,6].
    public static func ranges(_ gpus: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        while i < gpus.count {
            var j = i
            while j + 1 < gpus.count, gpus[j + 1] == gpus[j] + 1 { j += 1 }
            parts.append(j > i ? "\(gpus[i])-\(gpus[j])" : "\(gpus[i])")
            i = j + 1
        }
        return parts.joined(separator: ",")
    }
}
