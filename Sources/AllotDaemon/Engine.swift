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
        /// Relay a terminal on an agent's node over a control connection (answered with `answer`).
        case attach(Outbox, answer: Data, AgentLink, AgentRunRef)
        case jobEnded(JobID)
        /// Tell an agent its reported ends are recorded (once they are durable).
        case agentAck(node: String, link: UInt64, runs: [AgentRunRef])
        /// Send a job's notice (webhook or mail).
        case tell(JobNotice)
    }

    /// The rules: every decision on the pool is taken by the controller, as events and effects.
    var controller: Controller
    /// The pool as the controller has it.
    var state: ClusterState { controller.state }
    var config: ConfigFile
    /// Where the configuration is read again on reload (nil: tests, nothing to reload).
    let source: DaemonOptions?
    var settings: DaemonSettings
    var scheduler: Scheduler { controller.scheduler }
    /// Where events become durable (a follower's refuses every write until it leads).
    var wal: any EventLog
    let executor: Executor
    let handle: EngineHandle
    let logger: Logger
    let hostname: String
    var adminGID: UInt32?
    /// Nodes changed or removed in the config while they ran jobs: changed once idle (nil: removed).
    var deferredNodes: [String: NodeSpec?] = [:]
    let durability = DurabilityWatcher()
    let snapshots = SnapshotWriter()
    /// When this allotd started (Unix seconds): `allot_start_time_seconds`, for alerts on restarts.
    let startedAt = Date().timeIntervalSince1970
    /// Recent loans, reclaims, preemptions and nodes lost, for `top` (at most ``momentsKept``).
    var moments: [TopMoment] = []
    /// Delivers jobs' webhook and mail notices.
    let notices: NoticeSender
    /// Where ended jobs go after their retention.
    let archive: JobArchive
    var lastArchiveLook = 0.0

    /// Names of the nodes whose jobs this daemon runs.
    var localNodes: Set<String> = [] {
        didSet { for node in oldValue.symmetricDifference(localNodes) { syncRunner(node) } }
    }
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

    var lastPass: SchedulingPass { controller.lastPass }
    /// The last pass's blockers by job, built when first asked for after a pass (tables need it; most
    /// passes are never asked).
    var reasonIndex: [JobID: Int32]?
    /// Whether the state changed since the last pass.
    var passStale: Bool { controller.passStale }
    var passQueued = false
    /// When the last pass ended and how long it took (``requestPass()`` paces passes by them).
    var lastPassEnd = ContinuousClock.now
    var lastPassTook = Duration.zero
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
    /// systemd notifications.
    var notifier = ServiceNotifier()
    /// Prometheus metrics, when `metrics_listen` is set.
    let metrics: DaemonMetrics?
    /// Node agents, by node.
    var agents: [String: AgentState] = [:]
    /// What the checks of the services' replicas on this host found.
    var replicaChecks = ReplicaChecks()
    /// What agents' checks found of the replicas on their nodes (observed, not logged).
    var agentReplicas: [JobID: AgentReplicaState] = [:]
    /// This run's epoch: agents learn it at registration and refuse orders from a lower one. Its start time
    /// in milliseconds; with several controllers, the election's epoch (etcd's revision of its lead).
    var epoch = UInt64(Date().timeIntervalSince1970 * 1000)
    /// Set while this controller follows another (several controllers on etcd, docs/ha.md): it applies the
    /// leader's log as it comes and answers reads; changes are refused, naming the leader.
    var following: Following?

    struct Following {
        /// The leader's name, as it campaigned (nil: none known now).
        var leader: String?
        /// The last LSN applied.
        var lsn: UInt64
    }

    /// Where every controller input is recorded (`allotd run --record-inputs`).
    let inputRecorder: InputRecorder?

    /// What keeps a pending job waiting: its dependencies, else the last pass's blocker.
    func blocker(of id: JobID) -> Blocker? {
        if let waiting = state.dependencyBlocker(of: id) { return waiting }
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
        wal: any EventLog,
        handle: EngineHandle,
        logger: Logger,
        metrics: DaemonMetrics? = nil,
        following: Following? = nil
    ) {
        self.metrics = metrics
        self.following = following
        var settings = Controller.Settings()
        settings.onGPUFailure = config.daemon.onGPUFailure
        settings.onDependencyNeverMet = config.daemon.onDependencyNeverMet
        settings.onNodeLoss = config.cluster?.onNodeLoss ?? .requeuePreemptible
        self.controller = Controller(state: recovered, settings: settings)
        self.inputRecorder = source?.recordInputs.flatMap { InputRecorder(path: $0, logger: logger) }
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
        self.executor.runHangup = config.daemon.runHangup
        self.notices = NoticeSender(
            sendmail: config.daemon.sendmail,
            spool: config.daemon.stateDir + "/notices",
            logger: logger
        )
        self.archive = JobArchive(stateDir: config.daemon.stateDir)
    }

    static var now: Double { Date().timeIntervalSince1970 }

    /// Now, on both clocks: wall time for the log and for users, the monotonic clock for deadlines.
    func clock() -> ClockReading { ClockReading(wall: Instant(seconds: Self.now), mono: System.monotonic()) }

    /// Gives the controller an input and takes up what it decided: its events are logged at the end of the
    /// command, its effects queued behind them, its notes logged.
    @discardableResult
    func step(_ input: Controller.Input) -> Controller.Output {
        let out = feed(input)
        absorb(out)
        return out
    }

    /// The one way into the controller: every input is recorded first when `--record-inputs` asks for it.
    @discardableResult
    func feed(_ input: Controller.Input) -> Controller.Output {
        let reading = clock()
        if let recorder = inputRecorder { recorder.record(input, at: reading) }
        return controller.step(input, at: reading)
    }

    func absorb(_ out: Controller.Output, reportRefusals: Bool = true) {
        unlogged += out.events
        churn += out.events.count
        let now = Self.now
        for e in out.events {
            switch e.body {
            case .jobStarted(let id, _, _, _):
                if let job = state.jobs[id] { metrics?.queueWait.recordSeconds(max(0, now - job.submitTime.seconds)) }
            case .jobPreempted(_, _, _, let reason):
                metrics?.preempted(reason: reason)
            default: break
            }
            noticesFor(e.body)
            recordMoment(e.body)
        }
        for effect in out.effects {
            switch effect {
            case .start(let id, let run): pendingActions.append(.start(id, run: run))
            case .stop(let id, let run, _, _): pendingActions.append(.stop(id, run: run))
            case .notify(let id, let what): pendingActions.append(.notify(id, what))
            case .ended(let id):
                pendingActions.append(.jobEnded(id))
                if let job = state.jobs[id] { metrics?.ended(as: job.state) }
            }
        }
        for note in out.notes {
            let level: Logger.Level =
                switch note.level {
                case .info: .info
                case .notice: .notice
                case .warning: .warning
                case .error: .error
                }
            logger.log(level: level, "\(note.message)", metadata: note.metadata.mapValues { .string($0) })
        }
        for (body, error) in out.refused where reportRefusals {
            logger.error("Event refused by the state", metadata: ["event": "\(body)", "error": "\(error)"])
        }
        if out.passWanted { requestPass() }
    }

    /// Why a job starts again elsewhere or at another size, for its resize notice.
    static func resizeReason(_ job: Job) -> String {
        guard case .preempted(let by, let reason)? = job.stopReason else { return "resized" }
        if by == job.id { return job.stopText! }
        let n = job.heldGPUs.reduce(0) { $0 + $1.gpus.count }
        if reason == .resize { return "gives back GPUs it grew into: shrinks to \(n) GPUs for job \(by)" }
        return "shrinks to \(n) GPUs for job \(by) (\(reason.rawValue))"
    }

    /// Tells the controller how a node's runs are run: here, by its agent, or by nobody allot knows.
    func syncRunner(_ node: String) {
        let runner: Controller.Runner = localNodes.contains(node) ? .local : agents[node] != nil ? .agent : .none
        // Its output is logged as any step's: the rules look at the pool after every input.
        step(.runner(node: node, runner))
    }

    // MARK: The loop

    /// Serves commands until the stream ends (graceful shutdown), then makes everything durable and acts
    /// on it.
    func run(commands: AsyncStream<EngineCommand>) async {
        await withDiscardingTaskGroup { group in
            let (handle, durability, snapshots) = (self.handle, self.durability, self.snapshots)
            let notices = self.notices
            group.addTask { await notices.run() }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(250))
                    handle.send(.tick)
                }
            }
            func writing(to wal: any EventLog) {
                group.addTask { await durability.run(wal: wal, engine: handle) }
                group.addTask { await snapshots.run(wal: wal, engine: handle) }
            }
            if following == nil {
                writing(to: wal)
                startUp()
            } else {
                logger.notice("Following: serving reads, applying the leader's log as it comes")
            }
            for await command in commands {
                if case .lead(let leading) = command {
                    take(leading)
                    writing(to: wal)
                    startUp()
                    continue
                }
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
            notices.finish()
            group.cancelAll()
        }
    }

    func process(_ command: EngineCommand) {
        switch command {
        case .followed(let events, let lsn):
            guard following != nil else { break }
            do {
                try controller.follow(events)
                following?.lsn = lsn
                churn += events.count
                for e in events { recordMoment(e.body) }
            } catch {
                // The leader's log and this state disagree: start again from etcd. A follower has nothing of
                // its own to make durable, so it exits at once (status 75; systemd starts it again).
                logger.critical(
                    "A record of the leader's log does not apply here: restarting to read the log again (exit status 75)",
                    metadata: ["error": "\(error.message)", "wal.lsn": "\(lsn)"]
                )
                exit(75)
            }
        case .followedState(let s, let lsn):
            guard following != nil else { break }
            controller.follow(state: s)
            following?.lsn = lsn
            churn += 100_000
        case .leaderIs(let name):
            following?.leader = name
        case .lead:
            break  // taken in run(commands:)
        case .call(let call, let id, var caller, let out):
            handle.requests.leave()
            caller.admin = isAdmin(caller.uid, groups: caller.groups)
            perform(call, id: id, caller: caller, out: out)
        case .disconnected(let conn):
            watchers[conn] = nil
        case .tick:
            tick()
        case .replicaChecked(let id, let run, let readiness, let problem):
            replicaChecked(id, run: run, readiness: readiness, problem: problem)
        case .serviceScraped(let name, let requests):
            replicaChecks.scraped(name)
            if let requests, failure == nil { step(.serviceLoad(name, requests)) }
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
        case .agentReplicas(let node, let link, let replicas):
            agentReplicas(node: node, link: link, replicas)
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

    /// A follower won the election and has applied the log to its end: it leads from now on.
    func take(_ leading: Leading) {
        following = nil
        wal = leading.log
        durableLSN = leading.lastLSN
        epoch = leading.epoch
        logger.notice(
            "Leading",
            metadata: [
                "ha.cluster": "\(config.ha?.cluster ?? "-")", "ha.name": "\(leading.name)",
                "ha.epoch": "\(leading.epoch)",
                "wal.last_lsn": "\(leading.lastLSN)", "jobs": "\(state.jobs.count)",
            ]
        )
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
            // Its start was logged but never carried out (allotd stopped in between): it starts now, not
            // "lost" (found by the fault simulation's crashes between fsync and effect).
            if job.state == .running, !executor.hasRun(id, run: job.runs) {
                logger.notice("Job starting: its start was logged but not carried out", metadata: ["job.id": "\(id)"])
                perform(.start(id, run: job.runs))
                continue
            }
            if let ended = executor.adopt(job) {
                runEnded(ended)
            } else {
                logger.info("Job adopted", metadata: ["job.id": "\(id)", "job.run": "\(job.runs)"])
                if job.state == .stopping, job.graceLeft(at: now) == 0 {
                    executor.stop(id, left: 0)
                }
            }
        }
        clearStrayMIGInstances()
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

    /// Records events decided here (requests, configuration) through the controller; they are logged at the
    /// end of the command. Stops at the first one the state refuses, and throws why.
    func apply(_ bodies: [Event.Body]) throws(StateError) {
        let out = feed(.record(bodies))
        absorb(out, reportRefusals: false)
        if let (_, error) = out.refused.first { throw error }
    }

    func apply(_ body: Event.Body) throws(StateError) {
        try apply([body])
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
            // Behind the last event logged; once the log has failed, nothing more becomes durable: what is
            // queued now (reads, refusals) goes out at once instead of waiting forever behind it.
            let lsn = failure == nil ? lastTicket?.lsn ?? 0 : durableLSN
            for a in pendingActions {
                // An answer waiting for the log goes out from the log's writer as soon as its sync ends, not
                // after a hop back through here: what a client waits for is the disk, not this task.
                if case .reply(let out, let id, let line) = a, lsn > durableLSN, let ticket = lastTicket {
                    let ha = config.ha != nil
                    wal.whenDurable(ticket) { result in
                        switch result {
                        case .success: out.reply(line)
                        case .failure(let error): out.reply(Self.notDurableLine(id, error, ha: ha))
                        }
                    }
                } else {
                    waiting.append((lsn, a))
                }
            }
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
        case .attach(let out, let answer, let link, let ref):
            TerminalRelays.shared.open(out, answer: answer, link: link, run: ref)
        case .start(let id, let run):
            guard let job = state.jobs[id], job.runs == run, job.state == .running, let a = job.allocation else {
                return
            }
            guard let first = a.slices.first else { return }
            switch controller.runner(of: job) {
            case .agent:
                sendStart(job, node: first.node)
                return
            case .none: return
            case .local: break
            }
            var uuids: [Int: String] = [:]
            for gpu in discovered[first.node]?.inventory?.gpus ?? [] { uuids[gpu.index] = gpu.uuid }
            if let slot = a.mig, let g = first.gpus.first {
                // The job sees its MIG device only.
                switch migDevice(slot, model: a.model, node: first.node, gpu: g) {
                case .success(let uuid): uuids = [g: uuid]
                case .failure(let problem):
                    logger.error("MIG instance not made", metadata: ["job.id": "\(id)", "error": "\(problem)"])
                    step(
                        .runEnded(
                            Controller.RunEnd(
                                id: id,
                                run: run,
                                exit: .couldNotStart(problem.description),
                                error: problem.description
                            )
                        )
                    )
                    return
                }
            }
            if let problem = executor.start(id: id, run: job.runs, spec: runSpec(job), slices: a.slices, uuids: uuids) {
                logger.error("Job could not be started", metadata: ["job.id": "\(id)", "error": "\(problem)"])
                if let slot = a.mig { removeMIGInstance(slot, node: first.node, gpu: first.gpus[0], job: id) }
                step(.runEnded(Controller.RunEnd(id: id, run: run, exit: .couldNotStart(problem), error: problem)))
            }
        case .stop(let id, let run):
            guard let job = state.jobs[id], job.runs == run, job.state == .stopping else { return }
            // Moving or resizing: it starts again on the GPUs held for it, and is told where before its signal.
            var notice: String?
            if let first = job.heldGPUs.first, let node = state.node(named: first.node) {
                notice = Executor.resizeNotice(
                    slices: job.heldGPUs,
                    model: state.config.gpuModels[node.modelIndex].name,
                    why: Self.resizeReason(job)
                )
            }
            switch controller.runner(of: job) {
            case .agent:
                if let node = job.allocation?.slices.first?.node { sendStop(job, node: node, resizeNotice: notice) }
                return
            case .none: return
            case .local: break
            }
            if let notice { executor.writeResizeNotice(id, run: run, notice, owner: job.spec.uid) }
            executor.stop(id, left: job.graceLeft(at: Self.now), why: job.stopText ?? "told to stop")
        case .notify(let id, let event):
            guard !watchers.isEmpty, let job = state.jobs[id] else { return }
            let object = summary(job)
            let n = Notification(
                method: Notifications.watchEvent.name,
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
        case .tell(let notice):
            notices.send(notice)
        case .agentAck(let node, let link, let runs):
            guard let l = agents[node]?.link, l.id == link,
                let line = try? ControlProtocol.line(
                    Notification(method: AgentProtocol.ack.name, params: AgentAck(runs: runs))
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
        // Answers waiting on the log get the failure from it (`whenDurable`); effects of what did not become
        // durable never happen.
        waiting.removeAll()
        waitingHead = 0
        // With several controllers, agents go to the one that leads: let them go.
        if config.ha != nil {
            for (name, a) in agents {
                a.link?.close()
                agents[name]?.link = nil
            }
        }
    }

    /// The answer to a change that did not become durable.
    static func notDurableLine(_ id: RPCID?, _ error: WALError, ha: Bool) -> Data {
        let refusal = RPCError(
            RPCError.unavailable,
            ha
                ? "the change was not made durable in etcd (\(error.message)). This controller serves reads only, and restarts to campaign once etcd answers"
                : "the write-ahead log failed (\(error.message)); the change was not made durable. allotd serves reads only until it is restarted"
        )
        return (try? ControlProtocol.line(ErrorResponse(id: id, error: refusal))) ?? Data()
    }

    // MARK: Scheduling

    /// Asks for a pass after the commands already queued (so a burst of submits gets one pass). After a long
    /// pass (a long queue) the next waits as long as it took, up to a second: the engine then spends at most
    /// half its time in passes, and requests that come meanwhile are answered at once instead of each
    /// waiting for a pass (with 20,000 jobs queued, one `allotctl submit` after another took 12 ms each,
    /// nearly all of it waiting for the pass the previous one asked for).
    func requestPass() {
        guard !passQueued else { return }
        passQueued = true
        let wait =
            lastPassTook < .milliseconds(2) ? .zero : min(lastPassTook, .seconds(1)) - lastPassEnd.duration(to: .now)
        if wait <= .zero {
            handle.send(.pass)
        } else {
            let handle = self.handle
            Task {
                try? await Task.sleep(for: wait)
                handle.send(.pass)
            }
        }
    }

    func schedulePass() {
        guard failure == nil, following == nil else { return }
        let passStart = ContinuousClock.now
        let out = feed(.pass)
        lastPassEnd = .now
        lastPassTook = lastPassEnd - passStart
        if let m = metrics {
            let d = lastPassTook
            m.passSeconds.recordNanoseconds(
                d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
            )
        }
        reasonIndex = nil
        churn += lastPass.pending.count  // a pass's working arrays are as long as the queue
        absorb(out)
    }

    // MARK: Time

    func tick() {
        let now = Self.now
        notifyTick(now: now)
        let deciding = failure == nil && following == nil
        if deciding { agentsTick() }
        if deciding {
            // Walltime limits, the grace of jobs nobody runs, a pass when one is due: the controller's rules.
            step(.tick)
            for ended in executor.poll() { runEnded(ended) }
            checkReplicas()
            applyDeferredNodes()
            if now - lastArchiveLook >= archiveInterval {
                lastArchiveLook = now
                archiveEndedJobs(now: now)
            }
        }
        // Bursts (bulk submits, big listings, recovery) leave freed memory in malloc's arenas: hand it back.
        if churn >= 10_000 && now - lastTrim >= 2 {
            System.trimMalloc()
            churn = 0
            lastTrim = now
        }
    }

    /// A local run ended: the controller records how.
    func runEnded(_ ended: Executor.Ended) {
        let job = state.jobs[ended.id]
        defer {
            if let job, job.runs == ended.run, let a = job.allocation, let slot = a.mig, let s = a.slices.first {
                removeMIGInstance(slot, node: s.node, gpu: s.gpus[0], job: ended.id)
            }
        }
        step(
            .runEnded(
                Controller.RunEnd(
                    id: ended.id,
                    run: ended.run,
                    exit: ended.exit,
                    error: ended.error,
                    endedAt: ended.endedAt.map { Instant(seconds: $0) },
                    killed: ended.killed
                )
            )
        )
    }

    // MARK: Helpers

    /// Whether allotd or one of its agents runs this job (and so must be told to stop it): the controller's
    /// runner of the node where its process runs, set once per node (``syncRunner(_:)``).
    func runsHere(_ job: Job) -> Bool { controller.runner(of: job) != .none }

    /// Whether allotd runs this job's process itself.
    func isLocal(_ job: Job) -> Bool { controller.runner(of: job) == .local }

    func userName(_ uid: UInt32) -> String? {
        if let n = userNames[uid] { return n }
        let n = System.user(uid: uid)?.name
        if let n { userNames[uid] = n }
        return n
    }
}
