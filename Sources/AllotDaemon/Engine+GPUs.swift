import AllotConfig
import AllotCore
import AllotProtocol
import Foundation
import Logging
import Synchronization

/// What the engine knows of a local node's real GPUs.
struct NodeGPUs: Sendable {
    var inventory: GPUInventory?
    /// Why the last probe failed.
    var problem: String?
}

/// Probes this host's GPUs on its own thread (NVML and nvidia-smi calls block, sometimes for seconds on a
/// sick GPU) and hands what it finds to the engine.
final class GPUWatcher: Sendable {
    let probe: GPUProbe
    let interval: Double
    let useNVML: Bool
    private let stopped = Mutex(false)

    init(probe: GPUProbe, interval: Double, useNVML: Bool) {
        self.probe = probe
        self.interval = interval
        self.useNVML = useNVML
    }

    func start(engine: EngineHandle) {
        let thread = Thread { [self] in
            while !stopped.withLock({ $0 }) {
                // Sleep first: the engine probed once at start-up.
                var slept = 0.0
                while slept < interval && !stopped.withLock({ $0 }) {
                    usleep(100_000)
                    slept += 0.1
                }
                if stopped.withLock({ $0 }) { break }
                let result: Result<GPUInventory, GPUProbeError>
                do {
                    result = .success(try probe.probe(allowNVML: useNVML))
                } catch {
                    result = .failure(GPUProbeError(message: "\(error)"))
                }
                engine.send(.gpus(result))
            }
        }
        thread.name = "allotd-gpus"
        thread.start()
    }

    func stop() { stopped.withLock { $0 = true } }
}

struct GPUProbeError: Error, Sendable, CustomStringConvertible {
    var message: String
    var description: String { message }
}

extension Engine {
    /// The local nodes that discover their GPUs.
    var discoveringNodes: [String] {
        config.discovery.keys.filter { localNodes.contains($0) || isLocalName($0) }.sorted()
    }

    func isLocalName(_ name: String) -> Bool {
        guard let spec = config.nodes.first(where: { $0.name == name }) else { return false }
        return config.daemon.isLocal(spec, hostname: hostname)
    }

    /// Probes the GPUs once, blocking (start-up), and starts the watcher.
    func discoverAtStartUp() {
        let nodes = config.discovery.filter { isLocalName($0.key) }
        guard !nodes.isEmpty else { return }
        let useNVML = nodes.values.contains(.nvml)
        let probe = GPUProbe(library: settings.nvmlLibrary, smi: settings.nvidiaSMI)
        gpuProbe = probe
        let found: Result<GPUInventory, GPUProbeError>
        do {
            found = .success(try probe.probe(allowNVML: useNVML))
        } catch {
            found = .failure(GPUProbeError(message: "\(error)"))
        }
        recordProbe(found, nodes: Array(nodes.keys))
        if useNVML, let why = probe.nvmlProblem, case .success = found {
            logger.warning("NVML cannot be used; GPUs are read with nvidia-smi", metadata: ["error": "\(why)"])
        }
        switch found {
        case .success(let inv):
            logger.notice(
                "GPUs discovered",
                metadata: [
                    "gpus.source": "\(inv.source)", "gpus.count": "\(inv.gpus.count)",
                    "gpus.driver": "\(inv.driver ?? "-")",
                    "gpus.models": "\(Set(inv.gpus.compactMap(\.name)).sorted().joined(separator: ", "))",
                    "nodes": "\(nodes.keys.sorted().joined(separator: ","))",
                ]
            )
        case .failure(let e):
            logger.error("GPU discovery failed", metadata: ["error": "\(e.message)"])
        }
        let watcher = GPUWatcher(probe: probe, interval: settings.gpuCheckInterval, useNVML: useNVML)
        gpuWatcher = watcher
        watcher.start(engine: handle)
    }

    func recordProbe(_ result: Result<GPUInventory, GPUProbeError>, nodes: [String]) {
        for n in nodes {
            switch result {
            case .success(let inv): discovered[n] = NodeGPUs(inventory: inv, problem: nil)
            case .failure(let e): discovered[n, default: NodeGPUs()].problem = e.message
            }
        }
    }

