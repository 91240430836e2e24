import AllotCore
import AllotProtocol
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The jobs a node agent runs, with the same executor allotd uses for its own nodes: supervised, as their
/// owners, surviving an agent restart. Ends are reported until the controller acknowledges them.
actor AgentJobs {
    let executor: Executor
    let logger: Logger
    /// GPU UUIDs by index, when discovered.
    let uuids: [Int: String]
    /// Ends not yet acknowledged by the controller.
    private var unacked: [AgentRunRef: AgentRunReport] = [:]
    /// Ends not yet sent on the current link.
    private var fresh: Set<AgentRunRef> = []
    private var lastResend = 0.0
    /// The checks of the replicas this node runs, as the controller last sent them.
    private var replicaChecks: [JobID: AgentReplicaChecks] = [:]
    private var checks = ReplicaChecks()
    /// Restarts the liveness checks asked for, not yet reported.
    private var restarts: [JobID: String] = [:]
    /// Requests in flight each replica's metrics said, and when they are next read.
    private var inFlight: [JobID: Double] = [:]
    private var scrapeDue: [JobID: Double] = [:]
    private var changed = Set<JobID>()
    private var lastReplicaReport = 0.0

    /// This node's NVML, when the agent discovers its GPUs: MIG instances are made and removed through it.
    let probe: GPUProbe?
    /// Where each MIG run's instance is recorded (`ID.RUN`, its ``AgentMIG`` as JSON) from before it is made
    /// until it is removed, so that an agent restarted meanwhile still removes it.
    let migDir: String

    init(stateDir: String, uuids: [Int: String], probe: GPUProbe? = nil, logger: Logger) {
        self.probe = probe
        migDir = stateDir + "/mig"
        executor = Executor(
            stateDir: stateDir,
            logDir: stateDir + "/logs",
            socket: stateDir + "/agent.sock",
            logger: logger
        )
        self.uuids = uuids
        self.logger = logger
    }

    static func report(_ e: Executor.Ended) -> AgentRunReport {
        var r = AgentRunReport(
            id: e.id.rawValue,
            run: e.run,
            state: "ended",
            killed: e.killed ? true : nil,
            endedAt: e.endedAt
        )
        if let error = e.error {
            r.state = "failed_to_start"
            r.error = error
        }
        switch e.exit {
        case .exited(let code): r.exitCode = code
        case .signaled(let sig): r.signal = sig
        case .lost(let why):
            r.state = "lost"
            r.error = why
        }
        return r
    }

    /// What this node holds: runs still going (adopted after a restart) and ends not yet acknowledged.
    func inventory() -> [AgentRunRef] {
        let (running, ended) = executor.adoptAll()
        for e in ended {
            let ref = AgentRunRef(id: e.id.rawValue, run: e.run)
            unacked[ref] = Self.report(e)
        }
        // Instances of runs that ended while the agent was down, or that never started (it stopped between
        // making one and starting its job), go; those of runs still going stay.
        let live = running.map { AgentRunRef(id: $0.0.rawValue, run: $0.1) }
        let going = Set(live)
        for ref in migRecords() where !going.contains(ref) { releaseMIG(ref) }
        fresh = Set(unacked.keys)
        return live + Array(unacked.keys)
    }

    /// Fencing: every run the controller no longer assigns here is killed now; ends it does not want are
    /// forgotten. - Returns: how many runs were killed.
    func fence(keep: Set<AgentRunRef>) -> Int {
        var killed = 0
        for (id, t) in executor.tracked where !keep.contains(AgentRunRef(id: id.rawValue, run: t.run)) {
            executor.stop(id, left: 0, why: "fenced: the controller no longer assigns it to this node")
            killed += 1
        }
        for ref in unacked.keys where !keep.contains(ref) {
            executor.acknowledge(JobID(ref.id), run: ref.run)
            unacked[ref] = nil
            fresh.remove(ref)
        }
        return killed
    }

    func start(_ o: AgentStartOrder) {
        let id = JobID(o.id)
        guard !executor.hasRun(id, run: o.run) else { return }  // a repeated order
        let slices = o.slices.map { Allocation.Slice(node: $0.node, gpus: $0.gpus) }
        let ref = AgentRunRef(id: o.id, run: o.run)
        var uuids = self.uuids
        if let m = o.mig {
            switch instance(m, for: ref, node: o.slices.first?.node ?? "this node") {
            case .success(let uuid): uuids = [m.gpu: uuid]  // the job sees its MIG device only
            case .failure(let problem):
                logger.error("MIG instance not made", metadata: ["job.id": "\(o.id)", "error": "\(problem)"])
                unacked[ref] = AgentRunReport(id: o.id, run: o.run, state: "failed_to_start", error: problem.text)
                fresh.insert(ref)
                return
            }
        }
        if let problem = executor.start(id: id, run: o.run, spec: o.spec, slices: slices, uuids: uuids) {
            releaseMIG(ref)
            unacked[ref] = AgentRunReport(id: o.id, run: o.run, state: "failed_to_start", error: problem)
            fresh.insert(ref)
        }
    }

    func stop(_ o: AgentStopOrder) {
        guard executor.tracked[JobID(o.id)]?.run == o.run else { return }
        if let notice = o.resizeNotice {
            executor.writeResizeNotice(JobID(o.id), run: o.run, notice, owner: executor.owner(of: JobID(o.id)))
        }
        executor.stop(JobID(o.id), left: o.grace, why: o.reason)
    }

    /// Runs that ended since the last call, and (every 5 s) every end still unacknowledged.
    func poll() -> [AgentRunReport] {
        for e in executor.poll() {
            let ref = AgentRunRef(id: e.id.rawValue, run: e.run)
            unacked[ref] = Self.report(e)
            fresh.insert(ref)
            releaseMIG(ref)
        }
        let now = Date().timeIntervalSince1970
        var out: [AgentRunReport]
        if now - lastResend >= 5 {
            lastResend = now
            out = Array(unacked.values)
        } else {
            out = fresh.compactMap { unacked[$0] }
        }
        fresh.removeAll()
        return out.sorted { ($0.id, $0.run) < ($1.id, $1.run) }
    }

    func ack(_ refs: [AgentRunRef]) {
        for ref in refs {
            executor.acknowledge(JobID(ref.id), run: ref.run)
            unacked[ref] = nil
            fresh.remove(ref)
        }
    }

    /// On a graceful stop: the job cgroup directory goes if it is empty (jobs still running keep it).
    func cleanUp() {
        if let base = executor.cgroupBase { rmdir(base) }
    }

    /// Where run (`id`, `run`)'s supervisor listens for its terminal's client (an interactive run).
    func ttySocket(id: UInt64, run: Int) -> String { executor.ttySocket(JobID(id), run: run) }

    /// The link is new: everything unacknowledged goes out again.
    func newLink() { fresh = Set(unacked.keys) }
}

