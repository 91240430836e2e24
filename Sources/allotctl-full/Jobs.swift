import AllotCore
import AllotProtocol
import ArgumentParser
import Foundation

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List jobs (pending, held, running and stopping ones unless told otherwise).",
        discussion: "REASON says why a pending job waits (allotctl why ID says more), or how a job ended."
    )

    @OptionGroup var connection: ConnectionOptions

    @OptionGroup var filters: JobFilters

    @Flag(name: [.short, .long], help: "Include ended jobs (same as --state all).")
    var all = false

    @Option(name: .long, help: ArgumentHelp("Only training or inference jobs.", valueName: "KIND"))
    var kind: String?

    @Option(name: .long, help: ArgumentHelp("At most the N newest jobs.", valueName: "N"))
    var limit: Int?

    @Option(
        name: .long,
        parsing: .unconditional,
        help: ArgumentHelp(
            "Only jobs in the pool at or after this time, ended ones too: 2026-11-01, yesterday, -2h, RFC 3339.",
            valueName: "TIME"
        )
    )
    var since: String?

    @Option(
        name: .long,
        parsing: .unconditional,
        help: ArgumentHelp("Only jobs submitted by this time, ended ones too (as --since).", valueName: "TIME")
    )
    var until: String?

    @Flag(name: .long, help: "Print a JSON array of job objects.")
    var json = false

    func validate() throws {
        _ = try TimeArgument.wire(since, option: "--since")
        _ = try TimeArgument.wire(until, option: "--until")
    }

    /// The request for these filters.
    func params() throws -> ListParams {
        var p = try filters.params(since: since, until: until)
        if all { p.states = (p.states ?? []) + ["all"] }
        p.kind = kind
        p.limit = limit
        // A table folds an array's waiting tasks; allotd does it, instead of sending each.
        if !json { p.fold = true }
        return p
    }

    func run() throws {
        let params = try params()
        try talking {
            let client = try connection.connect()
            let jobs: [JobObject] = try client.call(Methods.list, params)
            if json { return try printJSON(jobs) }
            let now = Date().timeIntervalSince1970
            let rows = Self.folded(jobs).map { (j, id) -> [String] in
                [
                    id, j.name, j.user ?? String(j.uid), j.tenant, j.kind, j.priorityClass, j.state,
                    j.gpusText, j.gpuModel ?? "-", j.node ?? "-", Self.waited(j, now: now), Self.ran(j, now: now),
                    j.reason ?? "",
                ]
            }
            out(
                table(
                    [
                        "ID", "NAME", "USER", "TENANT", "KIND", "CLASS", "STATE", "GPUS", "MODEL", "NODE", "WAITED",
                        "RAN", "REASON",
                    ],
                    rows
                )
            )
        }
    }

    /// Jobs with the text of their ID column: a task of an array as `12_7`; waiting tasks of one array in
    /// the same state and for the same reason, one after another, folded into one row, `12_[3-999]`.
    static func folded(_ jobs: [JobObject]) -> [(JobObject, String)] {
        var out: [(JobObject, String)] = []
        var i = 0
        while i < jobs.count {
            let j = jobs[i]
            guard let array = j.arrayJobID, let index = j.arrayTaskID else {
                out.append((j, String(j.id)))
                i += 1
                continue
            }
            if let tasks = j.arrayTasks {
                out.append((j, "\(array)_[\(tasks)]"))
                i += 1
                continue
            }
            var indices = [index]
            var k = i + 1
            if ["pending", "held"].contains(j.state) {
                while k < jobs.count, jobs[k].arrayJobID == array, jobs[k].state == j.state, jobs[k].reason == j.reason,
                    let next = jobs[k].arrayTaskID
                {
                    indices.append(next)
                    k += 1
                }
            }
            out.append((j, indices.count == 1 ? "\(array)_\(index)" : "\(array)_[\(Allocation.ranges(indices))]"))
            i = k
        }
        return out
    }

    /// Time in the queue: from submit to its (latest) start, or to now while it waits.
    static func waited(_ j: JobObject, now: Double) -> String {
        guard let submitted = WireTime.parse(j.submitTime) else { return "-" }
        if ["pending", "held"].contains(j.state) { return DurationText.format(max(0, now - submitted)) }
        if let s = j.startTime.flatMap(WireTime.parse) { return DurationText.format(max(0, s - submitted)) }
        return "-"
    }

    /// Time its (latest) run took: to now while it runs, to its end once it ended; "-" when it never ran.
    static func ran(_ j: JobObject, now: Double) -> String {
        guard let s = j.startTime.flatMap(WireTime.parse), !["pending", "held"].contains(j.state) else { return "-" }
        let end = j.endTime.flatMap(WireTime.parse) ?? now
        return DurationText.format(max(0, end - s))
    }
}

