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
    /// On success the answer (and then any orders the agent missed) is sent here, on the link, in order.
    func agentRegister(
        _ p: AgentRegisterParams,
        link: AgentLink,
        requestID: RPCID?
    ) -> Result<AgentRegisterResult, RPCError> {
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
        // Health as the agent sees it (jobs on failed GPUs are stopped once the answer is out).
        for g in p.gpus {
            _ = setGPUHealth(p.node, g.index, g.health == "healthy" ? .healthy : .unhealthy, reason: g.reason)
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
        // Fencing: of the runs the agent holds, it keeps those the controller still assigns to this node.
        let held = Set(p.runs ?? [])
        var keep: [AgentRunRef] = []
        var assigned: [Job] = []
        for id in state.activeJobs.sorted() {
            guard let job = state.jobs[id], job.state.holdsGPUs, job.allocation?.slices.first?.node == p.node else {
                continue
            }
            assigned.append(job)
            let ref = AgentRunRef(id: id.rawValue, run: job.runs)
            if held.contains(ref) { keep.append(ref) }
        }
        let result = AgentRegisterResult(
            epoch: epoch,
            heartbeatIntervalSeconds: cluster.heartbeatInterval,
            nodeTimeoutSeconds: cluster.nodeTimeout,
            keep: keep
        )
        if held.count > keep.count {
            logger.warning(
                "Agent holds runs no longer assigned to it: it kills them",
                metadata: ["node": "\(p.node)", "runs": "\(held.count - keep.count)"]
            )
        }
        guard let line = try? ControlProtocol.line(Response(id: requestID, result: result)) else {
            return .failure(RPCError(RPCError.internalError, "cannot encode the answer"))
        }
        link.send(line)
        stopJobsOnFailedGPUs([p.node])
        // What the agent missed while it was away: starts of running jobs it does not have, stops of
        // stopping ones it has; a stopping job it does not have has ended unseen.
        for job in assigned {
            let ref = AgentRunRef(id: job.id.rawValue, run: job.runs)
            if job.state == .running, !held.contains(ref), gpuFailures[job.id] != nil {
                // Its GPU failed before it ever reached the agent: requeued or failed now, not started.
                runEnded(Executor.Ended(id: job.id, run: job.runs, exit: .lost(reason: "not started"), error: nil))
            } else if job.state == .running, !held.contains(ref) {
                sendStart(job, node: p.node)
            } else if job.state == .stopping {
                if held.contains(ref) {
                    sendStop(job, node: p.node)
                } else {
                    finish(job.id, exit: .lost(reason: "it was told to stop, and its node's agent no longer has it"))
                }
            }
        }
        requestPass()
        return .success(result)
    }

    /// Ends an agent reports: recorded (once), then acknowledged when durable.
    func agentReport(node: String, link: UInt64, _ report: AgentReport) {
        guard agents[node]?.link?.id == link else { return }
        agents[node]?.lastHeartbeat = Self.now
        var acks: [AgentRunRef] = []
        for r in report.runs {
            acks.append(AgentRunRef(id: r.id, run: r.run))
            let id = JobID(r.id)
            guard let job = state.jobs[id], job.runs == r.run, job.state.holdsGPUs,
                job.allocation?.slices.first?.node == node
            else { continue }  // already recorded, or stale
            let exit: ExitStatus
            if let code = r.exitCode {
                exit = .exited(code: code)
            } else if let sig = r.signal {
                exit = .signaled(signal: sig)
            } else {
                exit = .lost(reason: r.error ?? "lost on node \(node)")
            }
            logger.info(
                "Agent reports a job's end",
                metadata: ["node": "\(node)", "job.id": "\(id)", "job.run": "\(r.run)", "job.exit": "\(exit)"]
            )
            runEnded(
                Executor.Ended(
                    id: id,
                    run: r.run,
                    exit: exit,
                    error: r.state == "failed_to_start" ? r.error : nil,
                    killed: r.killed ?? false,
                    endedAt: r.endedAt
                )
            )
        }
        pendingActions.append(.agentAck(node: node, link: link, runs: acks))
    }

    func sendStart(_ job: Job, node: String) {
        guard let a = agents[node], let link = a.link, let alloc = job.allocation else { return }
        let seq = a.sentSeq + 1
        agents[node]?.sentSeq = seq
        let order = AgentStartOrder(
            seq: seq,
            epoch: epoch,
            id: job.id.rawValue,
            run: job.runs,
            spec: job.spec,
            slices: alloc.slices.map { AgentSlice(node: $0.node, gpus: $0.gpus) }
        )
        guard let line = try? ControlProtocol.line(Notification(method: AgentProtocol.start, params: order)) else {
            return
        }
        link.send(line)
        logger.info("Start order sent", metadata: ["node": "\(node)", "job.id": "\(job.id)", "job.run": "\(job.runs)"])
    }

    /// Tells the agent to stop a job: by default with what is left of its grace, for its stop reason.
    func sendStop(_ job: Job, node: String, grace: Double? = nil, reason: String? = nil) {
        guard let a = agents[node], let link = a.link else { return }
        let seq = a.sentSeq + 1
        agents[node]?.sentSeq = seq
        var left = job.grace ?? 0
        if let at = job.stopRequestedAt { left = max(0, at.seconds + left - Self.now) }
        let order = AgentStopOrder(
            seq: seq,
            epoch: epoch,
            id: job.id.rawValue,
            run: job.runs,
            grace: grace ?? left,
            reason: reason ?? job.stopReason?.description ?? "told to stop"
        )
        guard let line = try? ControlProtocol.line(Notification(method: AgentProtocol.stop, params: order)) else {
            return
        }
        link.send(line)
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

    /// The node whose agent runs (or ran) this job, if an agent's node.
    func agentNode(of job: Job) -> String? {
        guard let node = job.allocation?.slices.first?.node, agents[node] != nil else { return nil }
        return node
    }

    /// An agent's periodic GPU check changed something.
    func agentHealth(node: String, link: UInt64, _ gpus: [AgentGPU]) {
        guard agents[node]?.link?.id == link else { return }
        agents[node]?.gpus = gpus
        applyAgentHealth(node: node, gpus)
        requestPass()
    }

    /// GPU health events for a node as its agent found it; jobs on GPUs that failed are stopped on the agent,
    /// then requeued or failed per `on_gpu_failure` when their end is reported.
    func applyAgentHealth(node name: String, _ gpus: [AgentGPU]) {
        for g in gpus {
            _ = setGPUHealth(name, g.index, g.health == "healthy" ? .healthy : .unhealthy, reason: g.reason)
        }
        stopJobsOnFailedGPUs([name])
    }

    /// After a restart, with `[cluster]`: every other node that the log says runs jobs waits for its agent,
    /// which must register within `node_timeout` — else the node is lost (its agent died while allotd was
    /// down) and its jobs are requeued or failed.
    func awaitAgents() {
        guard config.cluster != nil else { return }
        let now = Self.now
        var busy = Set<String>()
        for id in state.activeJobs {
            guard let job = state.jobs[id], job.state.holdsGPUs, let node = job.allocation?.slices.first?.node,
                !localNodes.contains(node)
            else { continue }
            busy.insert(node)
        }
        for name in busy.sorted() where agents[name] == nil && state.node(named: name)?.state != .down {
            agents[name] = AgentState(
                version: "unknown",
                hostname: "",
                link: nil,
                connectedSince: now,
                lastHeartbeat: now,
                gpus: []
            )
            logger.info("Waiting for the node's agent to register", metadata: ["node": "\(name)"])
        }
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
