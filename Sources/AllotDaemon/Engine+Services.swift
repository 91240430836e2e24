import AllotCore
import AllotProtocol
import Foundation
import Logging

/// Services: created, scaled and deleted through the controller (which keeps their replicas' jobs), and
/// their replicas on this host's nodes checked (ReplicaChecks).
extension Engine {
    func noService(_ name: String) -> String {
        let names = state.services.keys.sorted()
        return "no service \(name)" + (names.isEmpty ? "" : " (services: \(names.prefix(10).joined(separator: ", ")))")
    }

    /// `service.create`, `service.scale`, `service.delete`.
    func serviceChange(_ call: Call, caller: Caller) -> Result<ServiceObject, RPCError> {
        let who = caller.name ?? "uid \(caller.uid)"
        do throws(RPCError) {
            switch call {
            case .serviceCreate(let p):
                if let problem = ServiceSpec.nameProblem(p.name) { throw .invalidParams("name: \(problem)") }
                guard state.services[p.name] == nil else { throw .refused("service \(p.name) already exists") }
                let (spec, replicas) = try serviceSpec(p, caller: caller, now: nil)
                try record(.serviceCreated(spec: spec, replicas: replicas))
                logger.info(
                    "Service created",
                    metadata: ["service": "\(p.name)", "replicas": "\(replicas)", "uid": "\(caller.uid)"]
                )
                return .success(serviceObject(state.services[p.name]!))
            case .serviceUpdate(let p):
                let now = try ownService(p.name, caller: caller, "update")
                let (spec, replicas) = try serviceSpec(p, caller: caller, now: now)
                try record(.serviceUpdated(spec: spec, replicas: replicas, by: caller.uid))
                let rolls = state.services[p.name]!.generation != now.generation
                logger.info(
                    "Service updated",
                    metadata: ["service": "\(p.name)", "rollout": "\(rolls)", "uid": "\(caller.uid)"]
                )
                return .success(serviceObject(state.services[p.name]!))
            case .serviceScale(let p):
                let s = try ownService(p.name, caller: caller, "scale")
                for (what, v) in [("replicas", p.replicas), ("min", p.min), ("max", p.max)] {
                    if let v, !(0...ServiceSpec.maxReplicasLimit).contains(v) {
                        throw .invalidParams("\(what): 0 to \(ServiceSpec.maxReplicasLimit), not \(v)")
                    }
                }
                if p.replicas != nil, s.spec.autoscale != nil {
                    throw .refused(
                        "service \(p.name) sizes itself to its load (autoscale \(s.spec.autoscale!)): give it bounds with --min and --max"
                    )
                }
                var lo = p.min ?? s.spec.minReplicas
                var hi = p.max ?? s.spec.maxReplicas
                guard hi >= Swift.max(1, lo) else {
                    throw .invalidParams("the most replicas (\(hi)) must be at least 1 and at least the fewest (\(lo))")
                }
                // Asked for a size outside its bounds, the bounds widen: the user's word is the last. Without
                // one, the size moves into the new bounds.
                let replicas = p.replicas ?? Swift.min(Swift.max(s.replicas, lo), hi)
                lo = Swift.min(lo, replicas)
                hi = Swift.max(hi, replicas, 1)
                var said: [String] = []
                if let r = p.replicas { said.append("to \(r)") }
                if p.min != nil || p.max != nil { said.append("within \(lo)...\(hi)") }
                try record(
                    .serviceScaled(
                        name: p.name,
                        replicas: replicas,
                        minReplicas: lo,
                        maxReplicas: hi,
                        reason: "scaled \(said.joined(separator: " ")) by \(who)"
                    )
                )
                logger.info("Service scaled", metadata: ["service": "\(p.name)", "replicas": "\(replicas)"])
                return .success(serviceObject(state.services[p.name]!))
            case .serviceDemand(let p):
                let s = try ownService(p.name, caller: caller, "report the demand of")
                guard s.spec.autoscale != nil else {
                    throw .refused("service \(p.name) does not autoscale: create it with --autoscale target=N")
                }
                guard p.requests.isFinite, p.requests >= 0 else {
                    throw .invalidParams("requests: 0 or more, not \(p.requests)")
                }
                step(.serviceLoad(p.name, p.requests))
                return .success(serviceObject(state.services[p.name]!))
            case .serviceDelete(let name):
                var gone = serviceObject(try ownService(name, caller: caller, "delete"))
                let out = step(.deleteService(name, by: caller.uid))
                if let (_, error) = out.refused.first {
                    throw RPCError(RPCError.internalError, "deleting service \(name) failed: \(error.message)")
                }
                requestPass()
                gone.replicas = 0
                gone.members = gone.members.map { m in
                    var m = m
                    m.state = state.jobs[JobID(m.id)]?.state.rawValue ?? m.state
                    m.ready = false
                    return m
                }
                gone.ready = 0
                return .success(gone)
            default:
                throw RPCError(RPCError.internalError, "not a service change")
            }
        } catch {
            return .failure(error)
        }
    }

