/// A user and a job name: what `singleton` jobs are one at a time per.
struct NameKey: Hashable, Sendable {
    var uid: UInt32
    var name: String
}

/// The pending jobs whose dependencies do not all hold yet, and what they wait for (derived from the jobs,
/// kept up to date by `apply`). They are pending but out of the scheduler's queue, so that a pass never
/// reads them; each waits under one job at a time, and is looked at again only when that job starts or
/// ends.
struct DependencyIndex: Sendable {
    /// Pending jobs whose dependencies do not all hold.
    var waiting: Set<JobID> = []
    /// Those of them whose dependencies never can.
    var never: Set<JobID> = []
    /// Waiting jobs by the job they wait for (entries of jobs no longer waiting are skipped).
    var dependents: [JobID: [JobID]] = [:]
    /// The jobs that have not ended, by user and name, for the names `singleton` jobs use (filled for a
    /// name when a singleton first needs it).
    var byName: [NameKey: Set<JobID>] = [:]
    /// Job arrays with a limit of tasks at once, by array id.
    var arrays: [JobID: ArrayThrottle] = [:]
    /// Tasks waiting for a place under their array's limit (also in `waiting`).
    var throttled: Set<JobID> = []
}

/// How many of an array's tasks are queued or running (at most its limit: `--array 0-999%10`), and the
/// tasks waiting for a place, in the order they came. Tasks past the limit stay out of the queue, so a pass
/// never reads the 99,990 tasks of a 100,000-task array that may not start anyway.
struct ArrayThrottle: Sendable {
    var limit: Int
    /// Tasks queued, running or stopping.
    var active: Set<JobID> = []
    var queue: [JobID] = []
    var head = 0

    /// Counts the task as active if there is room (or it already is); else puts it in line.
    /// - Returns: whether it is active.
    mutating func admit(_ id: JobID) -> Bool {
        if active.contains(id) { return true }
        guard active.count < limit else {
            queue.append(id)
            return false
        }
        active.insert(id)
        return true
    }

    /// The next task in line, taken out of it.
    mutating func next() -> JobID? {
        guard head < queue.count else { return nil }
        let id = queue[head]
        head += 1
        if head == queue.count {
            queue = []
            head = 0
        } else if head >= 1024 && head * 2 >= queue.count {
            queue.removeFirst(head)
            head = 0
        }
        return id
    }
}

extension ClusterState {
    /// Pending jobs waiting for their dependencies (not in ``pendingJobs``).
    public var waitingForDependencies: Set<JobID> { dependencies.waiting }

    /// Where a job's dependencies stand (met for a job with none, or one that has started before).
    public func dependencyStatus(of id: JobID) -> DependencyStatus {
        guard let job = jobs[id], job.firstStartTime == nil else { return .met }
        return dependencyStatus(of: job.spec, id: id)
    }

    /// Where the dependencies of a job with `spec` and `id` stand (for a job about to be submitted: the
    /// next id).
    public func dependencyStatus(of spec: JobSpec, id: JobID) -> DependencyStatus {
        var firstWait: DependencyStatus?
        for d in spec.dependencies {
            if d.kind == .singleton {
                let key = NameKey(uid: spec.uid, name: spec.name)
                if firstWait == nil, let earlier = dependencies.byName[key]?.lazy.filter({ $0 < id }).min() {
                    firstWait = .waiting(
                        on: earlier,
                        why: "singleton: job \(earlier), also named \"\(spec.name)\" and yours, has not ended"
                    )
                }
                continue
            }
            for p in d.jobs {
                guard let parent = jobs[p] else {
                    let gone = p < nextJobID ? " (it ended long ago and was archived)" : ""
                    return .never(why: "\(d.kind.rawValue):\(p): no job \(p)\(gone)")
                }
                let ended = parent.state.isTerminal
                let how = Self.endText(parent)
                switch d.kind {
                case .after:
                    if parent.firstStartTime != nil || ended { continue }
                    firstWait = firstWait ?? .waiting(on: p, why: "after:\(p): job \(p) has not started")
                case .afterany:
                    if ended { continue }
                    firstWait = firstWait ?? .waiting(on: p, why: "afterany:\(p): job \(p) is \(parent.state.rawValue)")
                case .afterok:
                    if parent.state == .completed { continue }
                    if ended { return .never(why: "afterok:\(p): job \(p) \(how)") }
                    firstWait = firstWait ?? .waiting(on: p, why: "afterok:\(p): job \(p) is \(parent.state.rawValue)")
                case .afternotok:
                    if parent.state == .completed { return .never(why: "afternotok:\(p): job \(p) completed") }
                    if ended { continue }
                    firstWait =
                        firstWait ?? .waiting(on: p, why: "afternotok:\(p): job \(p) is \(parent.state.rawValue)")
                case .singleton: continue
                }
            }
        }
        return firstWait ?? .met
    }

    /// How an ended job ended, in a few words: "failed (exit code 1)".
    static func endText(_ job: Job) -> String {
        let state = job.state == .timedOut ? "timed out" : job.state.rawValue
        if job.state == .completed { return state }
        if let note = job.note, note.hasPrefix("its dependency can never be met") {
            return "\(state), its own dependency never met"
        }
        if let note = job.note { return "\(state) (\(note))" }
        if let exit = job.exit { return "\(state) (\(exit))" }
        return state
    }

