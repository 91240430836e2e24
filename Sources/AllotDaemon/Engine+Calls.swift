import AllotConfig
import AllotCore
import AllotProtocol
import AllotWAL
import CoreMetrics
import Foundation
import Logging
import Synchronization

extension Engine {
    static let version = "0.1.0"

    /// Why a follower refuses a change, and where to send it.
    func notTheLeader(_ f: Following) -> String {
        let here = config.ha.map(HA.name) ?? hostname
        guard let leader = f.leader else {
            return
                "not the leader: this controller (\(here)) follows, and no controller leads cluster \(config.ha?.cluster ?? "-") now; try again in a few seconds"
        }
        return
            "not the leader: this controller (\(here)) follows; the leader is \(leader). Run allotctl on \(leader)'s host (or against its socket); reads are answered here"
    }

    // MARK: Submitting

    /// What checking a request's spec needs of the pool, worked out once per call.
    struct SpecChecks {
        var classes: Set<String>
        var models: [String]
        var accounts: Accounts
        var groupNames: [String]
        /// A working directory is checked here when every node is this host's: elsewhere it may differ.
        var localOnly: Bool
        var dirProblems: [String: String?] = [:]
    }

    func specChecks(caller: Caller) -> SpecChecks {
        SpecChecks(
            classes: Set(state.config.priorityClasses.map(\.name)),
            models: state.config.gpuModels.map(\.name),
            accounts: config.accounts,
            groupNames: caller.admin ? [] : caller.groups.compactMap { System.groupName(gid: $0) },
            localOnly: !state.nodes.isEmpty && state.nodes.allSatisfy { localNodes.contains($0.name) }
        )
    }

    /// A request's spec, checked as a submit checks it: who may use its tenant, its names, its working
    /// directory, and that it could ever start. Returns the spec, whether it is held, and a warning for a
    /// partition that names nothing here.
    func checkedSpec(
        _ r: JobRequest,
        caller: Caller,
        _ checks: inout SpecChecks
    ) throws(RPCError) -> (spec: JobSpec, held: Bool, warning: String?) {
        var (spec, held) = try r.spec(
            uid: caller.uid,
            user: caller.name,
            defaultTenant: checks.accounts.defaultTenant(for: caller.name)
        )
        var warning: String?
        if let partition = r.partition {
            if checks.classes.contains(partition) {
                if r.priorityClass == nil { spec.priorityClass = partition }
            } else if state.config.tenants.contains(where: { $0.name == partition }) {
                if r.tenant == nil { spec.tenant = partition }
            } else {
                warning =
                    "partition \"\(partition)\" is neither a priority class nor a tenant here; ignored (classes: \(checks.classes.sorted().joined(separator: ", ")))"
            }
        }
        if let rule = checks.accounts.refusal(
            user: caller.name,
            groups: checks.groupNames,
            admin: caller.admin,
            tenant: spec.tenant
        ) {
            throw .denied(rule)
        }
        if let problem = ClusterState.specProblems(spec).first { throw .invalidParams(problem) }
        try checkNice(spec.nice, caller: caller)
        try checkNames(&spec, id: state.nextJobID, models: checks.models, classes: checks.classes)
        if spec.interactive != nil && !checks.localOnly {
            // A terminal needs a runner: a node allotd runs itself, or one with an agent.
            var s = spec.nodes ?? NodeSelection()
            let run = state.nodes.map(\.name).filter { localNodes.contains($0) || agents[$0] != nil }
            if run.count < state.nodes.count {
                s.nodes = s.nodes.isEmpty ? run : s.nodes.filter(run.contains)
                guard !s.nodes.isEmpty else {
                    throw .refused(
                        "an interactive run needs a node that allotd or an agent runs, and none of the nodes it may use is one"
                    )
                }
                spec.nodes = s
            }
        }
        if checks.localOnly, let dir = spec.workingDirectory {
            if checks.dirProblems[dir] == nil {
                checks.dirProblems[dir] = System.entryProblem(
                    dir,
                    uid: caller.uid,
                    gids: caller.groups + [caller.gid]
                )
            }
            if let problem = checks.dirProblems[dir]! { throw .invalidParams("workdir: \(problem)") }
        }
        if let b = Scheduler.permanentBlocker(for: spec, in: state) {
            throw .refused("job \"\(spec.name)\" could never start: \(b.sentence(for: spec, in: state))")
        }
        return (spec, held, warning)
    }

