import AllotConfig
import AllotCore
import AllotProtocol
import AllotWAL
import Foundation
import Logging
import Synchronization

/// One request being answered: who asked, on which connection, under which id.
struct Asked {
    let id: RPCID?
    let caller: Caller
    let out: Outbox
}

extension Engine {
    /// Carries out one request: one handler per method, each checking what it needs (``writable()``,
    /// ``admin(_:_:)``, ``job(_:)``) and throwing the error to answer with. Its answer goes out once
    /// everything it changed is durable.
    func perform(_ call: Call, id: RPCID?, caller: Caller, out: Outbox) {
        let asked = Asked(id: id, caller: caller, out: out)
        do throws(RPCError) {
            switch call {
            case .hello(let p): answer(try hello(p, asked), to: asked)
            case .submit(let requests, let many, let requestID):
                try submitted(requests, many: many, requestID: requestID, asked)
            case .list(let p): answer(try listed(p, asked), to: asked)
            case .show(let ref): answer(try shown(ref, asked), to: asked)
            case .why(let ref): answer(try why(ref), to: asked)
            case .change(let kind, let refs): answer(try changed(kind, refs, asked), to: asked)
            case .update(let p):
                try writable()
                answer(object(try update(p, caller: caller).get(), for: caller), to: asked)
            case .logs(let p): try logs(p, asked)
            case .attach(let ref): try attach(ref, asked)
            case .watch:
                out.streaming.store(true, ordering: .relaxed)
                watchers[out.id] = out
                answer(WatchResult(), to: asked)
            case .nodes: answer(state.nodes.map { nodeObject($0) }, to: asked)
            case .drain(let p): answer(try setNode(p, draining: true, asked), to: asked)
            case .resume(let p): answer(try setNode(p, draining: false, asked), to: asked)
            case .status: answer(status(), to: asked)
            case .top(let p): answer(try top(p).get(), to: asked)
            case .cost(let p): answer(try cost(p).get(), to: asked)
            case .reload:
                try admin("reload", caller)
                try writable()
                answer(
                    ReloadResult(changes: try reload(reason: "reload request from uid \(caller.uid)").get()),
                    to: asked
                )
            case .jobFinished(let p): answer(try jobFinished(p, asked), to: asked)
            case .jobExited(let p): answer(try jobExited(p, asked), to: asked)
            case .snapshot:
                try admin("snapshot", caller)
                answer(state, to: asked)
            case .serviceCreate, .serviceUpdate, .serviceScale, .serviceDelete, .serviceDemand:
                try writable()
                answer(try serviceChange(call, caller: caller).get(), to: asked)
            case .serviceList:
                answer(state.services.keys.sorted().map { serviceObject(state.services[$0]!) }, to: asked)
            case .serviceShow(let name): answer(serviceObject(try service(name)), to: asked)
            case .serviceEndpoints(let name): answer(endpoints(of: try service(name)), to: asked)
            }
        } catch {
            fail(error, to: asked)
        }
    }

    // MARK: Answering

    /// Queues a request's answer, sent once what the request changed is durable.
    func answer(_ result: some Encodable, to asked: Asked) {
        do {
            pendingActions.append(
                .reply(asked.out, asked.id, try ControlProtocol.line(Response(id: asked.id, result: result)))
            )
        } catch {
            fail(RPCError(RPCError.internalError, "cannot encode the answer: \(error)"), to: asked)
        }
    }

    /// Queues a request's error answer.
    func fail(_ error: RPCError, to asked: Asked) {
        pendingActions.append(
            .reply(
                asked.out,
                asked.id,
                (try? ControlProtocol.line(ErrorResponse(id: asked.id, error: error))) ?? Data()
            )
        )
    }

    // MARK: What a handler may require

    /// Changes are made here: this controller leads and its log works.
    func writable() throws(RPCError) {
        if let following { throw RPCError(RPCError.unavailable, notTheLeader(following)) }
        guard let failure else { return }
        throw RPCError(
            RPCError.unavailable,
            config.ha == nil
                ? "the write-ahead log failed (\(failure.message)); allotd serves reads only until it is restarted"
                : "the change was not made durable in etcd (\(failure.message)). This controller serves reads only, and restarts to campaign once etcd answers"
        )
    }

    /// The caller is an admin.
    func admin(_ what: String, _ caller: Caller) throws(RPCError) {
        guard !caller.admin else { return }
        throw .denied("\(what) is for admins: root and members of group \(settings.adminGroup ?? "(none configured)")")
    }

