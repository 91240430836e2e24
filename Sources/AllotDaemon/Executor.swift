import AllotCore
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Runs the jobs of this host's nodes. Each run has a directory `STATE/jobs/ID/RUN/` holding the supervisor's
/// spec, the job's pid and, once it has ended, its status. Used from the engine's task only.
final class Executor {
    struct Tracked {
        var run: Int
        var directory: String
        var supervisor: Int32
        /// When the job was told to stop and how long it has: it is killed after that.
        var killAt: Double?
        /// Whether SIGTERM reached the job (its pid may not be known yet when it is told to stop).
        var termSent = false
        var killed = false
    }

    /// How a tracked run ended.
    struct Ended {
        var id: JobID
        var run: Int
        var exit: ExitStatus
        /// Why it could not run, when it could not.
        var error: String?
    }

    let stateDir: String
    let logDir: String
    let socket: String
    let executable: String
    let logger: Logger
    private(set) var tracked: [JobID: Tracked] = [:]

    init(stateDir: String, logDir: String, socket: String, logger: Logger) {
        self.stateDir = stateDir
        self.logDir = logDir
        self.socket = socket
        self.executable = System.executablePath()
        self.logger = logger
        try? FileManager.default.createDirectory(atPath: stateDir + "/jobs", withIntermediateDirectories: true)
        try? FileManager.default.createDirectory(atPath: logDir, withIntermediateDirectories: true)
    }

    func logPath(_ id: JobID) -> String { "\(logDir)/\(id).log" }
    func runDirectory(_ id: JobID, run: Int) -> String { "\(stateDir)/jobs/\(id)/\(run)" }

