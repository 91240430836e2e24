import AllotConfig
import AllotCore
import AllotProtocol
import AllotWAL
import CoreMetrics
import Foundation
import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Who sent a request, from `SO_PEERCRED`.
struct Caller: Sendable {
    var uid: UInt32
    var gid: UInt32
    var pid: Int32
    /// Every group of the caller's user.
    var groups: [UInt32]
    /// root, the daemon's own user, or a member of the admin group (set by the engine).
    var admin = false
    var name: String?
}

/// What the engine's task is asked to do.
enum EngineCommand: Sendable {
    case call(Call, RPCID?, Caller, Outbox)
    case disconnected(UInt64)
    case tick
    case pass
    case durable(UInt64)
    case walFailed(WALError)
    case sighup
    case snapshotWritten(lsn: UInt64, error: String?)
    /// What the GPU watcher found.
    case gpus(Result<GPUInventory, GPUProbeError>)
    /// The control socket is listening.
    case listening
    /// A metrics scrape: bring the gauges up to date, then resume.
    case refreshMetrics(CheckedContinuation<Void, Never>)
    /// Node agents.
    case agentRegister(
        AgentRegisterParams,
        AgentLink,
        RPCID?,
        CheckedContinuation<Result<AgentRegisterResult, RPCError>, Never>
    )
    case agentReport(node: String, link: UInt64, AgentReport)
    case agentHealth(node: String, link: UInt64, AgentHealth)
    case agentHeartbeat(node: String, link: UInt64)
    case agentDisconnected(node: String, link: UInt64)
}

/// The way into the engine, for every other task.
struct EngineHandle: Sendable {
    let continuation: AsyncStream<EngineCommand>.Continuation

    func send(_ command: EngineCommand) { continuation.yield(command) }
    func finish() { continuation.finish() }
}

/// Waits for the newest enqueued WAL ticket to become durable and tells the engine. One wait at a time:
/// group commit makes every earlier ticket durable with it.
final class DurabilityWatcher: Sendable {
    private let latest = Mutex<WriteAheadLog.Ticket?>(nil)
    private let signal: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() {
        (signal, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    func watch(_ ticket: WriteAheadLog.Ticket) {
        latest.withLock { $0 = ticket }
        continuation.yield()
    }

    func finish() { continuation.finish() }

    func run(wal: WriteAheadLog, engine: EngineHandle) async {
        var done: UInt64 = 0
        for await _ in signal {
            guard let ticket = latest.withLock({ $0 }), ticket.lsn > done else { continue }
            do {
                done = try await wal.waitDurable(ticket)
                engine.send(.durable(done))
            } catch {
                engine.send(.walFailed(error))
                return
            }
        }
    }
}

/// Writes snapshots off the engine's task, once the state they hold is durable.
final class SnapshotWriter: Sendable {
    private let stream: AsyncStream<(ClusterState, WriteAheadLog.Ticket)>
    private let continuation: AsyncStream<(ClusterState, WriteAheadLog.Ticket)>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream()
    }

    func write(_ state: ClusterState, at ticket: WriteAheadLog.Ticket) { continuation.yield((state, ticket)) }
    func finish() { continuation.finish() }

    func run(wal: WriteAheadLog, engine: EngineHandle) async {
        for await (state, ticket) in stream {
            do {
                _ = try await wal.waitDurable(ticket)
                try await NIOThreadPool.singleton.runIfActive { try wal.writeSnapshot(state, at: ticket.lsn) }
                engine.send(.snapshotWritten(lsn: ticket.lsn, error: nil))
            } catch {
                engine.send(.snapshotWritten(lsn: ticket.lsn, error: "\(error)"))
            }
        }
    }
}

/// The owner of the pool's state: the only task that reads or changes it. Every change is applied, logged
/// in the WAL, and acted on (answers, job starts and signals) only once the log says it is durable.
/// Create and use it on one task only (``run(commands:)``).
final class Engine {
    /// Something to do once the WAL is durable up to an LSN.
    enum Action {
        case reply(Outbox, RPCID?, Data)
        case start(JobID, run: Int)
        case stop(JobID, run: Int)
        case notify(JobID, String)
        case startLog(Outbox, LogStream)
        case jobEnded(JobID)
        /// Tell an agent its reported ends are recorded (once they are durable).
        case agentAck(node: String, link: UInt64, runs: [AgentRunRef])
    }

