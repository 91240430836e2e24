import AllotCore
import Foundation

/// Readiness and liveness of the services' replicas that run on this host (allotd's own nodes, or an agent's
/// node): each check runs off the engine's (agent's) task (at most one in flight per replica, one a second),
/// and its answer comes back as a command.
/// What the checks find is observed, not decided: it is kept here, not logged; a restarted allotd checks
/// again. Restarting a replica that fails its liveness check is a decision, made through the controller.
struct ReplicaChecks {
    struct Health {
        var run: Int
        /// The readiness check passed (and no later one failed).
        var ready = false
        var liveFailures = 0
        /// What the last failed check said.
        var problem: String?
        var inFlight = false
        /// When the next check is due, on the monotonic clock.
        var due = 0.0
    }

    /// How often each replica is checked.
    static let period = 1.0
    /// A check that takes longer fails.
    static let timeout = 1.0
    /// Liveness failures in a row that restart a replica.
    static let liveFailuresToRestart = 3

    private(set) var health: [JobID: Health] = [:]
    /// Autoscaled services' metrics: when each is next read, and those being read now.
    private var scrapeDue: [String: Double] = [:]
    private var scraping = Set<String>()
    /// How often an autoscaled service's replicas' metrics are read.
    static let scrapePeriod = 2.0

    /// The replica's health, for its current run.
    func of(_ id: JobID, run: Int) -> Health? { health[id].flatMap { $0.run == run ? $0 : nil } }

    /// The checks due now, marked in flight: (replica, run, port, check, is it the readiness check).
    mutating func due(
        running: [(id: JobID, run: Int, port: Int, ready: Probe?, live: Probe?)],
        now: Double
    ) -> [(JobID, Int, Int, Probe, Bool)] {
        var out: [(JobID, Int, Int, Probe, Bool)] = []
        var seen = Set<JobID>()
        for r in running {
            seen.insert(r.id)
            var h = health[r.id].flatMap { $0.run == r.run ? $0 : nil } ?? Health(run: r.run)
            defer { health[r.id] = h }
            // Without a readiness check a running replica serves.
            if r.ready == nil && !h.ready { h.ready = true }
            guard !h.inFlight, now >= h.due else { continue }
            let probe: (Probe, Bool)? =
                !h.ready ? r.ready.map { ($0, true) } : r.live.map { ($0, false) } ?? r.ready.map { ($0, true) }
            guard let (p, readiness) = probe else { continue }
            h.inFlight = true
            h.due = now + Self.period
            out.append((r.id, r.run, r.port, p, readiness))
        }
        for id in health.keys where !seen.contains(id) { health[id] = nil }
        return out
    }

    /// Whether a service's metrics are due to be read now; if so, marks them being read.
    mutating func scrapeIsDue(_ service: String, now: Double) -> Bool {
        guard !scraping.contains(service), now >= scrapeDue[service] ?? 0 else { return false }
        scraping.insert(service)
        scrapeDue[service] = now + Self.scrapePeriod
        return true
    }

    mutating func scraped(_ service: String) { scraping.remove(service) }

