import AllotProtocol
import CoreFoundation
import Foundation
import Subprocess
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// What the daemon hands a supervisor: everything needed to run one run of a job.
struct RunSpec: Codable, Sendable {
    var id: UInt64
    var run: Int
    var command: [String]
    var environment: [String: String]
    var workdir: String
    var uid: UInt32
    var gid: UInt32
    var groups: [UInt32]
    /// allotd's per-job log (opened by the supervisor).
    var log: String
    /// The owner's own output file, opened as the owner; nil: `log`.
    var output: String?
    /// The job's cgroup (cgroup v2), where allotd can make one: the whole process tree, to be killed.
    var cgroup: String?
    /// The daemon's socket, to report the end at once.
    var socket: String
}

/// What a supervisor leaves when the job has ended.
struct RunStatus: Codable, Sendable {
    var exitCode: Int32?
    var signal: Int32?
    /// Set when the job could not be started at all.
    var error: String?
    var endedAt: Double

    enum CodingKeys: String, CodingKey {
        case signal, error
        case exitCode = "exit_code"
        case endedAt = "ended_at"
    }
}

/// `allotd supervise RUNDIR`: runs one job and waits for it, so that the job outlives the daemon (in the
/// manner of containerd's shim or conmon). It records the job's pid (`pid`), then its exit status
/// (`status`, written atomically), and tells the daemon, which may be down: it reads `status` when it
/// comes back.
public enum Supervisor {
    public static func run(directory: String) async -> Int32 {
        let specData: Data
        let spec: RunSpec
        do {
            specData = try Data(contentsOf: URL(fileURLWithPath: directory + "/spec.json"))
            spec = try JSONDecoder().decode(RunSpec.self, from: specData)
        } catch {
            FileHandle.standardError.write(
                Data("allotd supervise: cannot read \(directory)/spec.json: \(error)\n".utf8)
            )
            return 1
        }
        let status = await runJob(spec, directory: directory)
        do {
            try System.writeAtomically(try JSONEncoder().encode(status), to: directory + "/status")
        } catch {
            FileHandle.standardError.write(Data("allotd supervise: cannot write \(directory)/status: \(error)\n".utf8))
            return 1
        }
        report(spec)
        return 0
    }

