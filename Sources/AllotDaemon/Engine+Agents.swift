import AllotConfig
import AllotCore
import AllotProtocol
import AllotWAL
import Foundation
import Logging

/// What the engine knows of one node's agent.
struct AgentState {
    var version: String
    var hostname: String
    var link: AgentLink?
    var connectedSince: Double
    /// When it was last heard from (wall time, for `nodes`).
    var lastHeartbeat: Double
    /// The same on the monotonic clock: node_timeout is measured on it.
    var lastHeard: Double
    /// Heartbeats sent on the current link.
    var sentSeq: UInt64 = 0
    /// When the last heartbeat was sent, on the monotonic clock.
    var lastSent = -Double.infinity
    var gpus: [AgentGPU]
    /// The replicas' checks last sent on the current link.
    var checksSent: AgentChecks?
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
        if let failure {
            return .failure(.refused("this controller cannot make changes durable (\(failure.message))"))
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
            lastHeard: System.monotonic(),
            gpus: p.gpus
        )
        syncRunner(p.node)
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
        // A node that was down because its agent was lost comes back.
        if node.state == .down, node.stateReason?.hasPrefix(Self.agentLost) == true {
            step(.nodeState(node: p.node, .up, reason: nil))
        }
        // Health as the agent sees it: jobs on failed GPUs are stopped (the orders go out after the answer).
        step(.gpuHealth(node: p.node, gpus: Self.reports(p.gpus)))
        // Fencing: of the runs the agent holds, it keeps those the controller still assigns to this node; what
        // it missed goes out again after the answer (the controller's effects, once durable).
        let held = p.runs ?? []
        let fencing = step(
            .agentRegistered(
                node: p.node,
                holds: held.map { Controller.RunRef(id: JobID($0.id), run: $0.run) }
            )
        )
        let keep = fencing.keep.map { AgentRunRef(id: $0.id.rawValue, run: $0.run) }
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
        return .success(result)
    }

    /// Ends an agent reports: recorded (once), then acknowledged when durable.
    func agentReport(node: String, link: UInt64, _ report: AgentReport) {
        guard agents[node]?.link?.id == link else { return }
        heard(node)
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

    /// The spec a run of `job` starts with, here or on an agent: its own, and what the controller tells it
    /// (its loans and how often to checkpoint on them, and a share's limits for MPS).
    func runSpec(_ job: Job) -> JobSpec {
        var spec = job.spec
        var told = Loan.environment(job.loans, checkpointEvery: state.config.preemption.loanCheckpointEvery)
        if let a = job.allocation, let share = a.share,
            let gpu = state.config.model(named: a.model)
        {
            told.merge(Self.mpsLimits(share: share, asked: spec.gpuMemoryMiB, gpu: gpu)) { _, ours in ours }
        }
        spec.environment.merge(told) { _, ours in ours }
        return spec
    }

    /// What an MPS server holds a share of one GPU to: the share it is priced at (the larger of its compute
    /// and its memory asked), as a percentage of the GPU's threads, and as much of its memory (at least what
    /// it asked), on device 0, its one visible GPU. A share that asked only compute must not take the memory
    /// its neighbours were promised, nor one that asked only memory their compute.
    static func mpsLimits(share milli: Int, asked: Int?, gpu: GPUModel) -> [String: String] {
        let mib = max(asked ?? 0, Int(Double(milli) / 1000 * gpu.memoryGiB * 1024))
        return [
            "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": String(max(1, (milli + 9) / 10)),
            "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=\(mib)M",
        ]
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
            spec: runSpec(job),
            slices: alloc.slices.map { AgentSlice(node: $0.node, gpus: $0.gpus) },
            mig: agentMIG(alloc, node: node)
        )
        guard let line = try? ControlProtocol.line(Notification(method: AgentProtocol.start.name, params: order)) else {
            return
        }
        link.send(line)
        logger.info("Start order sent", metadata: ["node": "\(node)", "job.id": "\(job.id)", "job.run": "\(job.runs)"])
    }

    /// A MIG job's instance as its agent makes or finds it.
    func agentMIG(_ a: Allocation, node: String) -> AgentMIG? {
        guard let slot = a.mig, let gpu = a.slices.first?.gpus.first,
            let profile = state.config.model(named: a.model)?.mig?.profile(named: slot.profile)
        else { return nil }
        return AgentMIG(
            gpu: gpu,
            profile: profile,
            start: slot.start,
            layout: state.node(named: node)?.spec.mig == .static
        )
    }

    /// Tells the agent to stop a job, with what is left of its grace, for its stop reason, and where it starts
    /// again when it is resized or moved.
    func sendStop(_ job: Job, node: String, resizeNotice: String? = nil) {
        guard let a = agents[node], let link = a.link else { return }
        let seq = a.sentSeq + 1
        agents[node]?.sentSeq = seq
        let order = AgentStopOrder(
            seq: seq,
            epoch: epoch,
            id: job.id.rawValue,
            run: job.runs,
            grace: job.graceLeft(at: Self.now),
            reason: job.stopText ?? "told to stop",
            resizeNotice: resizeNotice
        )
        guard let line = try? ControlProtocol.line(Notification(method: AgentProtocol.stop.name, params: order)) else {
            return
        }
        link.send(line)
    }

    func agentHeartbeat(node: String, link: UInt64) {
        guard agents[node]?.link?.id == link else { return }
        heard(node)
    }

    /// The node's agent spoke: its silence starts again.
    func heard(_ node: String) {
        agents[node]?.lastHeartbeat = Self.now
        agents[node]?.lastHeard = System.monotonic()
    }

    func agentDisconnected(node: String, link: UInt64) {
        guard agents[node]?.link?.id == link else { return }
        agents[node]?.link = nil
        logger.warning(
            "Agent disconnected; the node is lost unless it comes back within node_timeout",
            metadata: ["node": "\(node)"]
        )
    }

    /// From the tick: heartbeats to the agents; nodes whose agent has been silent too long (on the monotonic
    /// clock) are lost.
    func agentsTick() {
        guard let cluster = config.cluster else { return }
        let now = System.monotonic()
        for (name, a) in agents {
            if let link = a.link, now - a.lastSent >= cluster.heartbeatInterval {
                let seq = a.sentSeq + 1
                agents[name]?.sentSeq = seq
                agents[name]?.lastSent = now
                if let line = try? ControlProtocol.line(
                    Notification(method: AgentProtocol.heartbeat.name, params: AgentHeartbeat(seq: seq, time: Self.now))
                ) {
                    link.send(line)
                }
            }
            let silent = now - a.lastHeard
            guard silent > cluster.nodeTimeout, let node = state.node(named: name), node.state != .down else {
                continue
            }
            a.link?.close()
            agents[name]?.link = nil
            step(
                .nodeLost(
                    node: name,
                    reason:
                        "\(Self.agentLost)no heartbeat for \(Int(silent)) s (node_timeout \(Int(cluster.nodeTimeout)) s)"
                )
            )
        }
    }

    /// The node whose agent runs (or ran) this job, if an agent's node.
    func agentNode(of job: Job) -> String? {
        guard controller.runner(of: job) == .agent else { return nil }
        return job.allocation?.slices.first?.node
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
        step(.gpuHealth(node: name, gpus: Self.reports(gpus)))
    }

    /// An agent's GPU list as health reports.
    static func reports(_ gpus: [AgentGPU]) -> [Controller.GPUReport] {
        gpus.map {
            Controller.GPUReport(
                index: $0.index,
                health: $0.health == "healthy" ? .healthy : .unhealthy,
                reason: $0.reason
            )
        }
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
                lastHeard: System.monotonic(),
                gpus: []
            )
            syncRunner(name)
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
