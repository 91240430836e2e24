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
        guard let source else {
            return .failure(.refused("allotd was started without a configuration file; there is nothing to reload"))
        }
        notifyReloading()
        defer { notifyReloaded() }
        let file: ConfigFile
        do {
            file = try source.loadConfig()
        } catch {
            return .failure(.refused("the new configuration is invalid, the old one stays in force: \(error)"))
        }
        let result = reconcile(with: withDiscoveredCounts(file))
        if case .success(let changes) = result {
            logger.notice(
                "Configuration reloaded",
                metadata: [
                    "config.path": "\(source.configPath ?? "/etc/allot/allotd.toml")", "reason": "\(reason)",
                    "changes": "\(changes.count)",
                ]
            )
            for c in changes { logger.info("Configuration change", metadata: ["change": "\(c)"]) }
        }
        return result
    }

    /// Brings the state to a config file: the pool settings, nodes added, removed or changed. A node that
    /// still runs jobs is drained and changed (or removed) once it is idle.
    func reconcile(with file: ConfigFile) -> Result<[String], RPCError> {
        // Nodes leave before the pool settings change and arrive after: a new pool may drop the models of
        // the nodes it removes and bring those of the nodes it adds (replacing the example pool at once).
        var events: [Event.Body] = []
        var additions: [Event.Body] = []
        var changes: [String] = []
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
                additions.append(.nodeAdded(spec: spec))
                changes.append("node \(node.name) changed")
            } else {
                changes.append("node \(node.name) removed")
            }
        }
        if file.pool != state.config {
            events.append(.configApplied(config: file.pool))
            changes.append("pool settings (models, classes, tenants, scheduler, preemption) updated")
        }
        for spec in file.nodes where state.node(named: spec.name) == nil {
            additions.append(.nodeAdded(spec: spec))
            changes.append("node \(spec.name) added (\(spec.gpus)× \(spec.gpuModel))")
        }
        events += additions
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
            try apply(events)
        } catch {
            return .failure(
                RPCError(RPCError.internalError, "applying the configuration failed half way: \(error.message)")
            )
        }
        // Against the settings in force (those read only at start keep their start values until a restart).
        var inForce = config
        inForce.daemon = settings
        changes += Self.restartChanges(from: inForce, to: file)
        let (a, b) = (settings, file.daemon)
        if a.adminGroup != b.adminGroup {
            changes.append("[daemon] admin_group: \(a.adminGroup ?? "(none)") → \(b.adminGroup ?? "(none)")")
        }
        if config.accounts != file.accounts {
            changes.append("accounts (tenants' users and groups, [accounts]) updated")
        }
        settings.adminGroup = b.adminGroup
        adminGID = b.adminGroup.flatMap { System.gid(named: $0) }
        settings.localNodes = b.localNodes
        settings.onGPUFailure = b.onGPUFailure
        settings.onDependencyNeverMet = b.onDependencyNeverMet
        settings.stopSignal = b.stopSignal
        executor.stopSignal = b.stopSignal.number
        executor.runHangup = b.runHangup
        if a.runHangup != b.runHangup {
            changes.append(
                "[daemon] run_hangup: \(DurationText.format(a.runHangup)) → \(DurationText.format(b.runHangup))"
            )
        }
        settings.runHangup = b.runHangup
        if config.tenantNotify != file.tenantNotify { changes.append("tenants' notify webhooks updated") }
        if a.nvmlLibrary != b.nvmlLibrary || a.nvidiaSMI != b.nvidiaSMI || a.gpuCheckInterval != b.gpuCheckInterval
            || config.discovery != file.discovery
        {
            changes.append("GPU discovery settings changed: take effect when allotd restarts")
        }
        config = file
        var rules = controller.settings
        rules.onGPUFailure = b.onGPUFailure
        rules.onDependencyNeverMet = b.onDependencyNeverMet
        rules.onNodeLoss = file.cluster?.onNodeLoss ?? .requeuePreemptible
        if rules != controller.settings { step(.settings(rules)) }
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

    /// What changed in settings read only at start, each as `key: old → new (takes effect when allotd
    /// restarts)`; nothing when nothing changed.
    static func restartChanges(from old: ConfigFile, to new: ConfigFile) -> [String] {
        let (a, b) = (old.daemon, new.daemon)
        func show<T>(_ v: T?) -> String { v.map { "\($0)" } ?? "(unset)" }
        let pairs: [(String, String, String)] = [
            ("state_dir", a.stateDir, b.stateDir),
            ("socket", a.socket, b.socket),
            ("socket_mode", String(a.socketMode, radix: 8), String(b.socketMode, radix: 8)),
            ("log_dir", show(a.logDir), show(b.logDir)),
            ("hostname", show(a.hostname), show(b.hostname)),
            ("max_message_bytes", "\(a.maxMessageBytes)", "\(b.maxMessageBytes)"),
            ("max_connections", "\(a.maxConnections)", "\(b.maxConnections)"),
            ("idle_timeout", "\(a.idleTimeout)", "\(b.idleTimeout)"),
            ("metrics_listen", show(a.metricsListen), show(b.metricsListen)),
            ("sendmail", a.sendmail, b.sendmail),
        ]
        var out = pairs.filter { $0.1 != $0.2 }.map {
            "[daemon] \($0.0): \($0.1) → \($0.2) (takes effect when allotd restarts)"
        }
        if old.wal != new.wal { out.append("[wal] changed (takes effect when allotd restarts)") }
        if old.cluster != new.cluster { out.append("[cluster] changed (takes effect when allotd restarts)") }
        return out
    }
}

#if canImport(Glibc)
import Glibc
#endif