    static func runJob(_ spec: RunSpec, directory: String) async -> RunStatus {
        func failed(_ message: String) -> RunStatus {
            appendToLog(spec, "allot: \(message)\n")
            return RunStatus(exitCode: 127, signal: nil, error: message, endedAt: Date().timeIntervalSince1970)
        }
        let root = getuid() == 0
        // allotd's log is opened by the supervisor (root) and given to the owner, who can read it.
        let logFD = open(spec.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard logFD >= 0 else {
            return failed("cannot open the log file \(spec.log): \(String(cString: strerror(errno)))")
        }
        defer { close(logFD) }
        if root { _ = fchown(logFD, spec.uid, spec.gid) }
        if System.user(uid: spec.uid) == nil, root {
            return failed("user \(spec.uid) no longer exists")
        }
        // The working directory is entered by allot-exec, as the owner (ACLs and all): a refusal comes back
        // through its report file below.
        if let cg = spec.cgroup, mkdir(cg, 0o755) != 0, errno != EEXIST {
            return failed("cannot make the job's cgroup \(cg): \(String(cString: strerror(errno)))")
        }
        var options = PlatformOptions()
        options.processGroupID = 0
        // The job runs as its owner through `allotd exec-as`, which joins the job's cgroup, drops to the
        // owner's ids, opens the owner's output file as the owner, enters the working directory, and execs.
        // Not through Subprocess's own uid switch: that forks with a raw clone and then calls
        // setgroups/setuid, which in glibc wait on the parent's threads and can hang.
        let errorFile = directory + "/exec-error"
        unlink(errorFile)
        var command = Self.execHelper() + ["--report", errorFile, "--workdir", spec.workdir]
        if root {
            command += ["--uid", String(spec.uid), "--gid", String(spec.gid)]
            if !spec.groups.isEmpty { command += ["--groups", spec.groups.map(String.init).joined(separator: ",")] }
        }
        if let o = spec.output { command += ["--output", o] }
        if let cg = spec.cgroup { command += ["--cgroup", cg] }
        command += ["--"] + spec.command
        var status: RunStatus
        var leader: Int32 = 0
        do {
            let result = try await Subprocess.run(
                .path(FilePath(command[0])),
                arguments: Arguments(Array(command.dropFirst())),
                environment: .custom(
                    Dictionary(
                        uniqueKeysWithValues: spec.environment.map {
                            (Environment.Key(stringLiteral: $0.key), $0.value)
                        }
                    )
                ),
                workingDirectory: FilePath("/"),
                platformOptions: options,
                input: .none,
                output: .fileDescriptor(FileDescriptor(rawValue: logFD), closeAfterSpawningProcess: false),
                error: .fileDescriptor(FileDescriptor(rawValue: logFD), closeAfterSpawningProcess: false)
            ) { execution in
                let pid = execution.processIdentifier.value
                try? System.writeAtomically(
                    Data("\(pid) \(System.startTime(of: pid) ?? 0)\n".utf8),
                    to: directory + "/pid"
                )
            }
            leader =
                Int32(
                    (try? String(contentsOfFile: directory + "/pid", encoding: .utf8))?.split(separator: " ").first
                        ?? ""
                ) ?? 0
            let now = Date().timeIntervalSince1970
            switch result.terminationStatus {
            case .exited(let code):
                status = RunStatus(exitCode: code, signal: nil, error: nil, endedAt: now)
            case .signaled(let sig):
                status = RunStatus(exitCode: nil, signal: sig, error: nil, endedAt: now)
            }
        } catch {
            status = failed("cannot start \(spec.command[0]): \(error)")
        }
        // allot-exec could not run the command: its reason.
        if let data = FileManager.default.contents(atPath: errorFile), !data.isEmpty {
            var why = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if why.hasPrefix("allot: ") { why.removeFirst(7) }
            status.error = why
        }
        // The leader is gone: what it left behind (daemonised children, workers) goes too, before the GPUs
        // are given to anyone else.
        let left = JobTree.killAll(cgroup: spec.cgroup, group: leader)
        if left > 0 {
            appendToLog(spec, "allot: killed \(left) process\(left == 1 ? "" : "es") the job left behind\n")
        }
        if let cg = spec.cgroup { JobTree.remove(cgroup: cg) }
        return status
    }

    /// `allot-exec` next to allotd (small C, about a millisecond), else `allotd exec-as` (the same in Swift).
    static func execHelper() -> [String] {
        let me = System.executablePath()
        let helper = (me as NSString).deletingLastPathComponent + "/allot-exec"
        return access(helper, X_OK) == 0 ? [helper] : [me, "exec-as"]
    }

    static func appendToLog(_ spec: RunSpec, _ text: String) {
        let fd = open(spec.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { return }
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }

    /// Tells the daemon the job ended (best effort: if it is down, it finds `status` when it comes back).
    static func report(_ spec: RunSpec) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array(spec.socket.utf8)
        guard path.count < MemoryLayout.size(ofValue: addr.sun_path) else { return }
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in path.enumerated() { buf[i] = b }
            buf[path.count] = 0
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard ok == 0 else { return }
        let line =
            #"{"jsonrpc":"2.0","id":1,"method":"job_exited","params":{"id":\#(spec.id),"run":\#(spec.run)}}"# + "\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        var buffer = [UInt8](repeating: 0, count: 512)
        _ = read(fd, &buffer, buffer.count)
    }
}

/// `allotd exec-as`: what runs between the supervisor and the job. As root it joins the job's cgroup and
/// drops to the owner's ids; then, as the owner, it opens the owner's output file, enters the working
/// directory and execs the command. A failure before the exec is written to the report file (opened
/// first, closed by the exec) and ends it with 126 or 127.
public enum ExecAs {
    public struct Options: Sendable {
        public var uid: UInt32?
        public var gid: UInt32?
        public var groups: [UInt32] = []
        public var workdir: String?
        public var output: String?
        public var cgroup: String?
        public var report: String?
        public var command: [String] = []
        public init() {}
    }

