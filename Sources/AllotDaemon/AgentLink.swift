import AllotConfig
import AllotPKI
import AllotProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// allot's version, sent by agents and shown by `nodes`.
public let allotVersion = "0.1.0"

/// TLS for the agent links: both sides present a certificate from the cluster CA and accept only those.
enum ClusterTLS {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func load(ca: String, certificate: String, key: String) throws -> TLSConfiguration {
        do {
            let root = try NIOSSLCertificate.fromPEMFile(ca)
            let chain = try NIOSSLCertificate.fromPEMFile(certificate)
            let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
            var c = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) },
                privateKey: .privateKey(privateKey)
            )
            c.trustRoots = .certificates(root)
            c.minimumTLSVersion = .tlsv12
            return c
        } catch {
            throw Failure(
                description: "cannot load the TLS files (ca \(ca), certificate \(certificate), key \(key)): \(error)"
            )
        }
    }

    /// The controller's side: clients must present a certificate from the CA (hostnames are not checked:
    /// the certificate's node name is, against what the agent claims).
    static func serverContext(_ s: ClusterSettings) throws -> NIOSSLContext {
        var c = try load(ca: s.ca, certificate: s.certificate, key: s.key)
        c.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: c)
    }

    /// The agent's side: the controller must present a certificate from the CA for the host it dials (or,
    /// dialling an IP address, one whose role is `controller`).
    static func clientContext(ca: String, certificate: String, key: String, checkHostname: Bool) throws -> NIOSSLContext
    {
        var c = try load(ca: ca, certificate: certificate, key: key)
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = c.certificateChain
        client.privateKey = c.privateKey
        client.trustRoots = c.trustRoots
        client.minimumTLSVersion = .tlsv12
        client.certificateVerification = checkHostname ? .fullVerification : .noHostnameVerification
        c = client
        return try NIOSSLContext(configuration: c)
    }

    /// The name and role in the peer's certificate (after the handshake).
    static func peerIdentity(_ channel: any Channel) async throws -> (name: String, role: ClusterCA.Role?) {
        guard let cert = try await channel.nioSSL_peerCertificate().get() else {
            throw Failure(description: "the peer presented no certificate")
        }
        return try ClusterCA.identity(derBytes: try cert.toDERBytes())
    }
}

/// One connected agent, as the engine sees it: a way to send it lines, and to cut it off.
final class AgentLink: Sendable {
    let id: UInt64
    let node: String
    let channel: any Channel
    let remote: String

    init(id: UInt64, node: String, channel: any Channel) {
        self.id = id
        self.node = node
        self.channel = channel
        self.remote = channel.remoteAddress.map { "\($0)" } ?? "?"
    }

    /// Sends a line; a peer that does not read (its buffer past the high-water mark) is cut off, so that
    /// it never holds the controller up.
    func send(_ line: Data) {
        guard channel.isActive else { return }
        guard channel.isWritable else {
            channel.close(promise: nil)
            return
        }
        channel.writeAndFlush(ByteBuffer(bytes: line), promise: nil)
    }

    /// Sends a line and waits until the link has taken it (for a relayed terminal's input: the client is
    /// slowed, not the link cut off).
    func sendWaiting(_ line: Data) async {
        guard channel.isActive else { return }
        try? await channel.writeAndFlush(ByteBuffer(bytes: line)).get()
    }

    func close() { channel.close(promise: nil) }
}

/// Accepts node agents on `[cluster] listen` (mutual TLS), checks that each certificate names the node its
/// agent claims, and hands registrations, heartbeats and ends to the engine.
struct AgentServer: Service, CustomStringConvertible {
    let settings: ClusterSettings
    let context: NIOSSLContext
    let engine: EngineHandle
    let logger: Logger
    static let nextID = Atomic<UInt64>(1)

    var description: String { "AgentServer(\(settings.listen))" }

