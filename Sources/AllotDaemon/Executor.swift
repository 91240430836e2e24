import AllotCore
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Runs the jobs of this host's nodes. Each run has a directory `STATE/jobs/ID/RUN/` holding the supervisor's
/// spec (`RunSpec`), the job's pid and, once it has ended, its status. Used from the engine's task only.
final class Executor {
    struct Tracked {
        var run: Int
        var directory: String
        var supervisor: Int32
        /// A pidfd on the supervisor (-1 where pidfds are missing): its end, without pid reuse races.
        var pidfd: Int32 = -1
        var cgroup: String?
        /// The job's own log, where the daemon notes the signals it sends.
        var log: String
        /// When the job is killed if it has not ended, on the monotonic clock (``System/monotonic()``).
        var killAt: Double?
        /// Whether SIGTERM reached the job (its pid may not be known yet when it is told to stop).
        var termSent = false
        /// A service replica's port (`ALLOT_PORT`).
        var port: Int?
        var killed = false
    }

    /// How a tracked run ended.
    struct Ended {
        var id: JobID
        var run: Int
        var exit: ExitStatus
        /// Why it could not run, when it could not.
        var error: String?
        /// Whether it had to be killed (SIGKILL) after its grace period.
        var killed = false
        /// When it ended (Unix seconds), as its supervisor recorded it.
        var endedAt: Double?
    }

    let stateDir: String
    let logDir: String
    let socket: String
    /// `allot-supervise`, next to allotd: it starts each run and stays with it.
    let supervisor: String
    let logger: Logger
    /// Where job cgroups are made; nil: process groups only.
    let cgroupBase: String?
    /// The first signal of a stop.
    var stopSignal: Int32 = SIGTERM
    /// Seconds an interactive run lives without its client before it gets SIGHUP.
    var runHangup: Double = 10
    private(set) var tracked: [JobID: Tracked] = [:]

    init(stateDir: String, logDir: String, socket: String, logger: Logger) {
        self.stateDir = stateDir
        self.logDir = logDir
        self.socket = socket
        self.supervisor = (System.executablePath() as NSString).deletingLastPathComponent + "/allot-supervise"
        self.logger = logger
        self.cgroupBase = JobTree.cgroupBase(stateDir: stateDir)
        try? FileManager.default.createDirectory(atPath: stateDir + "/jobs", withIntermediateDirectories: true)
        try? FileManager.default.createDirectory(atPath: logDir, withIntermediateDirectories: true)
    }

    func logPath(_ id: JobID) -> String { "\(logDir)/\(id).log" }
    /// The port of a service replica this host runs (run `run`).
    func port(of id: JobID, run: Int) -> Int? { tracked[id].flatMap { $0.run == run ? $0.port : nil } }
    func cgroup(_ id: JobID, run: Int) -> String? { cgroupBase.map { "\($0)/job-\(id).\(run)" } }
    func runDirectory(_ id: JobID, run: Int) -> String { "\(stateDir)/jobs/\(id)/\(run)" }
    /// Where an interactive run's supervisor listens for its owner's client: beside allotd's socket, which
    /// users reach (the state directory may be closed to them); the socket is its owner's only.
    func ttySocket(_ id: JobID, run: Int) -> String {
        URL(fileURLWithPath: socket).deletingLastPathComponent().appendingPathComponent("tty/\(id).\(run).sock").path
    }

    /// Where a run finds its resize notice (`ALLOT_RESIZE_FILE`): beside allotd's socket, which users reach.
    func resizeFile(_ id: JobID, run: Int) -> String {
        URL(fileURLWithPath: socket).deletingLastPathComponent().appendingPathComponent("resize/\(id).\(run)").path
    }

    /// Where a run starts again after a resize or move: `ALLOT_*` lines a shell can source (the GPUs, nodes
    /// and why).
    static func resizeNotice(slices: [Allocation.Slice], model: String, why: String) -> String {
        let gpus = slices.reduce(0) { $0 + $1.gpus.count }
        let nodes = slices.map { "\($0.node):\(Allocation.ranges($0.gpus))" }.joined(separator: ",")
        return
            "ALLOT_GPUS=\(gpus)\nALLOT_NODES=\(nodes)\nALLOT_GPU_MODEL=\(model)\nALLOT_RESIZE_REASON='\(why.replacingOccurrences(of: "'", with: ""))'\n"
    }

