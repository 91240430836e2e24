import CoreFoundation
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// glibc's `struct ucred`, which Swift does not see: what SO_PEERCRED fills in.
struct PeerCredentials: Sendable, Hashable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

enum System {
    /// The credentials of the process at the other end of a Unix socket.
    static func peerCredentials(of fd: Int32) -> PeerCredentials? {
        var creds = PeerCredentials()
        var len = socklen_t(MemoryLayout<PeerCredentials>.size)
        let rc = withUnsafeMutablePointer(to: &creds) { getsockopt(fd, SOL_SOCKET, SO_PEERCRED, $0, &len) }
        return rc == 0 ? creds : nil
    }

    /// The owner of a file, if it can be read.
    static func owner(of path: String) -> uid_t? {
        var st = Glibc.stat()
        return stat(path, &st) == 0 ? st.st_uid : nil
    }

    /// A user's name, home and primary group, by uid.
    static func user(uid: UInt32) -> (name: String, home: String, gid: UInt32, shell: String)? {
        var pwd = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwuid_r(uid, &pwd, &buffer, buffer.count, &result) == 0, let p = result else { return nil }
        return (
            String(cString: p.pointee.pw_name), String(cString: p.pointee.pw_dir), p.pointee.pw_gid,
            String(cString: p.pointee.pw_shell)
        )
    }

    /// A uid by user name.
    static func uid(named name: String) -> UInt32? {
        var pwd = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwnam_r(name, &pwd, &buffer, buffer.count, &result) == 0, let p = result else { return nil }
        return p.pointee.pw_uid
    }

    /// A group's name, if it has one.
    static func groupName(gid: UInt32) -> String? {
        guard let g = getgrgid(gid), let name = g.pointee.gr_name else { return nil }
        return String(cString: name)
    }

    /// Why user `uid` (in groups `gids`) could not enter directory `path` on this host, if it could not:
    /// it does not exist, is not a directory, or a directory on the way denies search permission. Nil
    /// when it can, or when this process cannot tell (it may not look there itself).
    static func entryProblem(_ path: String, uid: UInt32, gids: [UInt32]) -> String? {
        guard path.hasPrefix("/") else { return "\(path) is not an absolute path" }
        var st = Glibc.stat()
        if stat(path, &st) != 0 {
            let e = errno
            if e == ENOENT { return "\(path) does not exist" }
            if e == ENOTDIR { return "\(path) is not a directory (a part of it is a file)" }
            return nil
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { return "\(path) is not a directory" }
        if uid == 0 { return nil }
        // Search permission on every directory from / to the path itself, as the kernel checks it.
        var prefix = ""
        for part in [""] + path.split(separator: "/").map(String.init) {
            prefix = part.isEmpty ? "/" : (prefix == "/" ? "/" : prefix + "/") + part
            var d = Glibc.stat()
            guard stat(prefix, &d) == 0 else { return nil }
            let bit: mode_t =
                d.st_uid == uid ? S_IXUSR : gids.contains(d.st_gid) ? S_IXGRP : S_IXOTH
            if d.st_mode & bit == 0 {
                let u = System.user(uid: uid)?.name ?? "uid \(uid)"
                return "\(u) may not enter \(prefix) (mode \(String(d.st_mode & 0o7777, radix: 8)))"
            }
        }
        return nil
    }

    /// A gid by group name.
    static func gid(named name: String) -> UInt32? {
        var grp = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 65_536)
        guard getgrnam_r(name, &grp, &buffer, buffer.count, &result) == 0, let g = result else { return nil }
        return g.pointee.gr_gid
    }

    /// All the groups of a user (primary and supplementary).
    static func groups(of user: String, primary: UInt32) -> [UInt32] {
        var count: Int32 = 64
        while true {
            var groups = [gid_t](repeating: 0, count: Int(count))
            let want = count
            if getgrouplist(user, primary, &groups, &count) >= 0 { return Array(groups.prefix(Int(count))) }
            if count <= want { count = want * 2 }
        }
    }

    static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Sends a signal to a process group; true when it was delivered (or the group is already gone: false).
    @discardableResult
    static func signalGroup(_ pgid: Int32, _ sig: Int32) -> Bool {
        guard pgid > 1 else { return false }
        return kill(-pgid, sig) == 0
    }

    /// Whether a process exists.
    static func alive(_ pid: Int32) -> Bool { pid > 0 && (kill(pid, 0) == 0 || errno == EPERM) }

    /// Seconds on the monotonic clock (CLOCK_MONOTONIC: from an arbitrary origin, never stepped): for
    /// deadlines and silences; wall time only for what users see and what the log records.
    static func monotonic() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// Reaps every exited child (supervisors the daemon started) without blocking.
    static func reapChildren() {
        // Only what spawnDetached started: a child another task waits for (a command whose output it reads,
        // a replica's exec check) must keep its status for that task.
        detached.withLock { pids in
            var status: Int32 = 0
            for pid in pids where waitpid(pid, &status, WNOHANG) != 0 { pids.remove(pid) }
        }
    }