    var state: ClusterState
    var config: ConfigFile
    /// Where the configuration is read again on reload (nil: tests, nothing to reload).
    let source: DaemonOptions?
    var settings: DaemonSettings
    let scheduler = Scheduler(policy: .allot)
    let wal: WriteAheadLog
    let executor: Executor
    let handle: EngineHandle
    let logger: Logger
    let hostname: String
    var adminGID: UInt32?
    /// Nodes changed or removed in the config while they ran jobs: changed once idle (nil: removed).
    var deferredNodes: [String: NodeSpec?] = [:]
    let durability = DurabilityWatcher()
    let snapshots = SnapshotWriter()

    /// Names of the nodes whose jobs this daemon runs.
    var localNodes: Set<String> = []
    /// Events applied since the last enqueue.
    var unlogged: [Event] = []
    /// Actions of the command in progress, to be queued behind its events.
    var pendingActions: [Action] = []
    /// Actions waiting for durability, in LSN order.
    var waiting: [(lsn: UInt64, action: Action)] = []
    var waitingHead = 0
    var lastTicket: WriteAheadLog.Ticket?
    var durableLSN: UInt64
    /// Set when the WAL failed: the daemon then answers reads only.
    var failure: WALError?

    var lastPass = SchedulingPass()
    /// The last pass's blockers by job, built when first asked for after a pass (tables need it; most
    /// passes are never asked).
    var reasonIndex: [JobID: Int32]?
    /// Whether the state changed since the last pass.
    var passStale = true
    var passQueued = false
    var lastPassAt = 0.0
    var snapshotInFlight = false

    /// Work done since memory was last handed back to the system (events applied, objects encoded).
    var churn = 0
    var lastTrim = 0.0

    var watchers: [UInt64: Outbox] = [:]
    var followers: [JobID: [LogStream]] = [:]
    var userNames: [UInt32: String] = [:]

    /// What discovery found on local nodes with `discover`, by node.
    var discovered: [String: NodeGPUs] = [:]
    var gpuProbe: GPUProbe?
    var gpuWatcher: GPUWatcher?
    /// Jobs stopped because a GPU of theirs failed, and why: requeued or failed when they end.
    var gpuFailures: [JobID: String] = [:]
    /// systemd notifications.
    var notifier = ServiceNotifier()
    /// Prometheus metrics, when `metrics_listen` is set.
    let metrics: DaemonMetrics?
    /// Node agents, by node.
    var agents: [String: AgentState] = [:]
    /// This run's epoch (its start time in milliseconds): agents learn it at registration.
    let epoch = UInt64(Date().timeIntervalSince1970 * 1000)

    /// The last pass's blocker for a pending job.
    func blocker(of id: JobID) -> Blocker? {
        if reasonIndex == nil {
            var index: [JobID: Int32] = [:]
            index.reserveCapacity(lastPass.pending.count)
            for (i, r) in lastPass.pending.enumerated() where index[r.id] == nil { index[r.id] = Int32(i) }
            reasonIndex = index
        }
        return reasonIndex![id].map { lastPass.pending[Int($0)].blocker }
    }

    init(
        recovered: ClusterState,
        durableLSN: UInt64,
        config: ConfigFile,
        source: DaemonOptions?,
        wal: WriteAheadLog,
        handle: EngineHandle,
        logger: Logger,
        metrics: DaemonMetrics? = nil
    ) {
        self.metrics = metrics
        self.state = recovered
        self.config = config
        self.source = source
        self.settings = config.daemon
        self.wal = wal
        self.handle = handle
        self.logger = logger
        self.durableLSN = durableLSN
        self.hostname = config.daemon.hostname ?? System.hostname()
        self.adminGID = config.daemon.adminGroup.flatMap { System.gid(named: $0) }
        self.executor = Executor(
            stateDir: config.daemon.stateDir,
            logDir: config.daemon.logDir ?? config.daemon.stateDir + "/logs",
            socket: config.daemon.socket,
            logger: logger
        )
        self.executor.stopSignal = config.daemon.stopSignal.number
    }

    static var now: Double { Date().timeIntervalSince1970 }

    // MARK: The loop

