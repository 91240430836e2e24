import AllotCore
import AllotProtocol
import ArgumentParser
import Foundation

struct ServiceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service",
        abstract: "Run inference services: replicas kept running, checked, and reached on their ports.",
        discussion: """
            A service is a model server run as N replicas, each an inference job of the service's owner \
            (priority class, tenant, budget and cost as for any job), placed on the cheapest GPU or fraction \
            that serves it. allotd keeps N running: a replica that exits is replaced (after 1 s, doubling to \
            5 min while replicas keep crashing soon after they start), one that fails its liveness check \
            three times in a row is restarted. Each replica gets its port in ALLOT_PORT (and ALLOT_SERVICE); \
            `service endpoints` lists the ready ones for a load balancer (docs/services.md).
            """,
        subcommands: [
            ServiceCreate.self, ServiceList.self, ServiceShow.self, ServiceScale.self, ServiceDelete.self,
            ServiceEndpoints.self, ServiceDemand.self, ServiceUpdate.self,
        ]
    )
}

struct ServiceCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a service: allotctl service create [OPTIONS] NAME -- COMMAND.",
        discussion: """
            Every option of submit applies to each replica (--gpus 0.25, --gpu-memory, --mig, --gpu-model, \
            --cpus, --memory, --tenant, --class, --env, --workdir …); options go before NAME. The replica's \
            command should listen on $ALLOT_PORT. Example: allotctl service create --gpus 0.5 --replicas 2 \
            --ready http:/health llama -- vllm serve meta-llama/Llama-3.1-8B --port '$ALLOT_PORT' (through \
            sh -c when the command needs the variable expanded).
            """
    )

    @OptionGroup var job: Submit

    @Option(help: "Replicas to start with (default: --min, or 1).")
    var replicas: Int?

    @Option(help: "The fewest replicas (default: 1, or 0 when --replicas 0).")
    var min: Int?

    @Option(help: "The most replicas (default: --replicas).")
    var max: Int?

    @Option(help: "The port every replica listens on, or auto: one free on its node (default auto).")
    var port: String = "auto"

    @Option(help: "The readiness check: http[:/PATH], tcp or exec:CMD. A replica serves once it passes.")
    var ready: String?

    @Option(help: "The liveness check (same forms): three failures in a row restart the replica.")
    var live: String?

    @Option(
        help: ArgumentHelp(
            "Follow the load: target=N requests in flight per replica, or slots=N per replica with waiting=1% (Erlang C)[,window=60s,panic-window=6s,down-delay=0s,zero-after=D,metrics=/metrics,series=A+B].",
            valueName: "settings"
        )
    )
    var autoscale: String?

    var name: String? { job.rest.first.flatMap { $0 == "--" ? nil : $0 } }
    var command: [String] { Array(job.rest.drop { $0 != "--" }.dropFirst()) }

    func validate() throws {
        guard let name else {
            throw ValidationError(
                "give the service's name and its command: allotctl service create [OPTIONS] NAME -- COMMAND"
            )
        }
        if job.rest.count > 1 && job.rest[1] != "--" {
            throw ValidationError(
                "after NAME comes -- and the command; options go before NAME: allotctl service create --gpus 1 --replicas 2 \(name) -- COMMAND"
            )
        }
        if command.isEmpty {
            throw ValidationError("give the replicas' command after --: allotctl service create \(name) -- COMMAND")
        }
        if let problem = ServiceSpec.nameProblem(name) { throw ValidationError(problem) }
        if job.file != nil || job.array != nil || job.dependency != nil || job.hold {
            throw ValidationError("a service takes none of --file, --array, --dependency and --hold")
        }
        if port != "auto" && Int(port).map({ (1...65_535).contains($0) }) != true {
            throw ValidationError("--port: expected auto or a port 1...65535, got \"\(port)\"")
        }
        for (flag, value) in [("--ready", ready), ("--live", live)] {
            if let v = value, case .failure(let e) = Probe.parse(v) { throw ValidationError("\(flag): \(e.message)") }
        }
        if let a = autoscale, case .failure(let e) = Autoscale.parse(a) {
            throw ValidationError("--autoscale: \(e.message)")
        }
        for (flag, value) in [("--replicas", replicas), ("--min", min), ("--max", max)] {
            if let v = value, v < 0 { throw ValidationError("\(flag): expected 0 or more, got \(v)") }
        }
    }

    func run() throws {
        try talking {
            let s = try job.connection.connect().call(Methods.serviceCreate, params())
            if job.json { return try printJSON(s) }
            out(ServiceShow.size(s))
        }
    }

    /// The request the options describe (create's and update's).
    func params() -> ServiceCreateParams {
        var r = job.request()
        r.command = command
        r.kind = "inference"
        return ServiceCreateParams(
            name: name!,
            job: r,
            replicas: replicas,
            min: min,
            max: max,
            port: Int(port),
            ready: ready,
            live: live,
            autoscale: autoscale
        )
    }
}

