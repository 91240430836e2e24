import AllotCore
import AllotProtocol
import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command on GPUs with this terminal attached (as srun).",
        discussion: """
            Submits the command as a job (every option of submit applies), waits for its GPUs, then runs it \
            on its node with this terminal attached: input, output and errors go through allotd's host, on a \
            pseudo-terminal when standard input is a terminal (window size kept), else on pipes. Ctrl-C \
            reaches the command; while it waits, Ctrl-C cancels the job. allotctl exits as the command did \
            (its exit code, or 128 + the signal that killed it). If this terminal goes away, the job gets \
            SIGHUP after 10 s ([daemon] run_hangup). It is not preemptible unless --preemptible says so. Inside `allotctl alloc`, `run` runs the command at once on the allocation's \
            GPUs (the first --gpus N of them when given).
            """
    )

    @OptionGroup var job: Submit

    func validate() throws {
        if job.file != nil { throw ValidationError("--file: run takes one command; submit takes files") }
        if job.array != nil { throw ValidationError("--array: an array cannot be attached to one terminal") }
        if command.isEmpty { throw ValidationError("give the command to run, e.g. allotctl run --gpus 1 -- python") }
    }

    /// The command, after `--` or not (srun's form).
    var command: [String] { job.rest.first == "--" ? Array(job.rest.dropFirst()) : job.rest }

    func run() throws {
        if let exit = try Attached.inAllocation(command, gpus: job.gpus) { throw ExitCode(exit) }
        var r = job.request()
        r.command = command
        r.output = nil
        throw ExitCode(try Attached.run(r, connection: job.connection, hold: job.hold))
    }
}

struct Alloc: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hold GPUs and start a shell on them (as salloc).",
        discussion: """
            Submits a job that runs your shell (or the command after --) on its node with this terminal \
            attached; every option of submit applies. In that shell the job's GPUs are yours \
            (CUDA_VISIBLE_DEVICES), and `allotctl run CMD` runs a command on them at once. The allocation \
            ends when the shell exits.
            """
    )

    @OptionGroup var job: Submit

    func validate() throws {
        if job.file != nil || job.array != nil { throw ValidationError("alloc takes neither --file nor --array") }
    }

    func run() throws {
        var r = job.request()
        let shell = ProcessInfo.processInfo.environment["SHELL"].flatMap { $0.isEmpty ? nil : $0 } ?? "/bin/sh"
        let rest = job.rest.first == "--" ? Array(job.rest.dropFirst()) : job.rest
        r.command = rest.isEmpty ? [shell] : rest
        r.name = r.name ?? "alloc"
        r.output = nil
        r.env = (r.env ?? [:]).merging(["ALLOT_ALLOC": "1"]) { $1 }
        throw ExitCode(try Attached.run(r, connection: job.connection, hold: job.hold))
    }
}

/// Where signals land while a run is attached: a byte each on a pipe the relay polls.
nonisolated(unsafe) var signalPipe: (read: Int32, write: Int32) = (-1, -1)
/// The terminal's settings before raw mode, restored on the way out.
nonisolated(unsafe) private var savedTerminal: termios?

/// The client of an interactive run: submits it, waits for it to start, and relays this terminal.
enum Attached {
    /// Inside `allotctl alloc`: runs the command here, on the allocation's GPUs (its first `gpus`).
    /// - Returns: the command's exit status; nil when not inside an allocation.
    static func inAllocation(_ command: [String], gpus: Double?) throws -> Int32? {
        let env = ProcessInfo.processInfo.environment
        guard env["ALLOT_ALLOC"] == "1", env["ALLOT_JOB_ID"] != nil else { return nil }
        if let g = gpus, let visible = env["CUDA_VISIBLE_DEVICES"] {
            let all = visible.split(separator: ",")
            guard g >= 1, Int(g) <= all.count else {
                throw fail(
                    "--gpus \(Fraction.text(Int(g * 1000))): the allocation has \(all.count) GPU(s)",
                    code: Exit.usage
                )
            }
            let mine = all.prefix(Int(g)).joined(separator: ",")
            setenv("CUDA_VISIBLE_DEVICES", mine, 1)
            setenv("NVIDIA_VISIBLE_DEVICES", mine, 1)
        }
        let argv = command.map { strdup($0) } + [nil]
        execvp(command[0], argv)
        throw fail("cannot run \(command[0]): \(String(cString: strerror(errno)))", code: errno == ENOENT ? 127 : 126)
    }