    /// Serves commands until the stream ends (graceful shutdown), then makes everything durable and acts
    /// on it.
    func run(commands: AsyncStream<EngineCommand>) async {
        await withDiscardingTaskGroup { group in
            let (wal, handle, durability, snapshots) = (self.wal, self.handle, self.durability, self.snapshots)
            group.addTask { await durability.run(wal: wal, engine: handle) }
            group.addTask { await snapshots.run(wal: wal, engine: handle) }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(250))
                    handle.send(.tick)
                }
            }
            startUp()
            for await command in commands {
                process(command)
            }
            // Shutting down: no new work; what is decided is made durable and carried out.
            flush()
            if let ticket = lastTicket, failure == nil, let lsn = try? await wal.waitDurable(ticket) {
                durableLSN = lsn
                runDurableActions()
            }
            for list in followers.values { for f in list { f.jobEnded(LogsEnd(state: "daemon stopped")) } }
            gpuWatcher?.stop()
            // An empty job cgroup directory goes (one still holding jobs stays: rmdir refuses).
            if let base = executor.cgroupBase { rmdir(base) }
            durability.finish()
            snapshots.finish()
            group.cancelAll()
        }
    }

    func process(_ command: EngineCommand) {
        switch command {
        case .call(let call, let id, var caller, let out):
            caller.admin = isAdmin(caller.uid, groups: caller.groups)
            perform(call, id: id, caller: caller, out: out)
        case .disconnected(let conn):
            watchers[conn] = nil
        case .tick:
            tick()
        case .pass:
            passQueued = false
            schedulePass()
        case .durable(let lsn):
            durableLSN = max(durableLSN, lsn)
            runDurableActions()
        case .walFailed(let error):
            walFailed(error)
        case .sighup:
            let changes = reload(reason: "SIGHUP")
            if case .failure(let e) = changes {
                logger.error(
                    "Reload refused; the old configuration stays in force",
                    metadata: ["error": "\(e.message)"]
                )
            }
        case .listening:
            listening()
        case .refreshMetrics(let done):
            refreshMetrics()
            done.resume()
        case .agentRegister(let params, let link, let requestID, let reply):
            let result = agentRegister(params, link: link, requestID: requestID)
            flush()
            reply.resume(returning: result)
        case .agentReport(let node, let link, let report):
            agentReport(node: node, link: link, report)
        case .agentHealth(let node, let link, let health):
            agentHealth(node: node, link: link, health.gpus)
        case .agentHeartbeat(let node, let link):
            agentHeartbeat(node: node, link: link)
        case .agentDisconnected(let node, let link):
            agentDisconnected(node: node, link: link)
        case .gpus(let result):
            applyProbe(result)
            flush()
        case .snapshotWritten(let lsn, let error):
            snapshotInFlight = false
            churn += 100_000  // the copy of the state it held, and its encoding, are garbage now
            if let error {
                logger.error("Snapshot failed", metadata: ["wal.lsn": "\(lsn)", "error": "\(error)"])
            } else {
                logger.info("Snapshot written", metadata: ["wal.lsn": "\(lsn)"])
            }
        }
        flush()
    }

    /// Recovery is done: take the config file's nodes and settings, take back the jobs still running here,
    /// and schedule.
    func startUp() {
        discoverAtStartUp()
        switch reconcile(with: withDiscoveredCounts(config)) {
        case .success(let changes):
            for c in changes { logger.info("Configuration change", metadata: ["change": "\(c)"]) }
        case .failure(let e):
            logger.error("The configuration does not fit the recovered state", metadata: ["error": "\(e.message)"])
        }
        let now = Self.now
        for id in state.activeJobs.sorted() {
            guard let job = state.jobs[id], job.state.holdsGPUs, isLocal(job) else { continue }
            if let ended = executor.adopt(job) {
                runEnded(ended)
            } else {
                logger.info("Job adopted", metadata: ["job.id": "\(id)", "job.run": "\(job.runs)"])
                if job.state == .stopping, let at = job.stopRequestedAt, now >= at.seconds + (job.grace ?? 0) {
                    executor.stop(id, grace: 0, now: now)
                }
            }
        }
        awaitAgents()
        // Health as found at start-up; jobs on GPUs that failed while allotd was down are stopped.
        if gpuProbe != nil, let first = discoveringNodes.first, let d = discovered[first] {
            applyProbe(
                d.inventory.map { .success($0) } ?? .failure(GPUProbeError(message: d.problem ?? "no GPUs found"))
            )
        }
        flush()
        schedulePass()
        flush()
        System.trimMalloc()  // what recovery read and decoded
        logger.info(
            "Ready",
            metadata: [
                "jobs.active": "\(state.activeJobs.count)", "jobs.pending": "\(state.pendingJobs.count)",
                "nodes": "\(state.nodes.count)", "nodes.local": "\(localNodes.count)",
            ]
        )
    }

    // MARK: Changes and durability

    /// Applies events to the state; they are logged at the end of the command.
    func apply(_ events: [Event]) throws(StateError) {
        for e in events {
            try state.apply(e)
            unlogged.append(e)
            passStale = true
            churn += 1
        }
    }

    func apply(_ body: Event.Body) throws(StateError) {
        try apply([Event(time: Instant(seconds: Self.now), body)])
    }

    /// Logs what was applied and queues the command's actions behind it.
    func flush() {
        repeat { flushOnce() } while !unlogged.isEmpty || !pendingActions.isEmpty
    }

    private func flushOnce() {
        if !unlogged.isEmpty {
            if failure == nil {
                do {
                    let t = try wal.enqueue(unlogged)
                    lastTicket = t
                    durability.watch(t)
                } catch {
                    walFailed(error)
                }
            }
            unlogged.removeAll(keepingCapacity: unlogged.count < 4096)
        }
        if !pendingActions.isEmpty {
            let lsn = lastTicket?.lsn ?? 0
            for a in pendingActions { waiting.append((lsn, a)) }
            pendingActions.removeAll(keepingCapacity: pendingActions.count < 4096)
            runDurableActions()
        }
        if failure == nil, !snapshotInFlight, let t = lastTicket, wal.snapshotDue {
            snapshotInFlight = true
            snapshots.write(state, at: t)
        }
    }

    /// Carries out the actions whose events are durable.
    func runDurableActions() {
        while waitingHead < waiting.count, waiting[waitingHead].lsn <= durableLSN {
            let action = waiting[waitingHead].action
            waitingHead += 1
            perform(action)
        }
        if waitingHead == waiting.count {
            waiting.removeAll(keepingCapacity: waiting.count < 4096)
            waitingHead = 0
        } else if waitingHead > 1024 && waitingHead * 2 > waiting.count {
            waiting = Array(waiting[waitingHead...])
            waitingHead = 0
        }
    }

    func perform(_ action: Action) {
        switch action {
        case .reply(let out, _, let line):
            out.reply(line)
        case .start(let id, let run):
            guard let job = state.jobs[id], job.runs == run, job.state == .running, let a = job.allocation else {
                return
            }
            guard let first = a.slices.first else { return }
            if agents[first.node] != nil {
                sendStart(job, node: first.node)
                return
            }
            guard localNodes.contains(first.node) else { return }
            var uuids: [Int: String] = [:]
            for gpu in discovered[first.node]?.inventory?.gpus ?? [] { uuids[gpu.index] = gpu.uuid }
            if let problem = executor.start(job, slices: a.slices, uuids: uuids) {
                logger.error("Job could not be started", metadata: ["job.id": "\(id)", "error": "\(problem)"])
                finish(id, exit: .couldNotStart(problem))
            }
        case .stop(let id, let run):
            guard let job = state.jobs[id], job.runs == run, job.state == .stopping else { return }
            if let node = job.allocation?.slices.first?.node, agents[node] != nil {
                sendStop(job, node: node)
                return
            }
            guard isLocal(job) else { return }
            executor.stop(id, grace: job.grace ?? 0, now: Self.now, why: job.stopReason?.description ?? "told to stop")
        case .notify(let id, let event):
            guard !watchers.isEmpty, let job = state.jobs[id] else { return }
            let object = JobObject(job, in: state, reason: reason(of: job), full: false, log: nil)
            let n = Notification(
                method: "watch.event",
                params: WatchEvent(time: WireTime.format(Self.now), event: event, job: object)
            )
            guard let line = try? ControlProtocol.line(n) else { return }
            for (conn, out) in watchers where !out.send(line) {
                watchers[conn] = nil
            }
        case .startLog(let out, let stream):
            out.streamLog(stream)
        case .jobEnded(let id):
            if let list = followers.removeValue(forKey: id), let job = state.jobs[id] {
                let end = logsEnd(job)
                for f in list { f.jobEnded(end) }
            }
        case .agentAck(let node, let link, let runs):
            guard let l = agents[node]?.link, l.id == link,
                let line = try? ControlProtocol.line(
                    Notification(method: AgentProtocol.ack, params: AgentAck(runs: runs))
                )
            else { return }
            l.send(line)
        }
    }

    /// The WAL cannot take more: answer what waits on it with an error and serve reads only.
    func walFailed(_ error: WALError) {
        guard failure == nil else { return }
        failure = error
        logger.critical(
            "The write-ahead log failed; serving reads only until restarted",
            metadata: ["error": "\(error.message)"]
        )
        let refusal = RPCError(
            RPCError.unavailable,
            "the write-ahead log failed (\(error.message)); the change was not made durable. allotd serves reads only until it is restarted"
        )
        for i in waitingHead..<waiting.count where waiting[i].lsn > durableLSN {
            if case .reply(let out, let id, _) = waiting[i].action {
                out.reply((try? ControlProtocol.line(ErrorResponse(id: id, error: refusal))) ?? Data())
            }
        }
        waiting.removeAll()
        waitingHead = 0
    }

    // MARK: Scheduling

    /// Asks for a pass after the commands already queued (so a burst of submits gets one pass).
    func requestPass() {
        guard !passQueued else { return }
        passQueued = true
        handle.send(.pass)
    }

    func schedulePass() {
        guard failure == nil else { return }
        let now = Self.now
        lastPassAt = now
        let passStart = ContinuousClock.now
        let pass = scheduler.schedule(state, at: Instant(seconds: now))
        if let m = metrics {
            let d = ContinuousClock.now - passStart
            m.passSeconds.recordNanoseconds(
                d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
            )
        }
        lastPass = pass
        reasonIndex = nil
        churn += pass.pending.count  // a pass's working arrays are as long as the queue
        passStale = false
        let t = Instant(seconds: now)
        for decision in pass.decisions {
            do {
                try apply([decision.event(at: t)])
            } catch {
                logger.error("Scheduler decision refused by the state", metadata: ["error": "\(error)"])
                continue
            }
            let id = decision.jobID
            guard let job = state.jobs[id] else { continue }
            switch decision {
            case .start(_, let a, let note, _):
                logger.info(
                    "Job starting",
                    metadata: ["job.id": "\(id)", "job.allocation": "\(a)", "job.placement": "\(note)"]
                )
                pendingActions.append(.start(id, run: job.runs))
                pendingActions.append(.notify(id, "started"))
                metrics?.queueWait.recordSeconds(max(0, now - job.submitTime.seconds))
            case .preempt(_, let by, let grace, let reason):
                metrics?.preempted(reason: reason)
                logger.info(
                    "Job preempted",
                    metadata: [
                        "job.id": "\(id)", "job.preemptor": "\(by)", "job.grace_s": "\(grace)", "reason": "\(reason)",
                    ]
                )
                pendingActions.append(.stop(id, run: job.runs))
                pendingActions.append(.notify(id, "preempted"))
            }
        }
        // Decisions change reasons (a preemptor now waits for its victims): keep the pass's view.
        passStale = !pass.decisions.isEmpty
    }

    // MARK: Time

    func tick() {
        let now = Self.now
        notifyTick(now: now)
        if failure == nil { agentsTick(now: now) }
        if failure == nil {
            // Walltime limits.
            for id in state.activeJobs {
                guard let job = state.jobs[id], job.state == .running, let limit = job.spec.walltime,
                    let start = job.startTime, now >= start.seconds + limit
                else { continue }
                do {
                    try apply(.jobTimedOut(id: id, grace: state.grace(of: job.spec)))
                    logger.info("Job reached its walltime", metadata: ["job.id": "\(id)"])
                    if runsHere(job) { pendingActions.append(.stop(id, run: job.runs)) }
                    pendingActions.append(.notify(id, "timed_out"))
                } catch {
                    logger.error("Walltime stop refused", metadata: ["job.id": "\(id)", "error": "\(error)"])
                }
            }
            // Jobs on nodes allotd does not run: past their grace, they are taken as stopped.
            for id in state.activeJobs {
                guard let job = state.jobs[id], job.state == .stopping, !isLocal(job),
                    agents[job.allocation?.slices.first?.node ?? ""] == nil,
                    let at = job.stopRequestedAt, now >= at.seconds + (job.grace ?? 0)
                else { continue }
                finish(
                    id,
                    exit: .lost(
                        reason: "stopped on a node allotd does not run; no end was reported within its grace period"
                    )
                )
            }
            for ended in executor.poll(now: now) { runEnded(ended) }
            applyDeferredNodes()
        }
        // Bursts (bulk submits, big listings, recovery) leave freed memory in malloc's arenas: hand it back.
        if churn >= 10_000 && now - lastTrim >= 2 {
            System.trimMalloc()
            churn = 0
            lastTrim = now
        }
        if now - lastPassAt >= state.config.scheduler.interval || (passStale && now - lastPassAt >= 1) {
            if !state.pendingJobs.isEmpty || passStale { requestPass() }
        }
    }

    /// A local run ended: record how.
    func runEnded(_ ended: Executor.Ended) {
        let gpuFailure = gpuFailures.removeValue(forKey: ended.id)
        guard let job = state.jobs[ended.id], job.runs == ended.run, job.state.holdsGPUs else { return }
        if ended.killed {
            logger.notice("Job ended by SIGKILL after its grace period", metadata: ["job.id": "\(ended.id)"])
        }
        // A job stopped because its GPU failed (and not cancelled meanwhile) goes back to the queue, or fails.
        let cancelled: Bool
        if case .cancelled? = job.stopReason { cancelled = true } else { cancelled = false }
        if let why = gpuFailure, !cancelled {
            if settings.onGPUFailure == .requeue {
                do {
                    try apply(.jobRequeued(id: ended.id, reason: why))
                    logger.warning("Job requeued", metadata: ["job.id": "\(ended.id)", "reason": "\(why)"])
                    pendingActions.append(.notify(ended.id, "requeued"))
                    requestPass()
                    return
                } catch {
                    logger.error("Requeue refused", metadata: ["job.id": "\(ended.id)", "error": "\(error)"])
                }
            }
            finish(ended.id, exit: .lost(reason: why))
            return
        }
        // It could not run at all (no such user, a working directory it cannot enter): that is the reason.
        if let error = ended.error, job.stopReason == nil {
            finish(ended.id, exit: .couldNotStart(error))
            return
        }
        finish(ended.id, exit: ended.exit, endedAt: ended.endedAt)
    }

    /// Records the end of a job's run; `endedAt` (Unix seconds): when it really ended, if it was before now
    /// (the state keeps it between the run's start and now).
    func finish(_ id: JobID, exit: ExitStatus, endedAt: Double? = nil) {
        do {
            try apply(.jobFinished(id: id, exit: exit, endedAt: endedAt.map { Instant(seconds: $0) }))
        } catch {
            logger.error("Job end refused", metadata: ["job.id": "\(id)", "error": "\(error)"])
            return
        }
        guard let job = state.jobs[id] else { return }
        logger.info(
            "Job ended",
            metadata: ["job.id": "\(id)", "job.exit": "\(exit)", "job.state": "\(job.state.rawValue)"]
        )
        pendingActions.append(.notify(id, job.state.rawValue))
        if job.state.isTerminal {
            pendingActions.append(.jobEnded(id))
            metrics?.ended(as: job.state)
        }
        requestPass()
    }

    // MARK: Helpers

    /// Whether allotd or one of its agents runs this job (and so must be told to stop it).
    func runsHere(_ job: Job) -> Bool {
        isLocal(job) || agents[job.allocation?.slices.first?.node ?? ""] != nil
    }

    func isLocal(_ job: Job) -> Bool {
        guard let a = job.allocation, let first = a.slices.first else { return false }
        return localNodes.contains(first.node)
    }

    func userName(_ uid: UInt32) -> String? {
        if let n = userNames[uid] { return n }
        let n = System.user(uid: uid)?.name
        if let n { userNames[uid] = n }
        return n
    }
}
