import AllotConfig
import AllotCore
import AllotProtocol
import Foundation
import Logging

/// What the engine knows of one node's agent.
struct AgentState {
    var version: String
    var hostname: String
    var link: AgentLink?
    var connectedSince: Double
    var lastHeartbeat: Double
    /// Heartbeats sent on the current link.
    var sentSeq: UInt64 = 0
    var lastSent = 0.0
    var gpus: [AgentGPU]
}

extension Engine {
    static let agentLost = "agent lost: "

    /// An agent says who it is (its certificate already checked against the node it claims).
    func agentRegister(_ p: AgentRegisterParams, link: AgentLink) -> Result<AgentRegisterResult, RPCError> {
        guard let cluster = config.cluster else {
            return .failure(.refused("this allotd takes no node agents ([cluster] is not configured)"))
        }
        guard p.protocolVersion == AgentProtocol.version else {
            return .failure(
                .refused(
                    "agent protocol \(p.protocolVersion) is not spoken here (allotd speaks \(AgentProtocol.version))"
                )
            )
        }
        guard let node = state.node(named: p.node) else {
            return .failure(.notFound("no node \(p.node) in the configuration; add it, then `allotctl reload`"))
        }
        guard !localNodes.contains(p.node) else {
            return .failure(.refused("node \(p.node) is run by allotd itself (local), not by an agent"))
        }
        let now = Self.now
        if let old = agents[p.node]?.link, old.id != link.id {
            logger.notice("Agent reconnected: the old link is closed", metadata: ["node": "\(p.node)"])
            old.close()
        }
        agents[p.node] = AgentState(
            version: p.agentVersion,
            hostname: p.hostname,
            link: link,
            connectedSince: now,
            lastHeartbeat: now,
            gpus: p.gpus
        )
        logger.info(
            "Agent registered",
            metadata: [
                "node": "\(p.node)", "agent.version": "\(p.agentVersion)", "agent.host": "\(p.hostname)",
                "agent.remote": "\(link.remote)", "agent.gpus": "\(p.gpus.count)",
            ]
        )
        if p.gpus.count != node.spec.gpus && !p.gpus.isEmpty {
            logger.warning(
                "Agent reports a GPU count unlike the configuration's",
                metadata: ["node": "\(p.node)", "declared": "\(node.spec.gpus)", "reported": "\(p.gpus.count)"]
            )
        }
        // Health as the agent sees it.
        for g in p.gpus where g.index < node.spec.gpus {
            let health: GPUHealth = g.health == "healthy" ? .healthy : .unhealthy
            if node.health[g.index] != health {
                try? apply(.gpuHealthChanged(node: p.node, gpu: g.index, health: health, reason: g.reason))
            }
        }
        // A node that was down because its agent was lost comes back.
        if node.state == .down, node.stateReason?.hasPrefix(Self.agentLost) == true {
            do {
                try apply(.nodeStateChanged(name: p.node, state: .up, reason: nil))
                logger.notice("Node up again: its agent is back", metadata: ["node": "\(p.node)"])
            } catch {
                logger.error("Node state change refused", metadata: ["node": "\(p.node)", "error": "\(error)"])
            }
        }
        requestPass()
        return .success(
            AgentRegisterResult(
                epoch: epoch,
                heartbeatIntervalSeconds: cluster.heartbeatInterval,
                nodeTimeoutSeconds: cluster.nodeTimeout
            )
        )
    }

    func agentHeartbeat(node: String, link: UInt64) {
        guard agents[node]?.link?.id == link else { return }
        agents[node]?.lastHeartbeat = Self.now
    }

    func agentDisconnected(node: String, link: UInt64) {
        guard agents[node]?.link?.id == link else { return }
        agents[node]?.link = nil
        logger.warning(
            "Agent disconnected; the node is lost unless it comes back within node_timeout",
            metadata: ["node": "\(node)"]
        )
    }

    /// From the tick: heartbeats to the agents; nodes whose agent has been silent too long are lost.
    func agentsTick(now: Double) {
        guard let cluster = config.cluster else { return }
        for (name, a) in agents {
            if let link = a.link, now - a.lastSent >= cluster.heartbeatInterval {
                let seq = a.sentSeq + 1
                agents[name]?.sentSeq = seq
                agents[name]?.lastSent = now
                if let line = try? ControlProtocol.line(
                    Notification(method: AgentProtocol.heartbeat, params: AgentHeartbeat(seq: seq, time: now))
                ) {
                    link.send(line)
                }
            }
            let silent = now - a.lastHeartbeat
            guard silent > cluster.nodeTimeout, let node = state.node(named: name), node.state != .down else {
                continue
            }
            a.link?.close()
            agents[name]?.link = nil
            nodeLost(
                name,
                reason:
                    "\(Self.agentLost)no heartbeat for \(Int(silent)) s (node_timeout \(Int(cluster.nodeTimeout)) s)"
            )
        }
    }

    /// A node is gone: down, and its jobs requeued or failed per `[cluster] on_node_loss`.
    func nodeLost(_ name: String, reason: String) {
        do {
            try apply(.nodeStateChanged(name: name, state: .down, reason: reason))
        } catch {
            logger.error("Node state change refused", metadata: ["node": "\(name)", "error": "\(error)"])
            return
        }
        logger.error("Node lost", metadata: ["node": "\(name)", "reason": "\(reason)"])
        let action = config.cluster?.onNodeLoss ?? .requeuePreemptible
        for id in state.activeJobs.sorted() {
            guard let job = state.jobs[id], job.state.holdsGPUs,
                job.allocation?.slices.contains(where: { $0.node == name }) == true
            else { continue }
            let why = "node \(name) was lost (\(reason))"
            let requeue: Bool
            switch action {
            case .requeue: requeue = true
            case .fail: requeue = false
            case .requeuePreemptible: requeue = state.isPreemptible(job.spec)
            }
            if requeue {
                do {
                    try apply(.jobRequeued(id: id, reason: why))
                    logger.warning("Job requeued", metadata: ["job.id": "\(id)", "reason": "\(why)"])
                    pendingActions.append(.notify(id, "requeued"))
                } catch {
                    logger.error("Requeue refused", metadata: ["job.id": "\(id)", "error": "\(error)"])
                }
            } else {
                finish(id, exit: .lost(reason: why))
            }
        }
        requestPass()
    }

    /// What `nodes` shows of a node's agent.
    func agentObject(_ name: String) -> AgentObject? {
        guard let a = agents[name] else { return nil }
        return AgentObject(
            version: a.version,
            hostname: a.hostname,
            link: a.link == nil ? "down" : "up",
            lastHeartbeat: WireTime.format(a.lastHeartbeat),
            connectedSince: a.link == nil ? nil : WireTime.format(a.connectedSince)
        )
    }
}