/// MIG instances on this node: made through NVML before a MIG job starts (found, on a static layout), and
/// removed when its run ends — also when the agent was down as it ended.
extension AgentJobs {
    struct MIGProblem: Error {
        var text: String
    }

    private func migRecord(_ ref: AgentRunRef) -> String { "\(migDir)/\(ref.id).\(ref.run)" }

    /// The runs with an instance recorded.
    func migRecords() -> [AgentRunRef] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: migDir)) ?? []
        return names.compactMap { name in
            let parts = name.split(separator: ".")
            guard parts.count == 2, let id = UInt64(parts[0]), let run = Int(parts[1]) else { return nil }
            return AgentRunRef(id: id, run: run)
        }
        .sorted { ($0.id, $0.run) < ($1.id, $1.run) }
    }

    /// The run's instance, recorded first and then made (or found): its `MIG-` device. When that fails the
    /// record goes and nothing is removed (a failed make leaves no instance; what sits at that start is not
    /// this run's).
    func instance(_ m: AgentMIG, for ref: AgentRunRef, node: String) -> Result<String, MIGProblem> {
        guard let probe else {
            return .failure(
                MIGProblem(
                    text:
                        "the agent of \(node) has no NVML to make MIG \(m.profile.name)@\(m.start) with (run it with --discover nvml)"
                )
            )
        }
        do {
            try FileManager.default.createDirectory(atPath: migDir, withIntermediateDirectories: true)
            try JSONEncoder().encode(m).write(to: URL(fileURLWithPath: migRecord(ref)), options: .atomic)
            return .success(
                try probe.migDevice(gpu: m.gpu, profile: m.profile, start: m.start, layout: m.layout, node: node)
            )
        } catch {
            try? FileManager.default.removeItem(atPath: migRecord(ref))
            return .failure(MIGProblem(text: "\(error)"))
        }
    }

    /// Removes the run's instance, if it has one recorded (a static layout's stays), and its record.
    func releaseMIG(_ ref: AgentRunRef) {
        let path = migRecord(ref)
        guard let data = FileManager.default.contents(atPath: path) else { return }
        if let m = try? JSONDecoder().decode(AgentMIG.self, from: data), !m.layout, let probe {
            do {
                try probe.withMIG { try $0.remove(gpu: m.gpu, start: m.start) }
                logger.info(
                    "MIG instance removed",
                    metadata: [
                        "job.id": "\(ref.id)", "job.run": "\(ref.run)", "mig": "\(m.gpu):\(m.profile.name)@\(m.start)",
                    ]
                )
            } catch {
                // Kept, to be tried again when the agent next starts.
                logger.error("MIG instance not removed", metadata: ["job.id": "\(ref.id)", "error": "\(error)"])
                return
            }
        }
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// The checks of the service replicas this node runs: readiness, liveness and metrics, as allotd checks its
/// own nodes' replicas; what they find goes to the controller in `agent.replicas`.
extension AgentJobs {
    func setChecks(_ c: AgentChecks) {
        replicaChecks = Dictionary(c.replicas.map { (JobID($0.id), $0) }, uniquingKeysWith: { $1 })
        changed.formUnion(replicaChecks.keys)
    }

    /// The replicas that run now with their port and checks.
    private var runningReplicas: [(id: JobID, run: Int, port: Int, checks: AgentReplicaChecks)] {
        replicaChecks.compactMap { id, c in
            guard let t = executor.tracked[id], t.run == c.run, let port = t.port else { return nil }
            return (id, c.run, port, c)
        }
    }

    /// The checks due now, marked in flight (each answers through ``answered(_:run:readiness:problem:)``),
    /// and the metrics due to be read (through ``scraped(_:run:inFlight:)``).
    func due(
        now: Double
    ) -> (
        checks: [(id: JobID, run: Int, port: Int, probe: Probe, readiness: Bool, user: String?)],
        scrapes: [(id: JobID, run: Int, port: Int, path: String, series: [String])]
    ) {
        let running = runningReplicas
        let users = Dictionary(running.map { ($0.id, $0.checks.user) }, uniquingKeysWith: { $1 })
        let checks = self.checks.due(
            running: running.map { ($0.id, $0.run, $0.port, $0.checks.ready, $0.checks.live) },
            now: now
        )
        .map { (id: $0.0, run: $0.1, port: $0.2, probe: $0.3, readiness: $0.4, user: users[$0.0] ?? nil) }
        var scrapes: [(id: JobID, run: Int, port: Int, path: String, series: [String])] = []
        for r in running {
            guard let path = r.checks.metricsPath, self.checks.of(r.id, run: r.run)?.ready == true,
                now >= scrapeDue[r.id] ?? 0
            else { continue }
            scrapeDue[r.id] = now + ReplicaChecks.scrapePeriod
            scrapes.append((r.id, r.run, r.port, path, r.checks.series ?? Autoscale.vllmMetrics))
        }
        let live = Set(running.map(\.id))
        for id in Array(inFlight.keys) where !live.contains(id) { inFlight[id] = nil }
        for id in Array(scrapeDue.keys) where !live.contains(id) { scrapeDue[id] = nil }
        return (checks, scrapes)
    }

    func answered(_ id: JobID, run: Int, readiness: Bool, problem: String?) {
        let was = checks.of(id, run: run)
        if let restart = checks.answered(id, run: run, readiness: readiness, problem: problem) {
            restarts[id] = restart
            changed.insert(id)
        }
        let now = checks.of(id, run: run)
        if was?.ready != now?.ready || was?.problem != now?.problem { changed.insert(id) }
    }

    func scraped(_ id: JobID, run: Int, inFlight value: Double?) {
        guard replicaChecks[id]?.run == run else { return }
        inFlight[id] = value
    }

    /// What to tell the controller: the replicas whose answer changed, and every 2 s all of them (their load).
    func replicaReport(now: Double) -> [AgentReplicaState] {
        let all = now - lastReplicaReport >= ReplicaChecks.scrapePeriod
        if all { lastReplicaReport = now }
        var out: [AgentReplicaState] = []
        for r in runningReplicas where all || changed.contains(r.id) {
            let h = checks.of(r.id, run: r.run)
            out.append(
                AgentReplicaState(
                    id: r.id.rawValue,
                    run: r.run,
                    port: r.port,
                    ready: h?.ready ?? false,
                    problem: h?.problem,
                    restart: restarts.removeValue(forKey: r.id),
                    inFlight: inFlight[r.id]
                )
            )
        }
        changed.removeAll()
        return out.sorted { ($0.id, $0.run) < ($1.id, $1.run) }
    }
}

extension AgentJobs {
    /// Up to `max` bytes of a job's log (its newest run's output file, else the agent's log), from `offset`.
    func readLog(id: UInt64, offset: Int, max: Int) -> (bytes: [UInt8], error: String?) {
        let jobDir = "\(executor.stateDir)/jobs/\(id)"
        let runs = ((try? FileManager.default.contentsOfDirectory(atPath: jobDir)) ?? []).compactMap { Int($0) }
        var path = executor.logPath(JobID(id))
        if let run = runs.max(),
            let data = FileManager.default.contents(atPath: "\(jobDir)/\(run)/spec"),
            let spec = RunSpec(decoding: Array(data)), let output = spec.output
        {
            path = output
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            return ([], errno == ENOENT ? nil : "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: Swift.max(0, Swift.min(max, 1 << 20)))
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
        return (n > 0 ? Array(buffer[0..<n]) : [], nil)
    }
}
