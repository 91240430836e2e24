import AllotText

#if canImport(Glibc)
import Glibc
#endif

/// The lean path of the most frequent command, `allotctl submit [options] -- CMD…`, for scripts that submit
/// one job per process: no argument parser, no Codable, no Foundation, so that the process does not pay for
/// what the rest of allotctl links (the first dynamic cast in a binary this size scans every protocol
/// conformance in it: several milliseconds). It takes only well-formed command lines whose every option it
/// knows; anything else — a bad value, `--help`, `--file`, `--json`, a refusal from allotd, no daemon —
/// is left to allotctl-full, which parses, checks and reports as always (a request allotd refused changed
/// nothing, so asking again is safe; one it accepted is never sent again). The request it sends is the
/// one the full command sends: the same keys, each value as `Submit.request()` makes it (the end-to-end
/// tests submit through this path).
enum FastSubmit {
    /// Runs `args` (allotctl's arguments) when it can.
    /// - Returns: the exit code, or nil when the full command must run instead.
    static func run(_ args: [String]) -> Int32? {
        guard args.first == "submit", let (job, socket) = parse(args.dropFirst()) else { return nil }
        switch exchange(socket: socket, line: requestLine(job)) {
        case .notSent:
            return nil
        case .lost:
            // Sent, and no answer: it may have been submitted, so it is not sent again.
            say(2, "allotctl: allotd closed the connection at \(socket) (did it stop?)\n")
            return 69
        case .timedOut(let seconds):
            say(2, "allotctl: \(AnswerTimeout.message(socket: socket, seconds: seconds))\n")
            return 69
        case .answer(let line):
            let text = String(decoding: line, as: UTF8.self)
            // Refused: nothing was submitted; the full command asks again and reports it as it always does.
            if find("\"error\"", in: line) != nil { return nil }
            // Submitted (with warnings or not): whatever follows, it is never sent again.
            let warnings = find("\"warnings\"", in: line) != nil ? stringArray(after: "\"warnings\":[", in: line) : []
            guard let id = resultID(line), let warnings else {
                say(2, "allotctl: allotd's answer could not be read: \(text)\n")
                return 1
            }
            for w in warnings { say(2, "allotctl: warning: \(w)\n") }
            say(1, "\(id)\n")
            return 0
        }
    }

    /// Whether an option takes a value. (A switch, not a Set: this path avoids every generic type it can,
    /// as the first use of each costs the runtime a lookup by mangled name at start.)
    private static func takesValue(_ name: String) -> Bool {
        switch name {
        case "gpus", "gpu-model", "min-gpu-memory", "kind", "class", "tenant", "walltime", "estimate", "grace",
            "max-cost", "prefer", "topology", "name", "workdir", "output", "env", "socket", "dependency", "array",
            "partition", "nodelist", "exclude", "constraint", "nice", "notify", "mail-user", "mail-type", "speed":
            return true
        default: return false
        }
    }

