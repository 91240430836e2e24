import AllotProtocol
import ArgumentParser
import Foundation

struct Nodes: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the pool's nodes.")

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print a JSON array of node objects.")
    var json = false

    @Flag(name: .long, help: "List every GPU of each node: health, UUID, model and memory as discovered.")
    var gpus = false

    func run() throws {
        try talking {
            let client = try connection.connect()
            let nodes: [NodeObject] = try client.call(Methods.nodes, NoParams())
            if json { return try printJSON(nodes) }
            if gpus { return out(gpuTable(nodes)) }
            // Agents' link, version and last heartbeat, when any node has an agent.
            let withAgents = nodes.contains { $0.agent != nil }
            // CPUs and memory held of those declared (as sinfo's CPUS(A/I/O/T) and scontrol's AllocMem), when
            // any node declares them.
            let withHost = nodes.contains { $0.cpus != nil || $0.memoryMiB != nil }
            let now = Date().timeIntervalSince1970
            let rows = nodes.map { n -> [String] in
                var row = [
                    n.name, n.state, n.gpuModel, String(n.gpus), String(n.gpusFree),
                    n.gpusUnhealthy.isEmpty ? "-" : n.gpusUnhealthy.map(String.init).joined(separator: ","),
                    n.local ? "yes" : "no",
                ]
                if withHost {
                    let cpus = n.cpus.map { "\(JobObject.decimal(n.cpusUsed ?? 0))/\(JobObject.decimal($0))" } ?? "-"
                    let memory = n.memoryMiB.map { "\(Self.gib(n.memoryUsedMiB ?? 0))/\(Self.gib($0)) GiB" } ?? "-"
                    row += [cpus, memory]
                }
                if withAgents {
                    if let a = n.agent {
                        let age = a.lastHeartbeat.flatMap(WireTime.parse).map { "\(max(0, Int(now - $0)))s ago" } ?? "-"
                        row += ["\(a.link) \(a.version)", age]
                    } else {
                        row += ["-", "-"]
                    }
                }
                return row + [n.reason ?? ""]
            }
            let head =
                ["NODE", "STATE", "MODEL", "GPUS", "FREE", "UNHEALTHY", "LOCAL"]
                + (withHost ? ["CPUS USED", "MEMORY USED"] : [])
                + (withAgents ? ["AGENT", "HEARTBEAT"] : []) + ["REASON"]
            out(table(head, rows))
            // Why each unhealthy GPU is out of scheduling.
            var notes = ""
            for n in nodes {
                for g in n.gpuList ?? [] where g.health != "healthy" {
                    notes += "\(n.name) GPU \(g.index): \(g.reason ?? "unhealthy")\n"
                }
                if let p = n.discoveryProblem { notes += "\(n.name): \(p)\n" }
            }
            if !notes.isEmpty { out("\n" + notes) }
        }
    }

    /// MiB as GiB: `256`, `9.2`.
    static func gib(_ mib: Int) -> String {
        mib % 1024 == 0 ? String(mib / 1024) : String(format: "%.1f", Double(mib) / 1024)
    }

    func gpuTable(_ nodes: [NodeObject]) -> String {
        var rows: [[String]] = []
        let anyMIG = nodes.contains { $0.mig != nil }
        for n in nodes {
            for g in n.gpuList ?? (0..<n.gpus).map({ GPUObject(index: $0, health: "healthy", reason: nil) }) {
                var row = [
                    n.name, String(g.index), g.health, g.uuid ?? "-", g.name ?? n.gpuModel,
                    g.memoryMiB.map { "\($0) MiB" } ?? "-", n.discovery ?? "declared", Self.use(g),
                ]
                if anyMIG {
                    // MIG mode, then the instances on the GPU.
                    let instances = (g.mig ?? []).joined(separator: ", ")
                    row.append(n.mig.map { instances.isEmpty ? "\($0): none" : "\($0): \(instances)" } ?? "-")
                }
                rows.append(row + [g.reason ?? ""])
            }
        }
        let head =
            ["NODE", "GPU", "HEALTH", "UUID", "MODEL", "MEMORY", "SOURCE", "USED"] + (anyMIG ? ["MIG"] : [])
            + ["REASON"]
        return table(head, rows)
    }

    /// `-` free, `job 7` held whole, `0.975 (jobs 1,2,3)` shared.
    static func use(_ g: GPUObject) -> String {
        let jobs = g.jobs ?? []
        guard !jobs.isEmpty, let used = g.used else { return "-" }
        let ids = jobs.map(String.init).joined(separator: ",")
        if used >= 1 && jobs.count == 1 { return "job \(ids)" }
        let part = JobObject.decimal(used)
        return "\(part) (job\(jobs.count == 1 ? "" : "s") \(ids))"
    }
}

