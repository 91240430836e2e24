import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real `allotd` on a temporary state directory and socket, driven with the real `allotctl`.
final class DaemonFixture {
    let dir: URL
    let config: URL
    let socket: String
    let stateDir: String
    private(set) var process: ChildProcess?
    /// Extra environment for allotd.
    var environment: [String: String] = [:]
    /// More arguments for `allotd` (after --config and --log-level).
    var extraArguments: [String] = []
    var logPath: String { dir.appendingPathComponent("allotd.log").path }

    /// A small pool: one 4-GPU A100 node and one 2-GPU L4 node, both run by this daemon; no minimum run
    /// time before preemption, short grace periods.
    static let defaultPool = """
        [scheduler]
        default_grace = "2s"
        interval = "1s"

        [preemption]
        min_runtime = "0s"
        loan_grace = "1s"

        [[gpu_model]]
        name = "A100"
        memory_gib = 80
        price_per_hour = 2.0
        speed = 1.0

        [[gpu_model]]
        name = "L4"
        memory_gib = 24
        price_per_hour = 0.5
        speed = 0.25

        [[node]]
        name = "a1"
        gpu_model = "A100"
        gpus = 4

        [[node]]
        name = "l1"
        gpu_model = "L4"
        gpus = 2

        """

    init(pool: String = DaemonFixture.defaultPool, daemon extra: String = "", start: Bool = true) throws {
        // Unix socket paths are short (108 bytes): a short directory under /tmp.
        dir = URL(fileURLWithPath: "/tmp/allot-e2e-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        chmod(dir.path, 0o755)
        socket = dir.appendingPathComponent("s.sock").path
        stateDir = dir.appendingPathComponent("state").path
        config = dir.appendingPathComponent("allotd.toml")
        try writeConfig(pool: pool, daemon: extra)
        if start { try self.start() }
    }

    deinit {
        if let p = process {
            p.signal(SIGKILL)
            _ = p.wait()
        }
        // Jobs that outlived the test: their supervisors run in their own sessions.
        killJobs()
        removeJobCgroups()
        try? FileManager.default.removeItem(at: dir)
    }

    /// This fixture's job cgroups (allotd makes them under its own cgroup, which is ours, when run as root).
    var jobCgroupBase: String? { Self.jobCgroupBase(stateDir: stateDir) }

    /// Where an allotd (or agent) with this state directory makes its job cgroups (under its own cgroup,
    /// which is ours), when run as root.
    static func jobCgroupBase(stateDir: String) -> String? {
        guard getuid() == 0, let mount = cgroup2Mount(),
            let own = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
            let line = own.split(separator: "\n").first(where: { $0.hasPrefix("0::") })
        else { return nil }
        var path = String(line.dropFirst(3))
        if path == "/" { path = "" }
        var h: UInt32 = 2_166_136_261
        for b in stateDir.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        let base = mount + path + "/allot-jobs-" + String(h, radix: 16)
        return FileManager.default.fileExists(atPath: base) ? base : nil
    }

    func removeJobCgroups() { Self.removeJobCgroups(stateDir: stateDir) }

    /// Kills what is left in the job cgroups of a state directory and removes them.
    static func removeJobCgroups(stateDir: String) {
        guard let base = jobCgroupBase(stateDir: stateDir) else { return }
        for job in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] where job.hasPrefix("job-") {
            try? "1".write(toFile: "\(base)/\(job)/cgroup.kill", atomically: false, encoding: .utf8)
            for _ in 0..<50 where rmdir("\(base)/\(job)") != 0 { usleep(20_000) }
        }
        rmdir(base)
    }

