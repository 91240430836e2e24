import AllotCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One GPU of this host, as NVML or nvidia-smi sees it.
struct DiscoveredGPU: Sendable, Hashable {
    var index: Int
    var uuid: String?
    var name: String?
    var memoryMiB: Int?
    var health: GPUHealth = .healthy
    /// Why it is unhealthy.
    var reason: String?
}

/// What a probe of this host's GPUs found.
struct GPUInventory: Sendable, Hashable {
    /// "nvml" or "nvidia-smi".
    var source: String
    var driver: String?
    var gpus: [DiscoveredGPU]
}

/// NVML, loaded at run time with `dlopen` (no build-time dependency on the driver). Not thread-safe: use it
/// from one thread at a time (the discovery thread).
final class NVML: @unchecked Sendable {
    typealias Device = OpaquePointer?
    private typealias Fn0 = @convention(c) () -> Int32
    private typealias ErrorString = @convention(c) (Int32) -> UnsafePointer<CChar>?
    private typealias GetString = @convention(c) (UnsafeMutablePointer<CChar>, UInt32) -> Int32
    private typealias GetCount = @convention(c) (UnsafeMutablePointer<UInt32>) -> Int32
    private typealias GetHandle = @convention(c) (UInt32, UnsafeMutablePointer<Device>) -> Int32
    private typealias DeviceString = @convention(c) (Device, UnsafeMutablePointer<CChar>, UInt32) -> Int32
    private typealias DeviceMemory = @convention(c) (Device, UnsafeMutablePointer<UInt64>) -> Int32
    private typealias DeviceECC = @convention(c) (Device, Int32, Int32, UnsafeMutablePointer<UInt64>) -> Int32
    private typealias SetCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
    private typealias Register = @convention(c) (Device, UInt64, OpaquePointer?) -> Int32
    private typealias SetWait = @convention(c) (OpaquePointer?, UnsafeMutableRawPointer, UInt32) -> Int32

    static let success: Int32 = 0
    static let notSupported: Int32 = 3
    static let timeout: Int32 = 10
    static let gpuIsLost: Int32 = 15
    /// nvmlEventTypeDoubleBitEccError | nvmlEventTypeXidCriticalError
    static let eventTypes: UInt64 = 0x2 | 0x8

