import AllotCore
import AllotPKI
import AllotProtocol
import AllotSystemd
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// How `allotd agent` was asked to run.
public struct AgentOptions: Sendable {
    public var controller: String
    public var node: String
    public var ca: String
    public var certificate: String
    public var key: String
    /// Declared GPUs, when not discovered.
    public var gpus: Int?
    /// "nvml" or "nvidia-smi" to discover the GPUs; nil: declared.
    public var discover: String?
    public var nvmlLibrary = "libnvidia-ml.so.1"
    public var nvidiaSMI = "/usr/bin/nvidia-smi"
    /// Where the agent keeps its job run directories and logs.
    public var stateDir = "/var/lib/allot-agent"
    /// How often discovered GPUs' health is checked (and changes reported).
    public var gpuCheckInterval = 10.0

    public init(controller: String, node: String, ca: String, certificate: String, key: String) {
        self.controller = controller
        self.node = node
        self.ca = ca
        self.certificate = certificate
        self.key = key
    }
}

/// `allotd agent`: runs on a GPU node, registers it with the controller over mutual TLS and keeps the link
/// alive with heartbeats both ways, reconnecting with backoff. (Running the jobs the controller places
/// on it comes next; see docs/operations.md.)
public enum Agent {
    public static func run(_ options: AgentOptions, logger: Logger) async throws {
        // One controller, or several (docs/ha.md): the agent tries them in turn until one takes it.
        var controllers: [AgentConnection.Controller] = []
        for item in options.controller.split(separator: ",").map({ String($0).trimmingCharacters(in: .whitespaces) }) {
            guard let (host, port) = HostPort.parse(item) else {
                throw StartupError(description: "--controller: expected host:port[,host:port…], got \"\(item)\"")
            }
            let dialsIP = ClusterCA.isIPAddress(host)
            do {
                let context = try ClusterTLS.clientContext(
                    ca: options.ca,
                    certificate: options.certificate,
                    key: options.key,
                    checkHostname: !dialsIP
                )
                controllers.append(.init(host: host, port: port, dialsIP: dialsIP, context: context))
            } catch {
                throw StartupError(description: "\(error)")
            }
        }
        if controllers.isEmpty { throw StartupError(description: "--controller: give host:port") }
        // Our own certificate must be for this node: fail early and clearly, not at the controller.
        if let pem = try? String(contentsOfFile: options.certificate, encoding: .utf8),
            let identity = try? ClusterCA.identity(pem: pem), identity.name != options.node
        {
            throw StartupError(
                description:
                    "\(options.certificate) is for node \(identity.name), not \(options.node); issue one with `allotctl ca issue --node \(options.node)`"
            )
        }
        let probe = options.discover.map { _ in GPUProbe(library: options.nvmlLibrary, smi: options.nvidiaSMI) }
        let gpus = try discover(options, probe: probe, logger: logger)
        do {
            try FileManager.default.createDirectory(atPath: options.stateDir, withIntermediateDirectories: true)
        } catch {
            throw StartupError(
                description: "cannot create the state directory \(options.stateDir): \(error)",
                errno: EIO
            )
        }
        var uuids: [Int: String] = [:]
        for g in gpus { uuids[g.index] = g.uuid }
        let jobs = AgentJobs(stateDir: options.stateDir, uuids: uuids, probe: probe, logger: logger)
        let link = AgentConnection(
            controllers: controllers,
            options: options,
            gpus: gpus,
            jobs: jobs,
            probe: probe,
            logger: logger
        )
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: link)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
        await jobs.cleanUp()
        logger.info("Agent stopped")
    }

    static func discover(_ o: AgentOptions, probe: GPUProbe?, logger: Logger) throws -> [AgentGPU] {
        if let probe, let mode = o.discover {
            do {
                let inv = try probe.probe(allowNVML: mode == "nvml")
                logger.notice(
                    "GPUs discovered",
                    metadata: ["gpus.count": "\(inv.gpus.count)", "gpus.source": "\(inv.source)"]
                )
                return agentGPUs(inv)
            } catch {
                throw StartupError(description: "GPU discovery failed: \(error)")
            }
        }
        return (0..<(o.gpus ?? 0)).map { AgentGPU(index: $0) }
    }

    static func agentGPUs(_ inv: GPUInventory) -> [AgentGPU] {
        inv.gpus.map {
            AgentGPU(
                index: $0.index,
                uuid: $0.uuid,
                name: $0.name,
                memoryMiB: $0.memoryMiB,
                health: $0.health.rawValue,
                reason: $0.reason
            )
        }
    }
}