    /// Submits jobs, all or none. Returns their ids and warnings about jobs that were accepted but will not
    /// run as their owner may expect.
    func submit(
        _ requests: [JobRequest],
        requestID: String? = nil,
        caller: Caller
    ) -> Result<(ids: [JobID], warnings: [(id: JobID, text: String)]), RPCError> {
        if let requestID {
            guard (1...128).contains(requestID.utf8.count), requestID.allSatisfy({ $0.isASCII && !$0.isWhitespace })
            else {
                return .failure(
                    .invalidParams(
                        "request_id: 1 to 128 printable ASCII characters without spaces, got \"\(requestID)\""
                    )
                )
            }
            // A retry: the jobs the first try made, never new ones.
            let made = state.jobs(ofRequest: requestID, uid: caller.uid)
            let asked = requests.reduce(0) { n, r in
                n + (r.array.flatMap { try? ArrayIndices.parse($0).get() }?.indices.count ?? 1)
            }
            if !made.isEmpty && made.count != asked {
                // Only a part of it was recorded (a leader lost between etcd transactions of one batch).
                return .failure(
                    .refused(
                        "request \(requestID) was recorded in part: \(made.count) of \(asked) jobs (\(made.map(\.description).joined(separator: ", "))). Cancel them and submit again with a new request id"
                    )
                )
            }
            if !made.isEmpty {
                logger.info(
                    "Submit retried: answered with the jobs it made",
                    metadata: ["request_id": "\(requestID)", "jobs.first": "\(made[0])", "uid": "\(caller.uid)"]
                )
                return .success((made, []))
            }
        }
        var specs: [(JobSpec, Bool)] = []
        specs.reserveCapacity(requests.count)
        var checks = specChecks(caller: caller)
        // By the index of the request's first job.
        var partitionWarnings: [Int: String] = [:]
        for (i, r) in requests.enumerated() {
            let at = requests.count > 1 ? "jobs[\(i)]: " : ""
            do throws(RPCError) {
                let (spec, held, warning) = try checkedSpec(r, caller: caller, &checks)
                if let warning, partitionWarnings[specs.count] == nil { partitionWarnings[specs.count] = warning }
                // A job array: one task per index, checked once.
                var indices: ArrayIndices?
                if let text = r.array {
                    switch ArrayIndices.parse(text) {
                    case .success(let a): indices = a
                    case .failure(let e): throw .invalidParams("array: \(e.message)")
                    }
                    guard specs.count + indices!.indices.count <= Self.maxJobsPerSubmit else {
                        throw .invalidParams("array: at most \(Self.maxJobsPerSubmit) jobs in one submit")
                    }
                }
                let first = JobID(state.nextJobID.rawValue + UInt64(specs.count))
                let output = spec.output.flatMap { $0.contains("%") ? $0 : nil }
                for (k, index) in (indices?.indices ?? [-1]).enumerated() {
                    var task = spec
                    task.requestID = requestID
                    let id = JobID(first.rawValue + UInt64(k))
                    if index >= 0 { task.array = ArrayTask(array: first, index: index, limit: indices!.limit) }
                    if let output {
                        task.output = Self.expandOutput(
                            output,
                            id: id,
                            name: spec.name,
                            user: caller.name,
                            array: task.array
                        )
                    }
                    specs.append((task, held))
                }
            } catch {
                return .failure(RPCError(error.code, at + error.message))
            }
        }
        let out = step(.submit(specs.map { Controller.Submission(spec: $0.0, held: $0.1) }))
        var ids: [JobID] = []
        ids.reserveCapacity(specs.count)
        for e in out.events {
            if case .jobSubmitted(let id, _, _) = e.body { ids.append(id) }
        }
        metrics?.submitted.increment(by: ids.count)
        if let (_, error) = out.refused.first {
            // Checked above; a refusal here is a bug, and what was applied stays (it is logged).
            return .failure(
                RPCError(RPCError.internalError, "job \(ids.count) of the request was refused: \(error.message)")
            )
        }
        var warnings: [(id: JobID, text: String)] = partitionWarnings.sorted { $0.key < $1.key }.compactMap { i, text in
            i < ids.count ? (ids[i], text) : nil
        }
        // An array's tasks share their spec: its first answers for all.
        for (id, (spec, _)) in zip(ids, specs)
        where spec.walltime != nil && warnings.count < 100 && (spec.array == nil || spec.array?.array == id) {
            if let fit = Scheduler.walltimeFit(for: spec, in: state), fit.inTime.isEmpty {
                warnings.append((id, fit.sentence))
            }
        }
        if ids.count <= 16 {
            for id in ids { logger.info("Job submitted", metadata: ["job.id": "\(id)", "uid": "\(caller.uid)"]) }
        } else {
            logger.info(
                "Jobs submitted",
                metadata: ["jobs.first": "\(ids[0])", "jobs.count": "\(ids.count)", "uid": "\(caller.uid)"]
            )
        }
        churn += ids.count * 4  // the request's JSON, decoded on the event loops
        requestPass()
        return .success((ids, warnings))
    }