    /// Runs the request attached to this terminal; returns the exit status allotctl should end with.
    static func run(_ request: JobRequest, connection: ConnectionOptions, hold: Bool) throws -> Int32 {
        var r = request
        // A run that loses its terminal to a preemption is of no use: not preemptible unless asked.
        if r.preemptible == nil { r.preemptible = false }
        let tty = isatty(0) == 1 && isatty(1) == 1
        var ws = winsize()
        if tty && ioctl(1, UInt(TIOCGWINSZ), &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            r.interactive = Interactive(pty: true, rows: Int(ws.ws_row), cols: Int(ws.ws_col))
        } else {
            r.interactive = Interactive(pty: tty)
        }
        if tty, let term = ProcessInfo.processInfo.environment["TERM"] {
            r.env = (r.env ?? [:]).merging(["TERM": term]) { old, _ in old }
        }
        openSignalPipe()
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH] { catchSignal(sig) }
        var status: Int32 = 1
        try talking {
            let client = try connection.connect()
            let result: SubmitResult = try client.call(Methods.submit, SubmitParams(job: r))
            for w in result.warnings ?? [] { warn("warning: \(w)") }
            let id = result.id
            guard let terminal = try waitForStart(id, connection: connection, held: hold) else {
                status = 130
                return
            }
            status = try relay(id, to: terminal, pty: r.interactive?.pty ?? false, connection: connection)
        }
        return status
    }

    /// Where a running job's terminal is reached.
    enum Terminal {
        /// Its supervisor's socket, on this host.
        case socket(String)
        /// Through allotd (`attach`): the run is on an agent's node.
        case relayed(node: String)
    }

    /// Waits until the job runs; Ctrl-C (or SIGTERM) meanwhile cancels it.
    /// - Returns: where its terminal is, or nil when it was cancelled here.
    static func waitForStart(_ id: UInt64, connection: ConnectionOptions, held: Bool) throws -> Terminal? {
        let watcher = try connection.connect()
        let _: WatchResult = try watcher.call(Methods.watch, NoParams())
        let looker = try connection.connect()
        var told = false
        let began = Date()
        while true {
            let j: JobObject = try looker.call(Methods.show, IDParams(id: .job(id)))
            if let tty = j.tty { return .socket(tty) }
            if let node = j.ttyNode { return .relayed(node: node) }
            if JobEnd.isEnded(j.state) {
                throw fail(JobEnd.line(id: j.id, state: j.state, reason: j.reason), code: 1)
            }
            if !told && (held || Date().timeIntervalSince(began) > 1) {
                warn("job \(id) is \(j.state)\(j.reason.map { ": \($0)" } ?? ""); waiting (Ctrl-C cancels it)")
                told = true
            }
            // Woken by the next change of any job, a signal, or half a second.
            var fds = [
                pollfd(fd: watcher.fd, events: Int16(POLLIN), revents: 0),
                pollfd(fd: signalPipe.read, events: Int16(POLLIN), revents: 0),
            ]
            _ = poll(&fds, 2, 500)
            if fds[1].revents != 0 {
                var sig: UInt8 = 0
                _ = read(signalPipe.read, &sig, 1)
                if Int32(sig) == SIGWINCH { continue }
                let _: ItemsResult = try looker.call(Methods.cancel, IDsParams(ids: [.job(id)]))
                warn("job \(id) cancelled")
                return nil
            }
            if fds[0].revents != 0 { while try watcher.waitReadable(seconds: 0) { _ = try watcher.readLine() } }
        }
    }

    /// Relays this terminal and the job's until the job ends. Returns its exit status.
    static func relay(_ id: UInt64, to terminal: Terminal, pty: Bool, connection: ConnectionOptions) throws -> Int32 {
        switch terminal {
        case .socket(let path):
            let fd = try connectTerminal(id, socket: path)
            defer { close(fd) }
            return try relay(id, fd: fd, pty: pty, connection: connection)
        case .relayed:
            // The connection that asks for the terminal becomes it, after the answer.
            let client = try connection.connect()
            let _: AttachResult = try client.call(Methods.attach, IDParams(id: .job(id)))
            return try relay(id, fd: client.fd, early: client.unread(), pty: pty, connection: connection)
        }
    }

    /// Connects to a run's terminal socket on this host (its supervisor makes it as the run starts).
    static func connectTerminal(_ id: UInt64, socket path: String) throws -> Int32 {
        let deadline = Date().addingTimeInterval(10)
        while true {
            let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b }
            }
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if ok == 0 { return fd }
            let why = String(cString: strerror(errno))
            close(fd)
            guard Date() < deadline else { throw fail("cannot reach job \(id)'s terminal at \(path): \(why)", code: 1) }
            usleep(20_000)
        }
    }

    /// Relays this terminal and the one on `fd` (`early`: bytes of it already read) until the job ends.
    static func relay(
        _ id: UInt64,
        fd: Int32,
        early: [UInt8] = [],
        pty: Bool,
        connection: ConnectionOptions
    ) throws
        -> Int32
    {
        if pty { rawMode() }
        defer { restoreTerminal() }
        if pty { sendWindow(fd) }
        var stdinOpen = true
        var buffer: [UInt8] = early
        var chunk = [UInt8](repeating: 0, count: 65536)
        /// Passes on the whole frames in `buffer`; returns the job's exit status once its end has come.
        func frames() -> Int32? {
            var at = 0
            defer { buffer.removeFirst(at) }
            while buffer.count - at >= 5 {
                let len =
                    Int(buffer[at + 1]) << 24 | Int(buffer[at + 2]) << 16 | Int(buffer[at + 3]) << 8
                    | Int(buffer[at + 4])
                guard buffer.count - at >= 5 + len else { break }
                let type = buffer[at]
                let payload = Array(buffer[(at + 5)..<(at + 5 + len)])
                at += 5 + len
                switch type {
                case UInt8(ascii: "o"): writeAll(1, payload)
                case UInt8(ascii: "r"): writeAll(2, payload)
                case UInt8(ascii: "x"):
                    restoreTerminal()
                    let words = String(decoding: payload, as: UTF8.self).split(separator: " ")
                    let n = words.count == 2 ? Int32(words[1]) ?? 1 : 1
                    return words.first == "signal" ? 128 + n : n
                default: break
                }
            }
            return nil
        }
        if let status = frames() { return status }
        while true {
            var fds = [
                pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                pollfd(fd: signalPipe.read, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stdinOpen ? 0 : -1, events: Int16(POLLIN), revents: 0),
            ]
            if poll(&fds, 3, -1) < 0 && errno != EINTR { break }
            if fds[1].revents != 0 {
                var sig: UInt8 = 0
                _ = read(signalPipe.read, &sig, 1)
                if Int32(sig) == SIGWINCH {
                    if pty { sendWindow(fd) }
                } else {
                    // In raw mode Ctrl-C is a byte for the job's terminal; a signal to allotctl itself
                    // (kill, a hangup, Ctrl-C on pipes) goes to the job's processes.
                    send(fd, "s", [sig])
                }
            }
            if fds[2].revents != 0 {
                let n = read(0, &chunk, chunk.count)
                if n > 0 {
                    send(fd, "d", Array(chunk[0..<n]))
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    stdinOpen = false
                    send(fd, "e", [])
                }
            }
            if fds[0].revents != 0 {
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 {
                    if n < 0 && errno == EINTR { continue }
                    break
                }
                buffer += chunk[0..<n]
                if let status = frames() { return status }
            }
        }
        restoreTerminal()
        // The terminal went away without an end: say how the job stands.
        warn("lost job \(id)'s terminal")
        let looker = try connection.connect()
        let j: JobObject = try looker.call(Methods.show, IDParams(id: .job(id)))
        return JobEnd.isEnded(j.state) ? JobEnd.status(state: j.state, exitCode: j.exitCode) : 1
    }

    static func send(_ fd: Int32, _ type: Character, _ payload: [UInt8]) {
        let n = payload.count
        var frame: [UInt8] = [
            type.asciiValue!, UInt8(n >> 24 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF),
        ]
        frame += payload
        writeAll(fd, frame)
    }

    static func sendWindow(_ fd: Int32) {
        var ws = winsize()
        guard ioctl(1, UInt(TIOCGWINSZ), &ws) == 0 else { return }
        send(fd, "w", [UInt8(ws.ws_row >> 8), UInt8(ws.ws_row & 0xFF), UInt8(ws.ws_col >> 8), UInt8(ws.ws_col & 0xFF)])
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == ENOTSOCK {
                let w = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if w < 0 && errno == EINTR { continue }
                if w <= 0 { return }
                off += w
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            off += n
        }
    }

    static func openSignalPipe() {
        var p: [Int32] = [-1, -1]
        guard pipe(&p) == 0 else { return }
        for fd in p {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        signalPipe = (p[0], p[1])
    }

    static func catchSignal(_ sig: Int32) {
        signal(sig) { s in
            var b = UInt8(truncatingIfNeeded: s)
            _ = write(signalPipe.write, &b, 1)
        }
    }

    static func rawMode() {
        var t = termios()
        guard tcgetattr(0, &t) == 0 else { return }
        savedTerminal = t
        cfmakeraw(&t)
        tcsetattr(0, TCSANOW, &t)
    }

    static func restoreTerminal() {
        guard var t = savedTerminal else { return }
        tcsetattr(0, TCSANOW, &t)
        savedTerminal = nil
    }
}