    let path: String
    private let handle: UnsafeMutableRawPointer
    private let shutdown: Fn0
    private let errorString: ErrorString
    private let driverVersion: GetString
    private let count: GetCount
    private let handleByIndex: GetHandle
    private let uuid: DeviceString
    private let name: DeviceString
    private let memory: DeviceMemory
    private let ecc: DeviceECC?
    private let eventSetCreate: SetCreate?
    private let registerEvents: Register?
    private let eventSetWait: SetWait?
    private var eventSet: OpaquePointer?
    private var registered: Set<Int> = []
    /// XID errors seen since allotd started (or the node was resumed), by GPU index.
    private var xids: [Int: String] = [:]

    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// Loads the library and initialises NVML.
    init(path: String) throws {
        guard let h = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw LoadError(description: "cannot load \(path): \(why)")
        }
        func sym<T>(_ name: String, _: T.Type) throws -> T {
            guard let p = dlsym(h, name) else {
                throw LoadError(description: "\(path) has no \(name); is it NVML?")
            }
            return unsafeBitCast(p, to: T.self)
        }
        func optional<T>(_ name: String, _: T.Type) -> T? {
            dlsym(h, name).map { unsafeBitCast($0, to: T.self) }
        }
        do {
            let initialize = try sym("nvmlInit_v2", Fn0.self)
            shutdown = try sym("nvmlShutdown", Fn0.self)
            errorString = try sym("nvmlErrorString", ErrorString.self)
            driverVersion = try sym("nvmlSystemGetDriverVersion", GetString.self)
            count = try sym("nvmlDeviceGetCount_v2", GetCount.self)
            handleByIndex = try sym("nvmlDeviceGetHandleByIndex_v2", GetHandle.self)
            uuid = try sym("nvmlDeviceGetUUID", DeviceString.self)
            name = try sym("nvmlDeviceGetName", DeviceString.self)
            memory = try sym("nvmlDeviceGetMemoryInfo", DeviceMemory.self)
            ecc = optional("nvmlDeviceGetTotalEccErrors", DeviceECC.self)
            eventSetCreate = optional("nvmlEventSetCreate", SetCreate.self)
            registerEvents = optional("nvmlDeviceRegisterEvents", Register.self)
            eventSetWait = optional("nvmlEventSetWait_v2", SetWait.self)
            let rc = initialize()
            guard rc == Self.success else {
                let text = errorString(rc).map { String(cString: $0) } ?? "error \(rc)"
                throw LoadError(description: "nvmlInit failed: \(text) (\(rc))")
            }
        } catch {
            dlclose(h)
            throw error
        }
        self.path = path
        handle = h
        if let create = eventSetCreate {
            var set: OpaquePointer?
            if create(&set) == Self.success { eventSet = set }
        }
    }

    deinit {
        _ = shutdown()
        dlclose(handle)
    }

    /// An entry point of the loaded library, nil where this NVML lacks it.
    func symbol<T>(_ name: String, _: T.Type) -> T? { dlsym(handle, name).map { unsafeBitCast($0, to: T.self) } }

    /// A GPU's handle by its NVML index.
    func device(_ index: Int) throws -> Device {
        var d: Device = nil
        let rc = handleByIndex(UInt32(index), &d)
        guard rc == Self.success else { throw LoadError(description: "GPU \(index): \(text(rc))") }
        return d
    }

    /// The text of an NVML return code, with the code.
    func describe(_ rc: Int32) -> String { text(rc) }

    /// A device's UUID (a GPU's or a MIG device's).
    func uuid(of d: Device) -> String? {
        var buffer = [CChar](repeating: 0, count: 96)
        return uuid(d, &buffer, UInt32(buffer.count)) == Self.success ? Self.text(buffer) : nil
    }

    private func text(_ rc: Int32) -> String {
        (errorString(rc).map { String(cString: $0) } ?? "error") + " (NVML \(rc))"
    }

    /// A NUL-terminated C string filled in by NVML.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Forgets the XID errors seen so far (an operator resumed the node).
    func forgetErrors() { xids = [:] }

    /// Every GPU with its identity and health: lost from the bus, uncorrected ECC errors, critical XIDs.
    func probe() throws -> GPUInventory {
        var buffer = [CChar](repeating: 0, count: 256)
        let driver = driverVersion(&buffer, UInt32(buffer.count)) == Self.success ? Self.text(buffer) : nil
        var n: UInt32 = 0
        let rc = count(&n)
        guard rc == Self.success else { throw LoadError(description: "nvmlDeviceGetCount failed: \(text(rc))") }
        var devices: [Int: OpaquePointer] = [:]
        var gpus: [DiscoveredGPU] = []
        for i in 0..<Int(n) {
            var gpu = DiscoveredGPU(index: i)
            var device: Device = nil
            let rc = handleByIndex(UInt32(i), &device)
            guard rc == Self.success, let device else {
                gpu.health = .unhealthy
                gpu.reason = rc == Self.gpuIsLost ? "GPU is lost (fallen off the bus)" : "NVML: \(text(rc))"
                gpus.append(gpu)
                continue
            }
            devices[i] = device
            if uuid(device, &buffer, UInt32(buffer.count)) == Self.success { gpu.uuid = Self.text(buffer) }
            if name(device, &buffer, UInt32(buffer.count)) == Self.success { gpu.name = Self.text(buffer) }
            var mem = [UInt64](repeating: 0, count: 3)
            let mrc = memory(device, &mem)
            if mrc == Self.success {
                gpu.memoryMiB = Int(mem[0] >> 20)
            } else if mrc == Self.gpuIsLost {
                gpu.health = .unhealthy
                gpu.reason = "GPU is lost (fallen off the bus)"
            }
            if gpu.health == .healthy, let ecc {
                var errors: UInt64 = 0
                // NVML_MEMORY_ERROR_TYPE_UNCORRECTED (1), NVML_VOLATILE_ECC (0): since the last driver load.
                if ecc(device, 1, 0, &errors) == Self.success, errors > 0 {
                    gpu.health = .unhealthy
                    gpu.reason = "\(errors) uncorrected ECC error\(errors == 1 ? "" : "s")"
                }
            }
            if let registerEvents, let eventSet, !registered.contains(i) {
                let r = registerEvents(device, Self.eventTypes, eventSet)
                if r == Self.success || r == Self.notSupported { registered.insert(i) }
            }
            gpus.append(gpu)
        }
        drainEvents(devices)
        for i in gpus.indices where gpus[i].health == .healthy {
            if let why = xids[gpus[i].index] {
                gpus[i].health = .unhealthy
                gpus[i].reason = why
            }
        }
        return GPUInventory(source: "nvml", driver: driver, gpus: gpus)
    }

    /// Reads the XID and ECC events waiting, without blocking.
    private func drainEvents(_ devices: [Int: OpaquePointer]) {
        guard let wait = eventSetWait, let eventSet else { return }
        // nvmlEventData_t: device (pointer), eventType, eventData (u64), gpuInstanceId, computeInstanceId (u32).
        let data = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
        defer { data.deallocate() }
        for _ in 0..<1000 {
            data.initializeMemory(as: UInt8.self, repeating: 0, count: 64)
            guard wait(eventSet, data, 0) == Self.success else { return }
            let device = data.load(as: OpaquePointer?.self)
            let type = data.load(fromByteOffset: 8, as: UInt64.self)
            let code = data.load(fromByteOffset: 16, as: UInt64.self)
            guard let index = devices.first(where: { $0.value == device })?.key else { continue }
            if type & 0x2 != 0 {
                xids[index] = xids[index] ?? "double-bit ECC error"
            } else if type & 0x8 != 0, !XID.isApplicationError(code) {
                xids[index] = xids[index] ?? "XID \(code)" + (XID.meaning[code].map { " (\($0))" } ?? "")
            }
        }
    }
}