/// The filters `ls` and `history` share.
struct JobFilters: ParsableArguments {
    @Option(
        name: .long,
        parsing: .singleValue,
        help: ArgumentHelp(
            "Only jobs in these states (repeatable or comma-separated): pending, held, running, stopping, completed, failed, cancelled, timed_out, active, ended, all.",
            valueName: "STATE"
        )
    )
    var state: [String] = []

    @Option(name: .long, help: ArgumentHelp("Only this user's jobs (name or uid).", valueName: "USER"))
    var user: String?

    @Option(name: .long, help: ArgumentHelp("Only this tenant's jobs.", valueName: "T"))
    var tenant: String?

    @Option(name: .long, help: ArgumentHelp("Only jobs of this name (* matches anything).", valueName: "NAME"))
    var name: String?

    @Option(name: .long, help: ArgumentHelp("Only jobs that run or ran on this node.", valueName: "NODE"))
    var node: String?

    /// The request for these filters and a time window (states nil when none are named).
    func params(since: String?, until: String?) throws -> ListParams {
        let states = state.flatMap { $0.split(separator: ",").map(String.init) }
        return ListParams(
            states: states.isEmpty ? nil : states,
            user: user,
            tenant: tenant,
            name: name,
            node: node,
            since: try TimeArgument.wire(since, option: "--since"),
            until: try TimeArgument.wire(until, option: "--until")
        )
    }
}