    /// The children spawnDetached started that have not been reaped.
    private static let detached = Mutex<Set<Int32>>([])

    /// Starts a program in a new session, not waited for by a task: it outlives the daemon.
    /// - Returns: its pid.
    static func spawnDetached(_ path: String, _ arguments: [String], stdout: String) throws -> Int32 {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var flags: Int16 = 0x80  // POSIX_SPAWN_SETSID (a glibc extension Swift does not import)
        flags |= Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        posix_spawnattr_setflags(&attr, flags)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o640)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of ours: an inherited listening socket would outlive us and swallow connections.
        addCloseFrom(&actions, 3)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, environ)
        guard rc == 0 else { throw SpawnError(path: path, errno: rc) }
        detached.withLock { _ = $0.insert(pid) }
        return pid
    }

    struct SpawnError: Error, CustomStringConvertible {
        var path: String
        var errno: Int32
        var description: String { "cannot start \(path): \(String(cString: strerror(errno)))" }
    }

    /// Hands memory freed in malloc's arenas back to the system (glibc's `malloc_trim`, not imported).
    static func trimMalloc() {
        typealias Fn = @convention(c) (Int) -> Int32
        guard let sym = dlsym(nil, "malloc_trim") else { return }
        _ = unsafeBitCast(sym, to: Fn.self)(0)
    }

    /// Keeps big blocks (over 128 KiB) in their own mappings, returned to the system when freed (glibc's
    /// `mallopt(M_MMAP_THRESHOLD)`, not imported). By default glibc raises that threshold to the size of the
    /// largest block freed (up to 32 MiB), after which a pass's or a snapshot's big arrays land in the heap
    /// among long-lived jobs and stay resident: with 100,000 pending jobs allotd sat 7–25 MiB higher after
    /// each periodic pass (docs/development.md).
    static func keepBigBlocksMapped() {
        typealias Fn = @convention(c) (Int32, Int32) -> Int32
        guard let sym = dlsym(nil, "mallopt") else { return }
        let mmapThreshold: Int32 = -3  // M_MMAP_THRESHOLD in <malloc.h>
        _ = unsafeBitCast(sym, to: Fn.self)(mmapThreshold, 128 << 10)
    }

    /// The running executable's path.
    static func executablePath() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Writes a file atomically (temporary name, rename); `durable`: fsynced before the rename.
    static func writeAtomically(_ data: Data, to path: String, mode: mode_t = 0o640, durable: Bool = true) throws {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var ok = data.withUnsafeBytes { buf -> Bool in
            var off = 0
            while off < buf.count {
                let n = write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 { if errno == EINTR { continue } else { return false } }
                off += n
            }
            return true
        }
        ok = ok && (!durable || fsync(fd) == 0)
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
    }
}

/// `posix_spawn_file_actions_addclosefrom_np` (glibc ≥ 2.34), which Swift does not import: closes every
/// descriptor from `low` up in the child.
func addCloseFrom(_ actions: inout posix_spawn_file_actions_t, _ low: Int32) {
    typealias Fn = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let sym = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return }
    _ = unsafeBitCast(sym, to: Fn.self)(&actions, low)
}

/// Who a caller is (name, groups), by uid, as the user and group databases say, looked up once per uid
/// while /etc/passwd and /etc/group are unchanged and for at most `maxAge` seconds (for databases that are
/// not files, such as LDAP, as Slurm's GroupUpdateTime does): a lookup reads and parses both files, about
/// 60 µs a connection here, more with big files.
final class Users: Sendable {
    struct Entry: Sendable {
        var name: String?
        var groups: [UInt32]
        var at: Double
        var files: [Int64]
    }

    let maxAge = 30.0
    private let known = Mutex<[UInt32: Entry]>([:])

    /// The name (nil when the uid has no user) and every group of user `uid`; `gid` when it has no user.
    func lookup(uid: UInt32, gid: UInt32) -> (name: String?, groups: [UInt32]) {
        let now = System.monotonic()
        let files = Self.stamps()
        if let e = known.withLock({ $0[uid] }), e.files == files, now - e.at < maxAge { return (e.name, e.groups) }
        let user = System.user(uid: uid)
        let groups = user.map { System.groups(of: $0.name, primary: $0.gid) } ?? [gid]
        // Without a user the groups are the connection's own gid, which may differ next time: not kept.
        if let user {
            known.withLock {
                if $0.count > 10_000 { $0.removeAll() }
                $0[uid] = Entry(name: user.name, groups: groups, at: now, files: files)
            }
        }
        return (user?.name, groups)
    }

    /// The modification times (ns) and sizes of the files the databases usually are.
    static func stamps() -> [Int64] {
        var out: [Int64] = []
        for path in ["/etc/passwd", "/etc/group"] {
            var st = Glibc.stat()
            if stat(path, &st) == 0 {
                out += [Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec), Int64(st.st_size)]
            } else {
                out += [-1, -1]
            }
        }
        return out
    }
}