/// XID codes: which are the application's fault (not the GPU's), and what the common GPU faults mean.
enum XID {
    /// Errors a faulty program causes (bad memory access, graphics engine exception, …); the GPU is fine.
    /// The same list as the Kubernetes NVIDIA device plugin's.
    static func isApplicationError(_ code: UInt64) -> Bool { [13, 31, 43, 45, 68, 109].contains(code) }

    static let meaning: [UInt64: String] = [
        48: "double-bit ECC error",
        61: "internal micro-controller breakpoint",
        62: "internal micro-controller halt",
        63: "ECC page retirement or row remapping recording event",
        64: "ECC page retirement or row remapper recording failure",
        74: "NVLink error",
        79: "GPU has fallen off the bus",
        92: "high single-bit ECC error rate",
        94: "contained ECC error",
        95: "uncontained ECC error",
        119: "GSP RPC timeout",
        120: "GSP error",
    ]
}

/// `nvidia-smi --query-gpu=… --format=csv`: the fallback where NVML cannot be loaded.
enum NvidiaSMI {
    static let query = "index,uuid,name,memory.total,ecc.errors.uncorrected.volatile.total"
    static let arguments = ["--query-gpu=\(query)", "--format=csv,noheader,nounits"]

    /// Parses the output of `nvidia-smi` with ``arguments`` (a header line, if present, is skipped).
    /// Lines of GPUs nvidia-smi could not read ("Unable to determine the device handle for GPU…: GPU is
    /// lost") mark the next index unhealthy.
    static func parse(_ output: String) -> [DiscoveredGPU] {
        var gpus: [DiscoveredGPU] = []
        var errors: [String] = []
        for raw in output.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("index") { continue }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard fields.count >= 4, let index = Int(fields[0]) else {
                errors.append(line)
                continue
            }
            func value(_ s: String) -> String? {
                s.isEmpty || s.hasPrefix("[") || s == "N/A" ? nil : s
            }
            var gpu = DiscoveredGPU(index: index)
            gpu.uuid = value(fields[1])
            gpu.name = value(fields[2])
            gpu.memoryMiB = value(fields[3]).flatMap { Int($0.split(separator: " ").first ?? "") }
            if fields.count > 4 {
                let ecc = fields[4]
                if let n = Int(ecc), n > 0 {
                    gpu.health = .unhealthy
                    gpu.reason = "\(n) uncorrected ECC error\(n == 1 ? "" : "s")"
                } else if ecc.contains("GPU is lost") || ecc.contains("Unknown Error") {
                    gpu.health = .unhealthy
                    gpu.reason = "GPU is lost (fallen off the bus)"
                } else if ecc.contains("GPU requires reset") {
                    gpu.health = .unhealthy
                    gpu.reason = "GPU requires a reset"
                }
            }
            gpus.append(gpu)
        }
        // Each error line is about a GPU nvidia-smi could not read: they take the missing indices in order.
        var taken = Set(gpus.map(\.index))
        var next = 0
        for line in errors {
            let lower = line.lowercased()
            guard lower.contains("gpu") else { continue }
            while taken.contains(next) { next += 1 }
            var gpu = DiscoveredGPU(index: next)
            gpu.health = .unhealthy
            gpu.reason =
                lower.contains("lost") || lower.contains("unknown error")
                ? "GPU is lost (fallen off the bus)"
                : lower.contains("reset") ? "GPU requires a reset" : "nvidia-smi: \(line)"
            gpus.append(gpu)
            taken.insert(next)
        }
        return gpus.sorted { $0.index < $1.index }
    }

    /// Runs nvidia-smi (blocking; a few hundred milliseconds) and parses what it prints.
    static func probe(path: String) throws -> GPUInventory {
        let out = try System.capture(path, arguments, timeout: 30)
        guard out.status == 0 || !out.stdout.isEmpty else {
            throw NVML.LoadError(
                description: "\(path) failed (exit \(out.status)): \(out.stdout.prefix(200))"
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            )
        }
        let gpus = parse(out.stdout)
        if gpus.isEmpty { throw NVML.LoadError(description: "\(path) listed no GPUs") }
        return GPUInventory(source: "nvidia-smi", driver: nil, gpus: gpus)
    }
}