    /// The request as JSON object members, and the socket path; nil when anything is unusual.
    static func parse(_ args: ArraySlice<String>) -> (job: String, socket: String)? {
        var values = Pairs()
        var env = Pairs()
        var hold = false
        var preemptible: Bool?
        var command: [String] = []
        var i = args.startIndex
        while i < args.endIndex {
            let a = args[i]
            i += 1
            if a == "--" {
                command = Array(args[i...])
                break
            }
            guard a.hasPrefix("--") else { return nil }
            var name = String(a.dropFirst(2))
            var value: String?
            if let eq = name.firstIndex(of: "=") {
                value = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            switch name {
            case "hold" where value == nil: hold = true
            case "preemptible" where value == nil: preemptible = true
            case "no-preemptible" where value == nil: preemptible = false
            case _ where takesValue(name):
                if value == nil {
                    guard i < args.endIndex, !args[i].hasPrefix("--") else { return nil }
                    value = args[i]
                    i += 1
                }
                if name == "env" {
                    guard let eq = value!.firstIndex(of: "="), eq != value!.startIndex else { return nil }
                    env.append(String(value![..<eq]), String(value![value!.index(after: eq)...]))
                } else {
                    guard values[name] == nil else { return nil }
                    values.append(name, value!)
                }
            default: return nil
            }
        }
        guard let first = command.first, !first.isEmpty else { return nil }
        var out: [String] = []
        out.append("\"command\":" + array(command))
        if let v = values["name"] { out.append("\"name\":" + quoted(v)) }
        if let v = values["gpus"] {
            guard let n = Int(v), n >= 1 else { return nil }
            out.append("\"gpus\":\(n)")
        }
        if let v = values["gpu-model"] {
            out.append("\"gpu_model\":" + array(v.split(separator: ",").map(String.init)))
        }
        if let v = values["min-gpu-memory"] {
            guard let d = Double(v), d.isFinite else { return nil }
            out.append("\"min_gpu_memory\":\(d)")
        }
        if let v = values["kind"] {
            guard JobKind(rawValue: v) != nil else { return nil }
            out.append("\"kind\":" + quoted(v))
        }
        if let v = values["class"] { out.append("\"class\":" + quoted(v)) }
        if let v = values["tenant"] { out.append("\"tenant\":" + quoted(v)) }
        for key in ["walltime", "estimate", "grace"] {
            guard let v = values[key] else { continue }
            guard let s = DurationText.parse(v) else { return nil }
            out.append("\"\(key)\":\(s)")
        }
        if let p = preemptible { out.append("\"preemptible\":\(p)") }
        if let v = values["max-cost"] {
            guard let d = Double(v), d.isFinite else { return nil }
            out.append("\"max_cost\":\(d)")
        }
        if let v = values["prefer"] { out.append("\"prefer\":" + quoted(v)) }
        if let v = values["dependency"] { out.append("\"dependency\":" + quoted(v)) }
        if let v = values["array"] { out.append("\"array\":" + quoted(v)) }
        if let v = values["partition"] { out.append("\"partition\":" + quoted(v)) }
        for (key, wire) in [
            ("nodelist", "nodelist"), ("exclude", "exclude"), ("constraint", "constraint"), ("notify", "notify"),
            ("mail-user", "mail_user"), ("mail-type", "mail_type"), ("speed", "speed"),
        ] {
            if let v = values[key] { out.append("\"\(wire)\":" + quoted(v)) }
        }
        if let v = values["nice"] {
            guard let n = Int(v) else { return nil }
            out.append("\"nice\":\(n)")
        }
        if let v = values["topology"] {
            guard Topology(rawValue: v) != nil else { return nil }
            out.append("\"topology\":" + quoted(v))
        }
        guard let workdir = values["workdir"] ?? currentDirectory() else { return nil }
        out.append("\"workdir\":" + quoted(workdir))
        if let v = values["output"] { out.append("\"output\":" + quoted(PathText.absolute(v, in: workdir))) }
        if !env.names.isEmpty {
            // Later values win, as in the full command's dictionary.
            var members: [String] = []
            for i in env.names.indices where !env.names[(i + 1)...].contains(env.names[i]) {
                members.append(quoted(env.names[i]) + ":" + quoted(env.values[i]))
            }
            out.append("\"env\":{" + members.joined(separator: ",") + "}")
        }
        if hold { out.append("\"hold\":true") }
        let socket =
            values["socket"] ?? getenv("ALLOT_SOCKET").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
            ?? "/run/allot/allotd.sock"
        return ("{" + out.joined(separator: ",") + "}", socket)
    }

    /// The JSON-RPC request line for a job object.
    static func requestLine(_ job: String) -> String {
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"submit\",\"params\":{\"job\":" + job + "}}\n"
    }

    /// Where `needle` ends in `bytes` (the index after its last byte), if it occurs. (Bytes, not String
    /// search: that goes through _StringProcessing's generic searcher, slow to set up in a fresh process.)
    static func find(_ needle: String, in bytes: [UInt8]) -> Int? {
        let n = Array(needle.utf8)
        guard !n.isEmpty, bytes.count >= n.count else { return nil }
        var i = 0
        while i <= bytes.count - n.count {
            var j = 0
            while j < n.count && bytes[i + j] == n[j] { j += 1 }
            if j == n.count { return i + n.count }
            i += 1
        }
        return nil
    }

    /// The id in the answer's `"result":{"id":N` (warnings may follow).
    static func resultID(_ line: [UInt8]) -> UInt64? {
        guard var i = find("\"result\":{\"id\":", in: line) else { return nil }
        var id: UInt64 = 0
        let start = i
        while i < line.count, line[i] >= 48, line[i] <= 57 {
            let (m, o1) = id.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(line[i] - 48))
            guard !o1, !o2 else { return nil }
            id = a
            i += 1
        }
        return i > start ? id : nil
    }