    /// The spec a create or update asks for, checked as a submit is; an update keeps the size and bounds it
    /// does not give.
    private func serviceSpec(
        _ p: ServiceCreateParams,
        caller: Caller,
        now: InferenceService?
    ) throws(RPCError) -> (ServiceSpec, replicas: Int) {
        var request = p.job
        request.kind = "inference"
        var checks = specChecks(caller: caller)
        var (template, _, _) = try checkedSpec(request, caller: caller, &checks)
        template.name = p.name
        if let port = p.port { template.environment["ALLOT_PORT"] = String(port) }
        func probe(_ text: String?, _ what: String) throws(RPCError) -> Probe? {
            guard let text else { return nil }
            switch Probe.parse(text) {
            case .success(let probe): return probe
            case .failure(let e): throw .invalidParams("\(what): \(e.message)")
            }
        }
        var autoscale: Autoscale?
        if let text = p.autoscale {
            switch Autoscale.parse(text) {
            case .success(let a): autoscale = a
            case .failure(let e): throw .invalidParams("autoscale: \(e.message)")
            }
        }
        let replicas = p.replicas ?? p.min ?? now?.replicas ?? 1
        let lo = p.min ?? now.map { Swift.min($0.spec.minReplicas, replicas) } ?? Swift.min(replicas, 1)
        let spec = ServiceSpec(
            name: p.name,
            template: template,
            minReplicas: lo,
            maxReplicas: p.max ?? Swift.max(replicas, lo, now?.spec.maxReplicas ?? 1, 1),
            port: p.port,
            ready: try probe(p.ready, "ready"),
            live: try probe(p.live, "live"),
            autoscale: autoscale
        )
        if let problem = spec.problems().first { throw .invalidParams(problem) }
        guard (spec.minReplicas...spec.maxReplicas).contains(replicas) else {
            throw .invalidParams(
                "replicas: \(replicas) is outside the service's bounds \(spec.minReplicas)...\(spec.maxReplicas)"
            )
        }
        return (spec, replicas)
    }

    /// A service its caller may change: their own, or any for admins.
    private func ownService(_ name: String, caller: Caller, _ what: String) throws(RPCError) -> InferenceService {
        guard let s = state.services[name] else { throw .notFound(noService(name)) }
        guard caller.admin || caller.uid == s.spec.template.uid else {
            throw .denied(
                "service \(name) is \(s.spec.template.user ?? "uid \(s.spec.template.uid)")'s: only they and admins may \(what) it"
            )
        }
        return s
    }

    /// Records an event through the controller (which then keeps the service's replicas).
    private func record(_ body: Event.Body) throws(RPCError) {
        let out = step(.record([body]))
        if let (_, error) = out.refused.first { throw .refused(error.message) }
        requestPass()
    }

    func serviceObject(_ s: InferenceService) -> ServiceObject {
        let t = s.spec.template
        let members = s.members.map { replicaObject($0, of: s) }
        let running = s.members.compactMap { state.jobs[$0] }.filter { $0.state == .running }
        return ServiceObject(
            name: s.spec.name,
            user: t.user ?? String(t.uid),
            uid: t.uid,
            tenant: t.tenant,
            command: t.command,
            gpus: t.gpuShare.map { Double($0) / 1000 } ?? Double(t.gpus),
            gpuModels: t.gpuModels.isEmpty ? nil : t.gpuModels,
            mig: t.mig.isEmpty ? nil : t.mig,
            replicas: s.replicas,
            min: s.spec.minReplicas,
            max: s.spec.maxReplicas,
            ready: members.filter(\.ready).count,
            port: s.spec.port,
            readyCheck: s.spec.ready?.description,
            liveCheck: s.spec.live?.description,
            created: WireTime.format(s.created.seconds),
            scaleReason: s.scaleReason,
            crashes: s.crashes > 0 ? s.crashes : nil,
            lastCrash: s.lastCrash,
            restartAfter: s.restartAfter.flatMap { $0.seconds > Self.now ? WireTime.format($0.seconds) : nil },
            members: members,
            costPerHour: running.reduce(0) { $0 + $1.costRate } * 3600,
            generation: s.generation,
            rollout: rollout(of: s),
            autoscale: s.spec.autoscale?.description,
            load: s.spec.autoscale.flatMap { a in
                controller.load(of: s.spec.name)?.mean(since: System.monotonic() - a.window)
            }
        )
    }