    /// Checks what a spec names against the pool, for job `id` (submit and update alike): its GPU models
    /// (one named in other case is that model: Slurm's gres types are lower case, a100), its class, and
    /// its dependencies (jobs that exist, conditions that can still be met).
    func checkNames(_ spec: inout JobSpec, id: JobID, models: [String], classes: Set<String>) throws(RPCError) {
        /// The pool's spelling of model `m` (any case), or the refusal naming `key`.
        func model(_ m: String, key: String) throws(RPCError) -> String {
            if let name = models.contains(m) ? m : models.first(where: { $0.lowercased() == m.lowercased() }) {
                return name
            }
            let hint = closest(m, in: models).map { "did you mean \"\($0)\"? " } ?? ""
            throw .invalidParams(
                "\(key): the pool has no GPU model \"\(m)\"; \(hint)its models are \(models.joined(separator: ", "))"
            )
        }
        var allowed: [String] = []
        for m in spec.gpuModels { allowed.append(try model(m, key: "gpu_model")) }
        spec.gpuModels = allowed
        if !spec.speeds.isEmpty {
            var speeds: [String: Double] = [:]
            for (m, v) in spec.speeds { speeds[try model(m, key: "speed")] = v }
            spec.speeds = speeds
        }
        if let c = spec.priorityClass, !classes.contains(c) {
            throw .invalidParams(
                "class: no priority class \"\(c)\"; the classes are \(classes.sorted().joined(separator: ", "))"
            )
        }
        if let s = spec.nodes {
            for (key, names) in [("nodelist", s.nodes), ("exclude", s.exclude)] {
                for n in names where state.node(named: n) == nil {
                    let all = state.nodes.map(\.name)
                    let hint = closest(n, in: all).map { "did you mean \"\($0)\"? " } ?? ""
                    throw .invalidParams(
                        "\(key): the pool has no node \"\(n)\"; \(hint)its nodes are \(Hostlist.compress(all.sorted()))"
                    )
                }
            }
        }
        guard !spec.dependencies.isEmpty else { return }
        if let problem = state.dependencyProblems(spec, id: id).first { throw .invalidParams(problem) }
        if case .never(let why) = state.dependencyStatus(of: spec, id: id) {
            throw .refused("job \"\(spec.name)\" could never start: its dependency can never be met: \(why)")
        }
    }