    func run() async throws {
        guard let (host, port) = HostPort.parse(settings.listen) else {
            throw StartupError(description: "[cluster] listen: expected host:port, got \"\(settings.listen)\"")
        }
        let context = self.context
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 4 << 20))
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder(limit: 1 << 20)))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        logger.info("Listening for node agents", metadata: ["cluster.listen": "\(settings.listen)"])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                try? await gracefulShutdown()
                server.channel.close(promise: nil)
            }
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    group.addTask { await serve(connection) }
                }
            }
        }
    }

    func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let channel = connection.channel
        let remote = channel.remoteAddress.map { "\($0)" } ?? "?"
        var link: AgentLink?
        do {
            try await connection.executeThenClose { inbound, outbound in
                var lines = inbound.makeAsyncIterator()
                // The first line must be agent.register (the TLS handshake is done once it is read).
                guard let first = try await lines.next() else { return }
                let identity = try await ClusterTLS.peerIdentity(channel)
                let request = try JSONDecoder().decode(AgentRequest.self, from: Data(first.readableBytesView))
                func refuse(_ why: String) async throws {
                    logger.warning("Agent refused", metadata: ["agent.remote": "\(remote)", "reason": "\(why)"])
                    let answer = ErrorResponse(id: request.id, error: RPCError(RPCError.permissionDenied, why))
                    try await outbound.write(ByteBuffer(data: try ControlProtocol.line(answer)))
                }
                guard request.method == AgentProtocol.register.name, let params = request.params else {
                    try await refuse("the first message must be \(AgentProtocol.register.name)")
                    return
                }
                guard identity.role == .node else {
                    try await refuse("its certificate (\(identity.name)) is not a node certificate")
                    return
                }
                guard identity.name == params.node else {
                    try await refuse("its certificate is for node \(identity.name), but it claims node \(params.node)")
                    return
                }
                let l = AgentLink(
                    id: Self.nextID.wrappingAdd(1, ordering: .relaxed).oldValue,
                    node: params.node,
                    channel: channel
                )
                let answer = await withCheckedContinuation { engine.send(.agentRegister(params, l, request.id, $0)) }
                switch answer {
                case .failure(let e):
                    try await refuse(e.message)
                    return
                case .success:
                    link = l  // the engine has sent the answer, and any orders after it
                }
                while let line = try await lines.next() {
                    let data = Data(line.readableBytesView)
                    do throws(RPCError) {
                        let head = try AgentMessage.head(data)
                        switch head.method {
                        case AgentProtocol.heartbeat.name?:
                            engine.send(.agentHeartbeat(node: params.node, link: l.id))
                        case AgentProtocol.report.name?:
                            let report = try AgentMessage.params(AgentProtocol.report, data)
                            engine.send(.agentReport(node: params.node, link: l.id, report))
                        case AgentProtocol.replicas.name?:
                            let replicas = try AgentMessage.params(AgentProtocol.replicas, data)
                            engine.send(.agentReplicas(node: params.node, link: l.id, replicas))
                        case AgentProtocol.health.name?:
                            let health = try AgentMessage.params(AgentProtocol.health, data)
                            engine.send(.agentHealth(node: params.node, link: l.id, health))
                        case AgentProtocol.ttyData.name?:
                            let d = try AgentMessage.params(AgentProtocol.ttyData, data)
                            TerminalRelays.shared.output(d.stream, link: l.id, base64: d.data)
                        case AgentProtocol.ttyClose.name?:
                            let d = try AgentMessage.params(AgentProtocol.ttyClose, data)
                            TerminalRelays.shared.closedByAgent(d.stream, link: l.id, error: d.error, logger: logger)
                        case AgentProtocol.logData.name?:
                            let d = try AgentMessage.params(AgentProtocol.logData, data)
                            RemoteLogs.shared.fulfill(d.token, Array(Data(base64Encoded: d.data) ?? Data()))
                        case nil where head.error != nil:
                            // The agent could not take one of ours: it says why (never answered again).
                            logger.warning(
                                "The agent could not take a message",
                                metadata: ["node": "\(params.node)", "error": "\(head.error!.message)"]
                            )
                        case let method:
                            throw AgentMessage.unknown(method)
                        }
                    } catch {
                        logger.warning(
                            "Malformed message from an agent: answered with an error, not acted on",
                            metadata: [
                                "node": "\(params.node)", "error": "\(error.message)",
                                "message": "\(String(decoding: data.prefix(200), as: UTF8.self))",
                            ]
                        )
                        l.send(AgentMessage.errorLine(error))
                    }
                }
            }
        } catch let error as NIOSSLError {
            if case .handshakeFailed = error {
                logger.warning(
                    "Agent refused: TLS handshake failed (a certificate not from this cluster's CA, expired, or no certificate)",
                    metadata: ["agent.remote": "\(remote)", "error": "\(error)"]
                )
            } else {
                logger.warning(
                    "Agent link failed",
                    metadata: ["agent.remote": "\(remote)", "agent.node": "\(link?.node ?? "?")", "error": "\(error)"]
                )
            }
        } catch {
            logger.warning(
                "Agent link failed",
                metadata: ["agent.remote": "\(remote)", "agent.node": "\(link?.node ?? "?")", "error": "\(error)"]
            )
        }
        if let link {
            TerminalRelays.shared.linkGone(link.id)
            engine.send(.agentDisconnected(node: link.node, link: link.id))
        }
    }
}

/// A request from an agent (only `agent.register` is one).
struct AgentRequest: Decodable {
    var id: RPCID?
    var method: String
    var params: AgentRegisterParams?
}

/// Reads of job logs kept on agents' nodes: each read is a request on the agent's link, answered by
/// `agent.log_data` (or nothing within 5 s: an empty read).
final class RemoteLogs: Sendable {
    static let shared = RemoteLogs()
    private let waiting = Mutex<[UInt64: (reply: CheckedContinuation<[UInt8], Never>, timeout: Task<Void, Never>)]>([:])
    private let next = Atomic<UInt64>(1)

    func read(_ link: AgentLink, job: UInt64, offset: Int, max: Int) async -> [UInt8] {
        let token = next.wrappingAdd(1, ordering: .relaxed).oldValue
        guard
            let line = try? ControlProtocol.line(
                Notification(
                    method: AgentProtocol.logRead.name,
                    params: AgentLogRead(token: token, id: job, offset: offset, max: max)
                )
            )
        else { return [] }
        return await withCheckedContinuation { c in
            // No answer (the agent is gone): give up after a while.
            let timeout = Task {
                try? await Task.sleep(for: .seconds(5))
                self.fulfill(token, [])
            }
            waiting.withLock { $0[token] = (c, timeout) }
            link.send(line)
        }
    }

    func fulfill(_ token: UInt64, _ bytes: [UInt8]) {
        guard let w = waiting.withLock({ $0.removeValue(forKey: token) }) else { return }
        w.timeout.cancel()
        w.reply.resume(returning: bytes)
    }
}