    /// The job a reference names: a job's own id names it (an array's too: its first task); `12_7` names a
    /// task.
    func job(_ ref: JobRef) throws(RPCError) -> Job {
        let id: JobID
        if case .job(let n) = ref {
            guard state.jobs[JobID(n)] != nil else { throw .notFound("no job \(n)") }
            id = JobID(n)
        } else {
            id = try (resolve(ref).first ?? .failure(.notFound("no job \(ref)"))).get()
        }
        guard let j = state.jobs[id] else { throw .notFound("no job \(ref)") }
        return j
    }

    /// The service a name names.
    func service(_ name: String) throws(RPCError) -> InferenceService {
        guard let s = state.services[name] else { throw .notFound(noService(name)) }
        return s
    }

    // MARK: Handlers

    func hello(_ p: HelloParams, _ asked: Asked) throws(RPCError) -> HelloResult {
        guard p.version == ControlProtocol.version else {
            throw RPCError(
                RPCError.versionNotSupported,
                "this allotd speaks protocol version \(ControlProtocol.version), the client \(p.version); use an allotctl of the same release"
            )
        }
        return HelloResult(
            version: ControlProtocol.version,
            server: "allotd \(Engine.version)",
            uid: asked.caller.uid,
            admin: asked.caller.admin
        )
    }

    /// `submit` and `submit_many`: their answers differ in shape.
    func submitted(_ requests: [JobRequest], many: Bool, requestID: String?, _ asked: Asked) throws(RPCError) {
        try writable()
        let (ids, warnings) = try submit(requests, requestID: requestID, caller: asked.caller).get()
        if many {
            let lines = warnings.map { "job \($0.id): \($0.text)" }
            answer(SubmitManyResult(ids: ids.map(\.rawValue), warnings: lines.isEmpty ? nil : lines), to: asked)
        } else {
            answer(
                SubmitResult(id: ids[0].rawValue, warnings: warnings.isEmpty ? nil : warnings.map(\.text)),
                to: asked
            )
        }
    }

    func listed(_ p: ListParams, _ asked: Asked) throws(RPCError) -> [JobObject] {
        let (jobs, archived) = try list(p).get()
        churn += jobs.count + archived.count
        var objects = archived.map { archivedObject($0, for: asked.caller) }
        objects += p.fold == true ? folded(jobs, for: asked.caller) : jobs.map { object($0, for: asked.caller) }
        if let limit = p.limit, limit >= 0, objects.count > limit { objects = Array(objects.suffix(limit)) }
        return objects
    }

    /// A job in the table, or one archived since it ended.
    func shown(_ ref: JobRef, _ asked: Asked) throws(RPCError) -> JobObject {
        if case .job(let n) = ref, state.jobs[JobID(n)] == nil, n < state.nextJobID.rawValue,
            let o = archive.find(n)
        {
            return archivedObject(o, for: asked.caller)
        }
        return object(try job(ref), for: asked.caller)
    }

    func why(_ ref: JobRef) throws(RPCError) -> WhyResult {
        let j = try job(ref)
        // As of now, not of the last event: "running since 3s ago", cost so far, times until.
        let current = state.asOf(Instant(seconds: Self.now))
        guard let e = scheduler.explain(j.id, in: current, pass: passStale ? nil : lastPass) else {
            throw .notFound("no job \(ref)")
        }
        return WhyResult(
            id: j.id.rawValue,
            state: e.state.rawValue,
            lines: e.lines,
            estimatedStart: e.estimatedStart.map { WireTime.format($0.seconds) }
        )
    }

    /// cancel, hold, release, requeue and checkpoint: one result per job named (an array's tasks each).
    func changed(_ kind: Call.Change, _ refs: [JobRef], _ asked: Asked) throws(RPCError) -> ItemsResult {
        try writable()
        return ItemsResult(
            results: refs.flatMap { ref in
                resolve(ref, ended: kind == .requeue).map { change(kind, $0, caller: asked.caller) }
            }
        )
    }

