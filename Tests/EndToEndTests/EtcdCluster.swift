import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real etcd cluster on loopback for the tests: `members` etcd processes (Debian's `etcd-server`), each in
/// its own temporary directory, stopped and removed with the value.
final class EtcdCluster: @unchecked Sendable {
    struct Member {
        var name: String
        var clientPort: Int
        var peerPort: Int
        var dir: String
        var process: Process?
    }

    let dir: String
    private(set) var members: [Member]
    var urls: [String] { members.map { "http://127.0.0.1:\($0.clientPort)" } }

    static var binary: String? {
        ["/usr/bin/etcd", "/usr/local/bin/etcd"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    init(members count: Int = 3) throws {
        guard Self.binary != nil else {
            throw ClusterError("etcd is not installed: run scripts/ensure-deps.sh --test (Debian's etcd-server)")
        }
        let dir = NSTemporaryDirectory() + "allot-etcd-\(UUID().uuidString.prefix(8))"
        self.dir = dir
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        members = (1...count).map { i in
            Member(name: "m\(i)", clientPort: Self.freePort(), peerPort: Self.freePort(), dir: "\(dir)/m\(i)")
        }
        for i in members.indices { try start(i, new: true) }
        try waitHealthy()
    }

    deinit {
        for m in members { m.process.map { Glibc.kill($0.processIdentifier, SIGKILL) } }
        for m in members { m.process?.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: dir)
    }

    private var initialCluster: String {
        members.map { "\($0.name)=http://127.0.0.1:\($0.peerPort)" }.joined(separator: ",")
    }

    /// Starts member `i` (again, after ``kill(_:)``: with its data).
    func start(_ i: Int, new: Bool = false) throws {
        let m = members[i]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary!)
        p.arguments = [
            "--name", m.name, "--data-dir", m.dir,
            "--listen-peer-urls", "http://127.0.0.1:\(m.peerPort)",
            "--initial-advertise-peer-urls", "http://127.0.0.1:\(m.peerPort)",
            "--listen-client-urls", "http://127.0.0.1:\(m.clientPort)",
            "--advertise-client-urls", "http://127.0.0.1:\(m.clientPort)",
            "--initial-cluster", initialCluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "allot-test-\(dir.suffix(8))",
            // Fast elections on loopback.
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
        let log =
            FileHandle(forWritingAtPath: "\(dir)/\(m.name).log")
            ?? {
                FileManager.default.createFile(atPath: "\(dir)/\(m.name).log", contents: nil)
                return FileHandle(forWritingAtPath: "\(dir)/\(m.name).log")!
            }()
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        members[i].process = p
    }

    /// SIGKILL of member `i`.
    func kill(_ i: Int) {
        guard let p = members[i].process else { return }
        Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        members[i].process = nil
    }

    /// Waits until every running member answers its health check.
    func waitHealthy(timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        for m in members where m.process != nil {
            while true {
                if Self.healthy(port: m.clientPort) { break }
                if Date() > deadline {
                    let log = (try? String(contentsOfFile: "\(dir)/\(m.name).log", encoding: .utf8)) ?? ""
                    throw ClusterError("etcd member \(m.name) never became healthy:\n\(log.suffix(2000))")
                }
                usleep(100_000)
            }
        }
    }

    /// Whether the member on `port` says it is healthy (GET /health: it has a leader and answers).
    static func healthy(port: Int) -> Bool {
        let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        return exchange(port: port, request: request).contains("\"health\":\"true\"")
    }

    /// Keeps `lease` alive every 400 ms through the first member that answers, from a thread of its own, until
    /// stopped. Not from a task: on a loaded run of the suite (2 cores, tests that block their threads) a task
    /// can wait for a thread longer than a lease's TTL, and the lease ends though nothing stopped keeping it.
    func keepAlive(lease: Int64) -> LeaseKeeper {
        let keeper = LeaseKeeper()
        let ports = members.map(\.clientPort)
        let body = "{\"ID\":\"\(lease)\"}"
        let request =
            "POST /v3/lease/keepalive HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
        let thread = Thread {
            while !keeper.stopped {
                for port in ports
                where Self.exchange(port: port, request: request, enough: "\"TTL\"").contains("\"TTL\"") {
                    break
                }
                usleep(400_000)
            }
        }
        thread.start()
        return keeper
    }

    /// Stops a ``keepAlive(lease:)`` loop.
    final class LeaseKeeper: @unchecked Sendable {
        private let lock = NSLock()
        private var done = false
        var stopped: Bool { lock.withLock { done } }
        func stop() { lock.withLock { done = true } }
    }

    /// Sends `request` to the member on `port` over a plain socket (2 s to answer) and returns what it said, read
    /// until it closes (or, given `enough`, until that is in the answer); "" when it does not answer.
    static func exchange(port: Int, request: String, enough: String? = nil) -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else { return "" }
        let bytes = Array(request.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { return "" }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            answer += buffer[..<n]
            if let enough, String(decoding: answer, as: UTF8.self).contains(enough) { break }
        }
        return String(decoding: answer, as: UTF8.self)
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

struct ClusterError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
