import AllotProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A line longer than the limit.
struct LineTooLong: Error {
    var limit: Int
}

/// Splits the byte stream into lines (without their `\n`), refusing lines longer than `limit`.
struct LineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let limit: Int
    private var scanned = 0

    init(limit: Int) { self.limit = limit }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        if let nl = view.dropFirst(scanned).firstIndex(of: UInt8(ascii: "\n")) {
            let length = nl - view.startIndex
            scanned = 0
            if length > limit { throw LineTooLong(limit: limit) }
            let line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            context.fireChannelRead(wrapInboundOut(line))
            return .continue
        }
        scanned = view.count
        if view.count > limit { throw LineTooLong(limit: limit) }
        return .needMoreData
    }

    mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        // A last line without its newline still counts.
        if buffer.readableBytes > 0 {
            let line = buffer.readSlice(length: buffer.readableBytes)!
            context.fireChannelRead(wrapInboundOut(line))
        }
        return .needMoreData
    }
}

/// Closes a connection that has been idle too long, unless it carries a stream.
final class IdleCloser: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let outbox: Outbox

    init(outbox: Outbox) { self.outbox = outbox }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            if !outbox.streaming.load(ordering: .relaxed) { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// The control socket: accepts connections, reads requests, hands them to the engine, writes answers.
struct ControlServer: Service {
    struct Limits: Sendable {
        var maxMessageBytes: Int
        var maxConnections: Int
        var idleTimeout: Double
        var socketMode: UInt32
    }

    struct Connection: Sendable {
        var channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        var outbox: Outbox
        var credentials: PeerCredentials?
    }

    /// The open connections, for limits and for shutdown.
    final class Registry: Sendable {
        private let open = Mutex<[UInt64: Outbox]>([:])
        private let next = Atomic<UInt64>(0)

        func nextID() -> UInt64 { next.add(1, ordering: .relaxed).newValue }
        func add(_ o: Outbox) -> Int {
            open.withLock {
                $0[o.id] = o
                return $0.count
            }
        }
        func remove(_ o: Outbox) { open.withLock { $0[o.id] = nil } }
        var count: Int { open.withLock { $0.count } }
        func all() -> [Outbox] { open.withLock { Array($0.values) } }
    }

    let path: String
    let limits: Limits
    let engine: EngineHandle
    let logger: Logger
    let registry = Registry()
    let users = Users()
    /// A socket handed over by systemd (socket activation), used instead of binding `path`.
    var inheritedSocket: Int32?

    func run() async throws {
        let registry = self.registry
        let limits = self.limits
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Connection> = { channel in
            channel.eventLoop.makeCompletedFuture {
                let ops = channel.pipeline.syncOperations
                let creds = try ops.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self) { fd in
                    System.peerCredentials(of: fd)
                }
                let outbox = Outbox(id: registry.nextID(), channel: channel)
                try ops.addHandler(IdleStateHandler(readTimeout: .milliseconds(Int64(limits.idleTimeout * 1000))))
                try ops.addHandler(IdleCloser(outbox: outbox))
                try ops.addHandler(
                    ByteToMessageHandler(LineDecoder(limit: limits.maxMessageBytes)),
                    name: Outbox.lineDecoderName
                )
                let async = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                return Connection(channel: async, outbox: outbox, credentials: creds ?? nil)
            }
        }
        let server: NIOAsyncChannel<Connection, Never>
        var bound: SocketFile?
        if let fd = inheritedSocket {
            server = try await bootstrap.bind(
                fd,
                cleanupExistingSocketFile: false,
                childChannelInitializer: initializer
            )
        } else {
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent,
                withIntermediateDirectories: true
            )
            let (fd, file) = try SocketFile.listen(path, mode: limits.socketMode, backlog: 256)
            bound = file
            do {
                server = try await bootstrap.bind(
                    fd,
                    cleanupExistingSocketFile: false,
                    childChannelInitializer: initializer
                )
            } catch {
                close(fd)
                file.remove()
                throw error
            }
        }
        engine.send(.listening)
        logger.info(
            "Listening",
            metadata: ["socket": "\(path)", "socket.mode": "\(String(limits.socketMode, radix: 8))"]
        )
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                // On shutdown: stop accepting, let connections get the answers they wait for, then close.
                try? await gracefulShutdown()
                server.channel.close(promise: nil)
                for o in registry.all() { o.shutdown() }
                let deadline = ContinuousClock.now + .seconds(5)
                while registry.count > 0 && ContinuousClock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(20))
                }
                for o in registry.all() { o.close() }
            }
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    group.addTask { await serve(connection) }
                }
            }
        }
        // Only the file bound here: never one that another daemon has put at this path since.
        bound?.remove()
    }

    func serve(_ connection: Connection) async {
        let outbox = connection.outbox
        let count = registry.add(outbox)
        defer {
            registry.remove(outbox)
            if outbox.relaying.load(ordering: .relaxed) { TerminalRelays.shared.clientGone(outbox.id) }
            engine.send(.disconnected(outbox.id))
        }
        func refuse(_ error: RPCError) async {
            try? await connection.channel.executeThenClose { _, outbound in
                try await outbound.write(
                    ByteBuffer(data: try ControlProtocol.line(ErrorResponse(id: nil, error: error)))
                )
            }
        }
        if count > limits.maxConnections {
            logger.warning("Connection refused: too many", metadata: ["connections.max": "\(limits.maxConnections)"])
            await refuse(
                RPCError(
                    RPCError.tooManyConnections,
                    "allotd serves at most \(limits.maxConnections) connections at once; try again"
                )
            )
            return
        }
        guard let creds = connection.credentials else {
            await refuse(RPCError(RPCError.permissionDenied, "allotd cannot tell who is connecting (no SO_PEERCRED)"))
            return
        }
        let user = users.lookup(uid: creds.uid, gid: creds.gid)
        let caller = Caller(uid: creds.uid, gid: creds.gid, pid: creds.pid, groups: user.groups, name: user.name)
        let engine = self.engine
        let limit = limits.maxMessageBytes
        try? await connection.channel.executeThenClose { inbound, outbound in
            await withTaskGroup(of: Bool.self) { group in
                group.addTask {
                    writing: for await item in outbox.stream {
                        switch item {
                        case .line(let data):
                            do {
                                try await outbound.write(ByteBuffer(data: data))
                            } catch {
                                break writing
                            }
                            outbox.written(data.count)
                        case .log(let stream):
                            guard await LogCopier.copy(stream, to: outbound, outbox: outbox) else { break writing }
                            outbox.streamEnded()
                        }
                        outbox.taken()
                    }
                    await outbox.drained()
                    return true
                }
                group.addTask {
                    do {
                        for try await buffer in inbound {
                            if outbox.relaying.load(ordering: .relaxed) {
                                await TerminalRelays.shared.input(outbox.id, buffer.readableBytesView)
                                continue
                            }
                            let line = Data(buffer.readableBytesView)
                            if line.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) { continue }
                            outbox.expectReply()
                            let (id, result) = Call.decode(line)
                            switch result {
                            case .success(let call): await engine.send(request: .call(call, id, caller, outbox))
                            case .failure(let e):
                                outbox.reply((try? ControlProtocol.line(ErrorResponse(id: id, error: e))) ?? Data())
                            }
                        }
                        if outbox.relaying.load(ordering: .relaxed) {
                            outbox.close()
                        } else {
                            outbox.clientDone()
                        }
                    } catch is LineTooLong {
                        outbox.expectReply()
                        outbox.reply(
                            (try? ControlProtocol.line(
                                ErrorResponse(
                                    id: nil,
                                    error: RPCError(
                                        RPCError.tooLarge,
                                        "a request line may be at most \(limit) bytes ([daemon] max_message_bytes); the connection is closed"
                                    )
                                )
                            )) ?? Data()
                        )
                        outbox.finish()
                    } catch {
                        outbox.close()
                    }
                    return false
                }
                // Once the writer is done (every answer out, or the client gone), the reader stops too.
                while let writer = await group.next(), !writer {}
                outbox.close()
                group.cancelAll()
            }
        }
    }
}

extension ByteBuffer {
    init(data: Data) {
        self.init(bytes: data)
    }
}
