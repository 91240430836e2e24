import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A job's whole process tree: its process group and, where allotd can make one, its own cgroup (v2), which
/// also holds what left the group (daemonised children, `setsid` workers).
enum JobTree {
    /// Where job cgroups go: a directory under allotd's own cgroup on the cgroup2 mount, or nil where
    /// there is none or it is not writable (not root; cgroup v1 only). Under systemd the unit needs
    /// `Delegate=yes`.
    static func cgroupBase(stateDir: String) -> String? {
        guard getuid() == 0, let mount = cgroup2Mount(),
            let own = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)
        else { return nil }
        guard let line = own.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) else { return nil }
        var path = String(line.dropFirst(3))
        if path.hasSuffix(" (deleted)") { return nil }
        if path == "/" { path = "" }
        // One directory per state dir: several daemons (tests) may share a cgroup.
        var h: UInt32 = 2_166_136_261
        for b in stateDir.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        let base = mount + path + "/allot-jobs-" + String(h, radix: 16)
        if mkdir(base, 0o755) != 0 && errno != EEXIST { return nil }
        guard access(base + "/cgroup.procs", W_OK) == 0 else { return nil }
        // Jobs' CPU and memory limits need the cpu and memory controllers in their cgroups: enable them
        // below the base (and below allotd's own cgroup, which works where that holds no process, as at the
        // root). Where they cannot be had, jobs run unlimited and their logs say so.
        for dir in [mount + path, base] {
            for controller in ["+cpu", "+memory"] {
                let fd = open(dir + "/cgroup.subtree_control", O_WRONLY | O_CLOEXEC)
                if fd >= 0 {
                    _ = write(fd, controller, controller.utf8.count)
                    close(fd)
                }
            }
        }
        return base
    }

    /// The cgroup2 mount point, from /proc/self/mountinfo.
    static func cgroup2Mount() -> String? {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in info.split(separator: "\n") {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS … - FSTYPE SOURCE SUPEROPTIONS
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            if fields.count > 4 { return String(fields[4]) }
        }
        return nil
    }

    /// The processes in a cgroup.
    static func members(_ cgroup: String) -> [Int32] {
        guard let text = try? String(contentsOfFile: cgroup + "/cgroup.procs", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    /// Sends a signal to the whole tree: the process group and every process of the cgroup.
    static func signal(_ sig: Int32, cgroup: String?, group: Int32) {
        if group > 1 { kill(-group, sig) }
        if let cgroup {
            if sig == SIGKILL, let fd = Optional(open(cgroup + "/cgroup.kill", O_WRONLY | O_CLOEXEC)), fd >= 0 {
                _ = write(fd, "1", 1)
                close(fd)
                return
            }
            for pid in members(cgroup) where pid > 1 { kill(pid, sig) }
        }
    }

    /// Kills every process left in the tree and waits (up to 5 s) until it is empty.
    /// - Returns: how many processes there were.
    @discardableResult
    static func killAll(cgroup: String?, group: Int32) -> Int {
        var count = cgroup.map { members($0).count } ?? 0
        if cgroup == nil, group > 1, kill(-group, 0) == 0 { count = 1 }
        guard count > 0 else { return 0 }
        for _ in 0..<100 {
            signal(SIGKILL, cgroup: cgroup, group: group)
            let empty = cgroup.map { members($0).isEmpty } ?? (kill(-group, 0) != 0)
            if empty { break }
            usleep(50_000)
        }
        return count
    }

    /// Removes an (empty) job cgroup.
    static func remove(cgroup: String) {
        for _ in 0..<50 {
            if rmdir(cgroup) == 0 || errno == ENOENT { return }
            usleep(20_000)
        }
    }
}

extension System {
    /// A process's start time (clock ticks after boot, field 22 of /proc/PID/stat): with the pid, it names
    /// the process for good (pids are reused).
    static func startTime(of pid: Int32) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // Fields after the command name: state is field 3, start time field 22.
        let rest = text[text.index(after: close)...].split(separator: " ")
        return rest.count > 19 ? UInt64(rest[19]) : nil
    }

    /// Whether a process recorded as `pid` with `startTime` is still that process.
    static func same(_ pid: Int32, startTime: UInt64?) -> Bool {
        guard pid > 0, alive(pid) else { return false }
        guard let startTime, startTime != 0 else { return true }
        return self.startTime(of: pid) == startTime
    }

    /// A pidfd for a process (Linux ≥ 5.3), to watch it without pid reuse races; -1 where unavailable.
    static func pidfd(_ pid: Int32) -> Int32 {
        typealias Fn = @convention(c) (pid_t, UInt32) -> Int32
        guard let sym = dlsym(nil, "pidfd_open") else { return -1 }
        return unsafeBitCast(sym, to: Fn.self)(pid, 0)
    }

    /// Whether the process behind a pidfd has exited.
    static func exited(pidfd fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1
    }

    /// Runs a program, waits for it (at most `timeout` seconds, then kills it) and returns its output
    /// (standard output and error together).
    static func capture(
        _ path: String,
        _ arguments: [String],
        timeout: Double
    ) throws -> (status: Int32, stdout: String) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SpawnError(path: path, errno: errno) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        addCloseFrom(&actions, 3)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw SpawnError(path: path, errno: rc)
        }
        var out = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let deadline = Date().timeIntervalSince1970 + timeout
        while true {
            var p = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
            let left = Int32(max(0, (deadline - Date().timeIntervalSince1970) * 1000))
            if left == 0 {
                kill(pid, SIGKILL)
                break
            }
            if poll(&p, 1, min(left, 1000)) <= 0 { continue }
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            out.append(contentsOf: buffer[0..<n])
        }
        close(fds[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, String(decoding: out, as: UTF8.self))
    }
}