/// Finds this host's GPUs and watches their health: NVML first, nvidia-smi where NVML cannot be loaded.
final class GPUProbe: @unchecked Sendable {
    let library: String
    let smi: String
    private var nvml: NVML?
    private let lock = NSLock()
    /// Why NVML could not be used, once it could not.
    private(set) var nvmlProblem: String?

    init(library: String, smi: String) {
        self.library = library
        self.smi = smi
    }

    /// One probe: NVML if it loads (kept loaded), else nvidia-smi. Blocking; call off the engine's task.
    func probe(allowNVML: Bool = true) throws -> GPUInventory {
        lock.lock()
        defer { lock.unlock() }
        if allowNVML {
            if nvml == nil {
                do {
                    nvml = try NVML(path: library)
                    nvmlProblem = nil
                } catch {
                    nvmlProblem = "\(error)"
                }
            }
            if let nvml {
                do {
                    return try nvml.probe()
                } catch {
                    nvmlProblem = "\(error)"
                }
            }
        }
        do {
            return try NvidiaSMI.probe(path: smi)
        } catch {
            let nvmlPart = allowNVML ? "NVML: \(nvmlProblem ?? "unavailable"); " : ""
            throw NVML.LoadError(description: "\(nvmlPart)nvidia-smi: \(error)")
        }
    }

    /// Runs `body` with this host's MIG driver (NVML loaded if it was not). Blocking.
    func withMIG<T>(_ body: (MIGDriver) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        if nvml == nil { nvml = try NVML(path: library) }
        guard let nvml, let driver = MIGDriver(nvml) else {
            throw NVML.LoadError(description: "\(library) has no MIG calls (NVIDIA driver R450 or later has them)")
        }
        return try body(driver)
    }

    func forgetErrors() {
        lock.lock()
        defer { lock.unlock() }
        nvml?.forgetErrors()
    }
}