    /// The requests in flight one replica's metrics say: the sum of the named series (every label set).
    static func requestsInFlight(metrics text: String, series: [String]) -> Double? {
        var total = 0.0
        var seen = false
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let name = line.prefix { $0 != "{" && $0 != " " }
            guard series.contains(where: { $0 == name }) else { continue }
            let value = line.split(separator: " ").last.flatMap { Double($0) }
            if let value, value.isFinite {
                total += value
                seen = true
            }
        }
        return seen ? total : nil
    }

    /// Reads a replica's metrics page on this host.
    static func metrics(port: Int, path: String, timeout: Double = timeout) -> Result<String, SpecError> {
        var body = ""
        let problem = withConnection(port: port, timeout: timeout) { fd in
            let request = "GET \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\nUser-Agent: allotd\r\n\r\n"
            guard
                request.utf8.withContiguousStorageIfAvailable({ write(fd, $0.baseAddress, $0.count) })
                    == request.utf8.count
            else { return "the request could not be sent" }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 16_384)
            while bytes.count < 4 << 20 {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                bytes += buffer[..<n]
            }
            let text = String(decoding: bytes, as: UTF8.self)
            guard let split = text.range(of: "\r\n\r\n") else { return "no answer to GET \(path)" }
            let status = text[..<split.lowerBound].split(separator: " ").dropFirst().first.flatMap { Int($0) }
            guard let status, (200..<300).contains(status) else {
                return "GET \(path) answered \(status.map(String.init) ?? "something else")"
            }
            body = String(text[split.upperBound...])
            return nil
        }
        return problem.map { .failure(SpecError($0)) } ?? .success(body)
    }

    /// Takes a check's answer. Returns a sentence when the replica should be restarted (liveness failed too
    /// often).
    mutating func answered(_ id: JobID, run: Int, readiness: Bool, problem: String?) -> String? {
        guard var h = health[id], h.run == run else { return nil }
        defer { health[id] = h }
        h.inFlight = false
        h.problem = problem
        if readiness {
            h.ready = problem == nil
            return nil
        }
        guard let problem else {
            h.liveFailures = 0
            return nil
        }
        h.liveFailures += 1
        if h.liveFailures >= Self.liveFailuresToRestart {
            h.ready = false
            h.liveFailures = 0
            return "its liveness check failed \(Self.liveFailuresToRestart) times in a row: \(problem)"
        }
        return nil
    }

    /// Runs one check against a replica on this host: nil when it passes, else what went wrong.
    static func check(_ probe: Probe, port: Int, user: String?, timeout: Double = timeout) -> String? {
        switch probe.kind {
        case .tcp:
            return withConnection(port: port, timeout: timeout) { _ in nil }
        case .http:
            return withConnection(port: port, timeout: timeout) { fd in
                let request = "GET \(probe.target) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\nUser-Agent: allotd\r\n\r\n"
                guard
                    request.utf8.withContiguousStorageIfAvailable({ write(fd, $0.baseAddress, $0.count) })
                        == request.utf8.count
                else { return "the request could not be sent: \(String(cString: strerror(errno)))" }
                var buffer = [UInt8](repeating: 0, count: 512)
                var got = 0
                while got < buffer.count {
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, $0.count - got) }
                    if n <= 0 { break }
                    got += n
                    if buffer[..<got].contains(UInt8(ascii: "\n")) { break }
                }
                let line = String(decoding: buffer[..<got], as: UTF8.self).split(separator: "\r\n").first ?? ""
                let parts = line.split(separator: " ")
                guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let status = Int(parts[1]) else {
                    return got == 0 ? "no answer to GET \(probe.target)" : "not an HTTP answer to GET \(probe.target)"
                }
                return (200..<400).contains(status) ? nil : "GET \(probe.target) answered \(status)"
            }
        case .exec:
            // As the replica's owner (runuser drops root's privileges), with the replica's port.
            var argv = [
                "/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "ALLOT_PORT=\(port)", "/bin/sh", "-c",
                probe.target,
            ]
            if getuid() == 0, let user, user != "root" { argv = ["/usr/sbin/runuser", "-u", user, "--"] + argv }
            do {
                let r = try System.capture(argv[0], Array(argv.dropFirst()), timeout: timeout)
                return r.status == 0 ? nil : "\(probe.target) exited with \(r.status)"
            } catch {
                return "\(probe.target) could not be run: \(error)"
            }
        }
    }

    /// Connects to 127.0.0.1:port within `timeout`, then runs `body` on the socket (with the same timeout
    /// for reads and writes).
    private static func withConnection(port: Int, timeout: Double, _ body: (Int32) -> String?) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return "no socket: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { return "nothing listens on port \(port): \(String(cString: strerror(errno)))" }
        return body(fd)
    }

    /// A TCP port free on this host now (the kernel's pick), for a replica that takes any.
    static func freePort() -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = INADDR_ANY
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        return ok ? Int(UInt16(bigEndian: addr.sin_port)) : nil
    }
}