    /// A rollout in progress or stopped, in words; nil when every replica runs the current version.
    private func rollout(of s: InferenceService) -> String? {
        let want = s.replicaSpec
        let old = s.members.filter { state.jobs[$0]?.spec != want }.count
        guard old > 0 else { return nil }
        if let why = s.rolloutHalted { return "stopped: \(why)" }
        return "rolling to version \(s.generation): \(s.members.count - old) new, \(old) old"
    }

    private func replicaObject(_ id: JobID, of s: InferenceService) -> ReplicaObject {
        guard let job = state.jobs[id] else { return ReplicaObject(id: id.rawValue, state: "gone", ready: false) }
        let node = job.allocation?.slices.first?.node
        var r = ReplicaObject(id: id.rawValue, state: job.state.rawValue, node: node, ready: false)
        r.outdated = job.spec != s.replicaSpec ? true : nil
        guard job.state == .running, let node else {
            r.reason = reason(of: job)
            return r
        }
        r.address = state.node(named: node)?.spec.labels["address"] ?? (localNodes.contains(node) ? "127.0.0.1" : node)
        switch controller.runner(of: job) {
        case .local:
            r.port = executor.port(of: id, run: job.runs)
            let health = replicaChecks.of(id, run: job.runs)
            r.ready = health?.ready ?? false
            r.reason = health?.problem ?? (r.ready ? nil : "not checked yet")
        case .agent:
            // Its node's agent checks it and says what it found.
            let found = agentReplicas[id].flatMap { $0.run == job.runs ? $0 : nil }
            r.port = found?.port ?? s.spec.port
            r.ready = found?.ready ?? false
            r.reason = found?.problem ?? (r.ready ? nil : "not checked yet (by the agent of node \(node))")
        case .none:
            r.reason = "its node is run by neither allotd nor an agent"
        }
        return r
    }

    func endpoints(of s: InferenceService) -> EndpointsResult {
        EndpointsResult(
            service: s.spec.name,
            endpoints: s.members.map { replicaObject($0, of: s) }.compactMap { r in
                guard r.ready, let node = r.node, let address = r.address, let port = r.port else { return nil }
                return EndpointsResult.Endpoint(job: r.id, node: node, address: address, port: port)
            }
        )
    }

    /// What an agent's checks found of its node's replicas: readiness goes to the controller at once, a
    /// restart a liveness check asks for is decided through it, and the load is kept for the autoscaler.
    func agentReplicas(node: String, link: UInt64, _ message: AgentReplicas) {
        guard agents[node]?.link?.id == link else { return }
        heard(node)
        for r in message.replicas {
            let id = JobID(r.id)
            guard let job = state.jobs[id], job.runs == r.run, job.state == .running, job.spec.service != nil,
                job.allocation?.slices.first?.node == node
            else { continue }  // stale
            let was = agentReplicas[id].flatMap { $0.run == r.run ? $0 : nil }
            var kept = r
            kept.restart = nil
            agentReplicas[id] = kept
            if was?.ready != r.ready {
                logger.info(
                    r.ready ? "Replica ready" : "Replica not ready",
                    metadata: ["job.id": "\(id)", "node": "\(node)", "reason": "\(r.problem ?? "-")"]
                )
            }
            if r.ready != controller.readyReplicas.contains(id) { step(.replicaReady(id, r.ready)) }
            if let restart = r.restart {
                logger.notice("Replica restarted", metadata: ["job.id": "\(id)", "reason": "\(restart)"])
                step(.requeue(id, by: nil, reason: "restarted: \(restart)"))
                requestPass()
            }
        }
    }