struct ServiceUpdate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update",
        abstract: "Give a service a new definition: allotctl service update [OPTIONS] NAME -- COMMAND.",
        discussion: """
            Takes the whole replica definition, as create does (options not given take their defaults; the \
            number of replicas and the bounds stay unless given). When the replicas' job changes (command, \
            environment, GPUs, …) the replicas are replaced one at a time: a new one must be ready before an \
            old one gets SIGTERM and its grace (max surge 1, max unavailable 0). A new version whose replicas \
            keep crashing, or do not become ready within 10 minutes, stops the rollout; the old replicas keep \
            serving and `service show` says why. Checks and autoscaling change at once, without a rollout.
            """
    )

    @OptionGroup var service: ServiceCreate

    func run() throws {
        try talking {
            let s = try service.job.connection.connect().call(Methods.serviceUpdate, service.params())
            if service.job.json { return try printJSON(s) }
            out(ServiceShow.size(s) + (s.rollout.map { "rollout: \($0)\n" } ?? ""))
        }
    }
}

struct ServiceList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the services.")

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print a JSON array of service objects.")
    var json = false

    func run() throws {
        try talking {
            let services = try connection.connect().call(Methods.serviceList, NoParams())
            if json { return try printJSON(services) }
            if services.isEmpty { return out("no services\n") }
            let rows = services.map { s in
                [
                    s.name, s.user, s.tenant, "\(s.ready)/\(s.replicas)", "\(s.min)...\(s.max)",
                    Fraction.text(Int((s.gpus * 1000).rounded())), String(format: "%.2f", s.costPerHour),
                    // Two crashes in a row or more: the replicas keep dying, which matters more than the size.
                    (s.crashes ?? 0) >= 2 ? "crashing: \(s.lastCrash ?? "")" : s.scaleReason,
                ]
            }
            out(table(["SERVICE", "USER", "TENANT", "READY", "BOUNDS", "GPUS", "$/H", "NOTE"], rows))
        }
    }
}

struct ServiceShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show a service: what it runs, its size and why, and each replica."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print the service object as JSON.")
    var json = false

    @Argument(help: "The service.")
    var name: String

    func run() throws {
        try talking {
            let s = try connection.connect().call(Methods.serviceShow, ServiceNameParams(name: name))
            if json { return try printJSON(s) }
            out(ServiceShow.text(s))
        }
    }

    /// "service web: 2 replicas wanted (1...4)".
    static func size(_ s: ServiceObject) -> String {
        "service \(s.name): \(s.replicas) replica\(s.replicas == 1 ? "" : "s") wanted (\(s.min)...\(s.max))\n"
    }

    static func text(_ s: ServiceObject) -> String {
        var lines: [(String, String)] = [
            ("service", s.name),
            ("user", "\(s.user) (uid \(s.uid))"),
            ("tenant", s.tenant),
            ("command", s.command.joined(separator: " ")),
            (
                "gpus",
                Fraction.text(Int((s.gpus * 1000).rounded()))
                    + (s.gpuModels.map { " (\($0.joined(separator: ", ")))" } ?? "")
            ),
            ("replicas", "\(s.ready) ready of \(s.replicas) wanted (bounds \(s.min)...\(s.max)): \(s.scaleReason)"),
            ("port", s.port.map(String.init) ?? "auto (ALLOT_PORT)"),
            ("checks", "ready \(s.readyCheck ?? "-"), live \(s.liveCheck ?? "-")"),
            (
                "autoscale",
                s.autoscale.map { a in "\(a); load \(s.load.map { String(format: "%.1f", $0) } ?? "not seen yet")" }
                    ?? "-"
            ),
            ("cost", String(format: "$%.2f/h", s.costPerHour)),
            ("created", s.created),
            ("version", "\(s.generation)" + (s.rollout.map { " (\($0))" } ?? "")),
        ]
        if let m = s.mig { lines.insert(("mig", m.joined(separator: ", ")), at: 5) }
        if let c = s.crashes, let last = s.lastCrash {
            lines.append(
                ("crashes", "\(c) in a row; last: \(last)" + (s.restartAfter.map { "; next start at \($0)" } ?? ""))
            )
        }
        let width = lines.map(\.0.count).max() ?? 0
        var text =
            lines.map { $0.0.padding(toLength: width + 2, withPad: " ", startingAt: 0) + $0.1 }.joined(separator: "\n")
            + "\n"
        if !s.members.isEmpty {
            text += "\n"
            text += table(
                ["JOB", "STATE", "NODE", "ADDRESS", "READY", "VERSION", "NOTE"],
                s.members.map { m in
                    [
                        String(m.id), m.state, m.node ?? "-",
                        m.address.map { a in m.port.map { "\(a):\($0)" } ?? a } ?? "-", m.ready ? "yes" : "no",
                        m.outdated == true ? "older" : "current", m.reason ?? "",
                    ]
                }
            )
        }
        return text
    }
}