    /// Tells a run, before its stop signal, where it starts again (``resizeNotice(slices:model:why:)``), in
    /// its `ALLOT_RESIZE_FILE`, readable by `owner` only (by root when nil).
    func writeResizeNotice(_ id: JobID, run: Int, _ text: String, owner: uid_t?) {
        let path = resizeFile(id, run: run)
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o711)
        guard
            FileManager.default.createFile(
                atPath: path,
                contents: Data(text.utf8),
                attributes: [.posixPermissions: 0o600]
            )
        else { return }
        if getuid() == 0, let owner { chown(path, owner, UInt32.max) }
    }

    /// The owner of a run this executor tracks: the owner of its log, which the job's process opened as its
    /// owner.
    func owner(of id: JobID) -> uid_t? {
        tracked[id].flatMap { System.owner(of: $0.log) }
    }

    /// Starts a run of a job on this host's GPUs.
    /// - Returns: a sentence when it cannot be started (the job then fails with it).
    /// The job's process runs once, on the first node of its allocation (as a Slurm batch script does);
    /// `ALLOT_NODES` lists every slice for jobs that span nodes. `spec`: the job's, with what the controller
    /// tells the run (on an agent: as the controller ordered).
    func start(id: JobID, run: Int, spec: JobSpec, slices: [Allocation.Slice], uuids: [Int: String] = [:]) -> String? {
        let gpus = slices.first?.gpus ?? []
        let node = slices.first?.node ?? ""
        let allGPUs = slices.reduce(0) { $0 + $1.gpus.count }
        let dir = runDirectory(id, run: run)
        // The owner: the submitting uid, with its groups; a uid that no longer exists cannot run anything.
        var uid = spec.uid
        var gid = getgid()
        var groups: [UInt32] = []
        var home = "/"
        var userName = spec.user ?? String(uid)
        if getuid() == 0 {
            guard let u = System.user(uid: spec.uid) else {
                return "user \(spec.uid) (\(spec.user ?? "unknown")) no longer exists"
            }
            gid = u.gid
            groups = System.groups(of: u.name, primary: u.gid)
            home = u.home
            userName = u.name
        } else {
            // Not root: every job runs as the daemon's own user.
            uid = getuid()
            if let u = System.user(uid: uid) {
                home = u.home
                userName = u.name
            }
        }
        // By UUID where discovery knows them: indices depend on CUDA_DEVICE_ORDER, UUIDs do not.
        let byUUID = !gpus.isEmpty && gpus.allSatisfy { uuids[$0] != nil }
        let visible = gpus.map { byUUID ? uuids[$0]! : String($0) }.joined(separator: ",")
        var env = spec.environment
        env["HOME"] = env["HOME"] ?? home
        env["USER"] = userName
        env["LOGNAME"] = userName
        env["PATH"] = env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        env["CUDA_VISIBLE_DEVICES"] = visible
        env["NVIDIA_VISIBLE_DEVICES"] = visible
        env["ALLOT_GPU_INDICES"] = gpus.map(String.init).joined(separator: ",")
        env["ALLOT_JOB_ID"] = id.description
        env["ALLOT_JOB_NAME"] = spec.name
        if let task = spec.array {
            // Slurm's names too: array scripts read them.
            for prefix in ["ALLOT", "SLURM"] {
                env["\(prefix)_ARRAY_JOB_ID"] = task.array.description
                env["\(prefix)_ARRAY_TASK_ID"] = String(task.index)
            }
        }
        env["ALLOT_RUN"] = String(run)
        env["ALLOT_RESIZE_FILE"] = resizeFile(id, run: run)
        if run > 1 { try? FileManager.default.removeItem(atPath: resizeFile(id, run: run - 1)) }
        env["ALLOT_NODE"] = node
        env["ALLOT_GPUS"] = String(allGPUs)
        env["ALLOT_NODES"] = slices.map { "\($0.node):\(Allocation.ranges($0.gpus))" }.joined(separator: ",")
        env["ALLOT_USER"] = userName
        env["ALLOT_TENANT"] = spec.tenant
        env["ALLOT_KIND"] = spec.kind.rawValue
        if let service = spec.service {
            // A replica listens on its service's port, or on one free on this node now.
            env["ALLOT_SERVICE"] = service
            if env["ALLOT_PORT"] == nil {
                guard let port = ReplicaChecks.freePort() else { return "no free TCP port on \(node) for the replica" }
                env["ALLOT_PORT"] = String(port)
            }
        }
        // The job's CPUs and memory here: what the node counted for it, or on a node that does not count them
        // what the job asked for (its part on this node), still its limit though not counted.
        let part = allGPUs > 0 ? Double(gpus.count) / Double(allGPUs) : 1 / Double(max(1, slices.count))
        let cpuMilli = slices.first?.cpuMilli ?? spec.cpuMilli.map { max(1, Int((Double($0) * part).rounded(.up))) }
        let memoryMiB = slices.first?.memoryMiB ?? spec.memoryMiB.map { max(1, Int((Double($0) * part).rounded(.up))) }
        if let cpu = cpuMilli { env["ALLOT_CPUS"] = Fraction.text(cpu) }
        if let memory = memoryMiB { env["ALLOT_MEMORY_MIB"] = String(memory) }
        // A share of one GPU: what it asked. (Its limits for an MPS server on the node, CUDA_MPS_*, come from
        // the controller with the spec; without a server the GPU is time-sliced between its shares, without
        // isolation.)
        if let share = spec.gpuShare { env["ALLOT_GPU_SHARE"] = Fraction.text(share) }
        if let mib = spec.gpuMemoryMiB { env["ALLOT_GPU_MEMORY_MIB"] = String(mib) }
        let runSpec = RunSpec(
            id: id.rawValue,
            run: run,
            command: spec.command,
            environment: env,
            workdir: spec.workingDirectory ?? home,
            uid: uid,
            gid: gid,
            groups: groups,
            log: logPath(id),
            output: spec.output,
            cgroup: cgroup(id, run: run),
            socket: socket,
            // The job's CPUs and memory on this node, enforced by its cgroup where the controllers are
            // delegated (the supervisor notes in the job's log where they are not).
            cpuMax: cpuMilli.map { "\(max(1000, $0 * 100)) 100000" },
            memoryMax: memoryMiB.map { String($0 * 1_048_576) },
            tty: spec.interactive == nil ? nil : ttySocket(id, run: run),
            interactive: spec.interactive,
            hangup: runHangup
        )
        if let bad = runSpec.unwritable { return "\(bad) holds a NUL byte, which no program can be given" }
        // The run directory's files are not fsynced: they matter only while this machine is up (a crash of
        // the machine ends the run too, and the run is then lost whatever they say).
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if let tty = runSpec.tty {
                // Others may pass through it (each socket is its owner's), not list it.
                let ttyDir = URL(fileURLWithPath: tty).deletingLastPathComponent().path
                try FileManager.default.createDirectory(atPath: ttyDir, withIntermediateDirectories: true)
                chmod(ttyDir, 0o711)
            }
            try System.writeAtomically(Data(runSpec.encoded()), to: dir + "/spec", mode: 0o600, durable: false)
            let pid = try System.spawnDetached(supervisor, [dir], stdout: dir + "/supervisor.log")
            try? System.writeAtomically(
                Data("\(pid) \(System.startTime(of: pid) ?? 0)\n".utf8),
                to: dir + "/supervisor.pid",
                durable: false
            )
            tracked[id] = Tracked(
                run: run,
                directory: dir,
                supervisor: pid,
                pidfd: System.pidfd(pid),
                cgroup: runSpec.cgroup,
                log: runSpec.log,
                port: env["ALLOT_PORT"].flatMap { Int($0) }
            )
            logger.info(
                "Job started",
                metadata: [
                    "job.id": "\(id)", "job.run": "\(run)", "job.gpus": "\(visible)",
                    "supervisor.pid": "\(pid)",
                ]
            )
            return nil
        } catch {
            return "cannot start the job's supervisor: \(error)"
        }
    }

    /// The job's process group (its leader's pid), once the supervisor has started it and while the leader
    /// is the process recorded.
    func jobPID(_ id: JobID) -> Int32? {
        guard let t = tracked[id] else { return nil }
        return Self.recordedProcess(t.directory + "/pid")
    }

    /// A pid recorded as "PID STARTTIME" (or "PID"), if that process still exists; or, its group gone
    /// quiet, still the group to signal.
    static func recordedProcess(_ path: String) -> Int32? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let first = parts.first, let pid = Int32(first), pid > 1 else { return nil }
        let start = parts.count > 1 ? UInt64(parts[1]) : nil
        if System.alive(pid) { return System.same(pid, startTime: start) ? pid : nil }
        // The leader has exited; its group may live on.
        return kill(-pid, 0) == 0 ? pid : nil
    }

    /// Tells a job to stop: the stop signal to its whole tree now, SIGKILL when `left` seconds have passed
    /// (measured on the monotonic clock: a step of the wall clock neither hastens nor delays it).
    func stop(_ id: JobID, left grace: Double, why: String = "told to stop") {
        guard var t = tracked[id] else { return }
        if !t.termSent, let pid = jobPID(id) {
            JobTree.signal(stopSignal, cgroup: t.cgroup, group: pid)
            t.termSent = true
            note(t, "\(why): sent \(Self.signalName(stopSignal)), SIGKILL in \(Self.seconds(grace))")
        }
        t.killAt = min(t.killAt ?? .infinity, System.monotonic() + grace)
        tracked[id] = t
        logger.info("Job told to stop", metadata: ["job.id": "\(id)", "job.grace_s": "\(grace)", "reason": "\(why)"])
    }

    /// Kills the jobs whose grace has run out; looks for ended runs. Call every second or so.
    func poll() -> [Ended] {
        let now = System.monotonic()
        System.reapChildren()
        var ended: [Ended] = []
        for (id, t) in tracked {
            if let status = readStatus(t.directory) {
                end(id)
                ended.append(
                    Ended(
                        id: id,
                        run: t.run,
                        exit: status.exit,
                        error: status.error,
                        killed: t.killed,
                        endedAt: status.endedAt
                    )
                )
                continue
            }
            if let killAt = t.killAt {
                // Told to stop before its process was up: signal it as soon as its pid is known.
                if !t.termSent, let pid = jobPID(id) {
                    JobTree.signal(stopSignal, cgroup: t.cgroup, group: pid)
                    tracked[id]?.termSent = true
                }
                if now >= killAt, !t.killed, let pid = jobPID(id) {
                    JobTree.signal(SIGKILL, cgroup: t.cgroup, group: pid)
                    tracked[id]?.killed = true
                    note(t, "grace period over: sent SIGKILL")
                    logger.notice("Job killed after its grace period", metadata: ["job.id": "\(id)"])
                }
            }
            let gone = t.pidfd >= 0 ? System.exited(pidfd: t.pidfd) : !System.alive(t.supervisor)
            if gone, readStatus(t.directory) == nil {
                // The supervisor died (killed by hand, OOM) with the job perhaps still running: the job goes
                // too, so that nothing holds the GPUs when they are given out again.
                JobTree.killAll(cgroup: t.cgroup, group: jobPID(id) ?? 0)
                end(id)
                ended.append(
                    Ended(
                        id: id,
                        run: t.run,
                        exit: .lost(reason: "its supervisor vanished without a status"),
                        error: nil
                    )
                )
            }
        }
        return ended
    }

    /// Stops tracking a run.
    private func end(_ id: JobID) {
        if let fd = tracked[id]?.pidfd, fd >= 0 { close(fd) }
        tracked[id] = nil
    }

    /// Appends a line from allot to a job's log, so its owner sees why it was signalled.
    func note(_ t: Tracked, _ text: String) {
        let fd = open(t.log, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { return }
        let line = "allot: \(text)\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }

    static func signalName(_ sig: Int32) -> String {
        [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 9: "SIGKILL", 10: "SIGUSR1", 12: "SIGUSR2", 15: "SIGTERM"][sig]
            ?? "signal \(sig)"
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s)) s" : String(format: "%.1f s", s) }

    /// A run that has ended, if it has (what `job_exited` reports).
    func ended(_ id: JobID, run: Int) -> Ended? {
        guard let t = tracked[id], t.run == run, let status = readStatus(t.directory) else { return nil }
        end(id)
        return Ended(
            id: id,
            run: run,
            exit: status.exit,
            error: status.error,
            killed: t.killed,
            endedAt: status.endedAt
        )
    }

    func readStatus(_ dir: String) -> (exit: ExitStatus, error: String?, endedAt: Double)? {
        guard let data = FileManager.default.contents(atPath: dir + "/status"),
            let s = try? JSONDecoder().decode(RunStatus.self, from: data)
        else { return nil }
        if let sig = s.signal { return (.signaled(signal: sig), s.error, s.endedAt) }
        return (.exited(code: s.exitCode ?? 0), s.error, s.endedAt)
    }

    /// Takes back a run the state says is running, after a restart: still going (its supervisor is alive)
    /// → watched again; ended while the daemon was down → its status; neither → lost, and whatever is left
    /// of the job is killed first, so that nothing holds its GPUs.
    func adopt(_ job: Job) -> Ended? {
        let ended = reclaim(job.id, run: job.runs, gone: "it was running when allotd stopped")
        if ended == nil, job.state == .stopping {
            // From the logged wall times, once: then on the monotonic clock.
            tracked[job.id]?.killAt = System.monotonic() + job.graceLeft(at: Date().timeIntervalSince1970)
        }
        return ended
    }

    /// A run found on disk after a restart: ended → its status; supervisor still alive (same pid and start
    /// time) → tracked again, nil; neither → whatever is left of it is killed, and it is lost.
    private func reclaim(_ id: JobID, run: Int, gone: String) -> Ended? {
        let dir = runDirectory(id, run: run)
        if let s = readStatus(dir) { return Ended(id: id, run: run, exit: s.exit, error: s.error, endedAt: s.endedAt) }
        let cgroup = self.cgroup(id, run: run).flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        if let text = try? String(contentsOfFile: dir + "/supervisor.pid", encoding: .utf8) {
            let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
            if let pid = parts.first.flatMap({ Int32($0) }),
                System.same(pid, startTime: parts.count > 1 ? UInt64(parts[1]) : nil)
            {
                let spec = (try? Data(contentsOf: URL(fileURLWithPath: dir + "/spec"))).flatMap {
                    RunSpec(decoding: Array($0))
                }
                tracked[id] = Tracked(
                    run: run,
                    directory: dir,
                    supervisor: pid,
                    pidfd: System.pidfd(pid),
                    cgroup: cgroup,
                    log: logPath(id),
                    port: spec?.environment["ALLOT_PORT"].flatMap { Int($0) }
                )
                return nil
            }
        }
        let left = JobTree.killAll(cgroup: cgroup, group: Self.recordedProcess(dir + "/pid") ?? 0)
        if let cgroup { JobTree.remove(cgroup: cgroup) }
        return Ended(
            id: id,
            run: run,
            exit: .lost(
                reason: "\(gone), and its supervisor is gone without a status"
                    + (left > 0 ? " (its \(left) remaining process\(left == 1 ? " was" : "es were") killed)" : "")
            ),
            error: nil
        )
    }

    // MARK: On a node agent

    /// After an agent (re)starts: every run of the state dir not yet acknowledged to the controller —
    /// running ones (supervisor alive) are tracked again; ended ones are returned to be reported.
    func adoptAll() -> (running: [(JobID, Int)], ended: [Ended]) {
        var running: [(JobID, Int)] = []
        var ended: [Ended] = []
        let base = stateDir + "/jobs"
        for idText in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] {
            guard let raw = UInt64(idText) else { continue }
            let id = JobID(raw)
            for runText in (try? FileManager.default.contentsOfDirectory(atPath: "\(base)/\(idText)")) ?? [] {
                guard let run = Int(runText) else { continue }
                let dir = runDirectory(id, run: run)
                if FileManager.default.fileExists(atPath: dir + "/acked") { continue }
                if tracked[id]?.run == run {
                    running.append((id, run))
                } else if let e = reclaim(id, run: run, gone: "it was running when the agent stopped") {
                    ended.append(e)
                } else {
                    running.append((id, run))
                }
            }
        }
        return (running, ended)
    }

    /// Whether a run exists here at all (started before, running or ended): orders are idempotent.
    /// (Its directory is made first; runs of an older allotd have `spec.json` in it instead of `spec`.)
    func hasRun(_ id: JobID, run: Int) -> Bool {
        FileManager.default.fileExists(atPath: runDirectory(id, run: run))
    }

    /// The controller has recorded this end: it need not be reported again.
    func acknowledge(_ id: JobID, run: Int) {
        let dir = runDirectory(id, run: run)
        guard FileManager.default.fileExists(atPath: dir) else { return }
        try? System.writeAtomically(Data(), to: dir + "/acked")
    }
}