    /// Sends each linked agent the checks of the replicas its node runs, when they changed.
    private func sendAgentChecks() {
        var byNode: [String: [AgentReplicaChecks]] = [:]
        for s in state.services.values {
            for id in s.members {
                guard let job = state.jobs[id], job.state == .running, controller.runner(of: job) == .agent,
                    let node = job.allocation?.slices.first?.node
                else { continue }
                let a = s.spec.autoscale
                byNode[node, default: []].append(
                    AgentReplicaChecks(
                        id: id.rawValue,
                        run: job.runs,
                        ready: s.spec.ready,
                        live: s.spec.live,
                        metricsPath: a?.metricsPath,
                        series: a.map(\.metrics),
                        user: job.spec.user
                    )
                )
            }
        }
        for (name, agent) in agents {
            guard let link = agent.link else { continue }
            let checks = AgentChecks(replicas: (byNode[name] ?? []).sorted { ($0.id, $0.run) < ($1.id, $1.run) })
            guard checks != agent.checksSent else { continue }
            if let line = try? ControlProtocol.line(Notification(method: AgentProtocol.checks.name, params: checks)) {
                link.send(line)
                agents[name]?.checksSent = checks
            }
        }
        agentReplicas = agentReplicas.filter { id, r in
            state.jobs[id].map { $0.runs == r.run && $0.state == .running } ?? false
        }
    }

    /// Starts the checks that are due on this host's running replicas (from the engine's tick).
    func checkReplicas() {
        if !agents.isEmpty { sendAgentChecks() }
        guard !state.services.isEmpty else { return }
        var running: [(id: JobID, run: Int, port: Int, spec: ServiceSpec)] = []
        for s in state.services.values {
            for id in s.members {
                guard let job = state.jobs[id], job.state == .running, controller.runner(of: job) == .local,
                    let port = executor.port(of: id, run: job.runs)
                else { continue }
                running.append((id, job.runs, port, s.spec))
            }
        }
        let handle = self.handle
        let now = System.monotonic()
        // Autoscaled services' load, from their ready replicas' metrics.
        for s in state.services.values {
            guard let a = s.spec.autoscale, let path = a.metricsPath else { continue }
            let ports = running.filter { r in
                r.spec.name == s.spec.name && replicaChecks.of(r.id, run: r.run)?.ready == true
            }
            .map(\.port)
            // Agents read their replicas' metrics and say what they found.
            let fromAgents = s.members.compactMap { id -> Double? in
                guard let r = agentReplicas[id], r.ready else { return nil }
                return r.inFlight
            }
            guard !ports.isEmpty || !fromAgents.isEmpty, replicaChecks.scrapeIsDue(s.spec.name, now: now) else {
                continue
            }
            let (name, series) = (s.spec.name, a.metrics)
            Task.detached {
                var total = fromAgents.reduce(0, +)
                var read = fromAgents.count
                for port in ports {
                    guard case .success(let text) = ReplicaChecks.metrics(port: port, path: path) else { continue }
                    total += ReplicaChecks.requestsInFlight(metrics: text, series: series) ?? 0
                    read += 1
                }
                handle.send(.serviceScraped(name, requests: read > 0 ? total : nil))
            }
        }
        let checks = replicaChecks.due(
            running: running.map { ($0.id, $0.run, $0.port, $0.spec.ready, $0.spec.live) },
            now: now
        )
        // The controller rolls updates on readiness: tell it what changed.
        for s in state.services.values {
            for id in s.members {
                let ready = replicaObject(id, of: s).ready
                if ready != controller.readyReplicas.contains(id) { step(.replicaReady(id, ready)) }
            }
        }
        for (id, run, port, probe, readiness) in checks {
            let user = state.jobs[id]?.spec.user
            Task.detached {
                let problem = ReplicaChecks.check(probe, port: port, user: user)
                handle.send(.replicaChecked(id: id, run: run, readiness: readiness, problem: problem))
            }
        }
    }

    /// A check's answer: a replica that fails its liveness check too often is restarted (requeued: it
    /// stops within its grace and starts again).
    func replicaChecked(_ id: JobID, run: Int, readiness: Bool, problem: String?) {
        let wasReady = replicaChecks.of(id, run: run)?.ready ?? false
        guard let restart = replicaChecks.answered(id, run: run, readiness: readiness, problem: problem) else {
            if let h = replicaChecks.of(id, run: run), h.ready != wasReady {
                logger.info(
                    h.ready ? "Replica ready" : "Replica not ready",
                    metadata: ["job.id": "\(id)", "reason": "\(problem ?? "-")"]
                )
                // At once, not at the next tick: the endpoints already show it, and a rollout deciding in
                // between would take a serving replica for one that does not serve.
                if h.ready != controller.readyReplicas.contains(id) { step(.replicaReady(id, h.ready)) }
            }
            return
        }
        guard let job = state.jobs[id], job.state == .running, job.runs == run else { return }
        logger.notice("Replica restarted", metadata: ["job.id": "\(id)", "reason": "\(restart)"])
        step(.requeue(id, by: nil, reason: "restarted: \(restart)"))
        requestPass()
    }
}
