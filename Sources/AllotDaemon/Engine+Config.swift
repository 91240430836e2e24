import AllotConfig
import AllotCore
import AllotProtocol
import AllotWAL
import Logging

extension Engine {
    /// Reads the config file again and brings the state to it (SIGHUP, `allotctl reload`). An invalid file,
    /// or one the state cannot take (a GPU model removed while jobs use it, say), is refused whole and the
    /// old configuration stays in force.
    /// - Returns: the changes made, as sentences.
    func reload(reason: String) -> Result<[String], RPCError> {
        guard failure == nil else {
            return .failure(RPCError(RPCError.unavailable, "the write-ahead log failed; allotd must be restarted"))
        }
        guard let path = configPath else {
            return .failure(.refused("allotd was started without a configuration file; there is nothing to reload"))
        }
        notifyReloading()
        defer { notifyReloaded() }
        let file: ConfigFile
        do {
            file = try ConfigFile.load(path: path)
        } catch {
            return .failure(.refused("the new configuration is invalid, the old one stays in force: \(error)"))
        }
        let result = reconcile(with: withDiscoveredCounts(file))
        if case .success(let changes) = result {
            logger.notice(
                "Configuration reloaded",
                metadata: ["config.path": "\(path)", "reason": "\(reason)", "changes": "\(changes.count)"]
            )
            for c in changes { logger.info("Configuration change", metadata: ["change": "\(c)"]) }
        }
        return result
    }

    /// Brings the state to a config file: the pool settings, nodes added, removed or changed. A node that
    /// still runs jobs is drained and changed (or removed) once it is idle.
    func reconcile(with file: ConfigFile) -> Result<[String], RPCError> {
        var events: [Event.Body] = []
        var changes: [String] = []
        if file.pool != state.config {
            events.append(.configApplied(config: file.pool))
            changes.append("pool settings (models, classes, tenants, scheduler, preemption) updated")
        }
        let wanted = Dictionary(file.nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var deferred: [String: NodeSpec?] = [:]
        for node in state.nodes {
            let spec = wanted[node.name]
            if spec == node.spec { continue }
            if node.gpusInUse > 0 {
                deferred[node.name] = spec
                if node.state == .up {
                    events.append(
                        .nodeStateChanged(name: node.name, state: .draining, reason: "changed in the configuration")
                    )
                }
                changes.append(
                    spec == nil
                        ? "node \(node.name) removed from the configuration: draining, removed once its jobs end"
                        : "node \(node.name) changed in the configuration: draining, changed once its jobs end"
                )
                continue
            }
            events.append(.nodeRemoved(name: node.name))
            if let spec {
                events.append(.nodeAdded(spec: spec))
                changes.append("node \(node.name) changed")
            } else {
                changes.append("node \(node.name) removed")
            }
        }
        for spec in file.nodes where state.node(named: spec.name) == nil {
            events.append(.nodeAdded(spec: spec))
            changes.append("node \(spec.name) added (\(spec.gpus)× \(spec.gpuModel))")
        }
        // Try first on a copy: all or nothing.
        let t = Instant(seconds: Self.now)
        let batch = events.map { Event(time: t, $0) }
        var trial = state
        do {
            try trial.apply(batch)
        } catch {
            return .failure(
                .refused("the new configuration does not fit the pool, the old one stays in force: \(error.message)")
            )
        }
        do {
            try apply(batch)
        } catch {
            return .failure(
                RPCError(RPCError.internalError, "applying the configuration failed half way: \(error.message)")
            )
        }
        var restart: [String] = []
        let (a, b) = (settings, file.daemon)
        if a.stateDir != b.stateDir { restart.append("state_dir") }
        if a.socket != b.socket { restart.append("socket") }
        if a.socketMode != b.socketMode { restart.append("socket_mode") }
        if a.logDir != b.logDir { restart.append("log_dir") }
        if a.hostname != b.hostname { restart.append("hostname") }
        if a.maxMessageBytes != b.maxMessageBytes || a.maxConnections != b.maxConnections
            || a.idleTimeout != b.idleTimeout
        {
            restart.append("connection limits")
        }
        if a.metricsListen != b.metricsListen { restart.append("metrics_listen") }
        if config.wal != file.wal { restart.append("[wal]") }
        if config.cluster != file.cluster { restart.append("[cluster]") }
        if !restart.isEmpty {
            changes.append("\(restart.joined(separator: ", ")) changed: takes effect when allotd restarts")
        }
        if a.adminGroup != b.adminGroup {
            changes.append("admin group is now \(b.adminGroup ?? "(none)")")
        }
        settings.adminGroup = b.adminGroup
        adminGID = b.adminGroup.flatMap { System.gid(named: $0) }
        settings.localNodes = b.localNodes
        settings.onGPUFailure = b.onGPUFailure
        settings.stopSignal = b.stopSignal
        executor.stopSignal = b.stopSignal.number
        if a.nvmlLibrary != b.nvmlLibrary || a.nvidiaSMI != b.nvidiaSMI || a.gpuCheckInterval != b.gpuCheckInterval
            || config.discovery != file.discovery
        {
            changes.append("GPU discovery settings changed: take effect when allotd restarts")
        }
        config = file
        deferredNodes = deferred
        let local = Set(state.nodes.filter { settings.isLocal($0.spec, hostname: hostname) }.map(\.name))
        if local != localNodes {
            if !localNodes.isEmpty || !changes.isEmpty {
                changes.append(
                    "allotd runs the jobs of \(local.count) node(s) itself: \(local.sorted().prefix(8).joined(separator: ", "))\(local.count > 8 ? ", …" : "")"
                )
            }
            localNodes = local
        }
        if !events.isEmpty { requestPass() }
        return .success(changes)
    }

    /// Nodes whose change waited for their jobs to end: change them once they are idle.
    func applyDeferredNodes() {
        guard !deferredNodes.isEmpty else { return }
        for (name, spec) in deferredNodes {
            guard let node = state.node(named: name) else {
                deferredNodes[name] = nil
                continue
            }
            guard node.gpusInUse == 0 else { continue }
            deferredNodes[name] = nil
            do {
                try apply(.nodeRemoved(name: name))
                if let spec { try apply(.nodeAdded(spec: spec)) }
                logger.info(spec == nil ? "Node removed" : "Node changed", metadata: ["node": "\(name)"])
            } catch {
                logger.error("Deferred node change refused", metadata: ["node": "\(name)", "error": "\(error)"])
            }
        }
        localNodes = Set(state.nodes.filter { settings.isLocal($0.spec, hostname: hostname) }.map(\.name))
        requestPass()
    }

    /// Whether a caller may do anything: root, allotd's own user, or a member of the admin group.
    func isAdmin(_ uid: UInt32, groups: [UInt32]) -> Bool {
        if uid == 0 || uid == getuid() { return true }
        guard let g = adminGID else { return false }
        return groups.contains(g)
    }
}

#if canImport(Glibc)
import Glibc
#endif
