import AllotCore

/// Makes and removes MIG instances on this host's GPUs through NVML (the GPU instance and one compute
/// instance that fills it), as a node with `mig = "dynamic"` needs for each MIG job. Not thread-safe, like
/// ``NVML``.
final class MIGDriver: @unchecked Sendable {
    typealias Device = NVML.Device
    typealias Instance = OpaquePointer?
    private typealias GetMode =
        @convention(c) (Device, UnsafeMutablePointer<UInt32>, UnsafeMutablePointer<UInt32>) -> Int32
    private typealias SetMode = @convention(c) (Device, UInt32, UnsafeMutablePointer<Int32>) -> Int32
    private typealias ProfileInfo = @convention(c) (Device, UInt32, UnsafeMutableRawPointer) -> Int32
    private typealias Create =
        @convention(c) (Device, UInt32, UnsafeRawPointer, UnsafeMutablePointer<Instance>) -> Int32
    private typealias List =
        @convention(c) (Device, UInt32, UnsafeMutablePointer<Instance>, UnsafeMutablePointer<UInt32>) -> Int32
    private typealias Info = @convention(c) (Instance, UnsafeMutableRawPointer) -> Int32
    private typealias CIProfileInfo = @convention(c) (Instance, UInt32, UInt32, UnsafeMutableRawPointer) -> Int32
    private typealias CICreate = @convention(c) (Instance, UInt32, UnsafeMutablePointer<Instance>) -> Int32
    private typealias CIList =
        @convention(c) (Instance, UInt32, UnsafeMutablePointer<Instance>, UnsafeMutablePointer<UInt32>) -> Int32
    private typealias Destroy = @convention(c) (Instance) -> Int32
    private typealias MaxCount = @convention(c) (Device, UnsafeMutablePointer<UInt32>) -> Int32
    private typealias MIGHandle = @convention(c) (Device, UInt32, UnsafeMutablePointer<Device>) -> Int32
    private typealias InstanceID = @convention(c) (Device, UnsafeMutablePointer<UInt32>) -> Int32

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// One GPU instance found on a GPU.
    struct Found: Hashable {
        var start: Int
        var size: Int
        /// The UUID of its MIG device (`MIG-…`), when it has a compute instance.
        var uuid: String?
    }

    private let nvml: NVML
    private let getMode: GetMode
    private let setMode: SetMode
    private let profileInfo: ProfileInfo
    private let create: Create
    private let list: List
    private let info: Info
    private let ciProfileInfo: CIProfileInfo
    private let ciCreate: CICreate
    private let ciList: CIList
    private let ciDestroy: Destroy
    private let giDestroy: Destroy
    private let maxCount: MaxCount
    private let migHandle: MIGHandle
    private let instanceID: InstanceID

    /// Nil when this NVML has no MIG calls (drivers before R450).
    init?(_ nvml: NVML) {
        guard let getMode = nvml.symbol("nvmlDeviceGetMigMode", GetMode.self),
            let setMode = nvml.symbol("nvmlDeviceSetMigMode", SetMode.self),
            let profileInfo = nvml.symbol("nvmlDeviceGetGpuInstanceProfileInfo", ProfileInfo.self),
            let create = nvml.symbol("nvmlDeviceCreateGpuInstanceWithPlacement", Create.self),
            let list = nvml.symbol("nvmlDeviceGetGpuInstances", List.self),
            let info = nvml.symbol("nvmlGpuInstanceGetInfo", Info.self),
            let ciProfileInfo = nvml.symbol("nvmlGpuInstanceGetComputeInstanceProfileInfo", CIProfileInfo.self),
            let ciCreate = nvml.symbol("nvmlGpuInstanceCreateComputeInstance", CICreate.self),
            let ciList = nvml.symbol("nvmlGpuInstanceGetComputeInstances", CIList.self),
            let ciDestroy = nvml.symbol("nvmlComputeInstanceDestroy", Destroy.self),
            let giDestroy = nvml.symbol("nvmlGpuInstanceDestroy", Destroy.self),
            let maxCount = nvml.symbol("nvmlDeviceGetMaxMigDeviceCount", MaxCount.self),
            let migHandle = nvml.symbol("nvmlDeviceGetMigDeviceHandleByIndex", MIGHandle.self),
            let instanceID = nvml.symbol("nvmlDeviceGetGpuInstanceId", InstanceID.self)
        else { return nil }
        self.nvml = nvml
        self.getMode = getMode
        self.setMode = setMode
        self.profileInfo = profileInfo
        self.create = create
        self.list = list
        self.info = info
        self.ciProfileInfo = ciProfileInfo
        self.ciCreate = ciCreate
        self.ciList = ciList
        self.ciDestroy = ciDestroy
        self.giDestroy = giDestroy
        self.maxCount = maxCount
        self.migHandle = migHandle
        self.instanceID = instanceID
    }

