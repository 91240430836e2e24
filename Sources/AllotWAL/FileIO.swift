#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call: which, on what, and the system's words.
public struct SystemError: Error, Hashable, Sendable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var errno: Int32

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

/// Thin wrappers over the POSIX calls the log needs. Every call retries on EINTR.
enum FileIO {
    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o640) throws(SystemError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw SystemError(operation: "open", path: path, errno: errno) }
        }
    }

    static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// Writes all of `bytes` at `offset`. On failure, the error says how far it got in `written`.
    static func pwriteAll(
        _ fd: Int32,
        _ bytes: UnsafeRawBufferPointer,
        at offset: Int,
        path: String
    ) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError(operation: "write", path: path, errno: errno)
            }
            if n == 0 { throw SystemError(operation: "write", path: path, errno: ENOSPC) }
            done += n
        }
    }

    /// Writes all of an array at `offset`.
    static func pwriteAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int, path: String) throws(SystemError) {
        try bytes.withBytes { buf throws(SystemError) in try pwriteAll(fd, buf, at: offset, path: path) }
    }

    static func fdatasync(_ fd: Int32, path: String) throws(SystemError) {
        while Glibc.fdatasync(fd) != 0 {
            if errno != EINTR { throw SystemError(operation: "fdatasync", path: path, errno: errno) }
        }
    }

    static func fsync(_ fd: Int32, path: String) throws(SystemError) {
        while Glibc.fsync(fd) != 0 {
            if errno != EINTR { throw SystemError(operation: "fsync", path: path, errno: errno) }
        }
    }

    static func truncate(_ fd: Int32, to size: Int, path: String) throws(SystemError) {
        while ftruncate(fd, off_t(size)) != 0 {
            if errno != EINTR { throw SystemError(operation: "truncate", path: path, errno: errno) }
        }
    }

    static func size(_ fd: Int32, path: String) throws(SystemError) -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SystemError(operation: "stat", path: path, errno: errno) }
        return Int(st.st_size)
    }

    /// Reads a whole file.
    static func readAll(_ path: String) throws(SystemError) -> [UInt8] {
        let fd = try open(path, O_RDONLY)
        defer { close(fd) }
        let size = try size(fd, path: path)
        var out = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        if done < size { out.removeLast(size - done) }
        return out
    }

    /// Flushes a directory's entries (after creating, renaming or removing files in it).
    static func syncDirectory(_ path: String) throws(SystemError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    static func rename(_ from: String, _ to: String) throws(SystemError) {
        guard Glibc.rename(from, to) == 0 else {
            throw SystemError(operation: "rename", path: "\(from) to \(to)", errno: errno)
        }
    }

    static func remove(_ path: String) throws(SystemError) {
        guard unlink(path) == 0 || errno == ENOENT else {
            throw SystemError(operation: "remove", path: path, errno: errno)
        }
    }

    static func makeDirectory(_ path: String) throws(SystemError) {
        if mkdir(path, 0o750) != 0 && errno != EEXIST {
            throw SystemError(operation: "create directory", path: path, errno: errno)
        }
    }

    /// Names in a directory, without `.` and `..`, sorted.
    static func list(_ path: String) throws(SystemError) -> [String] {
        guard let dir = opendir(path) else { throw SystemError(operation: "list", path: path, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Writes a file atomically: a temporary name, fsync, rename, fsync of the directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String, directory: String) throws(SystemError) {
        let tmp = path + ".tmp"
        let fd = try open(tmp, O_WRONLY | O_CREAT | O_TRUNC)
        do throws(SystemError) {
            try pwriteAll(fd, bytes, at: 0, path: tmp)
            try fsync(fd, path: tmp)
        } catch {
            close(fd)
            try? remove(tmp)
            throw error
        }
        close(fd)
        try rename(tmp, path)
        try syncDirectory(directory)
    }
}