/// The agent's link to the controller: connect, register, heartbeat; on any failure, reconnect after a
/// backoff (1 s doubling to 10 s).
struct AgentConnection: Service, CustomStringConvertible {
    struct Controller: Sendable {
        var host: String
        var port: Int
        var dialsIP: Bool
        var context: NIOSSLContext
    }
    let controllers: [Controller]
    let options: AgentOptions
    let gpus: [AgentGPU]
    let jobs: AgentJobs
    let probe: GPUProbe?
    let logger: Logger

    var description: String { "AgentConnection(\(controllers.map { "\($0.host):\($0.port)" }.joined(separator: ",")))" }

    func run() async throws {
        var backoff = 1.0
        var lastEpoch: UInt64?
        var ready = false
        var next = 0
        // Reconnecting waits at most a quarter of the controller's node_timeout (once it is known), so that a
        // controller that restarts or takes over finds its agents before it gives their nodes up.
        var longestWait = 10.0
        while !Task.isCancelledOrShuttingDown {
            let controller = controllers[next % controllers.count]
            let (host, port) = (controller.host, controller.port)
            do {
                let epoch = try await session(controller, lastEpoch: lastEpoch) { nodeTimeout, epoch in
                    lastEpoch = max(lastEpoch ?? 0, epoch)
                    backoff = 1
                    longestWait = max(1, min(10, nodeTimeout / 4))
                    if !ready {
                        ready = true
                        Systemd.ready(status: "node \(options.node): linked to \(host):\(port)")
                    } else {
                        Systemd.notify("STATUS=node \(options.node): linked to \(host):\(port)")
                    }
                }
                lastEpoch = max(lastEpoch ?? 0, epoch)
            } catch is CancellationError {
                break
            } catch {
                if Task.isCancelledOrShuttingDown { break }
                logger.warning(
                    "Link to the controller lost; reconnecting",
                    metadata: ["controller": "\(host):\(port)", "error": "\(error)", "retry_s": "\(backoff)"]
                )
                Systemd.notify(
                    "STATUS=node \(options.node): no link to \(host):\(port) (\(String(describing: error).prefix(120)))"
                )
            }
            // The next controller at once; after a whole round, a backoff.
            next += 1
            if next % controllers.count != 0 { continue }
            let wait = backoff
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(wait)) }
            backoff = min(backoff * 2, longestWait)
        }
    }

    struct Refused: Error, CustomStringConvertible {
        var description: String
    }

    struct Silent: Error, CustomStringConvertible {
        var seconds: Double
        var description: String { "no heartbeat from the controller for \(Int(seconds)) s" }
    }

    /// One connection: returns (or throws) when it ends.
    func session(
        _ controller: Controller,
        lastEpoch: UInt64?,
        registered: (Double, UInt64) -> Void
    ) async throws -> UInt64 {
        let (host, port, dialsIP) = (controller.host, controller.port, controller.dialsIP)
        let context = controller.context
        let serverHostname = dialsIP ? nil : host
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: context, serverHostname: serverHostname)
                    )
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder(limit: 1 << 20)))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let held = await jobs.inventory()
        return try await channel.executeThenClose { inbound, outbound in
            let params = AgentRegisterParams(
                node: options.node,
                agentVersion: allotVersion,
                hostname: System.hostname(),
                gpus: gpus,
                cpus: ProcessInfo.processInfo.activeProcessorCount,
                memoryGiB: Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30),
                lastEpoch: lastEpoch,
                runs: held
            )
            try await outbound.write(
                ByteBuffer(
                    data: try ControlProtocol.line(
                        Request(id: .number(1), method: AgentProtocol.register.name, params: params)
                    )
                )
            )
            var lines = inbound.makeAsyncIterator()
            guard let first = try await lines.next() else {
                throw Refused(description: "the controller closed the link")
            }
            // The controller must hold a controller certificate from our CA (checked for its host name too,
            // unless we dial an IP address).
            let identity = try await ClusterTLS.peerIdentity(channel.channel)
            guard identity.role == .controller else {
                throw Refused(description: "the peer's certificate (\(identity.name)) is not a controller certificate")
            }
            let head = try JSONDecoder().decode(ResponseHead.self, from: Data(first.readableBytesView))
            if let e = head.error {
                logger.error("The controller refused this agent", metadata: ["reason": "\(e.message)"])
                throw Refused(description: "refused: \(e.message)")
            }
            let result = try JSONDecoder().decode(
                ResponseResult<AgentRegisterResult>.self,
                from: Data(first.readableBytesView)
            ).result
            // Several controllers: one whose epoch is below one this agent already served was deposed (it
            // has not noticed yet); its orders are refused, and the agent looks for the leader.
            if controllers.count > 1, let seen = lastEpoch, result.epoch < seen {
                logger.warning(
                    "Refused a deposed controller",
                    metadata: ["controller": "\(host):\(port)", "epoch": "\(result.epoch)", "epoch.seen": "\(seen)"]
                )
                throw Refused(
                    description:
                        "the controller at \(host):\(port) has epoch \(result.epoch), below epoch \(seen) this agent already served: it no longer leads"
                )
            }
            logger.notice(
                "Registered with the controller",
                metadata: [
                    "controller": "\(host):\(port)", "node": "\(options.node)", "epoch": "\(result.epoch)",
                    "controller.cert": "\(identity.name)",
                ]
            )
            // Fencing: runs the controller no longer assigns here go before anything else happens.
            let fenced = await jobs.fence(keep: Set(result.keep))
            if fenced > 0 {
                logger.warning(
                    "Killed runs the controller no longer assigns to this node",
                    metadata: ["runs": "\(fenced)"]
                )
            }
            await jobs.newLink()
            registered(result.nodeTimeoutSeconds, result.epoch)
            let lastHeard = NIOLockedValueBox(Date().timeIntervalSince1970)
            let interval = result.heartbeatIntervalSeconds
            let timeout = result.nodeTimeoutSeconds
            let why = NIOLockedValueBox<String?>(nil)
            let raw = channel.channel
            try await withTaskCancellationOrGracefulShutdownHandler {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // Heartbeats and reports out; a controller silent past node_timeout cuts the link.
                    let jobs = self.jobs
                    let probe = self.probe
                    let allowNVML = options.discover == "nvml"
                    let checkEvery = options.gpuCheckInterval
                    let firstGPUs = self.gpus
                    group.addTask {
                        var seq: UInt64 = 0
                        var reportSeq: UInt64 = 0
                        var lastBeat = 0.0
                        var lastCheck = Date().timeIntervalSince1970
                        var lastGPUs = firstGPUs
                        while true {
                            try await Task.sleep(for: .milliseconds(200))
                            let now = Date().timeIntervalSince1970
                            let silent = now - lastHeard.withLockedValue { $0 }
                            if silent > timeout {
                                why.withLockedValue { $0 = Silent(seconds: silent).description }
                                raw.close(promise: nil)
                                return
                            }
                            let news = await jobs.poll()
                            if !news.isEmpty {
                                reportSeq += 1
                                try await outbound.write(
                                    ByteBuffer(
                                        data: try ControlProtocol.line(
                                            Notification(
                                                method: AgentProtocol.report.name,
                                                params: AgentReport(seq: reportSeq, runs: news)
                                            )
                                        )
                                    )
                                )
                            }
                            // The replicas' checks and metrics, each off the task; answers come back to
                            // `jobs`, and what changed goes to the controller.
                            let due = await jobs.due(now: System.monotonic())
                            for c in due.checks {
                                Task.detached {
                                    let problem = ReplicaChecks.check(c.probe, port: c.port, user: c.user)
                                    await jobs.answered(c.id, run: c.run, readiness: c.readiness, problem: problem)
                                }
                            }
                            for m in due.scrapes {
                                Task.detached {
                                    let value: Double? =
                                        switch ReplicaChecks.metrics(port: m.port, path: m.path) {
                                        case .success(let text):
                                            ReplicaChecks.requestsInFlight(metrics: text, series: m.series)
                                        case .failure: nil
                                        }
                                    await jobs.scraped(m.id, run: m.run, inFlight: value)
                                }
                            }
                            let replicas = await jobs.replicaReport(now: System.monotonic())
                            if !replicas.isEmpty {
                                try await outbound.write(
                                    ByteBuffer(
                                        data: try ControlProtocol.line(
                                            Notification(
                                                method: AgentProtocol.replicas.name,
                                                params: AgentReplicas(replicas: replicas)
                                            )
                                        )
                                    )
                                )
                            }
                            if let probe, now - lastCheck >= checkEvery {
                                lastCheck = now
                                // NVML and nvidia-smi block (seconds on a sick GPU): off the task pool.
                                let found: [AgentGPU]? = await withCheckedContinuation { c in
                                    Thread {
                                        c.resume(
                                            returning: (try? probe.probe(allowNVML: allowNVML)).map(Agent.agentGPUs)
                                        )
                                    }
                                    .start()
                                }
                                if let found, found != lastGPUs {
                                    lastGPUs = found
                                    try await outbound.write(
                                        ByteBuffer(
                                            data: try ControlProtocol.line(
                                                Notification(
                                                    method: AgentProtocol.health.name,
                                                    params: AgentHealth(gpus: found)
                                                )
                                            )
                                        )
                                    )
                                }
                            }
                            if now - lastBeat >= interval {
                                lastBeat = now
                                seq += 1
                                try await outbound.write(
                                    ByteBuffer(
                                        data: try ControlProtocol.line(
                                            Notification(
                                                method: AgentProtocol.heartbeat.name,
                                                params: AgentHeartbeat(seq: seq, time: now)
                                            )
                                        )
                                    )
                                )
                            }
                        }
                    }
                    // Orders in.
                    let decoder = JSONDecoder()
                    let terminals = AgentTerminals(logger: logger)
                    defer { terminals.closeAll() }
                    while let line = try await lines.next() {
                        lastHeard.withLockedValue { $0 = Date().timeIntervalSince1970 }
                        let data = Data(line.readableBytesView)
                        let head: ResponseHead
                        do throws(RPCError) {
                            head = try AgentMessage.head(data)
                            try Agent.check(head, data)
                        } catch {
                            logger.warning(
                                "Malformed message from the controller: answered with an error, not acted on",
                                metadata: [
                                    "error": "\(error.message)",
                                    "message": "\(String(decoding: data.prefix(200), as: UTF8.self))",
                                ]
                            )
                            try await outbound.write(ByteBuffer(data: AgentMessage.errorLine(error)))
                            continue
                        }
                        switch head.method {
                        case AgentProtocol.start.name?:
                            if let o = try? decoder.decode(RequestParams<AgentStartOrder>.self, from: data).params {
                                logger.info(
                                    "Start order",
                                    metadata: ["job.id": "\(o.id)", "job.run": "\(o.run)", "seq": "\(o.seq)"]
                                )
                                await jobs.start(o)
                            }
                        case AgentProtocol.stop.name?:
                            if let o = try? decoder.decode(RequestParams<AgentStopOrder>.self, from: data).params {
                                logger.info(
                                    "Stop order",
                                    metadata: ["job.id": "\(o.id)", "job.run": "\(o.run)", "seq": "\(o.seq)"]
                                )
                                await jobs.stop(o)
                            }
                        case AgentProtocol.logRead.name?:
                            if let r = try? decoder.decode(RequestParams<AgentLogRead>.self, from: data).params {
                                let (bytes, error) = await jobs.readLog(id: r.id, offset: r.offset, max: r.max)
                                try await outbound.write(
                                    ByteBuffer(
                                        data: try ControlProtocol.line(
                                            Notification(
                                                method: AgentProtocol.logData.name,
                                                params: AgentLogData(
                                                    token: r.token,
                                                    data: Data(bytes).base64EncodedString(),
                                                    error: error
                                                )
                                            )
                                        )
                                    )
                                )
                            }
                        case AgentProtocol.ttyOpen.name?:
                            if let o = try? decoder.decode(RequestParams<AgentTTYOpen>.self, from: data).params {
                                let path = await jobs.ttySocket(id: o.id, run: o.run)
                                terminals.open(o.stream)
                                group.addTask {
                                    await terminals.serve(o.stream, path: path) { line in
                                        try await outbound.write(ByteBuffer(data: line))
                                    }
                                }
                            }
                        case AgentProtocol.ttyData.name?:
                            if let d = try? decoder.decode(RequestParams<AgentTTYData>.self, from: data).params {
                                terminals.input(d.stream, base64: d.data)
                            }
                        case AgentProtocol.ttyClose.name?:
                            if let c = try? decoder.decode(RequestParams<AgentTTYClose>.self, from: data).params {
                                terminals.close(c.stream)
                            }
                        case AgentProtocol.ack.name?:
                            if let a = try? decoder.decode(RequestParams<AgentAck>.self, from: data).params {
                                await jobs.ack(a.runs)
                            }
                        case AgentProtocol.checks.name?:
                            if let c = try? decoder.decode(RequestParams<AgentChecks>.self, from: data).params {
                                await jobs.setChecks(c)
                            }
                        case nil where head.error != nil:
                            logger.warning(
                                "The controller could not take a message",
                                metadata: ["error": "\(head.error!.message)"]
                            )
                        default:
                            break  // checked above: heartbeats
                        }
                    }
                    group.cancelAll()
                }
            } onCancelOrGracefulShutdown: {
                raw.close(promise: nil)
            }
            if Task.isCancelledOrShuttingDown { return result.epoch }
            throw Refused(description: why.withLockedValue { $0 } ?? "the controller closed the link")
        }
    }
}