    /// Only admins raise a job's priority (a nice below 0), as in Slurm.
    func checkNice(_ nice: Int, caller: Caller) throws(RPCError) {
        if nice < 0 && !caller.admin { throw .denied("nice: only admins may raise a job's priority (a nice below 0)") }
    }

    /// Most jobs one submit may make (an array's tasks count one each).
    static let maxJobsPerSubmit = ArrayIndices.maxTasks

    /// An output path with Slurm's placeholders filled: `%j` the job's id, `%x` its name, `%u` its user,
    /// `%A` and `%a` a task's array id and index, `%%` a percent sign (others are left as they are).
    static func expandOutput(_ path: String, id: JobID, name: String, user: String?, array: ArrayTask? = nil) -> String
    {
        var out = ""
        var percent = false
        for ch in path {
            if percent {
                switch ch {
                case "j": out += "\(id)"
                case "x": out += name.replacingOccurrences(of: "/", with: "_")
                case "u": out += user ?? "unknown"
                case "A": out += "\(array?.array ?? id)"
                case "a": out += array.map { "\($0.index)" } ?? "0"
                case "%": out += "%"
                default: out += "%" + String(ch)
                }
                percent = false
            } else if ch == "%" {
                percent = true
            } else {
                out.append(ch)
            }
        }
        return percent ? out + "%" : out
    }

    // MARK: Changing jobs

    /// The jobs a reference names: a job; every task of an array named by its id; one task (`12_7`).
    /// A reference to nothing gives a result that says so.
    /// `ended`: an array's id names its tasks that have ended (for requeue) instead.
    func resolve(_ ref: JobRef, ended: Bool = false) -> [Result<JobID, RPCError>] {
        switch ref {
        case .job(let n):
            let id = JobID(n)
            guard let job = state.jobs[id] else { return [.failure(.notFound("no job \(id)"))] }
            guard job.spec.array?.array == id else { return [.success(id)] }
            var out: [Result<JobID, RPCError>] = []
            var next = id
            while let task = state.jobs[next], task.spec.array?.array == id {
                if task.state.isTerminal == ended { out.append(.success(next)) }
                next = JobID(next.rawValue + 1)
            }
            // All ended: the array's own id answers (that it has ended).
            return out.isEmpty ? [.success(id)] : out
        case .task(let array, let index):
            var next = JobID(array)
            while let task = state.jobs[next], task.spec.array?.array == JobID(array) {
                if task.spec.array?.index == index { return [.success(next)] }
                next = JobID(next.rawValue + 1)
            }
            return [.failure(.notFound("no task \(index) in job array \(array)"))]
        }
    }

    func change(_ kind: Call.Change, _ ref: Result<JobID, RPCError>, caller: Caller) -> ItemResult {
        let id: JobID
        switch ref {
        case .success(let i): id = i
        case .failure(let e): return ItemResult(id: 0, ok: false, error: e)
        }
        guard let job = state.jobs[id] else {
            return ItemResult(id: id.rawValue, ok: false, error: .notFound("no job \(id)"))
        }
        guard caller.admin || caller.uid == job.spec.uid else {
            let owner = job.spec.user.map { "\($0), uid \(job.spec.uid)" } ?? "uid \(job.spec.uid)"
            return ItemResult(
                id: id.rawValue,
                ok: false,
                error: .denied(
                    "job \(id) belongs to \(owner); only its owner, root and members of group \(settings.adminGroup ?? "(none)") may \(kind.rawValue) it"
                )
            )
        }
        if kind == .requeue && !job.state.isTerminal && job.state != .running {
            let what =
                job.state == .stopping
                ? "it is stopping; requeue it once it has ended (allotctl wait \(id))"
                : "it is \(job.state.rawValue), already waiting"
            return ItemResult(id: id.rawValue, ok: false, error: .refused("cannot requeue job \(id): \(what)"))
        }
        if kind == .checkpoint && job.state != .running {
            return ItemResult(
                id: id.rawValue,
                ok: false,
                error: .refused("job \(id) is \(job.state.rawValue): only a running job reports a checkpoint")
            )
        }
        let input: Controller.Input =
            switch kind {
            case .cancel: .cancel(id, by: caller.uid)
            case .hold: .hold(id)
            case .release: .release(id)
            case .requeue: .requeue(id, by: caller.uid, reason: "requeued by \(caller.name ?? "uid \(caller.uid)")")
            case .checkpoint: .record([.jobCheckpointed(id: id)])
            }
        let out = feed(input)
        absorb(out, reportRefusals: false)
        if let (_, error) = out.refused.first {
            return ItemResult(id: id.rawValue, ok: false, error: .refused(error.message))
        }
        logger.info("Job changed", metadata: ["job.id": "\(id)", "change": "\(kind.rawValue)", "uid": "\(caller.uid)"])
        requestPass()
        return ItemResult(id: id.rawValue, ok: true)
    }

