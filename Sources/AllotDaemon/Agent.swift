import AllotCore
import AllotPKI
import AllotProtocol
import AllotSystemd
import Foundation
import Logging
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
        guard let colon = options.controller.lastIndex(of: ":"),
            let port = Int(options.controller[options.controller.index(after: colon)...])
        else { throw StartupError(description: "--controller: expected host:port, got \"\(options.controller)\"") }
        var host = String(options.controller[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let dialsIP = ClusterCAAddress.isIP(host)
        let context: NIOSSLContext
        do {
            context = try ClusterTLS.clientContext(
                ca: options.ca,
                certificate: options.certificate,
                key: options.key,
                checkHostname: !dialsIP
            )
        } catch {
            throw StartupError(description: "\(error)")
        }
        // Our own certificate must be for this node: fail early and clearly, not at the controller.
        if let pem = try? String(contentsOfFile: options.certificate, encoding: .utf8),
            let identity = try? ClusterCA.identity(pem: pem), identity.name != options.node
        {
            throw StartupError(
                description:
                    "\(options.certificate) is for node \(identity.name), not \(options.node); issue one with `allotctl ca issue --node \(options.node)`"
            )
        }
        let gpus = try discover(options, logger: logger)
        let link = AgentConnection(
            host: host,
            port: port,
            dialsIP: dialsIP,
            context: context,
            options: options,
            gpus: gpus,
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
        logger.info("Agent stopped")
    }

    static func discover(_ o: AgentOptions, logger: Logger) throws -> [AgentGPU] {
        if let mode = o.discover {
            let probe = GPUProbe(library: o.nvmlLibrary, smi: o.nvidiaSMI)
            do {
                let inv = try probe.probe(allowNVML: mode == "nvml")
                logger.notice(
                    "GPUs discovered",
                    metadata: ["gpus.count": "\(inv.gpus.count)", "gpus.source": "\(inv.source)"]
                )
                return inv.gpus.map {
                    AgentGPU(
                        index: $0.index,
                        uuid: $0.uuid,
                        name: $0.name,
                        memoryMiB: $0.memoryMiB,
                        health: $0.health.rawValue,
                        reason: $0.reason
                    )
                }
            } catch {
                throw StartupError(description: "GPU discovery failed: \(error)")
            }
        }
        return (0..<(o.gpus ?? 0)).map { AgentGPU(index: $0) }
    }
}

enum ClusterCAAddress {
    static func isIP(_ s: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }
}

/// The agent's link to the controller: connect, register, heartbeat; on any failure, reconnect after a
/// backoff (1 s doubling to 10 s).
struct AgentConnection: Service, CustomStringConvertible {
    let host: String
    let port: Int
    let dialsIP: Bool
    let context: NIOSSLContext
    let options: AgentOptions
    let gpus: [AgentGPU]
    let logger: Logger

    var description: String { "AgentConnection(\(host):\(port))" }

    func run() async throws {
        var backoff = 1.0
        var lastEpoch: UInt64?
        var ready = false
        while !Task.isCancelledOrShuttingDown {
            do {
                let epoch = try await session(lastEpoch: lastEpoch) {
                    backoff = 1
                    if !ready {
                        ready = true
                        Systemd.ready(status: "node \(options.node): linked to \(host):\(port)")
                    } else {
                        Systemd.notify("STATUS=node \(options.node): linked to \(host):\(port)")
                    }
                }
                lastEpoch = epoch
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
            let wait = backoff
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(wait)) }
            backoff = min(backoff * 2, 10)
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
    func session(lastEpoch: UInt64?, registered: () -> Void) async throws -> UInt64 {
        let context = self.context
        let serverHostname = dialsIP ? nil : host
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: context, serverHostname: serverHostname)
                    )
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder(limit: 1 << 20)))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            let params = AgentRegisterParams(
                node: options.node,
                agentVersion: allotVersion,
                hostname: System.hostname(),
                gpus: gpus,
                cpus: ProcessInfo.processInfo.activeProcessorCount,
                memoryGiB: Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30),
                lastEpoch: lastEpoch
            )
            try await outbound.write(
                ByteBuffer(
                    data: try ControlProtocol.line(
                        Request(id: .number(1), method: AgentProtocol.register, params: params)
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
                Response<AgentRegisterResult>.Decoded.self,
                from: Data(first.readableBytesView)
            ).result
            logger.notice(
                "Registered with the controller",
                metadata: [
                    "controller": "\(host):\(port)", "node": "\(options.node)", "epoch": "\(result.epoch)",
                    "controller.cert": "\(identity.name)",
                ]
            )
            registered()
            let lastHeard = Shared(Date().timeIntervalSince1970)
            let interval = result.heartbeatIntervalSeconds
            let timeout = result.nodeTimeoutSeconds
            let why = Shared<String?>(nil)
            let raw = channel.channel
            try await withTaskCancellationOrGracefulShutdownHandler {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // Heartbeats out; a controller silent past node_timeout cuts the link.
                    group.addTask {
                        var seq: UInt64 = 0
                        while true {
                            try await Task.sleep(for: .seconds(interval))
                            let now = Date().timeIntervalSince1970
                            let silent = now - lastHeard.withLock { $0 }
                            if silent > timeout {
                                why.withLock { $0 = Silent(seconds: silent).description }
                                raw.close(promise: nil)
                                return
                            }
                            seq += 1
                            try await outbound.write(
                                ByteBuffer(
                                    data: try ControlProtocol.line(
                                        Notification(
                                            method: AgentProtocol.heartbeat,
                                            params: AgentHeartbeat(seq: seq, time: now)
                                        )
                                    )
                                )
                            )
                        }
                    }
                    while (try await lines.next()) != nil {
                        lastHeard.withLock { $0 = Date().timeIntervalSince1970 }
                    }
                    group.cancelAll()
                }
            } onCancelOrGracefulShutdown: {
                raw.close(promise: nil)
            }
            if Task.isCancelledOrShuttingDown { return result.epoch }
            throw Refused(description: why.withLock { $0 } ?? "the controller closed the link")
        }
    }
}

extension Response where R: Decodable {
    /// A response as the agent reads it.
    struct Decoded: Decodable {
        var result: R
    }
}

/// A value shared between tasks, behind a lock.
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

extension Task where Success == Never, Failure == Never {
    static var isCancelledOrShuttingDown: Bool { Task.isCancelled || Task.isShuttingDownGracefully }
}