    static func cgroup2Mount() -> String? {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in info.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            if fields.count > 4 { return String(fields[4]) }
        }
        return nil
    }

    func writeConfig(pool: String, daemon extra: String = "") throws {
        let text =
            pool + """

                [daemon]
                state_dir = "\(stateDir)"
                socket = "\(socket)"
                local_nodes = ["a*", "l*"]
                \(extra)

                [wal]
                sync = "batch"

                """
        try text.write(to: config, atomically: true, encoding: .utf8)
    }

    /// Starts allotd and waits until it answers.
    func start() throws {
        let p = try ChildProcess(
            Harness.binDir.appendingPathComponent("allotd").path,
            ["--config", config.path, "--log-level", "debug"] + extraArguments,
            output: logPath,
            environment: environment
        )
        process = p
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let status = p.exitStatus() {
                process = nil
                throw FixtureError("allotd exited with \(status) at start:\n\(daemonLog)")
            }
            if ctl(["status", "--json"]).status == 0 { return }
            usleep(20_000)
        }
        throw FixtureError("allotd did not answer within 30 s:\n\(daemonLog)")
    }

    /// SIGTERM, and waits for it to exit. Returns its exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM) -> Int32 {
        guard let p = process else { return -1 }
        p.signal(signal)
        process = nil
        return p.wait()
    }

    /// Sends a signal without waiting.
    func signal(_ sig: Int32) { process?.signal(sig) }

    var isRunning: Bool { process.map { $0.exitStatus() == nil } ?? false }

    var daemonLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Runs allotctl against this daemon (optionally as another user, through runuser).
    func ctl(_ args: [String], as user: String? = nil, stdin: String? = nil) -> Harness.Output {
        do {
            if let user {
                // From binaries and a directory that user can reach, wherever the checkout lives.
                return try Harness.run(
                    "/usr/sbin/runuser",
                    [
                        "-u", user, "--", "/usr/bin/env", "ALLOT_SOCKET=\(socket)",
                        try Harness.binDirForOtherUsers().appendingPathComponent("allotctl").path,
                    ]
                        + args,
                    stdin: stdin,
                    absolute: true,
                    directory: URL(fileURLWithPath: "/")
                )
            }
            return try Harness.run("allotctl", args, environment: ["ALLOT_SOCKET": socket], stdin: stdin)
        } catch {
            return Harness.Output(status: -1, stdout: "", stderr: "\(error)")
        }
    }

    /// `allotctl show ID --json` as an object.
    func job(_ id: Int) -> [String: Any]? {
        let r = ctl(["show", String(id), "--json"])
        guard r.status == 0 else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
    }

    func state(_ id: Int) -> String? { job(id)?["state"] as? String }

    /// Submits and returns the id.
    func submit(_ args: [String], as user: String? = nil) throws -> Int {
        let r = ctl(["submit"] + args, as: user)
        guard r.status == 0, let id = Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw FixtureError("submit \(args) failed (\(r.status)): \(r.stderr)")
        }
        return id
    }

    /// Waits until a job reaches a state; returns how long it took.
    @discardableResult
    func wait(_ id: Int, for state: String, timeout: Double = 20) throws -> Double {
        let start = Date()
        var last: String?
        while Date().timeIntervalSince(start) < timeout {
            last = self.state(id)
            if last == state { return Date().timeIntervalSince(start) }
            usleep(50_000)
        }
        throw FixtureError(
            "job \(id) is \(last ?? "unknown"), not \(state), after \(timeout) s\n\(daemonLog.suffix(3000))"
        )
    }

    /// What a job's run directories hold, for failure messages.
    func runFiles(_ id: Int) -> String {
        let base = "\(stateDir)/jobs/\(id)"
        var out = ""
        for run in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] {
            for file in (try? FileManager.default.contentsOfDirectory(atPath: base + "/" + run)) ?? []
            where file != "spec.json" {
                let text = (try? String(contentsOfFile: "\(base)/\(run)/\(file)", encoding: .utf8)) ?? "?"
                out += "\(run)/\(file): \(text.suffix(500))\n"
            }
        }
        return out.isEmpty ? "(no run directory)" : out
    }

    /// A pid a job's newest run recorded ("pid": the job's leader; "supervisor.pid").
    func recordedPID(_ id: Int, _ file: String) -> Int32? {
        let base = "\(stateDir)/jobs/\(id)"
        let runs = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap { Int($0) }
        guard let run = runs.max(),
            let text = try? String(contentsOfFile: "\(base)/\(run)/\(file)", encoding: .utf8)
        else { return nil }
        return Int32(text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first ?? "")
    }

    /// Kills every process of this fixture's jobs (by their recorded pids).
    func killJobs() { Self.killJobs(stateDir: stateDir) }

    /// Kills every process of the jobs of a state directory (allotd's or an agent's), by their recorded pids.
    static func killJobs(stateDir: String) {
        let jobs = stateDir + "/jobs"
        guard let ids = try? FileManager.default.contentsOfDirectory(atPath: jobs) else { return }
        for id in ids {
            guard let runs = try? FileManager.default.contentsOfDirectory(atPath: jobs + "/" + id) else { continue }
            for run in runs {
                for file in ["pid", "supervisor.pid"] {
                    if let t = try? String(contentsOfFile: "\(jobs)/\(id)/\(run)/\(file)", encoding: .utf8),
                        let pid = Int32(t.split(whereSeparator: { $0 == " " || $0 == "\n" }).first ?? ""), pid > 1
                    {
                        kill(-pid, SIGKILL)
                        kill(pid, SIGKILL)
                    }
                }
            }
        }
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A raw connection to the control socket, for what allotctl never sends.
final class RawClient {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in bytes.enumerated() { buf[i] = b }
            buf[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else { throw FixtureError("cannot connect to \(path)") }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// Writes bytes; false once the daemon has closed the connection.
    @discardableResult
    func write(_ s: String) -> Bool { write(Array(s.utf8)) }

    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    /// Reads one line (nil at end of stream or after 10 s).
    func readLine() -> String? {
        var line: [UInt8] = []
        var b: UInt8 = 0
        while true {
            let n = read(fd, &b, 1)
            if n <= 0 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            if b == 10 { return String(decoding: line, as: UTF8.self) }
            line.append(b)
        }
    }
}

/// A child process started with posix_spawn and waited for with waitpid, from any thread (Foundation's
/// Process delivers its end on the run loop of the thread that started it, which tests do not run).
final class ChildProcess {
    let pid: pid_t
    private var status: Int32?

    init(_ path: String, _ args: [String], output: String, environment extra: [String: String] = [:]) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of ours: an inherited listening socket would outlive us and swallow connections.
        addCloseFrom(&actions, 3)
        let argv = ([path] + args).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        // The test's threads block signals; the child must not inherit that (SIGTERM would never arrive).
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var pid: pid_t = 0
        var env = ProcessInfo.processInfo.environment
        for (k, v) in extra { env[k] = v }
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in envp { free(p) } }
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, envp)
        guard rc == 0 else { throw FixtureError("cannot start \(path): \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    func signal(_ sig: Int32) {
        if status == nil { kill(pid, sig) }
    }

    /// The exit status (128 + signal when killed), once it has ended.
    func exitStatus() -> Int32? {
        if let status { return status }
        var s: Int32 = 0
        guard waitpid(pid, &s, WNOHANG) == pid else { return nil }
        status = Self.decode(s)
        return status
    }

    /// Waits for it to end.
    func wait() -> Int32 {
        if let status { return status }
        var s: Int32 = 0
        while waitpid(pid, &s, 0) < 0 && errno == EINTR {}
        status = Self.decode(s)
        return status!
    }

    static func decode(_ s: Int32) -> Int32 {
        let sig = s & 0x7f
        return sig == 0 ? (s >> 8) & 0xff : 128 + sig
    }
}

/// `posix_spawn_file_actions_addclosefrom_np` (glibc ≥ 2.34), which Swift does not import: closes every
/// descriptor from `low` up in the child.
func addCloseFrom(_ actions: inout posix_spawn_file_actions_t, _ low: Int32) {
    typealias Fn = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let sym = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return }
    _ = unsafeBitCast(sym, to: Fn.self)(&actions, low)
}