    /// Parses `--uid N --gid N --groups A,B --workdir D --output P --cgroup C --report R -- COMMAND…`.
    public static func parse(_ args: [String]) -> Result<Options, ParseFailure> {
        var o = Options()
        var i = 0
        func value(_ flag: String) -> String? {
            guard i + 1 < args.count else { return nil }
            i += 1
            return args[i]
        }
        while i < args.count {
            let a = args[i]
            if a == "--" {
                o.command = Array(args[(i + 1)...])
                break
            }
            guard let v = value(a) else { return .failure(ParseFailure(message: "\(a) needs a value")) }
            switch a {
            case "--uid":
                guard let n = UInt32(v) else { return .failure(ParseFailure(message: "--uid: not a uid: \(v)")) }
                o.uid = n
            case "--gid":
                guard let n = UInt32(v) else { return .failure(ParseFailure(message: "--gid: not a gid: \(v)")) }
                o.gid = n
            case "--groups": o.groups = v.split(separator: ",").compactMap { UInt32($0) }
            case "--workdir": o.workdir = v
            case "--output": o.output = v
            case "--cgroup": o.cgroup = v
            case "--report": o.report = v
            default: return .failure(ParseFailure(message: "unknown option \(a)"))
            }
            i += 1
        }
        if o.command.isEmpty { return .failure(ParseFailure(message: "give the command after --")) }
        if (o.uid == nil) != (o.gid == nil) { return .failure(ParseFailure(message: "give --uid and --gid together")) }
        return .success(o)
    }

    public struct ParseFailure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public static func run(_ o: Options) -> Int32 {
        let reportFD = o.report.map { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) } ?? -1
        func fail(_ message: String, _ code: Int32) -> Int32 {
            let line = "allot: \(message)\n"
            FileHandle.standardError.write(Data(line.utf8))
            if reportFD >= 0 { _ = line.withCString { write(reportFD, $0, strlen($0)) } }
            return code
        }
        func why() -> String { String(cString: strerror(errno)) }
        if let cg = o.cgroup {
            let fd = open(cg + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
            guard fd >= 0, write(fd, "0", 1) == 1 else {
                return fail("cannot join the job's cgroup \(cg): \(why())", 126)
            }
            close(fd)
        }
        if let uid = o.uid, let gid = o.gid {
            var g = o.groups.map { gid_t($0) }
            guard setgroups(g.count, &g) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
                return fail("cannot switch to uid \(uid): \(why())", 126)
            }
        }
        if let out = o.output {
            let fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            guard fd >= 0 else { return fail("cannot open the output file \(out): \(why())", 126) }
            dup2(fd, 1)
            dup2(fd, 2)
            if fd > 2 { close(fd) }
        }
        if let dir = o.workdir, chdir(dir) != 0 {
            return fail("cannot enter the working directory \(dir): \(why())", 126)
        }
        guard let first = o.command.first else { return fail("no command to run", 127) }
        // The job starts as a fresh process would: no signal blocked (this thread of the Swift runtime
        // blocks most, and the mask survives exec), none ignored. Else a job's SIGTERM trap never runs.
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        for sig in 1..<65 where sig != SIGKILL && sig != SIGSTOP { signal(Int32(sig), SIG_DFL) }
        let argv = o.command.map { strdup($0) } + [nil]
        execvp(first, argv)
        return fail("cannot run \(first): \(why())", errno == ENOENT ? 127 : 126)
    }
}