    /// Starts a run of a job on this host's GPUs.
    /// - Returns: a sentence when it cannot be started (the job then fails with it).
    /// The job's process runs once, on the first node of its allocation (as a Slurm batch script does);
    /// `ALLOT_NODES` lists every slice for jobs that span nodes.
    func start(_ job: Job, slices: [Allocation.Slice]) -> String? {
        let spec = job.spec
        let gpus = slices.first?.gpus ?? []
        let node = slices.first?.node ?? ""
        let allGPUs = slices.reduce(0) { $0 + $1.gpus.count }
        let dir = runDirectory(job.id, run: job.runs)
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
        let visible = gpus.map(String.init).joined(separator: ",")
        var env = spec.environment
        env["HOME"] = env["HOME"] ?? home
        env["USER"] = userName
        env["LOGNAME"] = userName
        env["PATH"] = env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        env["CUDA_VISIBLE_DEVICES"] = visible
        env["NVIDIA_VISIBLE_DEVICES"] = visible
        env["ALLOT_JOB_ID"] = job.id.description
        env["ALLOT_JOB_NAME"] = spec.name
        env["ALLOT_RUN"] = String(job.runs)
        env["ALLOT_NODE"] = node
        env["ALLOT_GPUS"] = String(allGPUs)
        env["ALLOT_NODES"] = slices.map { "\($0.node):\(Allocation.ranges($0.gpus))" }.joined(separator: ",")
        env["ALLOT_USER"] = userName
        env["ALLOT_TENANT"] = spec.tenant
        env["ALLOT_KIND"] = spec.kind.rawValue
        let run = RunSpec(
            id: job.id.rawValue,
            run: job.runs,
            command: spec.command,
            environment: env,
            workdir: spec.workingDirectory ?? home,
            uid: uid,
            gid: gid,
            groups: groups,
            log: logPath(job.id),
            socket: socket
        )
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try System.writeAtomically(try JSONEncoder().encode(run), to: dir + "/spec.json", mode: 0o600)
            let pid = try System.spawnDetached(executable, ["supervise", dir], stdout: dir + "/supervisor.log")
            try? System.writeAtomically(Data("\(pid)\n".utf8), to: dir + "/supervisor.pid")
            tracked[job.id] = Tracked(run: job.runs, directory: dir, supervisor: pid)
            logger.info(
                "Job started",
                metadata: [
                    "job.id": "\(job.id)", "job.run": "\(job.runs)", "job.gpus": "\(visible)",
                    "supervisor.pid": "\(pid)",
                ]
            )
            return nil
        } catch {
            return "cannot start the job's supervisor: \(error)"
        }
    }

    /// The job's process group (its pid), once the supervisor has started it.
    func jobPID(_ id: JobID) -> Int32? {
        guard let t = tracked[id], let text = try? String(contentsOfFile: t.directory + "/pid", encoding: .utf8) else {
            return nil
        }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Tells a job to stop: SIGTERM to its process group now, SIGKILL when `grace` has passed.
    func stop(_ id: JobID, grace: Double, now: Double) {
        guard var t = tracked[id] else { return }
        if !t.termSent, let pid = jobPID(id) {
            System.signalGroup(pid, SIGTERM)
            t.termSent = true
        }
        t.killAt = min(t.killAt ?? .infinity, now + grace)
        tracked[id] = t
        logger.info("Job told to stop", metadata: ["job.id": "\(id)", "job.grace_s": "\(grace)"])
    }

    /// Kills the jobs whose grace has run out; looks for ended runs. Call every second or so.
    func poll(now: Double) -> [Ended] {
        System.reapChildren()
        var ended: [Ended] = []
        for (id, t) in tracked {
            if let status = readStatus(t.directory) {
                tracked[id] = nil
                ended.append(Ended(id: id, run: t.run, exit: status.exit, error: status.error))
                continue
            }
            if let killAt = t.killAt {
                // Told to stop before its process was up: signal it as soon as its pid is known.
                if !t.termSent, let pid = jobPID(id) {
                    System.signalGroup(pid, SIGTERM)
                    tracked[id]?.termSent = true
                }
                if now >= killAt, !t.killed, let pid = jobPID(id) {
                    System.signalGroup(pid, SIGKILL)
                    tracked[id]?.killed = true
                    logger.notice("Job killed after its grace period", metadata: ["job.id": "\(id)"])
                }
            }
            if !System.alive(t.supervisor), readStatus(t.directory) == nil {
                tracked[id] = nil
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

    /// A run that has ended, if it has (what `job_exited` reports).
    func ended(_ id: JobID, run: Int) -> Ended? {
        guard let t = tracked[id], t.run == run, let status = readStatus(t.directory) else { return nil }
        tracked[id] = nil
        return Ended(id: id, run: run, exit: status.exit, error: status.error)
    }

    func readStatus(_ dir: String) -> (exit: ExitStatus, error: String?)? {
        guard let data = FileManager.default.contents(atPath: dir + "/status"),
            let s = try? JSONDecoder().decode(RunStatus.self, from: data)
        else { return nil }
        if let sig = s.signal { return (.signaled(signal: sig), s.error) }
        return (.exited(code: s.exitCode ?? 0), s.error)
    }

    /// Takes back a run the state says is running, after a restart: still going (its supervisor is alive)
    /// → watched again; ended while the daemon was down → its status; neither → lost.
    func adopt(_ job: Job) -> Ended? {
        let dir = runDirectory(job.id, run: job.runs)
        if let s = readStatus(dir) { return Ended(id: job.id, run: job.runs, exit: s.exit, error: s.error) }
        if let text = try? String(contentsOfFile: dir + "/supervisor.pid", encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), System.alive(pid)
        {
            tracked[job.id] = Tracked(run: job.runs, directory: dir, supervisor: pid)
            if job.state == .stopping, let at = job.stopRequestedAt {
                tracked[job.id]?.killAt = at.seconds + (job.grace ?? 0)
            }
            return nil
        }
        return Ended(
            id: job.id,
            run: job.runs,
            exit: .lost(reason: "it was running when allotd stopped, and its supervisor is gone"),
            error: nil
        )
    }
}