struct ServiceScale: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Set how many replicas a service runs, or its bounds (an autoscaled one sizes itself within them).",
        discussion: """
            allotctl service scale web 4 (the bounds widen to take 4); allotctl service scale web --min 2 \
            --max 8.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print the service object as JSON.")
    var json = false

    @Option(help: "The fewest replicas from now on.")
    var min: Int?

    @Option(help: "The most replicas from now on.")
    var max: Int?

    @Argument(help: "The service.")
    var name: String

    @Argument(help: "The replicas it runs from now on.")
    var replicas: Int?

    func validate() throws {
        for (what, v) in [("replicas", replicas), ("--min", min), ("--max", max)] {
            if let v, v < 0 { throw ValidationError("\(what): expected 0 or more, got \(v)") }
        }
        if replicas == nil && min == nil && max == nil {
            throw ValidationError("give the replicas, or --min/--max: allotctl service scale \(name) 4")
        }
    }

    func run() throws {
        try talking {
            let s = try connection.connect().call(
                Methods.serviceScale,
                ServiceScaleParams(name: name, replicas: replicas, min: min, max: max)
            )
            if json { return try printJSON(s) }
            out(ServiceShow.size(s))
        }
    }
}

struct ServiceDemand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demand",
        abstract: "Report the requests in flight for an autoscaled service (what a router in front of it sees).",
        discussion: """
            Its autoscaler takes it as a sample of the load, as it takes the replicas' metrics; it is the only \
            signal while the service has no replica. Routers send `service.demand` on the protocol \
            (docs/protocol.md) every few seconds.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print the service object as JSON.")
    var json = false

    @Argument(help: "The service.")
    var name: String

    @Argument(help: "Requests in flight now (running and waiting), across the service.")
    var requests: Double

    func validate() throws {
        if !(requests.isFinite && requests >= 0) {
            throw ValidationError("requests: expected 0 or more, got \(requests)")
        }
    }

    func run() throws {
        try talking {
            let s = try connection.connect().call(
                Methods.serviceDemand,
                ServiceDemandParams(name: name, requests: requests)
            )
            if json { return try printJSON(s) }
            out(
                "service \(s.name): \(s.replicas) replica\(s.replicas == 1 ? "" : "s") wanted; load \(s.load.map { String(format: "%.1f", $0) } ?? "-")\n"
            )
        }
    }
}

struct ServiceDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete a service: its replicas are cancelled (each within its grace)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print the service object, as it was, as JSON.")
    var json = false

    @Argument(help: "The service.")
    var name: String

    func run() throws {
        try talking {
            let s = try connection.connect().call(Methods.serviceDelete, ServiceNameParams(name: name))
            if json { return try printJSON(s) }
            out("service \(s.name) deleted; \(s.members.count) replica\(s.members.count == 1 ? "" : "s") cancelled\n")
        }
    }
}

struct ServiceEndpoints: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoints",
        abstract: "List a service's ready replicas: node, address and port (what a load balancer sends to).",
        discussion: """
            With --watch, prints the list again each time it changes (a line `# N endpoints` before each), \
            for a script that rewrites a load balancer's upstreams (docs/services.md shows nginx, HAProxy and \
            Envoy).
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Print {\"service\": …, \"endpoints\": [{job, node, address, port}]} as JSON.")
    var json = false

    @Flag(name: .long, help: "Keep printing the list each time it changes.")
    var watch = false

    @Argument(help: "The service.")
    var name: String

    func run() throws {
        try talking {
            let client = try connection.connect()
            var last: EndpointsResult?
            repeat {
                let e = try client.call(Methods.serviceEndpoints, ServiceNameParams(name: name))
                if e != last {
                    if watch && !json { out("# \(e.endpoints.count) endpoint\(e.endpoints.count == 1 ? "" : "s")\n") }
                    if json {
                        try printJSON(e)
                    } else {
                        out(e.endpoints.map { "\($0.address):\($0.port)  \($0.node)  job \($0.job)\n" }.joined())
                    }
                    last = e
                }
                if watch { usleep(500_000) }
            } while watch
        }
    }
}
