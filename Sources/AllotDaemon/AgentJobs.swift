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

    init(stateDir: String, uuids: [Int: String], logger: Logger) {
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
        fresh = Set(unacked.keys)
        return running.map { AgentRunRef(id: $0.0.rawValue, run: $0.1) } + Array(unacked.keys)
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
        if let problem = executor.start(id: id, run: o.run, spec: o.spec, slices: slices, uuids: uuids) {
            let ref = AgentRunRef(id: o.id, run: o.run)
            unacked[ref] = AgentRunReport(id: o.id, run: o.run, state: "failed_to_start", error: problem)
            fresh.insert(ref)
        }
    }

    func stop(_ o: AgentStopOrder) {
        guard executor.tracked[JobID(o.id)]?.run == o.run else { return }
        executor.stop(JobID(o.id), left: o.grace, why: o.reason)
    }

    /// Runs that ended since the last call, and (every 5 s) every end still unacknowledged.
    func poll() -> [AgentRunReport] {
        for e in executor.poll() {
            let ref = AgentRunRef(id: e.id.rawValue, run: e.run)
            unacked[ref] = Self.report(e)
            fresh.insert(ref)
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
