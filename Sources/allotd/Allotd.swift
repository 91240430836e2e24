import AllotConfig
import AllotCore
import AllotDaemon
import AllotSystemd
import ArgumentParser
import Foundation
import Logging

struct Allotd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allotd",
        abstract: "The allot daemon: schedules GPU jobs, runs them, keeps its state in a write-ahead log.",
        discussion: """
            With no subcommand, allotd runs: it loads the configuration, takes the state directory, recovers \
            the pool from its write-ahead log, listens on the control socket and schedules until SIGTERM or \
            SIGINT (running jobs are not stopped). SIGHUP reloads the configuration. See docs/operator-guide.md.

            Options of run (the default): --config PATH (default /etc/allot/allotd.toml), --state-dir DIR, \
            --socket PATH, --log-level LEVEL, --repair; `allotd help run` explains them. \
            `allotd check-config FILE` checks a configuration without starting anything.
            """,
        version: "0.1.0",
        subcommands: [Run.self, CheckConfig.self, AgentCommand.self, WAL.self],
        defaultSubcommand: Run.self
    )
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the daemon (the default)."
    )

    @Option(name: .long, help: ArgumentHelp("The configuration file.", valueName: "PATH"))
    var config: String = "/etc/allot/allotd.toml"

    @Option(name: .long, help: ArgumentHelp("The state directory (overrides [daemon] state_dir).", valueName: "DIR"))
    var stateDir: String?

    @Option(name: .long, help: ArgumentHelp("The control socket (overrides [daemon] socket).", valueName: "PATH"))
    var socket: String?

    @Option(
        name: .long,
        help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "LEVEL")
    )
    var logLevel: String = "info"

    @Flag(name: .long, help: "Cut the write-ahead log at damage before its tail instead of refusing to start.")
    var repair = false

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Record every input the controller is given, with its clock reading, one JSON line each (to reproduce a decision: replayed through a controller, they give the log's events again).",
            valueName: "FILE"
        )
    )
    var recordInputs: String?

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError(
                "--log-level: expected trace, debug, info, notice, warning, error or critical, got \"\(logLevel)\""
            )
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        // Under systemd, standard error is the journal: write structured entries there instead.
        let journal = Systemd.stderrIsJournal
        LoggingSystem.bootstrap { label in
            if journal {
                var h = JournalLogHandler(label: label)
                h.logLevel = level
                return h
            }
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "allotd")
        var options = DaemonOptions(configPath: config, stateDir: stateDir, socket: socket, repair: repair)
        options.recordInputs = recordInputs
        // Socket activation: systemd passes the listening socket as fd 3.
        options.inheritedSocket = Systemd.listenFDs().first
        if let fd = options.inheritedSocket {
            logger.info("Socket passed by systemd", metadata: ["fd": "\(fd)"])
        }
        do {
            try await Daemon.run(options, logger: logger)
        } catch let e as StartupError {
            FileHandle.standardError.write(Data("allotd: \(e)\n".utf8))
            Systemd.notify("STATUS=failed to start: \(e.description.prefix(200))", "ERRNO=\(e.errno)")
            throw ExitCode(1)
        } catch {
            FileHandle.standardError.write(Data("allotd: \(error)\n".utf8))
            Systemd.notify("STATUS=failed: \(String(describing: error).prefix(200))", "ERRNO=\(EIO)")
            throw ExitCode(1)
        }
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check a configuration file and summarise it, without starting anything.",
        discussion: """
            Reads FILE as allotd would at start (every key, every table, every cross-reference) and prints what \
            it declares. Exits 0 when it is valid, 1 with the file, line, key and problem when it is not. \
            Use it before `systemctl reload allotd`.
            """
    )

    @Argument(help: ArgumentHelp("The configuration file (default /etc/allot/allotd.toml).", valueName: "FILE"))
    var path: String?

    @Option(
        name: .long,
        help: ArgumentHelp("The configuration file, as `allotd --config` takes it.", valueName: "PATH")
    )
    var config: String?

    func validate() throws {
        if let path, let config, path != config {
            throw ValidationError("two configuration files given: \(path) and --config \(config); check one at a time")
        }
    }

    func run() throws {
        let file = path ?? config ?? "/etc/allot/allotd.toml"
        let c: ConfigFile
        do {
            c = try ConfigFile.load(path: file)
            if let refusal = c.allotdRefusal(path: file, hostname: ProcessInfo.processInfo.hostName) { throw refusal }
        } catch {
            FileHandle.standardError.write(Data("allotd: \(error)\n".utf8))
            throw ExitCode(1)
        }
        // Nodes whose GPUs are discovered at start count as what they declare until then: say so.
        var gpus: [String: Int] = [:]
        var found: [String: Int] = [:]
        for n in c.nodes {
            if c.discovery[n.name] == nil {
                gpus[n.gpuModel, default: 0] += n.gpus
            } else {
                found[n.gpuModel, default: 0] += 1
            }
        }
        func count(_ model: String) -> String {
            let declared = "\(gpus[model] ?? 0) GPUs"
            guard let n = found[model] else { return declared }
            return (gpus[model] == nil ? "" : declared + " + ") + "those found on \(n) node\(n == 1 ? "" : "s")"
        }
        var lines = ["\(file): valid"]
        lines.append(
            "GPU models: "
                + c.pool.gpuModels.map {
                    "\($0.name) (\(count($0.name)), $\(Money.format($0.pricePerHour))/GPU-h, speed \($0.speed))"
                }
                .joined(separator: ", ")
        )
        let host = ProcessInfo.processInfo.hostName
        let agents = c.nodes.filter { !c.daemon.isLocal($0, hostname: host) }.count
        let total = gpus.values.reduce(0, +)
        lines.append(
            "nodes: \(c.nodes.count) (\(c.nodes.count - agents) run by allotd, \(agents) by agents), "
                + (found.isEmpty ? "\(total) GPUs" : "\(total) GPUs declared, the rest found at start")
        )
        lines.append(
            "priority classes: " + c.pool.priorityClasses.map { "\($0.name) (\($0.value))" }.joined(separator: ", ")
        )
        lines.append(
            "tenants: "
                + (c.pool.tenants.isEmpty
                    ? "none declared (each user charges their own)"
                    : c.pool.tenants.map(\.name).joined(separator: ", "))
        )
        lines.append("state directory: \(c.daemon.stateDir); socket: \(c.daemon.socket)")
        print(lines.joined(separator: "\n"))
    }
}

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the node agent: register this node with the controller (mutual TLS) and keep the link alive.",
        discussion: """
            The certificate (from `allotctl ca issue --node NAME`) must name this node, and come from the same \
            cluster CA as the controller's. The agent reconnects by itself when the link drops.
            """
    )

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The controller's [cluster] listen address; with several controllers on etcd ([ha]), each one's, comma-separated: the agent goes to the one that leads.",
            valueName: "HOST:PORT[,…]"
        )
    )
    var controller: String

    @Option(name: .long, help: ArgumentHelp("This node's name (default: the host name).", valueName: "NAME"))
    var node: String?

    @Option(name: .long, help: ArgumentHelp("Where the cluster CA and this node's certificate are.", valueName: "DIR"))
    var pki: String = "/etc/allot/pki"

    @Option(name: .long, help: ArgumentHelp("The cluster CA's certificate (default: PKI/ca.crt).", valueName: "PATH"))
    var ca: String?

    @Option(name: .long, help: ArgumentHelp("This node's certificate (default: PKI/NODE.crt).", valueName: "PATH"))
    var cert: String?

    @Option(name: .long, help: ArgumentHelp("This node's key (default: PKI/NODE.key).", valueName: "PATH"))
    var key: String?

    @Option(name: .long, help: ArgumentHelp("Where the agent keeps job run directories and logs.", valueName: "DIR"))
    var stateDir: String = "/var/lib/allot-agent"

    @Option(name: .long, help: ArgumentHelp("Declare this many GPUs (instead of --discover).", valueName: "N"))
    var gpus: Int?

    @Option(
        name: .long,
        help: ArgumentHelp("Find the GPUs: nvml (which also makes MIG instances) or nvidia-smi.", valueName: "HOW")
    )
    var discover: String?

    @Option(name: .long, help: ArgumentHelp("Check the discovered GPUs' health this often.", valueName: "DURATION"))
    var gpuCheckInterval: String = "10s"

    @Option(name: .long, help: ArgumentHelp("The NVML library (for --discover nvml).", valueName: "PATH"))
    var nvmlLibrary: String = "libnvidia-ml.so.1"

    @Option(
        name: .long,
        help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "LEVEL")
    )
    var logLevel: String = "info"

    func validate() throws {
        if let d = discover, !["nvml", "nvidia-smi"].contains(d) {
            throw ValidationError("--discover: expected nvml or nvidia-smi, got \"\(d)\"")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level: unknown level \"\(logLevel)\"")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        let journal = Systemd.stderrIsJournal
        LoggingSystem.bootstrap { label in
            if journal {
                var h = JournalLogHandler(label: label, identifier: "allotd-agent")
                h.logLevel = level
                return h
            }
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "allotd-agent")
        let name = node ?? ProcessInfo.processInfo.hostName
        var o = AgentOptions(
            controller: controller,
            node: name,
            ca: ca ?? pki + "/ca.crt",
            certificate: cert ?? "\(pki)/\(name).crt",
            key: key ?? "\(pki)/\(name).key"
        )
        o.gpus = gpus
        o.discover = discover
        o.stateDir = stateDir
        o.nvmlLibrary = nvmlLibrary
        if let s = DurationText.parse(gpuCheckInterval), s > 0 {
            o.gpuCheckInterval = s
        } else {
            FileHandle.standardError.write(
                Data("allotd agent: --gpu-check-interval: not a duration: \(gpuCheckInterval)\n".utf8)
            )
            throw ExitCode(2)
        }
        do {
            try await Agent.run(o, logger: logger)
        } catch let e as StartupError {
            FileHandle.standardError.write(Data("allotd agent: \(e)\n".utf8))
            Systemd.notify("STATUS=failed to start: \(e.description.prefix(200))", "ERRNO=\(e.errno)")
            throw ExitCode(1)
        }
    }
}
