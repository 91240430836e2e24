import CoreFoundation
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The control socket's file: allotd binds it only when no live daemon answers there, and removes only the
/// file it bound itself (same device and inode), so that a second allotd pointed at a live daemon's socket
/// can neither take it over nor delete it.
struct SocketFile: Sendable, Equatable {
    let path: String
    let device: UInt64
    let inode: UInt64

    /// What is at `path` now, before binding.
    enum Occupant: Equatable {
        /// Nothing: free to bind.
        case none
        /// A socket nobody listens on (a daemon that died without removing it): safe to replace.
        case stale
        /// A daemon accepts connections there.
        case live
        /// Something that is not a socket.
        case notASocket
    }

    /// Looks at `path` without changing it: a connect tells a live listener from a stale file.
    static func occupant(of path: String) -> Occupant {
        guard let (type, _, _) = identity(path) else { return .none }
        guard type == .socket else { return .notASocket }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .live }  // cannot tell: take the safe side
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return .live }
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in bytes.enumerated() { buf[i] = b }
            buf[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc == 0 { return .live }
        // Nobody listening (refused) or the file vanished meanwhile: stale. Anything else (EAGAIN: a full
        // backlog, EACCES): someone may be there.
        return errno == ECONNREFUSED || errno == ENOENT ? .stale : .live
    }

    /// Makes `path` free to bind: refuses a live daemon's socket or a file that is not a socket, and
    /// removes a stale socket.
    /// - Throws: ``StartupError`` naming the path and what to do.
    static func prepare(_ path: String) throws(StartupError) {
        switch occupant(of: path) {
        case .none:
            return
        case .stale:
            unlink(path)
        case .live:
            throw StartupError(
                description:
                    "another allotd is already serving \(path): stop it first, or give this one its own socket "
                    + "(--socket or [daemon] socket)",
                errno: EADDRINUSE
            )
        case .notASocket:
            throw StartupError(
                description: "\(path) exists and is not a socket; remove it or choose another [daemon] socket",
                errno: EEXIST
            )
        }
    }

    /// Binds and listens on `path` (after ``prepare(_:)``), with the file's mode set before any client can
    /// connect. The socket is made here rather than by NIO, whose server channels unlink their path when
    /// closed, whoever's file is there by then.
    /// - Returns: the listening descriptor, for `ServerBootstrap.bind(_:)`, and the file it bound.
    /// - Throws: ``StartupError`` naming the path and the system's reason.
    static func listen(_ path: String, mode: UInt32, backlog: Int32) throws(StartupError) -> (Int32, SocketFile) {
        try prepare(path)
        func failed(_ what: String) -> StartupError {
            let e = errno
            return StartupError(
                description: "cannot \(what) the control socket \(path): \(String(cString: strerror(e)))",
                errno: e
            )
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw StartupError(
                description: "the control socket path \(path) is too long (\(bytes.count) bytes; at most 107)"
            )
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in bytes.enumerated() { buf[i] = b }
            buf[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failed("create") }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let error = failed("bind")
            close(fd)
            throw error
        }
        guard let file = bound(path) else {
            close(fd)
            throw StartupError(description: "the control socket \(path) vanished as it was bound", errno: ENOENT)
        }
        guard chmod(path, mode_t(mode)) == 0, Glibc.listen(fd, backlog) == 0 else {
            let error = failed("listen on")
            close(fd)
            file.remove()
            throw error
        }
        return (fd, file)
    }

    /// The file just bound at `path`, to be removed later only if it is still this one.
    static func bound(_ path: String) -> SocketFile? {
        guard let (_, device, inode) = identity(path) else { return nil }
        return SocketFile(path: path, device: device, inode: inode)
    }

    /// The file's type, device and inode (not following a symbolic link), if it exists.
    private static func identity(_ path: String) -> (FileType, UInt64, UInt64)? {
        var st = Glibc.stat()
        guard lstat(path, &st) == 0 else { return nil }
        return (st.st_mode & S_IFMT == S_IFSOCK ? .socket : .other, UInt64(st.st_dev), UInt64(st.st_ino))
    }

    private enum FileType { case socket, other }

    /// Removes the socket file if it is still the one this process bound.
    /// - Returns: whether it removed it.
    @discardableResult
    func remove() -> Bool {
        guard let (_, d, i) = Self.identity(path), d == device, i == inode else { return false }
        return unlink(path) == 0
    }
}
