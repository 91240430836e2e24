/// One MIG profile of a GPU model: what an instance of it takes, and where it may start.
///
/// A MIG-capable GPU has 8 memory slices and 7 compute slices. An instance takes `memorySlices`
/// consecutive memory slices starting at one of `starts` (NVIDIA's placements, `nvidia-smi mig -lgipp`),
/// and `compute` compute slices.
public struct MIGProfile: Hashable, Codable, Sendable {
    /// The profile's name as NVIDIA writes it, e.g. `1g.10gb`.
    public var name: String
    /// Compute slices (the `Ng` of the name).
    public var compute: Int
    /// Memory slices taken, which is also the placement's size.
    public var memorySlices: Int
    /// The instance's memory in GiB.
    public var memoryGiB: Double
    /// The memory slices an instance may start at.
    public var starts: [Int]

    public init(name: String, compute: Int, memorySlices: Int, memoryGiB: Double, starts: [Int]) {
        self.name = name
        self.compute = compute
        self.memorySlices = memorySlices
        self.memoryGiB = memoryGiB
        self.starts = starts
    }

    /// The bits of the memory slices an instance starting at `start` takes.
    public func mask(at start: Int) -> UInt8 { UInt8(truncatingIfNeeded: ((1 << memorySlices) - 1) << start) }
}

/// The MIG profiles of one GPU model.
public struct MIGTable: Hashable, Codable, Sendable {
    public static let computeSlices = 7
    public static let memorySlices = 8

    public var profiles: [MIGProfile]

    public init(profiles: [MIGProfile]) { self.profiles = profiles }

    public func profile(named name: String) -> MIGProfile? { profiles.first { $0.name == name } }

    /// Thousandths of the GPU an instance of `p` is priced at: the larger of its share of compute slices and
    /// of memory slices (what it keeps others from).
    public static func priceMilli(_ p: MIGProfile) -> Int {
        let compute = (p.compute * 1000 + computeSlices - 1) / computeSlices
        let memory = (p.memorySlices * 1000 + memorySlices - 1) / memorySlices
        return min(1000, max(compute, memory))
    }

    /// The starts of `p` free in `used` (a mask of taken memory slices), ascending.
    public func freeStarts(of p: MIGProfile, used: UInt8) -> [Int] {
        p.starts.filter { used & p.mask(at: $0) == 0 }
    }

    /// How many instances of any profile could still start in `used`: the higher, the less a placement has
    /// broken the GPU up. Placement prefers the start that keeps this highest, weighted by instance size.
    public func room(left used: UInt8) -> Int {
        var out = 0
        for p in profiles {
            for s in p.starts where used & p.mask(at: s) == 0 { out += p.memorySlices }
        }
        return out
    }

    /// Problems with a table from a config (empty: none).
    public func problems(model: String) -> [String] {
        var out: [String] = []
        var seen: Set<String> = []
        for p in profiles {
            let at = "gpu_model \(model): MIG profile \(p.name)"
            if !seen.insert(p.name).inserted { out.append("\(at) is given twice") }
            if !(1...Self.computeSlices).contains(p.compute) {
                out.append("\(at): compute must be 1–\(Self.computeSlices), not \(p.compute)")
            }
            if !(1...Self.memorySlices).contains(p.memorySlices) {
                out.append("\(at): memory_slices must be 1–\(Self.memorySlices), not \(p.memorySlices)")
            }
            if p.starts.isEmpty { out.append("\(at) has no starts") }
            for s in p.starts where s < 0 || s + p.memorySlices > Self.memorySlices {
                out.append("\(at): start \(s) does not fit \(p.memorySlices) slices in \(Self.memorySlices)")
            }
        }
        return out
    }

    /// NVIDIA's tables (MIG user guide, "Supported MIG Profiles"), by the name allot knows them under.
    public static let builtIn: [String: MIGTable] = [
        "A100-40GB": standard(memory: [5, 10, 10, 20, 20, 40]),
        "A100-80GB": standard(memory: [10, 20, 20, 40, 40, 80]),
        "H100-80GB": standard(memory: [10, 20, 20, 40, 40, 80]),
        "H200-141GB": standard(memory: [18, 35, 35, 71, 71, 141]),
    ]

    /// The built-in table for a model of this name and memory, if it is one of the MIG-capable GPUs allot
    /// knows (A100 40/80 GB, H100 80 GB, H200 141 GB): matched on the name's `A100`/`H100`/`H200` and the
    /// memory.
    public static func builtIn(forModel name: String, memoryGiB: Double) -> MIGTable? {
        let upper = name.uppercased()
        let family = ["A100", "H100", "H200"].first { upper.contains($0) }
        guard let family else { return nil }
        let key = builtIn.keys.sorted().first { key in
            key.hasPrefix(family) && abs(Double(key.split(separator: "-")[1].dropLast(2))! - memoryGiB) < 8
        }
        return key.flatMap { builtIn[$0] }
    }

    /// The six profiles every MIG GPU so far has, with their memory in GiB: 1g (one slice), 1g with two
    /// memory slices, 2g, 3g, 4g and 7g.
    static func standard(memory m: [Double]) -> MIGTable {
        func name(_ g: Int, _ gib: Double) -> String { "\(g)g.\(Int(gib))gb" }
        return MIGTable(profiles: [
            MIGProfile(name: name(1, m[0]), compute: 1, memorySlices: 1, memoryGiB: m[0], starts: Array(0...6)),
            MIGProfile(name: name(1, m[1]), compute: 1, memorySlices: 2, memoryGiB: m[1], starts: [0, 2, 4, 6]),
            MIGProfile(name: name(2, m[2]), compute: 2, memorySlices: 2, memoryGiB: m[2], starts: [0, 2, 4]),
            MIGProfile(name: name(3, m[3]), compute: 3, memorySlices: 4, memoryGiB: m[3], starts: [0, 4]),
            MIGProfile(name: name(4, m[4]), compute: 4, memorySlices: 4, memoryGiB: m[4], starts: [0]),
            MIGProfile(name: name(7, m[5]), compute: 7, memorySlices: 8, memoryGiB: m[5], starts: [0]),
        ])
    }
}

/// How a node's GPUs are split into MIG instances.
public enum MIGMode: String, Codable, Sendable, CaseIterable {
    /// No MIG: GPUs are given whole or as shares.
    case off
    /// allot creates an instance for each MIG job on free slices (a fresh GPU is put in MIG mode first) and
    /// destroys it when the job ends; GPUs without instances are given whole or as shares as usual.
    case dynamic
    /// A fixed layout (the node's `mig_layout`) on every GPU, made by the operator: MIG jobs take its free
    /// instances, and the GPUs are never given whole or shared.
    case `static`
}

/// One MIG instance's place on a GPU: its profile and first memory slice.
public struct MIGSlot: Hashable, Codable, Sendable, CustomStringConvertible {
    public var profile: String
    public var start: Int

    public init(profile: String, start: Int) {
        self.profile = profile
        self.start = start
    }

    /// `1g.10gb@3`.
    public var description: String { "\(profile)@\(start)" }

    /// Reads `1g.10gb@3`.
    public init?(parsing text: String) {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, let start = Int(parts[1]), (0..<8).contains(start) else {
            return nil
        }
        self.init(profile: String(parts[0]), start: start)
    }
}