    /// Changes a pending or held job's request, or a running job's walltime (a longer one: admins only).
    func update(_ p: UpdateParams, caller: Caller) -> Result<Job, RPCError> {
        let id = JobID(p.id)
        guard let job = state.jobs[id] else { return .failure(.notFound("no job \(id)")) }
        guard caller.admin || caller.uid == job.spec.uid else {
            return .failure(
                .denied("job \(id) belongs to uid \(job.spec.uid); only its owner and admins may update it")
            )
        }
        var spec = job.spec
        var changes: [String] = []
        do throws(RPCError) {
            if let w = p.walltime {
                guard w.seconds > 0 else { throw .invalidParams("walltime: expected a duration above 0") }
                if job.state.holdsGPUs, !caller.admin, w.seconds > (spec.walltime ?? .infinity) {
                    throw .denied(
                        "job \(id) is running: only admins may give it a longer walltime (a shorter one is yours to set)"
                    )
                }
                changes.append(
                    "walltime \(spec.walltime.map(DurationText.format) ?? "none") → \(DurationText.format(w.seconds))"
                )
                spec.walltime = w.seconds
            }
            let pendingOnly: [(String, Bool)] = [
                ("estimate", p.estimate != nil), ("class", p.priorityClass != nil), ("gpus", p.gpus != nil),
                ("gpu_model", p.gpuModel != nil), ("name", p.name != nil), ("dependency", p.dependency != nil),
                ("nodelist", p.nodelist != nil), ("exclude", p.exclude != nil), ("constraint", p.constraint != nil),
                ("nice", p.nice != nil), ("speed", p.speed != nil),
            ]
            if job.state != .pending && job.state != .held, let (key, _) = pendingOnly.first(where: { $0.1 }) {
                throw .refused(
                    "job \(id) is \(job.state.rawValue): only a waiting job's \(key) may change (a running job's walltime may)"
                )
            }
            if let e = p.estimate {
                guard e.seconds > 0 else { throw .invalidParams("estimate: expected a duration above 0") }
                spec.estimate = e.seconds
                changes.append("estimate → \(DurationText.format(e.seconds))")
            }
            if let c = p.priorityClass {
                changes.append("class \(spec.priorityClass ?? "(default)") → \(c)")
                spec.priorityClass = c
            }
            if let g = p.gpus {
                switch Fraction.gpuAmount(g) {
                case .success(let amount):
                    spec.gpus = amount.gpus
                    spec.gpuShare = amount.share
                    if amount.gpus == 0 && spec.cpuMilli == nil { spec.cpuMilli = 1000 }
                case .failure(let problem): throw .invalidParams("gpus: \(problem.message)")
                }
                changes.append("gpus → \(Fraction.text(Int((g * 1000).rounded())))")
            }
            if let m = p.gpuModel {
                spec.gpuModels = m.names
                changes.append("gpu_model → \(m.names.joined(separator: ","))")
            }
            if let s = p.speed {
                if s.text.isEmpty {
                    spec.speeds = [:]
                } else {
                    switch JobSpec.parseSpeeds(s.text) {
                    case .success(let table): spec.speeds = table
                    case .failure(let problem): throw .invalidParams("speed: \(problem.message)")
                    }
                }
                changes.append("speed → \(s.text.isEmpty ? "the pool's" : s.text)")
            }
            if let n = p.name {
                guard !n.isEmpty else { throw .invalidParams("name: a job's name is not empty") }
                changes.append("name \(spec.name) → \(n)")
                spec.name = n
            }
            if let d = p.dependency {
                switch Dependency.parse(d) {
                case .success(let deps): spec.dependencies = deps
                case .failure(let e): throw .invalidParams("dependency: \(e.message)")
                }
                changes.append("dependency → \(d.isEmpty ? "none" : d)")
            }
            if p.nodelist != nil || p.exclude != nil || p.constraint != nil {
                func given(_ s: String?) -> String? { s.flatMap { $0.isEmpty ? nil : $0 } }
                switch NodeSelection.parse(
                    nodelist: given(p.nodelist),
                    exclude: given(p.exclude),
                    constraint: given(p.constraint)
                ) {
                case .success(let new):
                    var s = spec.nodes ?? NodeSelection()
                    if p.nodelist != nil { s.nodes = new?.nodes ?? [] }
                    if p.exclude != nil { s.exclude = new?.exclude ?? [] }
                    if p.constraint != nil { s.constraint = new?.constraint ?? "" }
                    spec.nodes = s.isEmpty ? nil : s
                    changes.append("nodes → \(spec.nodes?.description ?? "any")")
                case .failure(let e): throw .invalidParams(e.message)
                }
            }
            if let n = p.nice {
                try checkNice(n, caller: caller)
                changes.append("nice \(spec.nice) → \(n)")
                spec.nice = n
            }
            if let problem = ClusterState.specProblems(spec).first { throw .invalidParams(problem) }
            try checkNames(
                &spec,
                id: id,
                models: state.config.gpuModels.map(\.name),
                classes: Set(state.config.priorityClasses.map(\.name))
            )
            if !job.state.holdsGPUs, let b = Scheduler.permanentBlocker(for: spec, in: state) {
                throw .refused("job \(id) could never start so: \(b.sentence(for: spec, in: state))")
            }
        } catch {
            return .failure(error)
        }
        guard !changes.isEmpty else { return .failure(.invalidParams("nothing to change: give --walltime, --gpus, …")) }
        let out = feed(.record([.jobUpdated(id: id, spec: spec, by: caller.uid)]))
        absorb(out, reportRefusals: false)
        if let (_, error) = out.refused.first { return .failure(.refused(error.message)) }
        logger.info(
            "Job updated",
            metadata: ["job.id": "\(id)", "uid": "\(caller.uid)", "changes": "\(changes.joined(separator: "; "))"]
        )
        requestPass()
        return .success(state.jobs[id]!)
    }

    // MARK: Reading

    func list(_ p: ListParams) -> Result<(jobs: [Job], archived: [JobObject]), RPCError> {
        var states: Set<JobState>
        if let names = p.states, !names.isEmpty {
            states = []
            for n in names {
                if n == "all" {
                    states.formUnion(JobState.allCases)
                } else if n == "active" {
                    states.formUnion([.pending, .held, .running, .stopping])
                } else if n == "ended" || n == "finished" {
                    states.formUnion(JobState.allCases.filter(\.isTerminal))
                } else if let s = JobState(rawValue: n) {
                    states.insert(s)
                } else {
                    return .failure(
                        .invalidParams(
                            "states: no state \"\(n)\"; expected \(JobState.allCases.map(\.rawValue).joined(separator: ", ")), active, ended or all"
                        )
                    )
                }
            }
        } else {
            states = [.pending, .held, .running, .stopping]
        }
        let uid: UInt32?
        let kind: JobKind?
        switch Self.userAndKind(p.user, p.kind) {
        case .success(let v): (uid, kind) = v
        case .failure(let e): return .failure(e)
        }
        var window: (since: Double, until: Double) = (-.infinity, .infinity)
        for (key, text) in [("since", p.since), ("until", p.until)] {
            guard let text else { continue }
            guard let t = WireTime.parse(text) else {
                return .failure(
                    .invalidParams("\(key): expected an RFC 3339 time such as 2026-11-01T00:00:00Z, got \"\(text)\"")
                )
            }
            if key == "since" { window.since = t } else { window.until = t }
        }
        // A time window asks for history: every state, unless states are named.
        if (p.since != nil || p.until != nil) && (p.states ?? []).isEmpty { states = Set(JobState.allCases) }
        var out: [Job] = []
        for job in state.jobs where states.contains(job.state) {
            if let uid, job.spec.uid != uid { continue }
            if let t = p.tenant, job.spec.tenant != t { continue }
            if let kind, job.spec.kind != kind { continue }
            if let name = p.name, !Glob.matches(name, job.spec.name) { continue }
            if let node = p.node, !(job.allocation?.slices.contains { $0.node == node } ?? false) { continue }
            if job.submitTime.seconds > window.until { continue }
            if job.state.isTerminal, let end = job.endTime, end.seconds < window.since { continue }
            out.append(job)
        }
        if let limit = p.limit, limit >= 0, out.count > limit { out = Array(out.suffix(limit)) }
        return .success((out, archivedRecords(p, states: states, since: window.since, until: window.until)))
    }

    /// Jobs as objects, the waiting tasks of an array that wait for the same reason, one after another, as
    /// one (its first task's, with `array_tasks`): a listing of 100,000 waiting tasks is one object.
    func folded(_ jobs: [Job], for caller: Caller) -> [JobObject] {
        var out: [JobObject] = []
        var i = 0
        while i < jobs.count {
            let j = jobs[i]
            guard let task = j.spec.array, j.state == .pending || j.state == .held else {
                out.append(object(j, for: caller))
                i += 1
                continue
            }
            let why = reason(of: j)
            var indices = [task.index]
            var k = i + 1
            while k < jobs.count, let t = jobs[k].spec.array, t.array == task.array, jobs[k].state == j.state,
                reason(of: jobs[k]) == why
            {
                indices.append(t.index)
                k += 1
            }
            var o = object(j, for: caller)
            if indices.count > 1 { o.arrayTasks = Allocation.ranges(indices) }
            out.append(o)
            i = k
        }
        return out
    }

    /// An archived job's record as `caller` may see it: another user's without its command, environment and
    /// working directory (as ``object(_:for:)`` gives a live one).
    func archivedObject(_ o: JobObject, for caller: Caller) -> JobObject {
        var o = o
        if !(caller.admin || caller.uid == o.uid) { (o.command, o.env, o.workdir) = (nil, nil, nil) }
        return o
    }

    /// The job as notices and watchers are told it: without its command, environment or log.
    func summary(_ job: Job) -> JobObject {
        JobObject(job, in: state, at: Instant(seconds: Self.now), reason: reason(of: job), full: false, log: nil)
    }

    func object(_ job: Job, for caller: Caller) -> JobObject {
        let mine = caller.admin || caller.uid == job.spec.uid
        var o = JobObject(
            job,
            in: state,
            at: Instant(seconds: Self.now),
            reason: reason(of: job),
            full: mine,
            log: job.spec.interactive != nil
                ? "the terminal of allotctl run"
                : agentNode(of: job).map { "on node \($0) (its agent's state dir, logs/\(job.id).log)" }
                    ?? job.spec.output ?? executor.logPath(job.id)
        )
        if mine, job.spec.interactive != nil, job.state == .running {
            if isLocal(job) {
                o.tty = executor.ttySocket(job.id, run: job.runs)
            } else {
                o.ttyNode = agentNode(of: job)
            }
        }
        return o
    }

    /// The end of a log stream for `job` as it is now.
    func logsEnd(_ job: Job) -> LogsEnd {
        guard job.state.isTerminal else { return LogsEnd(state: job.state.rawValue) }
        return LogsEnd(state: job.state.rawValue, exitCode: job.exit?.shellCode, reason: reason(of: job))
    }

    /// Why a job is where it is, in a few words (the `REASON` column).
    func reason(of job: Job) -> String? {
        switch job.state {
        case .pending:
            if let b = blocker(of: job.id) { return b.code }
            return job.note.map { "requeued: \($0)" } ?? (passStale ? "new" : nil)
        case .held: return "held"
        case .running: return nil
        case .stopping: return job.stopText
        case .completed, .failed, .cancelled, .timedOut:
            var parts: [String] = []
            if let r = job.stopText { parts.append(r) }
            if job.state == .cancelled, job.stopReason == .cancelled(by: nil), let note = job.note {
                parts.append(note)
            }
            if let e = job.exit { parts.append(e.description) }
            return parts.isEmpty ? nil : parts.joined(separator: "; ")
        }
    }
}

extension Blocker {
    /// A few words for tables.
    var code: String {
        switch self {
        case .held: "held"
        case .noModelAllowed: "no GPU model fits"
        case .noNodeSelected: "no node selected"
        case .exceedsNodeSize: "larger than any node"
        case .exceedsPool: "larger than the pool"
        case .insufficientGPUs: "resources"
        case .hostResources: "CPUs or memory"
        case .exceedsNodeResources: "more CPUs or memory than any node"
        case .noMIGRoom: "MIG slices"
        case .noShareRoom: "GPU share room"
        case .noMIGProfile: "no MIG profile fits"
        case .overMaxCost: "max cost"
        case .maxCostBelowAnyPrice: "max cost below any price"
        case .behind(let id): "behind job \(id)"
        case .reserved(let id, _): "reserved for job \(id)"
        case .waitingForPreemption(let n): "preempting \(n) job(s)"
        case .fasterModelSoon(let model, _, _, _): "waiting for \(model)"
        case .overBudget(let t, _, _, _): "tenant \(t) over budget"
        case .overQuota(let t, _, _, _): "tenant \(t) over quota"
        case .mustBorrow: "lent GPUs only"
        case .reserveNeeded: "inference reserve in demand"
        case .dependency: "dependency"
        case .dependencyNeverMet: "dependency never met"
        case .arrayLimit(_, let limit): "array limit (\(limit) at once)"
        }
    }

}

extension Engine {
    /// Starts copying a job's log to a client: followed while the job runs when asked, else to its end now.
    func openLog(_ stream: LogStream, of job: Job, to out: Outbox) {
        if stream.follow && !job.state.isTerminal {
            followers[job.id, default: []].append(stream)
        } else {
            stream.jobEnded(logsEnd(job))
        }
        out.streaming.store(true, ordering: .relaxed)
        pendingActions.append(.startLog(out, stream))
    }
}

extension Engine {
    /// The `user` (a name or uid) and `kind` filters of `list` and `top`, checked.
    static func userAndKind(_ user: String?, _ kind: String?) -> Result<(UInt32?, JobKind?), RPCError> {
        var uid: UInt32?
        if let u = user {
            guard let v = UInt32(u) ?? System.uid(named: u) else {
                return .failure(.invalidParams("user: no user \"\(u)\""))
            }
            uid = v
        }
        var k: JobKind?
        if let text = kind {
            guard let v = JobKind(rawValue: text) else {
                return .failure(.invalidParams("kind: expected training or inference, got \"\(text)\""))
            }
            k = v
        }
        return .success((uid, k))
    }
}