    /// A config file with the GPU counts that discovery found in place of the declared ones.
    func withDiscoveredCounts(_ file: ConfigFile) -> ConfigFile {
        var file = file
        for i in file.nodes.indices {
            let name = file.nodes[i].name
            guard file.discovery[name] != nil, let inv = discovered[name]?.inventory, !inv.gpus.isEmpty else {
                continue
            }
            let count = min(inv.gpus.count, FreePool.maxGPUsPerNode)
            if count != file.nodes[i].gpus {
                logger.notice(
                    "Node GPU count taken from discovery",
                    metadata: ["node": "\(name)", "declared": "\(file.nodes[i].gpus)", "found": "\(count)"]
                )
                file.nodes[i].gpus = count
                // Islands naming GPUs that are not there would make the node invalid.
                file.nodes[i].nvlinkIslands = file.nodes[i].nvlinkIslands.compactMap { island in
                    let kept = island.filter { $0 < count }
                    return kept.isEmpty ? nil : kept
                }
            }
        }
        return file
    }

    /// Brings the state's view of discovered nodes to what the last probe found (the controller decides:
    /// GPU health events; nodes whose GPUs cannot be found are held down until they can; the jobs on GPUs
    /// that failed are stopped).
    func applyProbe(_ result: Result<GPUInventory, GPUProbeError>) {
        let nodes = discoveringNodes
        recordProbe(result, nodes: nodes)
        for name in nodes {
            guard let node = state.node(named: name) else { continue }
            switch result {
            case .failure(let e):
                if node.state == .up || node.state == .draining {
                    step(.nodeState(node: name, .down, reason: Self.discoveryDown + e.message))
                }
            case .success(let inv):
                if node.state == .down, node.stateReason?.hasPrefix(Self.discoveryDown) == true {
                    step(.nodeState(node: name, .up, reason: nil))
                }
                let reports = (0..<node.spec.gpus).map { gpu in
                    let seen = inv.gpus.first { $0.index == gpu }
                    return Controller.GPUReport(
                        index: gpu,
                        health: seen?.health ?? .unhealthy,
                        reason: seen == nil ? "not found by \(inv.source)" : seen?.reason
                    )
                }
                step(.gpuHealth(node: name, gpus: reports))
            }
        }
    }

    static let discoveryDown = "GPU discovery failed: "

    /// A node as `nodes` shows it, with what discovery found.
    func nodeObject(_ node: Node) -> NodeObject {
        var o = NodeObject(node, local: localNodes.contains(node.name))
        o.agent = agentObject(node.name)
        /// Every GPU with its health from the state and its identity as found.
        func list(_ found: [(index: Int, uuid: String?, name: String?, memoryMiB: Int?)]) -> [GPUObject] {
            (0..<node.spec.gpus).map { i in
                let g = found.first { $0.index == i }
                return GPUObject(
                    index: i,
                    health: node.health[i].rawValue,
                    reason: node.healthReason[i],
                    uuid: g?.uuid,
                    name: g?.name,
                    memoryMiB: g?.memoryMiB
                )
            }
        }
        if let a = agents[node.name], a.gpus.contains(where: { $0.uuid != nil || $0.name != nil }) {
            o.gpuList = list(a.gpus.map { ($0.index, $0.uuid, $0.name, $0.memoryMiB) })
            o.discovery = "agent"
        }
        if let d = discovered[node.name] {
            o.discovery = d.inventory.map { inv in inv.source + (inv.driver.map { " (driver \($0))" } ?? "") }
            o.discoveryProblem = d.problem
            o.gpuList = list((d.inventory?.gpus ?? []).map { ($0.index, $0.uuid, $0.name, $0.memoryMiB) })
        }
        // What holds each GPU: a whole job, or shares with the part of it they take.
        var gpus = o.gpuList ?? list([])
        for i in gpus.indices where gpus[i].index < node.spec.gpus {
            let g = gpus[i].index
            gpus[i].jobs = node.jobs(onGPU: g).map(\.rawValue)
            gpus[i].used =
                node.holder[g] != nil
                ? 1 : node.sharers[g].reduce(0) { $0 + (state.jobs[$1]?.allocation?.gpuEquivalent ?? 0) }
        }
        o.gpuList = gpus
        if node.spec.mig != .off, var gpus = o.gpuList {
            for i in gpus.indices where gpus[i].index < node.spec.gpus {
                gpus[i].mig = Self.migInstances(node, gpu: gpus[i].index, in: state)
            }
            o.gpuList = gpus
        }
        return o
    }