extension Agent {
    /// A controller's message is taken only if its parameters fit its method (checked before acting).
    static func check(_ head: ResponseHead, _ data: Data) throws(RPCError) {
        switch head.method {
        case AgentProtocol.start.name?: _ = try AgentMessage.params(AgentProtocol.start, data)
        case AgentProtocol.stop.name?: _ = try AgentMessage.params(AgentProtocol.stop, data)
        case AgentProtocol.logRead.name?: _ = try AgentMessage.params(AgentProtocol.logRead, data)
        case AgentProtocol.ack.name?: _ = try AgentMessage.params(AgentProtocol.ack, data)
        case AgentProtocol.checks.name?: _ = try AgentMessage.params(AgentProtocol.checks, data)
        case AgentProtocol.ttyOpen.name?: _ = try AgentMessage.params(AgentProtocol.ttyOpen, data)
        case AgentProtocol.ttyData.name?: _ = try AgentMessage.params(AgentProtocol.ttyData, data)
        case AgentProtocol.ttyClose.name?: _ = try AgentMessage.params(AgentProtocol.ttyClose, data)
        case AgentProtocol.heartbeat.name?: break
        case nil where head.error != nil: break
        case let method: throw AgentMessage.unknown(method)
        }
    }
}

extension Task where Success == Never, Failure == Never {
    static var isCancelledOrShuttingDown: Bool { Task.isCancelled || Task.isShuttingDownGracefully }
}
