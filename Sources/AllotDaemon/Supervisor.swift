import AllotProtocol
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
    var log: String
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
        let switching = getuid() == 0 && spec.uid != 0
        // The log is opened by the supervisor (root) and given to the owner, who can read it.
        let logFD = open(spec.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard logFD >= 0 else {
            return failed("cannot open the log file \(spec.log): \(String(cString: strerror(errno)))")
        }
        defer { close(logFD) }
        if getuid() == 0 { _ = fchown(logFD, spec.uid, spec.gid) }
        // The working directory must be enterable by the owner.
        if switching {
            if !canEnter(spec.workdir, uid: spec.uid, gid: spec.gid, groups: spec.groups) {
                return failed("user \(spec.uid) cannot enter the working directory \(spec.workdir)")
            }
        } else if access(spec.workdir, X_OK) != 0 {
            return failed("cannot enter the working directory \(spec.workdir): \(String(cString: strerror(errno)))")
        }
        var options = PlatformOptions()
        options.processGroupID = 0
        // The job runs as its owner. Not through Subprocess's own uid switch: that forks with a raw clone
        // and then calls setgroups/setuid, which in glibc wait on the parent's threads and can hang. A
        // small exec-er drops the ids instead: util-linux setpriv, or `allotd exec-as`.
        var command = spec.command
        if switching {
            let groups = spec.groups.map(String.init).joined(separator: ",")
            if access("/usr/bin/setpriv", X_OK) == 0 {
                command =
                    ["/usr/bin/setpriv", "--reuid", String(spec.uid), "--regid", String(spec.gid)]
                    + (groups.isEmpty ? ["--clear-groups"] : ["--groups", groups]) + ["--"] + command
            } else {
                command =
                    [System.executablePath(), "exec-as", "--uid", String(spec.uid), "--gid", String(spec.gid)]
                    + (groups.isEmpty ? [] : ["--groups", groups]) + ["--"] + command
            }
        }
        let executable: Executable =
            command[0].contains("/") ? .path(FilePath(command[0])) : .name(command[0])
        do {
            let result = try await Subprocess.run(
                executable,
                arguments: Arguments(Array(command.dropFirst())),
                environment: .custom(
                    Dictionary(
                        uniqueKeysWithValues: spec.environment.map {
                            (Environment.Key(stringLiteral: $0.key), $0.value)
                        }
                    )
                ),
                workingDirectory: FilePath(spec.workdir),
                platformOptions: options,
                input: .none,
                output: .fileDescriptor(FileDescriptor(rawValue: logFD), closeAfterSpawningProcess: false),
                error: .fileDescriptor(FileDescriptor(rawValue: logFD), closeAfterSpawningProcess: false)
            ) { execution in
                try? System.writeAtomically(Data("\(execution.processIdentifier.value)\n".utf8), to: directory + "/pid")
            }
            switch result.terminationStatus {
            case .exited(let code):
                return RunStatus(exitCode: code, signal: nil, error: nil, endedAt: Date().timeIntervalSince1970)
            case .signaled(let sig):
                return RunStatus(exitCode: nil, signal: sig, error: nil, endedAt: Date().timeIntervalSince1970)
            }
        } catch {
            return failed("cannot start \(spec.command[0]): \(error)")
        }
    }

    /// Whether a user (not root) can search a directory, by its mode bits.
    static func canEnter(_ path: String, uid: UInt32, gid: UInt32, groups: [UInt32]) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return false }
        if st.st_uid == uid { return st.st_mode & S_IXUSR != 0 }
        if st.st_gid == gid || groups.contains(st.st_gid) { return st.st_mode & S_IXGRP != 0 }
        return st.st_mode & S_IXOTH != 0
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

/// `allotd exec-as`: drops to a user's ids and execs a command (where util-linux setpriv is missing).
public enum ExecAs {
    public static func run(uid: UInt32, gid: UInt32, groups: [UInt32], command: [String]) -> Int32 {
        var g = groups.map { gid_t($0) }
        guard setgroups(g.count, &g) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
            FileHandle.standardError.write(
                Data("allotd exec-as: cannot switch to uid \(uid): \(String(cString: strerror(errno)))\n".utf8)
            )
            return 126
        }
        let argv = command.map { strdup($0) } + [nil]
        execvp(command[0], argv)
        FileHandle.standardError.write(
            Data("allot: cannot run \(command[0]): \(String(cString: strerror(errno)))\n".utf8)
        )
        return 127
    }
}
