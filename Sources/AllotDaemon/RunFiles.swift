import AllotCore
import Foundation

/// What allotd hands a run's supervisor (`allot-supervise`, C): everything needed to run one run of a job,
/// written to `RUNDIR/spec` as NUL-terminated `key=value` records — a format C reads without a parser. The
/// first record is `allot-run-spec=VERSION`; `arg`, `env` and `group` repeat, in order.
struct RunSpec: Sendable, Equatable {
    /// The version of the file format, checked by the supervisor.
    static let formatVersion = 1

    var id: UInt64
    var run: Int
    var command: [String]
    var environment: [String: String]
    var workdir: String
    var uid: UInt32
    var gid: UInt32
    var groups: [UInt32]
    /// allotd's per-job log (opened by the supervisor).
    var log: String
    /// The owner's own output file, opened as the owner; nil: `log`.
    var output: String?
    /// The job's cgroup (cgroup v2), where allotd can make one: the whole process tree, to be killed.
    var cgroup: String?
    /// The daemon's socket, to report the end at once.
    var socket: String
    /// The cgroup's `cpu.max` (quota and period in µs) for the job's CPUs, when it has a cgroup.
    var cpuMax: String? = nil
    /// The cgroup's `memory.max` (bytes) for the job's memory, when it has a cgroup.
    var memoryMax: String? = nil
    /// For an interactive run: the socket its owner's client connects to, and how its terminal is made.
    var tty: String? = nil
    var interactive: Interactive? = nil
    /// Seconds without a client before an interactive job is hung up on.
    var hangup: Double = 10

    /// The spec as the supervisor reads it. No value may hold a NUL (no C string can either).
    func encoded() -> [UInt8] {
        var records: [(String, String)] = [
            ("allot-run-spec", String(Self.formatVersion)), ("id", String(id)), ("run", String(run)),
            ("uid", String(uid)), ("gid", String(gid)), ("workdir", workdir), ("log", log), ("socket", socket),
        ]
        if let output { records.append(("output", output)) }
        if let cgroup { records.append(("cgroup", cgroup)) }
        if let cpuMax { records.append(("cpu_max", cpuMax)) }
        if let memoryMax { records.append(("memory_max", memoryMax)) }
        if let tty, let i = interactive {
            records += [
                ("tty", tty), ("pty", i.pty ? "1" : "0"), ("rows", String(i.rows)), ("cols", String(i.cols)),
                ("hangup", String(hangup)),
            ]
        }
        records += groups.map { ("group", String($0)) }
        records += environment.sorted { $0.key < $1.key }.map { ("env", "\($0.key)=\($0.value)") }
        records += command.map { ("arg", $0) }
        var bytes: [UInt8] = []
        for (key, value) in records {
            bytes += Array(key.utf8) + [UInt8(ascii: "=")] + Array(value.utf8) + [0]
        }
        return bytes
    }

    /// A value the spec cannot carry (a NUL byte), by name; nil when there is none.
    var unwritable: String? {
        func bad(_ s: String) -> Bool { s.utf8.contains(0) }
        if let a = command.first(where: bad) { return "the command argument \(a.debugDescription)" }
        if let e = environment.first(where: { bad($0.key) || bad($0.value) || $0.key.contains("=") }) {
            return "the environment variable \(e.key.debugDescription)"
        }
        if bad(workdir) { return "the working directory" }
        if let o = output, bad(o) { return "the output path" }
        return nil
    }
}

extension RunSpec {
    /// Reads a spec written by `encoded()`; nil if it is not one.
    init?(decoding bytes: [UInt8]) {
        var fields: [String: String] = [:]
        var command: [String] = []
        var environment: [String: String] = [:]
        var groups: [UInt32] = []
        let records = bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast()
        guard bytes.last == 0, let first = records.first,
            String(decoding: first, as: UTF8.self) == "allot-run-spec=\(Self.formatVersion)"
        else { return nil }
        for record in records.dropFirst() {
            guard let eq = record.firstIndex(of: UInt8(ascii: "=")) else { return nil }
            let key = String(decoding: record[..<eq], as: UTF8.self)
            let value = String(decoding: record[(eq + 1)...], as: UTF8.self)
            switch key {
            case "arg": command.append(value)
            case "group":
                guard let g = UInt32(value) else { return nil }
                groups.append(g)
            case "env":
                guard let e = value.firstIndex(of: "=") else { return nil }
                environment[String(value[..<e])] = String(value[value.index(after: e)...])
            default: fields[key] = value
            }
        }
        guard let id = fields["id"].flatMap({ UInt64($0) }), let run = fields["run"].flatMap({ Int($0) }),
            let uid = fields["uid"].flatMap({ UInt32($0) }), let gid = fields["gid"].flatMap({ UInt32($0) }),
            let workdir = fields["workdir"], let log = fields["log"], let socket = fields["socket"], !command.isEmpty
        else { return nil }
        self.init(
            id: id,
            run: run,
            command: command,
            environment: environment,
            workdir: workdir,
            uid: uid,
            gid: gid,
            groups: groups,
            log: log,
            output: fields["output"],
            cgroup: fields["cgroup"],
            socket: socket,
            cpuMax: fields["cpu_max"],
            memoryMax: fields["memory_max"],
            tty: fields["tty"],
            interactive: fields["tty"] == nil
                ? nil
                : Interactive(
                    pty: fields["pty"] == "1",
                    rows: fields["rows"].flatMap { Int($0) } ?? 24,
                    cols: fields["cols"].flatMap { Int($0) } ?? 80
                ),
            hangup: fields["hangup"].flatMap { Double($0) } ?? 10
        )
    }
}

/// What a supervisor leaves in `RUNDIR/status` when the run has ended (JSON, written atomically).
struct RunStatus: Codable, Sendable {
    var exitCode: Int32?
    var signal: Int32?
    /// Set when the job could not be started at all.
    var error: String?
    var endedAt: Double

    enum CodingKeys: String, CodingKey {
        case signal, error
        case exitCode = "exit_code"
        case endedAt = "ended_at"
    }
}