    /// The JSON strings of the array that starts right after `marker`.
    static func stringArray(after marker: String, in line: [UInt8]) -> [String]? {
        guard let at = find(marker, in: line) else { return nil }
        let text = String(decoding: line[at...], as: UTF8.self)
        var out: [String] = []
        var it = text.unicodeScalars.makeIterator()
        while let c = it.next() {
            switch c {
            case "]": return out
            case ",", " ": continue
            case "\"":
                var s = String.UnicodeScalarView()
                var pending: UInt32?
                while true {
                    guard let d = it.next() else { return nil }
                    if d == "\"" { break }
                    guard d == "\\" else {
                        s.append(d)
                        continue
                    }
                    guard let e = it.next() else { return nil }
                    switch e {
                    case "n": s.append("\n")
                    case "t": s.append("\t")
                    case "r": s.append("\r")
                    case "b": s.append("\u{08}")
                    case "f": s.append("\u{0C}")
                    case "u":
                        var v: UInt32 = 0
                        for _ in 0..<4 {
                            guard let h = it.next(), let x = UInt32(String(h), radix: 16) else { return nil }
                            v = v * 16 + x
                        }
                        if (0xD800..<0xDC00).contains(v) {
                            pending = v
                            continue
                        }
                        if let hi = pending, (0xDC00..<0xE000).contains(v) {
                            v = 0x10000 + ((hi - 0xD800) << 10) + (v - 0xDC00)
                        }
                        pending = nil
                        guard let u = Unicode.Scalar(v) else { return nil }
                        s.append(u)
                    default: s.append(e)
                    }
                }
                out.append(String(s))
            default: return nil
            }
        }
        return nil
    }

    /// Writes text to a file descriptor.
    static func say(_ fd: Int32, _ text: String) {
        var t = text
        t.withUTF8 { buf in
            var off = 0
            while off < buf.count {
                let n = write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                off += n
            }
        }
    }

    enum Exchange {
        /// Nothing reached allotd (no socket, no daemon): the full command may run.
        case notSent
        /// The request went out and no answer came back.
        case lost
        /// The request went out and no answer came within this many seconds (``AnswerTimeout``).
        case timedOut(Double)
        case answer([UInt8])
    }

    /// Sends one line and reads one line back.
    static func exchange(socket path: String, line: String) -> Exchange {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .notSent }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return .notSent }
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in bytes.enumerated() { buf[i] = b }
            buf[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else { return .notSent }
        // A bad ALLOT_TIMEOUT is the full command's to report: it runs when this path does not.
        let timeout = AnswerTimeout.seconds(getenv("ALLOT_TIMEOUT").map { String(cString: $0) })
        guard timeout.problem == nil else { return .notSent }
        if let seconds = timeout.seconds {
            var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1_000_000))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        let out = Array(line.utf8)
        var off = 0
        while off < out.count {
            // MSG_NOSIGNAL: a request allotd refuses unread (too long) ends in EPIPE, not death by SIGPIPE.
            let n = out.withUnsafeBytes { send(fd, $0.baseAddress! + off, out.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            // A line cut short is not a request allotd acts on; one it stopped reading (too long) it answers
            // with an error before it closes: read that.
            if n < 0 && off > 0 && (errno == EPIPE || errno == ECONNRESET) { break }
            guard n > 0 else { return off == 0 ? .notSent : .lost }
            off += n
        }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), let seconds = timeout.seconds {
                return .timedOut(seconds)
            }
            guard n > 0 else { return .lost }
            if let nl = chunk[0..<n].firstIndex(of: 10) {
                answer.append(contentsOf: chunk[0..<nl])
                return .answer(answer)
            }
            answer.append(contentsOf: chunk[0..<n])
        }
    }

    static func currentDirectory() -> String? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buf, buf.count) != nil else { return nil }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    static func array(_ items: [String]) -> String { "[" + items.map(quoted).joined(separator: ",") + "]" }

    /// A JSON string literal.
    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}

/// Names and values, in order, looked up by a linear search: a handful of options, and no generic types
/// beyond `[String]` (a dictionary's metadata costs the runtime a lookup by mangled name at start).
struct Pairs {
    var names: [String] = []
    var values: [String] = []

    mutating func append(_ name: String, _ value: String) {
        names.append(name)
        values.append(value)
    }

    subscript(name: String) -> String? {
        guard let i = names.firstIndex(of: name) else { return nil }
        return values[i]
    }
}