/// sacct's answer: what ran in a time window, with its waits, run times, exit codes, GPU-hours and cost.
struct History: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Jobs of a time window, ended ones too, with wait, run time, exit code, GPU-hours and cost (as sacct).",
        discussion: """
            The window is --since (default: today, 00:00 UTC) to --until (default: now): the jobs submitted by its \
            end and not ended before its start. Filters as for ls. Money and GPU-hours are in full precision in csv \
            and json.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(
        name: .long,
        parsing: .unconditional,
        help: ArgumentHelp("From this time (default today): \(TimeArgument.help).", valueName: "TIME")
    )
    var since = "today"

    @Option(
        name: .long,
        parsing: .unconditional,
        help: ArgumentHelp("Until this time (default now).", valueName: "TIME")
    )
    var until: String?

    @OptionGroup var filters: JobFilters

    @Option(name: .long, help: ArgumentHelp("table (default), csv or json.", valueName: "F"))
    var format = "table"

    @Flag(name: .long, help: "Same as --format json.")
    var json = false

    func validate() throws {
        guard ["table", "csv", "json"].contains(format) else {
            throw ValidationError("--format: expected table, csv or json, got \"\(format)\"")
        }
        _ = try TimeArgument.wire(since, option: "--since")
        _ = try TimeArgument.wire(until, option: "--until")
    }

    func run() throws {
        var params = try filters.params(since: since, until: until)
        params.states = params.states ?? ["all"]
        let format = json ? "json" : format
        try talking {
            let client = try connection.connect()
            let jobs: [JobObject] = try client.call(Methods.list, params)
            if format == "json" { return try printJSON(jobs) }
            let now = Date().timeIntervalSince1970
            let header = [
                "id", "name", "user", "tenant", "state", "submitted", "waited_s", "ran_s", "exit_code", "gpu_hours",
                "cost_usd", "node",
            ]
            if format == "csv" {
                out(header.joined(separator: ",") + "\n")
                for j in jobs {
                    let fields: [String] = [
                        String(j.id), j.name, j.user ?? String(j.uid), j.tenant, j.state, j.submitTime,
                        Self.waitedSeconds(j, now: now).map { String($0) } ?? "", j.ranSeconds.map { String($0) } ?? "",
                        j.exitCode.map(String.init) ?? "", String(j.gpuHours ?? 0), String(j.costUSD), j.node ?? "",
                    ]
                    out(fields.map(Cost.csv).joined(separator: ",") + "\n")
                }
                return
            }
            let rows = jobs.map { j -> [String] in
                [
                    String(j.id), j.name, j.user ?? String(j.uid), j.tenant, j.state,
                    String(j.submitTime.prefix(16)).replacingOccurrences(of: "T", with: " "),
                    List.waited(j, now: now), j.ranSeconds.map(DurationText.format) ?? "-",
                    j.exitCode.map(String.init) ?? "-", String(format: "%.2f", j.gpuHours ?? 0),
                    "$" + String(format: "%.2f", j.costUSD), j.node ?? "-",
                ]
            }
            out(
                table(
                    [
                        "ID", "NAME", "USER", "TENANT", "STATE", "SUBMITTED", "WAITED", "RAN", "EXIT", "GPU-HOURS",
                        "COST",
                        "NODE",
                    ],
                    rows
                )
            )
        }
    }

    /// Seconds from submit to its (latest) start, or to now while it waits; nil when it never started.
    static func waitedSeconds(_ j: JobObject, now: Double) -> Double? {
        guard let submitted = WireTime.parse(j.submitTime) else { return nil }
        if ["pending", "held"].contains(j.state) { return max(0, now - submitted) }
        return j.startTime.flatMap(WireTime.parse).map { max(0, $0 - submitted) }
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one job in full.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id (12, or 12_7 for task 7 of job array 12).")
    var id: JobRef

    @Flag(name: .long, help: "Print the job object as JSON.")
    var json = false

    func run() throws {
        try talking {
            let client = try connection.connect()
            let j: JobObject = try client.call(Methods.show, IDParams(id: id))
            if json { return try printJSON(j) }
            var lines: [(String, String)] = [
                ("id", String(j.id)), ("name", j.name), ("state", j.state), ("user", "\(j.user ?? "?") (uid \(j.uid))"),
                ("tenant", j.tenant), ("kind", j.kind), ("class", j.priorityClass),
                (
                    "gpus",
                    j.mig != nil
                        ? "MIG \(j.migInstance ?? (j.mig ?? []).joined(separator: " or "))"
                        : j.gpuShare == nil ? j.gpusText : "\(j.gpusText) (a share of one GPU)"
                ),
                ("gpu model", j.gpuModel ?? "any"),
            ]
            if let s = j.speeds {
                let text = s.sorted { $0.key < $1.key }.map { "\($0.key)=\(JobObject.decimal($0.value))" }
                lines.append(("speed", text.joined(separator: ",") + " (its own; other models keep the pool's)"))
            }
            if let c = j.cpus { lines.append(("cpus", JobObject.decimal(c))) }
            if let m = j.memoryMiB { lines.append(("memory", Fraction.mebibytes(m))) }
            if let n = j.node { lines.append(("node", n)) }
            let host = j.gpuIndices.compactMap { s -> String? in
                var parts: [String] = []
                if let c = s.cpus { parts.append("\(JobObject.decimal(c)) CPU\(c == 1 ? "" : "s")") }
                if let m = s.memoryMiB { parts.append(Fraction.mebibytes(m)) }
                return parts.isEmpty ? nil : "\(s.node): " + parts.joined(separator: ", ")
            }
            if !host.isEmpty { lines.append(("cpus, memory", host.joined(separator: "; "))) }
            if j.gpuIndices.contains(where: { !$0.gpus.isEmpty }) {
                lines.append(
                    (
                        "gpu indices",
                        j.gpuIndices.map { "\($0.node):\($0.gpus.map(String.init).joined(separator: ","))" }.joined(
                            separator: " "
                        )
                    )
                )
            }
            lines.append(("submitted", j.submitTime))
            if let d = j.dependency { lines.append(("dependency", d)) }
            if let n = j.nodelist { lines.append(("nodelist", n)) }
            if let n = j.exclude { lines.append(("exclude", n)) }
            if let c = j.constraint { lines.append(("constraint", c)) }
            if let n = j.nice { lines.append(("nice", String(n))) }
            if j.notify != nil || j.mailUser != nil || j.mailType != nil {
                let who = [j.notify, j.mailUser].compactMap { $0 }.joined(separator: ", ")
                lines.append(("notify", "\(who.isEmpty ? "its tenant's webhook" : who) on \(j.mailType ?? "")"))
            }
            if let s = j.startTime { lines.append(("started", s)) }
            if let c = j.lastCheckpoint { lines.append(("last checkpoint", c)) }
            if let e = j.endTime { lines.append(("ended", e)) }
            if let c = j.exitCode { lines.append(("exit code", String(c))) }
            if let w = j.walltimeSeconds { lines.append(("walltime", DurationText.format(w))) }
            lines.append(("preemptible", j.preemptible ? "yes" : "no"))
            if let p = j.placement { lines.append(("placement", p)) }
            if !j.loans.isEmpty { lines.append(("loans", j.loans.joined(separator: "; "))) }
            if let r = j.reason { lines.append(("reason", r)) }
            for (i, run) in (j.earlierRuns ?? []).enumerated() {
                var span = ""
                if let a = WireTime.parse(run.start), let b = WireTime.parse(run.end) {
                    span = " (\(DurationText.format(max(0, b - a))))"
                }
                let on = run.on.map { " on \($0)" } ?? ""
                lines.append(("run \(i + 1)", "\(run.start) → \(run.end)\(span)\(on): \(run.ended)"))
            }
            lines.append(("cost", "$" + String(format: "%.2f", j.costUSD)))
            if let c = j.command, let script = BatchScript.described(c) {
                lines.append(
                    (
                        "command",
                        "batch script \(([script.name] + script.args).map(Self.quote).joined(separator: " ")) (its copy from submit; show --json has it)"
                    )
                )
            } else if let c = j.command {
                lines.append(("command", c.map(Self.quote).joined(separator: " ")))
            }
            if let w = j.workdir { lines.append(("workdir", w)) }
            if let env = j.env, !env.isEmpty {
                lines.append(("env", env.keys.sorted().map { "\($0)=\(env[$0]!)" }.joined(separator: " ")))
            }
            if let l = j.log { lines.append(("log", l)) }
            let w = lines.map(\.0.count).max() ?? 0
            out(
                lines.map { "\($0.0.padding(toLength: w, withPad: " ", startingAt: 0))  \($0.1)" }.joined(
                    separator: "\n"
                ) + "\n"
            )
        }
    }

    static func quote(_ s: String) -> String {
        s.isEmpty || s.contains(where: { " \t\"'$\\".contains($0) })
            ? "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" : s
    }
}

struct Why: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Explain where a job stands: why it waits, why it runs where it does, or how it ended."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id (12, or 12_7 for task 7 of job array 12).")
    var id: JobRef

    @Flag(name: .long, help: "Print the explanation as JSON.")
    var json = false

    func run() throws {
        try talking {
            let client = try connection.connect()
            let w: WhyResult = try client.call(Methods.why, IDParams(id: id))
            if json { return try printJSON(w) }
            out("job \(w.id) is \(w.state)\n")
            for l in w.lines { out("  - \(l)\n") }
        }
    }
}

/// cancel, hold, release: the same shape.
struct JobChange {
    static func run(
        _ method: RPCMethod<IDsParams, ItemsResult>,
        _ past: String,
        ids: [String],
        connection: ConnectionOptions,
        json: Bool
    ) throws {
        var refs: [JobRef] = []
        for text in ids {
            guard let r = JobRef(text) else {
                throw ValidationError("\"\(text)\" is not a job id such as 12 or 12_7 (task 7 of job array 12)")
            }
            refs.append(r)
        }
        try talking {
            let client = try connection.connect()
            let r: ItemsResult = try client.call(method, IDsParams(ids: refs))
            if json { try printJSON(r) }
            var worst: RPCError?
            for item in r.results {
                if item.ok {
                    if !json { out("\(past) \(item.id)\n") }
                } else if let e = item.error {
                    FileHandle.standardError.write(Data("allotctl: \(e.message)\n".utf8))
                    if worst == nil { worst = e }
                }
            }
            if let worst { throw ExitCode(Exit.code(for: worst)) }
        }
    }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cancel jobs: pending ones at once, running ones with SIGTERM, then SIGKILL after their grace."
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Job ids: 12 (for a job array, all its tasks) or 12_7 (task 7 of array 12).") var ids: [String]
    @Flag(name: .long, help: "Print the results as JSON.") var json = false
    func run() throws { try JobChange.run(Methods.cancel, "cancelled", ids: ids, connection: connection, json: json) }
}

struct Hold: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Hold pending jobs: they do not start until released.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Job ids: 12 (for a job array, all its tasks) or 12_7 (task 7 of array 12).") var ids: [String]
    @Flag(name: .long, help: "Print the results as JSON.") var json = false
    func run() throws { try JobChange.run(Methods.hold, "held", ids: ids, connection: connection, json: json) }
}

struct Release: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Release held jobs.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Job ids: 12 (for a job array, all its tasks) or 12_7 (task 7 of array 12).") var ids: [String]
    @Flag(name: .long, help: "Print the results as JSON.") var json = false
    func run() throws { try JobChange.run(Methods.release, "released", ids: ids, connection: connection, json: json) }
}

struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report that running jobs saved a checkpoint (a job runs it after each save).",
        discussion: """
            The work before the checkpoint survives a preemption, so allot counts only the work since as \
            at risk when it chooses whom to preempt; and a job that reports checkpoints is preempted for \
            attained service (to let jobs that have used fewer GPU-hours go first) only within 5 minutes \
            after one. Without ids, the job this runs in ($ALLOT_JOB_ID).
            """
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Job ids (default: $ALLOT_JOB_ID, the job this runs in).") var ids: [String] = []
    @Flag(name: .long, help: "Print the results as JSON.") var json = false
    func run() throws {
        var ids = ids
        if ids.isEmpty {
            guard let own = ProcessInfo.processInfo.environment["ALLOT_JOB_ID"], !own.isEmpty else {
                throw ValidationError("name a job: no ids given, and ALLOT_JOB_ID is not set (not inside a job)")
            }
            ids = [own]
        }
        try JobChange.run(Methods.checkpoint, "checkpoint recorded for", ids: ids, connection: connection, json: json)
    }
}

struct Requeue: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put jobs back in the queue (as scontrol requeue); their last run stays in their history.",
        discussion: """
            An ended job (completed, failed, cancelled, timed out) waits again at once; a running one is \
            told to stop (its stop signal, SIGKILL after its grace) and waits again once it has.
            """
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Job ids: 12 (for a job array, all its ended tasks) or 12_7.") var ids: [String]
    @Flag(name: .long, help: "Print the results as JSON.") var json = false
    func run() throws { try JobChange.run(Methods.requeue, "requeued", ids: ids, connection: connection, json: json) }
}

struct Update: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change a waiting job's request, or a running job's walltime (as scontrol update).",
        discussion: """
            A pending or held job may change its walltime, estimate, class, GPUs, GPU models, name, \
            dependency, node selection and nice; a running one only its walltime (a longer one: admins only). Each change is logged with \
            who made it. Prints the job as it is now.
            """
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The job's id.") var id: UInt64
    @Option(name: .long, help: ArgumentHelp("A new walltime.", valueName: "DUR")) var walltime: String?
    @Option(
        name: .customShort("t"),
        help: ArgumentHelp("A new walltime as Slurm's -t (a bare number is minutes).", valueName: "TIME")
    )
    var slurmTime: String?
    @Option(name: .long, help: ArgumentHelp("A new expected run time.", valueName: "DUR")) var estimate: String?
    @Option(name: .customLong("class"), help: ArgumentHelp("A new priority class.", valueName: "NAME"))
    var priorityClass: String?
    @Option(
        name: [.customShort("G"), .long],
        parsing: .unconditional,
        help: ArgumentHelp("New GPUs (or a share below 1).", valueName: "N")
    )
    var gpus: Double?
    @Option(name: .customLong("gpu-model"), help: ArgumentHelp("New allowed GPU models.", valueName: "M[,M…]"))
    var gpuModel: String?
    @Option(name: [.customShort("J"), .long], help: ArgumentHelp("A new name.", valueName: "N")) var name: String?
    @Option(
        name: [.customShort("d"), .long],
        help: ArgumentHelp("New dependencies (as submit's); \"\" for none.", valueName: "COND[,…]")
    )
    var dependency: String?
    @Option(
        name: [.customShort("w"), .long],
        help: ArgumentHelp("Nodes it may run on (names or hostlists); \"\" for any.", valueName: "NODES")
    )
    var nodelist: String?
    @Option(
        name: [.customShort("x"), .long],
        help: ArgumentHelp("Nodes it must not run on; \"\" for none.", valueName: "NODES")
    )
    var exclude: String?
    @Option(
        name: [.customShort("C"), .long],
        help: ArgumentHelp("A condition on node labels (as submit's); \"\" for none.", valueName: "EXPR")
    )
    var constraint: String?
    @Option(
        name: .long,
        parsing: .unconditional,
        help: ArgumentHelp(
            "Points off its priority score; a negative value raises it (admins only).",
            valueName: "N"
        )
    )
    var nice: Int?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Its own speeds on GPU models (as submit's --speed); \"\" for the pool's.",
            valueName: "MODEL=X,…"
        )
    )
    var speed: String?
    @Flag(name: .long, help: "Print the job object as JSON.") var json = false

    func validate() throws {
        if let s = speed, !s.isEmpty, case .failure(let e) = JobSpec.parseSpeeds(s) {
            throw ValidationError("--speed: \(e.message)")
        }
        if case .failure(let e) = NodeSelection.parse(nodelist: nodelist, exclude: exclude, constraint: constraint) {
            throw ValidationError(e.message)
        }
        if walltime != nil && slurmTime != nil { throw ValidationError("give --walltime or -t, not both") }
        for (flag, v) in [("--walltime", walltime), ("--estimate", estimate)] {
            if let v, DurationText.parse(v) == nil {
                throw ValidationError("\(flag): \"\(v)\" is not a duration; use e.g. 90s, 15m, 2h or 1:30:00")
            }
        }
        if let t = slurmTime, DurationText.parse(Int(t) != nil ? t + "m" : t) == nil {
            throw ValidationError("-t: \"\(t)\" is not a time; use e.g. 30 (minutes), 1:00:00 or 2-00:00:00")
        }
        if let d = dependency, case .failure(let e) = Dependency.parse(d) {
            throw ValidationError("--dependency: \(e.message)")
        }
    }

    func run() throws {
        var p = UpdateParams(id: id)
        let wall =
            walltime.flatMap(DurationText.parse)
            ?? slurmTime.flatMap { DurationText.parse(Int($0) != nil ? $0 + "m" : $0) }
        p.walltime = wall.map(WireDuration.init)
        p.estimate = estimate.flatMap(DurationText.parse).map(WireDuration.init)
        p.priorityClass = priorityClass
        p.gpus = gpus
        p.gpuModel = gpuModel.map { WireModels($0.split(separator: ",").map(String.init)) }
        p.name = name
        p.dependency = dependency
        p.nodelist = nodelist
        p.exclude = exclude
        p.constraint = constraint
        p.nice = nice
        p.speed = speed.map(WireSpeeds.init)
        try talking {
            let client = try connection.connect()
            let job: JobObject = try client.call(Methods.update, p)
            if json { return try printJSON(job) }
            out("updated \(job.id)\n")
        }
    }
}

struct Logs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a job's output (standard output and error).",
        discussion: """
            With --follow, once the job ends a last line on standard error says how (e.g. "job 12 failed: \
            exit code 1"), and allotctl exits as the job did: 0 when it completed, its exit code when it \
            failed, 128 + the signal when it was killed (a cancelled running job: 143), 1 when it ended without \
            an exit status (cancelled before it started, lost).
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: [.short, .long], help: "Keep printing as the job writes, until it ends.")
    var follow = false

    @Argument(help: "The job's id (12, or 12_7 for task 7 of job array 12).")
    var id: JobRef

    func run() throws {
        try talking {
            let client = try connection.connect()
            let _: LogsResult = try client.call(Methods.logs, LogsParams(id: id, follow: follow))
            struct Note<P: Decodable>: Decodable { var method: String; var params: P }
            while true {
                let line = try client.readLine()
                let head = try JSONDecoder().decode(ResponseHead.self, from: line)
                if head.method == Notifications.logsData.name {
                    out(try JSONDecoder().decode(Note<LogsData>.self, from: line).params.data)
                } else if head.method == Notifications.logsEnd.name {
                    guard follow else { return }
                    let end = try JSONDecoder().decode(Note<LogsEnd>.self, from: line).params
                    guard JobEnd.isEnded(end.state) else {
                        throw fail("job \(id): stopped following (\(end.state))", code: Exit.unreachable)
                    }
                    warn(JobEnd.line(id: id, state: end.state, reason: end.reason))
                    let status = JobEnd.status(state: end.state, exitCode: end.exitCode)
                    if status != 0 { throw ExitCode(status) }
                    return
                }
            }
        }
    }
}