    /// NVML's GPU instance profile for a profile of `compute` and `memorySlices` slices
    /// (`NVML_GPU_INSTANCE_PROFILE_*`: 1, 2, 3, 4, 7 slices are 0–4; one compute slice with two memory
    /// slices, `1g.20gb`, is 1_SLICE_REV2 = 9).
    static func gpuInstanceProfile(_ p: MIGProfile) -> UInt32? {
        switch (p.compute, p.memorySlices) {
        case (1, 1): 0
        case (1, 2): 9
        case (2, 2): 1
        case (3, 4): 2
        case (4, 4): 3
        case (7, 8): 4
        default: nil
        }
    }

    /// NVML's compute instance profile that fills a GPU instance of `compute` slices.
    static func computeInstanceProfile(_ compute: Int) -> UInt32? {
        switch compute {
        case 1: 0
        case 2: 1
        case 3: 2
        case 4: 3
        case 7: 4
        default: nil
        }
    }

    private func check(_ rc: Int32, _ what: String) throws {
        guard rc == NVML.success else { throw Failure(description: "\(what): \(nvml.describe(rc))") }
    }

    /// Makes an instance of `profile` at memory slice `start` on GPU `gpu` (putting the GPU in MIG mode
    /// first when it is not: allowed only while the GPU runs nothing) and returns its MIG device UUID.
    func make(gpu: Int, profile p: MIGProfile, start: Int) throws -> String {
        let d = try nvml.device(gpu)
        let at = "GPU \(gpu): MIG \(p.name)@\(start)"
        guard let giProfile = Self.gpuInstanceProfile(p), let ciProfile = Self.computeInstanceProfile(p.compute) else {
            throw Failure(
                description: "\(at): NVML has no profile of \(p.compute) compute and \(p.memorySlices) memory slices"
            )
        }
        var current: UInt32 = 0
        var pending: UInt32 = 0
        try check(getMode(d, &current, &pending), "GPU \(gpu): MIG mode")
        if current != 1 {
            var status: Int32 = 0
            try check(setMode(d, 1, &status), "GPU \(gpu): turning MIG mode on")
            try check(status, "GPU \(gpu): turning MIG mode on")
        }
        // nvmlGpuInstanceProfileInfo_t: ten 32-bit fields, then the memory size (u64): 48 bytes; the id first.
        var profileInfoBytes = [UInt8](repeating: 0, count: 64)
        try profileInfoBytes.withUnsafeMutableBytes {
            try check(profileInfo(d, giProfile, $0.baseAddress!), "\(at): profile")
        }
        let giProfileID = profileInfoBytes.withUnsafeBytes { $0.load(as: UInt32.self) }
        var placement: (UInt32, UInt32) = (UInt32(start), UInt32(p.memorySlices))
        var gi: Instance = nil
        try withUnsafeBytes(of: &placement) {
            try check(create(d, giProfileID, $0.baseAddress!, &gi), "\(at): creating it")
        }
        // nvmlComputeInstanceProfileInfo_t: nine 32-bit fields, the id first.
        var ciInfoBytes = [UInt8](repeating: 0, count: 64)
        var ci: Instance = nil
        do {
            try ciInfoBytes.withUnsafeMutableBytes {
                try check(ciProfileInfo(gi, ciProfile, 0, $0.baseAddress!), "\(at): compute profile")
            }
            let ciProfileID = ciInfoBytes.withUnsafeBytes { $0.load(as: UInt32.self) }
            try check(ciCreate(gi, ciProfileID, &ci), "\(at): its compute instance")
        } catch {
            _ = giDestroy(gi)
            throw error
        }
        guard let uuid = try deviceUUID(gpu: d, instance: try describe(gi).id) else {
            throw Failure(description: "\(at): made, but NVML shows no MIG device for it")
        }
        return uuid
    }

