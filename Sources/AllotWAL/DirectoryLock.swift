import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An exclusive `flock(2)` on `DIR/LOCK`, holding the owner's pid, so that two daemons never share a state
/// directory. Released when closed or when the process exits (even by SIGKILL).
public final class DirectoryLock: Sendable {
    public let path: String
    /// The lock file's descriptor; -1 once released.
    private let fd: Mutex<Int32>

    /// Takes the lock, creating the directory and the lock file if needed.
    /// - Throws: ``WALError`` with code `.locked`, naming the holder's pid, when another process holds it.
    public init(directory: String) throws(WALError) {
        path = directory + "/LOCK"
        let fd: Int32
        do {
            try FileIO.makeDirectory(directory)
            fd = try FileIO.open(path, O_RDWR | O_CREAT, mode: 0o644)
        } catch {
            throw WALError(error)
        }
        var waits = 0
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            let err = errno
            let holder =
                (try? FileIO.readAll(path)).map { String(decoding: $0, as: UTF8.self).trimmingCharacters() } ?? ""
            // This process let it go, and a child forked meanwhile still shares the open file until its exec
            // closes it (a few milliseconds at most): wait for that rather than refuse.
            if err == EWOULDBLOCK, holder == String(getpid()), waits < 500 {
                waits += 1
                usleep(1_000)
                continue
            }
            FileIO.close(fd)
            if err == EWOULDBLOCK {
                let who = holder.isEmpty ? "another process" : "allotd pid \(holder)"
                throw WALError(
                    .locked,
                    "state directory \(directory) is in use by \(who) (\(path) is locked); stop it first, or use another --state-dir",
                    file: path
                )
            }
            throw WALError(SystemError(operation: "lock", path: path, errno: err))
        }
        let pid = Array("\(getpid())\n".utf8)
        do {
            try FileIO.truncate(fd, to: 0, path: path)
            try FileIO.pwriteAll(fd, pid, at: 0, path: path)
        } catch {
            FileIO.close(fd)
            throw WALError(error)
        }
        self.fd = Mutex(fd)
    }

    /// Releases the lock.
    public func close() {
        fd.withLock { fd in
            if fd >= 0 { FileIO.close(fd) }
            fd = -1
        }
    }

    deinit { close() }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        return String(s)
    }
}