/// How an ended job reads to a script and to a person.
enum JobEnd {
    static func isEnded(_ state: String) -> Bool {
        ["completed", "failed", "cancelled", "timed_out"].contains(state)
    }

    /// 0 when it completed, its exit code when it failed, 128 + signal when killed, else 1.
    static func status(state: String, exitCode: Int32?) -> Int32 {
        if state == "completed" { return 0 }
        if let c = exitCode, c != 0 { return c }
        return 1
    }

    /// "job 12 failed: exit code 1".
    static func line(id: some CustomStringConvertible, state: String, reason: String?) -> String {
        "job \(id) \(state.replacingOccurrences(of: "_", with: " "))" + (reason.map { ": \($0)" } ?? "")
    }
}

struct Wait: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait until jobs end; exit as they did.",
        discussion: """
            Prints a line per job as it ends ("job 12 completed", "job 13 failed: exit code 1"). Exits 0 when \
            every job completed; otherwise with the status of the first job, in the order given, that did not: \
            its exit code, 128 + the signal that killed it, or 1 (ended without an exit status: cancelled \
            before it started, lost). With --timeout, exits 124 \
            if a job is still running then, as timeout(1) does.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .long, help: ArgumentHelp("Give up after this long (exit 124).", valueName: "DUR"))
    var timeout: String?

    @Flag(name: .long, help: "Print each ended job as a JSON object on one line.")
    var json = false

    @Argument(help: "The jobs' ids.")
    var ids: [UInt64]

    func validate() throws {
        if ids.isEmpty { throw ValidationError("give the ids of the jobs to wait for") }
        if let t = timeout, DurationText.parse(t) == nil {
            throw ValidationError(
                "--timeout: \"\(t)\" is not a duration; use e.g. 90s, 15m, 2h, 1d, 1:30:00 or 2-00:00:00"
            )
        }
    }

    func run() throws {
        var ended: [UInt64: (state: String, code: Int32?)] = [:]
        try talking {
            let client = try connection.connect()
            // Watch first, then look: a job that ends in between is seen by one or the other.
            let _: WatchResult = try client.call(Methods.watch, NoParams())
            let looker = try connection.connect()
            func report(_ j: JobObject) {
                guard ended[j.id] == nil, ids.contains(j.id), JobEnd.isEnded(j.state) else { return }
                ended[j.id] = (j.state, j.exitCode)
                if json {
                    out(
                        "{\"id\":\(j.id),\"state\":\"\(j.state)\",\"exit_code\":\(j.exitCode.map(String.init) ?? "null")}\n"
                    )
                } else {
                    out(JobEnd.line(id: j.id, state: j.state, reason: j.reason) + "\n")
                }
            }
            for id in ids { report(try looker.call(Methods.show, IDParams(id: .job(id)))) }
            let deadline = timeout.flatMap(DurationText.parse).map { Date().addingTimeInterval($0) }
            struct Note: Decodable { var method: String; var params: WatchEvent }
            while Set(ids).contains(where: { ended[$0] == nil }) {
                if let deadline {
                    let left = deadline.timeIntervalSinceNow
                    guard left > 0, try client.waitReadable(seconds: left) else {
                        let running = ids.filter { ended[$0] == nil }.map(String.init).joined(separator: ", ")
                        throw fail("timed out; still not ended: \(running)", code: 124)
                    }
                }
                let line = try client.readLine()
                guard let n = try? JSONDecoder().decode(Note.self, from: line),
                    n.method == Notifications.watchEvent.name
                else {
                    continue
                }
                report(n.params.job)
            }
        }
        for id in ids {
            let e = ended[id]!
            let status = JobEnd.status(state: e.state, exitCode: e.code)
            if status != 0 { throw ExitCode(status) }
        }
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print job state changes as they happen, until interrupted."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print each change as a JSON object on one line.")
    var json = false

    func run() throws {
        try talking {
            let client = try connection.connect()
            let _: WatchResult = try client.call(Methods.watch, NoParams())
            struct Note: Decodable { var method: String; var params: WatchEvent }
            while true {
                let line = try client.readLine()
                guard let n = try? JSONDecoder().decode(Note.self, from: line),
                    n.method == Notifications.watchEvent.name
                else {
                    continue
                }
                if json {
                    let e = JSONEncoder()
                    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                    out(String(decoding: try e.encode(n.params), as: UTF8.self) + "\n")
                } else {
                    let j = n.params.job
                    var s =
                        "\(n.params.time)  \(n.params.event.padding(toLength: 10, withPad: " ", startingAt: 0))  job \(j.id) (\(j.name), \(j.user ?? String(j.uid)))  \(j.state)"
                    if let node = j.node, j.state == "running" { s += " on \(node)" }
                    if let r = j.reason, j.state != "running" { s += ": \(r)" }
                    out(s + "\n")
                }
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

extension JobObject {
    /// `2`, `0.25` (a share), `1g.10gb` (a MIG instance, or the profiles a MIG job accepts), `4-16 (8)` (an
    /// elastic job's range, and what its run has).
    var gpusText: String {
        if let migInstance { return String(migInstance.prefix { $0 != "@" }) }
        if let mig { return mig.joined(separator: ",") }
        if let most = maxGPUs { return "\(gpus)-\(most)" + (gpusNow.map { " (\($0))" } ?? "") }
        return gpuShare.map(Self.decimal) ?? String(gpus)
    }

    /// `0.25`, `2`: a wire number in thousandths, as allot writes it.
    static func decimal(_ v: Double) -> String { Fraction.text(Int((v * 1000).rounded())) }
}

extension JobRef: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}