struct Drain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drain a node: no new jobs start on it; running ones finish (admin only)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The node's name.")
    var node: String

    @Option(name: .long, help: ArgumentHelp("Why (shown by allotctl nodes).", valueName: "TEXT"))
    var reason: String

    @Flag(name: .long, help: "Print the node object as JSON.")
    var json = false

    func run() throws {
        try talking {
            let client = try connection.connect()
            let n: NodeObject = try client.call(Methods.drain, NodeParams(node: node, reason: reason))
            if json { try printJSON(n) } else { out("\(n.name) \(n.state)\n") }
        }
    }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a drained or down node back in service (admin only)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The node's name.")
    var node: String

    @Flag(name: .long, help: "Print the node object as JSON.")
    var json = false

    func run() throws {
        try talking {
            let client = try connection.connect()
            let n: NodeObject = try client.call(Methods.resume, NodeParams(node: node))
            if json { try printJSON(n) } else { out("\(n.name) \(n.state)\n") }
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The pool at a glance: GPUs by model, the queue by kind and class, today's spend."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print the status object as JSON.")
    var json = false

    func run() throws {
        try talking {
            let client = try connection.connect()
            let s: StatusResult = try client.call(Methods.status, NoParams())
            if json { return try printJSON(s) }
            let models = s.gpus.keys.sorted()
            var rows = models.map { m -> [String] in
                let c = s.gpus[m]!
                return [m, String(c.total), String(c.used), String(c.free), String(c.lent), String(c.unhealthy)]
            }
            let t = s.gpus.values
            rows.append([
                "total", String(t.reduce(0) { $0 + $1.total }), String(t.reduce(0) { $0 + $1.used }),
                String(t.reduce(0) { $0 + $1.free }), String(t.reduce(0) { $0 + $1.lent }),
                String(t.reduce(0) { $0 + $1.unhealthy }),
            ])
            out(table(["GPU MODEL", "TOTAL", "USED", "FREE", "LENT", "UNHEALTHY"], rows))
            out("\n")
            let queue = s.queue.keys.sorted().flatMap { kind in
                s.queue[kind]!.keys.sorted().map { [kind, $0, String(s.queue[kind]![$0]!)] }
            }
            if queue.isEmpty {
                out("queue: empty\n")
            } else {
                out(table(["QUEUED KIND", "CLASS", "JOBS"], queue))
            }
            let jobs = ["pending", "held", "running", "stopping", "completed", "failed", "cancelled", "timed_out"]
                .compactMap { k in s.jobs[k].map { "\($0) \(k)" } }
            out("\njobs: \(jobs.isEmpty ? "none" : jobs.joined(separator: ", "))\n")
            out("nodes: \(s.nodes.keys.sorted().map { "\(s.nodes[$0]!) \($0)" }.joined(separator: ", "))\n")
            out("spend today (UTC): $\(String(format: "%.2f", s.spendTodayUSD))\n")
            switch s.log.role {
            case "leader"?: out("controller: leads (log in etcd to LSN \(s.log.durableLSN))\n")
            case "follower"?:
                out(
                    "controller: follows \(s.log.leader ?? "(no leader now)") — a hot standby: reads answered here, to LSN \(s.log.lastLSN); changes go to the leader\n"
                )
            default: break
            }
            if let f = s.log.failed { out("WRITE-AHEAD LOG FAILED: \(f)\n") }
        }
    }
}

struct Cost: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "GPU-hours and money spent, by tenant, model, kind, user, service or job.",
        discussion:
            "Times are RFC 3339 (2026-11-01T00:00:00Z), YYYY-MM-DD (UTC midnight), today, yesterday, now, or a span ago (-2h, 3d)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .long, help: ArgumentHelp("tenant (default), model, kind, user, service or job.", valueName: "KEY"))
    var by = "tenant"

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Count from this time.", valueName: "TIME"))
    var since: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Count until this time.", valueName: "TIME"))
    var until: String?

    @Option(name: .long, help: ArgumentHelp("table (default), csv or json.", valueName: "F"))
    var format = "table"

    @Flag(name: .long, help: "Same as --format json.")
    var json = false

    func validate() throws {
        guard ["table", "csv", "json"].contains(format) else {
            throw ValidationError("--format: expected table, csv or json, got \"\(format)\"")
        }
        guard ["tenant", "model", "kind", "user", "service", "job"].contains(by) else {
            throw ValidationError("--by: expected tenant, model, kind, user, service or job, got \"\(by)\"")
        }
    }

    func run() throws {
        let since = try TimeArgument.wire(since, option: "--since")
        let until = try TimeArgument.wire(until, option: "--until")
        try talking {
            let client = try connection.connect()
            let r: CostResult = try client.call(Methods.cost, CostParams(by: by, since: since, until: until))
            switch json ? "json" : format {
            case "json":
                try printJSON(r.rows)
            case "csv":
                let cents = Self.cents(r.rows.map(\.costUSD))
                out("\(by)\(by == "job" ? ",name" : ""),gpu_hours,cost_usd\n")
                for (row, c) in zip(r.rows, cents.rows) {
                    let name = by == "job" ? "," + Self.csv(row.name ?? "") : ""
                    out("\(Self.csv(row.key))\(name),\(row.gpuHours),\(Self.dollars(c))\n")
                }
            default:
                // Rows are rounded to cents so that they add up to the total shown (largest remainder).
                let cents = Self.cents(r.rows.map(\.costUSD))
                let hours = r.rows.reduce(0) { $0 + $1.gpuHours }
                var rows = zip(r.rows, cents.rows).map { row, c in
                    [row.key] + (by == "job" ? [row.name ?? ""] : [])
                        + [String(format: "%.2f", row.gpuHours), "$" + Self.dollars(c)]
                }
                rows.append(
                    ["total"] + (by == "job" ? [""] : []) + [
                        String(format: "%.2f", hours), "$" + Self.dollars(cents.total),
                    ]
                )
                out(table([by.uppercased()] + (by == "job" ? ["NAME"] : []) + ["GPU-HOURS", "COST"], rows))
            }
        }
    }

    /// Amounts in whole cents that add up to their rounded total: each rounded down, then the cents left
    /// given to the largest remainders.
    static func cents(_ usd: [Double]) -> (rows: [Int], total: Int) {
        let total = Int((usd.reduce(0, +) * 100).rounded())
        var rows = usd.map { Int(($0 * 100).rounded(.down)) }
        var left = total - rows.reduce(0, +)
        let byRemainder = usd.indices.sorted { a, b in
            let (ra, rb) = (usd[a] * 100 - Double(rows[a]), usd[b] * 100 - Double(rows[b]))
            return ra != rb ? ra > rb : a < b
        }
        var i = 0
        while left > 0 && !byRemainder.isEmpty {
            rows[byRemainder[i % byRemainder.count]] += 1
            left -= 1
            i += 1
        }
        return (rows, total)
    }

    static func dollars(_ cents: Int) -> String {
        let c = abs(cents) % 100
        return (cents < 0 ? "-" : "") + "\(abs(cents) / 100)." + (c < 10 ? "0\(c)" : "\(c)")
    }

    static func csv(_ s: String) -> String {
        s.contains(where: { ",\"\n".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make allotd read its configuration file again (admin only); an invalid file is refused."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print the changes as JSON.")
    var json = false

    func run() throws {
        try talking {
            let client = try connection.connect()
            let r: ReloadResult = try client.call(Methods.reload, NoParams())
            if json { return try printJSON(r) }
            if r.changes.isEmpty { out("reloaded: no changes\n") }
            for c in r.changes { out("\(c)\n") }
        }
    }
}