    /// Answers with the log's path and size, then streams it (from the agent for a job on an agent's node).
    func logs(_ p: LogsParams, _ asked: Asked) throws(RPCError) {
        let j = try job(p.id)
        guard asked.caller.admin || asked.caller.uid == j.spec.uid else {
            throw .denied(
                "the log of job \(p.id) is readable by its owner (uid \(j.spec.uid)), root and the admin group only"
            )
        }
        let offset = max(0, p.offset ?? 0)
        let follow = p.follow ?? false
        if let node = agentNode(of: j) {
            guard let link = agents[node]?.link else {
                throw .refused(
                    "job \(j.id)'s log is on node \(node), whose agent is not connected now; try again later"
                )
            }
            answer(LogsResult(path: "\(node):logs/\(j.id).log", size: 0), to: asked)
            let stream = LogStream(job: j.id.rawValue, path: "", offset: offset, follow: follow, remote: link)
            openLog(stream, of: j, to: asked.out)
            return
        }
        let path = j.spec.output ?? executor.logPath(j.id)
        let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
        answer(LogsResult(path: path, size: size), to: asked)
        openLog(LogStream(job: j.id.rawValue, path: path, offset: offset, follow: follow), of: j, to: asked.out)
    }

    /// Relays a running interactive job's terminal on an agent's node over the connection, after the answer.
    func attach(_ ref: JobRef, _ asked: Asked) throws(RPCError) {
        let j = try job(ref)
        guard asked.caller.uid == 0 || asked.caller.uid == j.spec.uid else {
            throw .denied("job \(j.id)'s terminal is its owner's (uid \(j.spec.uid)) and root's only")
        }
        guard j.spec.interactive != nil else {
            throw .refused("job \(j.id) is not an interactive run (allotctl run); read its output with allotctl logs")
        }
        guard j.state == .running else {
            throw .refused("job \(j.id) is \(j.state.rawValue), not running: it has no terminal now")
        }
        guard let node = agentNode(of: j) else {
            throw .refused(
                "job \(j.id) runs on a node allotd runs itself: its terminal is the socket in its `show` (tty)"
            )
        }
        guard let link = agents[node]?.link else {
            throw .refused("job \(j.id) runs on node \(node), whose agent is not connected now; try again later")
        }
        let line: Data
        do {
            line = try ControlProtocol.line(Response(id: asked.id, result: AttachResult(node: node, run: j.runs)))
        } catch {
            throw RPCError(RPCError.internalError, "cannot encode the answer: \(error)")
        }
        pendingActions.append(.attach(asked.out, answer: line, link, AgentRunRef(id: j.id.rawValue, run: j.runs)))
    }

    /// `drain` and `resume`.
    func setNode(_ p: NodeParams, draining: Bool, _ asked: Asked) throws(RPCError) -> NodeObject {
        try admin(draining ? "drain" : "resume", asked.caller)
        try writable()
        guard let node = state.node(named: p.node) else {
            throw .notFound("no node \(p.node); allotctl nodes lists them")
        }
        do {
            try apply(
                draining
                    ? .nodeStateChanged(
                        name: node.name,
                        state: .draining,
                        reason: p.reason ?? "drained by uid \(asked.caller.uid)"
                    )
                    : .nodeStateChanged(name: node.name, state: .up, reason: nil)
            )
        } catch {
            throw .refused(error.message)
        }
        logger.info(
            draining ? "Node draining" : "Node resumed",
            metadata: ["node": "\(node.name)", "uid": "\(asked.caller.uid)"]
        )
        requestPass()
        if !draining { gpuProbe?.forgetErrors() }
        return nodeObject(state.node(named: node.name)!)
    }

    /// An admin records the end of a job on a node allotd does not run.
    func jobFinished(_ p: JobFinishedParams, _ asked: Asked) throws(RPCError) -> JobObject {
        try admin("job_finished", asked.caller)
        try writable()
        let j = try job(.job(p.id))
        guard j.state.holdsGPUs else {
            throw .refused("job \(p.id) is \(j.state.rawValue): only a running or stopping job can finish")
        }
        guard !isLocal(j) else {
            throw .refused("job \(p.id) runs on a node allotd runs itself; its end is recorded when its process exits")
        }
        let exit: ExitStatus = p.signal.map { .signaled(signal: $0) } ?? .exited(code: p.exitCode ?? 0)
        step(.runEnded(Controller.RunEnd(id: j.id, run: j.runs, exit: exit)))
        return object(state.jobs[j.id]!, for: asked.caller)
    }

    /// A job's supervisor says a run ended: its status file says how.
    func jobExited(_ p: JobExitedParams, _ asked: Asked) throws(RPCError) -> NoParams {
        guard asked.caller.uid == 0 || asked.caller.uid == getuid() else {
            throw .denied("job_exited is sent by allotd's own job supervisors")
        }
        // A follower leaves the end to its status file: the leader adopts it from there.
        if following == nil, let ended = executor.ended(JobID(p.id), run: p.run) { runEnded(ended) }
        return NoParams()
    }
}