    /// A MIG node's instances on one GPU, by first memory slice: `3g.40gb@4 job 12`, and on a static node
    /// `3g.40gb@0 free` for the layout's unused ones.
    static func migInstances(_ node: Node, gpu: Int, in state: ClusterState) -> [String] {
        var out: [(Int, String)] = node.sharers[gpu].compactMap { id in
            state.jobs[id]?.allocation?.mig.map { ($0.start, "\($0) job \(id)") }
        }
        if node.spec.mig == .static {
            for slot in node.spec.migLayout where !out.contains(where: { $0.0 == slot.start }) {
                out.append((slot.start, "\(slot) free"))
            }
        }
        return out.sorted { $0.0 < $1.0 }.map(\.1)
    }
}

// MARK: MIG instances

extension Engine {
    struct MIGProblem: Error, CustomStringConvertible {
        var description: String
    }

    /// The MIG device for a job's instance on a local node: made now on a `dynamic` node, found in the
    /// operator's layout on a `static` one. Blocking (NVML).
    func migDevice(_ slot: MIGSlot, model: String, node: String, gpu: Int) -> Result<String, MIGProblem> {
        guard let spec = state.node(named: node)?.spec, let probe = gpuProbe,
            let profile = state.config.model(named: model)?.mig?.profile(named: slot.profile)
        else {
            return .failure(
                MIGProblem(description: "node \(node) has no NVML to make MIG \(slot) with (discover = \"nvml\")")
            )
        }
        do {
            return .success(
                try probe.migDevice(
                    gpu: gpu,
                    profile: profile,
                    start: slot.start,
                    layout: spec.mig == .static,
                    node: node
                )
            )
        } catch {
            return .failure(MIGProblem(description: "\(error)"))
        }
    }

    /// Removes a dynamic node's MIG instance once its job's run has ended (a static layout stays).
    func removeMIGInstance(_ slot: MIGSlot, node: String, gpu: Int, job: JobID) {
        guard state.node(named: node)?.spec.mig == .dynamic, let probe = gpuProbe else { return }
        do {
            try probe.withMIG { try $0.remove(gpu: gpu, start: slot.start) }
            logger.info(
                "MIG instance removed",
                metadata: ["job.id": "\(job)", "node": "\(node)", "mig": "\(gpu):\(slot)"]
            )
        } catch {
            logger.error("MIG instance not removed", metadata: ["job.id": "\(job)", "error": "\(error)"])
        }
    }

    /// At start-up, after running jobs are taken back: removes the instances on this host's dynamic MIG
    /// nodes that no job holds (allotd stopped after making one and before its job started, or before
    /// removing one whose job had ended).
    func clearStrayMIGInstances() {
        guard let probe = gpuProbe else { return }
        for name in discoveringNodes {
            guard let node = state.node(named: name), node.spec.mig == .dynamic else { continue }
            for g in 0..<node.spec.gpus {
                let held = Set(node.sharers[g].compactMap { state.jobs[$0]?.allocation?.mig?.start })
                do {
                    try probe.withMIG { driver in
                        for found in try driver.instances(gpu: g) where !held.contains(found.start) {
                            try driver.remove(gpu: g, start: found.start)
                            logger.notice(
                                "MIG instance removed: no job holds it",
                                metadata: ["node": "\(name)", "gpu": "\(g)", "start": "\(found.start)"]
                            )
                        }
                    }
                } catch {
                    logger.error("MIG instances not checked", metadata: ["node": "\(name)", "error": "\(error)"])
                }
            }
        }
    }
}