    /// A GPU instance's id and placement (`nvmlGpuInstanceInfo_t`: device pointer, id, profile id, then the
    /// placement's start and size).
    private func describe(_ gi: Instance) throws -> (id: UInt32, start: Int, size: Int) {
        var bytes = [UInt8](repeating: 0, count: 64)
        try bytes.withUnsafeMutableBytes { try check(info(gi, $0.baseAddress!), "GPU instance info") }
        return bytes.withUnsafeBytes {
            (
                $0.load(fromByteOffset: 8, as: UInt32.self), Int($0.load(fromByteOffset: 16, as: UInt32.self)),
                Int($0.load(fromByteOffset: 20, as: UInt32.self))
            )
        }
    }

    /// Every GPU instance on a GPU, of every profile allot uses, with its id and placement.
    private func placed(on d: Device) throws -> [(gi: Instance, id: UInt32, start: Int, size: Int)] {
        var out: [(gi: Instance, id: UInt32, start: Int, size: Int)] = []
        for profile: UInt32 in [0, 9, 1, 2, 3, 4] {
            for gi in try gpuInstances(d, profile: profile) {
                let (id, start, size) = try describe(gi)
                out.append((gi, id, start, size))
            }
        }
        return out
    }

    /// The MIG device of GPU instance `id` on a GPU, by its UUID.
    private func deviceUUID(gpu d: Device, instance id: UInt32) throws -> String? {
        var n: UInt32 = 0
        try check(maxCount(d, &n), "MIG device count")
        for i in 0..<n {
            var m: Device = nil
            guard migHandle(d, i, &m) == NVML.success else { continue }
            var gid: UInt32 = 0
            if instanceID(m, &gid) == NVML.success && gid == id { return nvml.uuid(of: m) }
        }
        return nil
    }

    /// Every GPU instance on GPU `gpu`, with where it starts and its MIG device's UUID.
    func instances(gpu: Int) throws -> [Found] {
        let d = try nvml.device(gpu)
        return try placed(on: d).map {
            Found(start: $0.start, size: $0.size, uuid: try deviceUUID(gpu: d, instance: $0.id))
        }
        .sorted { $0.start < $1.start }
    }

    private func gpuInstances(_ d: Device, profile: UInt32) throws -> [Instance] {
        // At most 7 instances of a profile fit a GPU; NVML wants room for them all.
        var out = [Instance](repeating: nil, count: 8)
        var n: UInt32 = 0
        let rc = list(d, profile, &out, &n)
        if rc == 3 { return [] }  // NOT_SUPPORTED: this GPU has no such profile
        try check(rc, "listing GPU instances")
        return Array(out.prefix(Int(min(n, 8))))
    }

    /// Removes the instance starting at memory slice `start` on GPU `gpu` (its compute instances first).
    /// Removing one that is not there is not an error: the job's end may be settled twice (after a restart).
    func remove(gpu: Int, start: Int) throws {
        guard let gi = try placed(on: try nvml.device(gpu)).first(where: { $0.start == start })?.gi else { return }
        for ciProfile: UInt32 in 0...4 {
            var cis = [Instance](repeating: nil, count: 8)
            var count: UInt32 = 0
            guard ciList(gi, ciProfile, &cis, &count) == NVML.success else { continue }
            for ci in cis.prefix(Int(count)) {
                try check(ciDestroy(ci), "GPU \(gpu): removing the compute instance at \(start)")
            }
        }
        try check(giDestroy(gi), "GPU \(gpu): removing the MIG instance at \(start)")
    }
}

extension GPUProbe {
    /// The MIG device (its `MIG-…` UUID) of a job's instance of `profile` at memory slice `start` of GPU
    /// `gpu`: found in the operator's layout when `layout` (a `static` node), else made now — or found, when
    /// an earlier try made it and stopped before the job started. Blocking (NVML). allotd for its own nodes
    /// and a node agent for its node both come here.
    func migDevice(gpu: Int, profile: MIGProfile, start: Int, layout: Bool, node: String) throws -> String {
        try withMIG { driver in
            let found = try driver.instances(gpu: gpu)
            if layout {
                guard let uuid = found.first(where: { $0.start == start })?.uuid else {
                    throw MIGDriver.Failure(
                        description:
                            "GPU \(gpu) of \(node) has no MIG instance \(profile.name)@\(start) (its static layout)"
                    )
                }
                return uuid
            }
            if let made = found.first(where: { $0.start == start && $0.size == profile.memorySlices }),
                let uuid = made.uuid
            {
                return uuid
            }
            return try driver.make(gpu: gpu, profile: profile, start: start)
        }
    }
}