    /// Puts a job that has become pending in the scheduler's queue, or among those waiting for their
    /// dependencies or for a place under their array's limit.
    mutating func enqueue(_ id: JobID) {
        let job = jobs[existing: id]
        if job.firstStartTime == nil && !job.spec.dependencies.isEmpty {
            if job.spec.dependencies.contains(Dependency(.singleton)) {
                seedNames(NameKey(uid: job.spec.uid, name: job.spec.name))
            }
            switch dependencyStatus(of: id) {
            case .met:
                // Met once, met for good (as Slurm clears them): a parent requeued later changes nothing.
                jobs[existing: id].spec.dependencies = []
            case .waiting(let on, _):
                dependencies.waiting.insert(id)
                dependencies.dependents[on, default: []].append(id)
                return
            case .never:
                dependencies.waiting.insert(id)
                dependencies.never.insert(id)
                return
            }
        }
        if let task = job.spec.array, task.limit > 0 {
            // Changed in place: a copy of the throttle would copy its queue of up to 100,000 tasks.
            let admitted = dependencies.arrays[task.array, default: ArrayThrottle(limit: task.limit)].admit(id)
            if !admitted {
                dependencies.throttled.insert(id)
                dependencies.waiting.insert(id)
                return
            }
        }
        pendingJobs.insert(job)
    }

    /// A task of a limited array started by an event while it waited for a place (a log replayed onto a
    /// snapshot whose queue chose another task): it counts as active from now on.
    mutating func activate(_ id: JobID) {
        guard let task = jobs[existing: id].spec.array, task.limit > 0 else { return }
        dependencies.arrays[task.array, default: ArrayThrottle(limit: task.limit)].active.insert(id)
    }

    /// A task of a limited array left the queue for good or was held: the next waiting task takes its place.
    mutating func leaveArray(_ id: JobID) {
        guard let task = jobs[existing: id].spec.array, task.limit > 0,
            dependencies.arrays[task.array]?.active.remove(id) != nil
        else { return }
        while let next = dependencies.arrays[task.array]?.next() {
            guard dependencies.throttled.remove(next) != nil else { continue }
            dependencies.waiting.remove(next)
            enqueue(next)
            return
        }
        if let t = dependencies.arrays[task.array], t.active.isEmpty, t.queue.count == t.head {
            dependencies.arrays[task.array] = nil
        }
    }

    /// Takes a job out of the queue or the waiting set (it started, was held or ended).
    mutating func dequeue(_ id: JobID) {
        pendingJobs.remove(id)
        if dependencies.waiting.remove(id) != nil {
            dependencies.never.remove(id)
            dependencies.throttled.remove(id)
        }
    }

    /// After a job started or ended: the jobs waiting for it are looked at again.
    mutating func dependencyMoved(_ id: JobID) {
        let job = jobs[existing: id]
        if job.state.isTerminal, !dependencies.byName.isEmpty {
            dependencies.byName[NameKey(uid: job.spec.uid, name: job.spec.name)]?.remove(id)
        }
        guard let waiting = dependencies.dependents.removeValue(forKey: id) else { return }
        for w in waiting where dependencies.waiting.contains(w) && !dependencies.never.contains(w) {
            dependencies.waiting.remove(w)
            enqueue(w)
        }
    }

    /// A newly submitted job joins its name's set, where singletons look.
    mutating func noteName(of id: JobID) {
        guard !dependencies.byName.isEmpty else { return }
        let spec = jobs[existing: id].spec
        dependencies.byName[NameKey(uid: spec.uid, name: spec.name)]?.insert(id)
    }

    /// Fills a name's set from the jobs, the first time a singleton needs it.
    mutating func seedNames(_ key: NameKey) {
        guard dependencies.byName[key] == nil else { return }
        var ids: Set<JobID> = []
        for job in jobs where !job.state.isTerminal && job.spec.uid == key.uid && job.spec.name == key.name {
            ids.insert(job.id)
        }
        dependencies.byName[key] = ids
    }

    /// Problems with a new job's dependencies: each job it names must exist (ids before its own).
    public func dependencyProblems(_ spec: JobSpec, id: JobID) -> [String] {
        var out: [String] = []
        for d in spec.dependencies {
            for p in d.jobs where p >= id || !jobs.contains(p) {
                out.append("dependency \(d): no job \(p)")
            }
        }
        return out
    }

    /// What keeps a waiting job from the queue, as a blocker; nil for a job not waiting for dependencies.
    public func dependencyBlocker(of id: JobID) -> Blocker? {
        guard dependencies.waiting.contains(id) else { return nil }
        if dependencies.throttled.contains(id), let task = jobs[id]?.spec.array {
            return .arrayLimit(array: task.array, limit: task.limit)
        }
        switch dependencyStatus(of: id) {
        case .met: return nil
        case .waiting(_, let why): return .dependency(why)
        case .never(let why): return .dependencyNeverMet(why)
        }
    }
}

/// A client's request id, per user: ids are the client's, so two users' may collide.
struct RequestKey: Hashable, Sendable {
    var uid: UInt32
    var id: String
}

extension ClusterState {
    /// The jobs a submit with this request id by this user made, in order (empty: none, or all archived).
    public func jobs(ofRequest id: String, uid: UInt32) -> [JobID] { requests[RequestKey(uid: uid, id: id)] ?? [] }

    mutating func noteRequest(of spec: JobSpec, id: JobID) {
        guard let r = spec.requestID else { return }
        requests[RequestKey(uid: spec.uid, id: r), default: []].append(id)
    }

    mutating func forgetRequest(of spec: JobSpec, id: JobID) {
        guard let r = spec.requestID else { return }
        let key = RequestKey(uid: spec.uid, id: r)
        requests[key]?.removeAll { $0 == id }
        if requests[key]?.isEmpty == true { requests[key] = nil }
    }
}
