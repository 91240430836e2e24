import AllotCore
import AllotProtocol
import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `--socket`, shared by every command that talks to allotd.
struct ConnectionOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "allotd's control socket (default: $ALLOT_SOCKET, else /run/allot/allotd.sock).",
            valueName: "PATH"
        )
    )
    var socket: String?

    var path: String {
        socket ?? ProcessInfo.processInfo.environment["ALLOT_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
            ?? "/run/allot/allotd.sock"
    }

    /// Connects and says hello (its answer is read with the first request's: one round trip, not two).
    func connect() throws -> Client {
        let c = try Client(path: path)
        try c.send(Methods.hello, HelloParams(client: "allotctl 0.1.0"))
        c.helloPending = true
        return c
    }
}

/// allotctl's exit codes (docs/protocol.md).
enum Exit {
    static let refused: Int32 = 1
    static let usage: Int32 = 2
    static let notFound: Int32 = 3
    static let denied: Int32 = 4
    static let unreachable: Int32 = 69

    static func code(for error: RPCError) -> Int32 {
        switch error.code {
        case RPCError.invalidParams: usage
        case RPCError.notFound: notFound
        case RPCError.permissionDenied: denied
        default: refused
        }
    }
}

/// Prints a message on standard error and exits with `code`.
func fail(_ message: String, code: Int32) -> ExitCode {
    FileHandle.standardError.write(Data("allotctl: \(message)\n".utf8))
    return ExitCode(code)
}

/// Prints "allotctl: MESSAGE" on standard error and goes on.
func warn(_ message: String) { FileHandle.standardError.write(Data("allotctl: \(message)\n".utf8)) }

/// A blocking JSON-RPC client over allotd's Unix socket: one request at a time, or a pipeline.
final class Client {
    let path: String
    let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0
    private var nextID: Int64 = 1
    var admin = false
    /// A hello was sent and its answer not read yet.
    var helloPending = false
    /// How long an answer may take (``AnswerTimeout``); nil: no limit.
    let answerTimeout: Double?

    /// Connects to the socket.
    /// - Throws: ``ExitCode`` 69 with a sentence naming the socket when allotd cannot be reached.
    init(path: String) throws {
        self.path = path
        let timeout = AnswerTimeout.seconds(ProcessInfo.processInfo.environment["ALLOT_TIMEOUT"])
        if let problem = timeout.problem {
            FileHandle.standardError.write(Data("allotctl: warning: \(problem)\n".utf8))
        }
        answerTimeout = timeout.seconds
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else {
            throw fail("cannot create a socket: \(String(cString: strerror(errno)))", code: Exit.unreachable)
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw fail("the socket path \(path) is too long (at most 107 bytes)", code: Exit.usage)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in bytes.enumerated() { buf[i] = b }
            buf[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc != 0 {
            let why = String(cString: strerror(errno))
            close(fd)
            throw fail(
                "cannot reach allotd at \(path) (\(why)). Is it running? Start it with `systemctl start allotd` (check with `systemctl status allotd`), or point --socket or ALLOT_SOCKET at its socket.",
                code: Exit.unreachable
            )
        }
    }

    deinit { close(fd) }

    /// Sends a request without waiting for its answer.
    /// - Returns: its id.
    @discardableResult
    func send<P, R>(_ method: RPCMethod<P, R>, _ params: P) throws -> Int64 {
        try send(name: method.name, params)
    }

    private func send<P: Encodable>(name method: String, _ params: P) throws -> Int64 {
        let id = nextID
        nextID += 1
        let line = try ControlProtocol.line(Request(id: .number(id), method: method, params: params))
        try line.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                // MSG_NOSIGNAL: a connection allotd closes while a request is being sent is an error to
                // report (EPIPE), not a silent death by SIGPIPE.
                let n = Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno == EPIPE || errno == ECONNRESET, let said = refusalBeforeClose() { throw said }
                    throw fail(
                        "lost the connection to allotd at \(path): \(String(cString: strerror(errno)))",
                        code: Exit.unreachable
                    )
                }
                off += n
            }
        }
        return id
    }

    /// What allotd answered before it closed the connection, if it refused something: a request it will
    /// not read to its end (too long) gets an error and a close, while this side is still sending.
    private func refusalBeforeClose() -> RPCError? {
        while let line = try? readLine(idle: 2) {
            if let head = try? JSONDecoder().decode(ResponseHead.self, from: line), let e = head.error { return e }
        }
        return nil
    }

    /// Whether a line can be read within `seconds` (one is buffered, or the socket has data or closed).
    func waitReadable(seconds: Double) throws -> Bool {
        if buffer[start...].contains(10) { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let r = poll(&p, 1, Int32(min(max(seconds, 0) * 1000, Double(Int32.max)).rounded(.up)))
            if r < 0 && errno == EINTR { continue }
            return r > 0
        }
    }

    /// Reads one line (a response or a notification); with `idle` it fails once nothing has come for that
    /// many seconds (a long answer that keeps coming is read to its end).
    func readLine(idle: Double? = nil) throws -> Data {
        // Where the search for the newline goes on: a long line (`ls` of 100,000 jobs is tens of MB) is read
        // in many chunks, and searching it again from its start after each one was quadratic.
        var from = start
        while true {
            if let nl = buffer[from...].firstIndex(of: 10) {
                let line = Data(buffer[start..<nl])
                start = nl + 1
                if start > 1 << 20 {
                    buffer.removeFirst(start)
                    start = 0
                }
                return line
            }
            from = buffer.count
            if let idle, !(try waitReadable(seconds: idle)) {
                throw fail(AnswerTimeout.message(socket: path, seconds: idle), code: Exit.unreachable)
            }
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw fail("allotd closed the connection at \(path) (did it stop?)", code: Exit.unreachable)
            }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// What was read from the connection past the last line taken (for a connection that stops carrying
    /// lines, as `attach`'s does after its answer).
    func unread() -> [UInt8] { Array(buffer[start...]) }

    /// Reads the next response and decodes its result.
    /// - Throws: ``RPCError`` when the daemon answered with an error.
    func result<R: Decodable>(_ type: R.Type = R.self) throws -> R {
        if helloPending {
            helloPending = false
            let hello: HelloResult = try result()
            admin = hello.admin
        }
        while true {
            let line = try readLine(idle: answerTimeout)
            let head = try JSONDecoder().decode(ResponseHead.self, from: line)
            if head.id == nil && head.method != nil { continue }  // a notification
            if let e = head.error { throw e }
            return try JSONDecoder().decode(ResponseResult<R>.self, from: line).result
        }
    }

    /// One request, its answer.
    /// Sends a request and reads its answer as the method's result.
    func call<P, R>(_ method: RPCMethod<P, R>, _ params: P) throws -> R {
        try send(method, params)
        return try result(R.self)
    }
}

/// Runs a command body that talks to allotd, turning protocol errors into messages and exit codes.
func talking(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as RPCError {
        throw fail(e.message, code: Exit.code(for: e))
    }
}

/// Prints JSON to standard output (sorted keys, pretty for people).
func printJSON(_ value: some Encodable) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
    var d = try e.encode(value)
    d.append(10)
    FileHandle.standardOutput.write(d)
}

/// A plain table: columns padded to their widest cell.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }
        .joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n") + "\n"
}

func out(_ s: String) { FileHandle.standardOutput.write(Data(s.utf8)) }
