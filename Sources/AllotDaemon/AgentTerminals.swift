import AllotProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A node agent's side of relayed terminals (`agent.tty_open`): for each stream, a connection to the run's
/// terminal socket (made by its supervisor, as for a local `allotctl run`), bytes passed both ways as they
/// are. Input that comes before the connection is made waits for it; a socket not there within 10 s (the
/// supervisor not started yet, or gone) closes the stream with the reason.
final class AgentTerminals: Sendable {
    private struct Stream {
        var channel: (any Channel)?
        var waiting: [ByteBuffer] = []
    }

    private let streams = Mutex<[UInt64: Stream]>([:])
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    /// Opens stream `stream`: from now on its input is kept until ``serve(_:path:send:)`` has connected it.
    /// Called on the link's reading task, before the next line is read, so that no input comes first.
    func open(_ stream: UInt64) { streams.withLock { $0[stream] = Stream() } }

    /// Connects stream `stream` (opened) to the socket at `path`, then copies what the run writes to
    /// `send` (one `agent.tty_data` line per read) until it closes; ends with `agent.tty_close`. Returns
    /// when the stream is over.
    func serve(_ stream: UInt64, path: String, send: @escaping @Sendable (Data) async throws -> Void) async {
        var why: String?
        let deadline = ContinuousClock.now + .seconds(10)
        var connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>?
        while connection == nil {
            do {
                connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connect(unixDomainSocketPath: path) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                        }
                    }
            } catch {
                guard ContinuousClock.now < deadline, streams.withLock({ $0[stream] != nil }) else {
                    why = "cannot reach the run's terminal at \(path): \(error)"
                    break
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        if let connection {
            let channel = connection.channel
            let open = streams.withLock { s -> Bool in
                guard let waiting = s[stream]?.waiting else { return false }
                s[stream] = Stream(channel: channel)
                for b in waiting { channel.write(b, promise: nil) }
                channel.flush()
                return true
            }
            if open {
                do {
                    try await connection.executeThenClose { inbound, _ in
                        for try await buffer in inbound {
                            try await send(
                                TerminalRelays.line(
                                    AgentProtocol.ttyData.name,
                                    AgentTTYData(
                                        stream: stream,
                                        data: Data(buffer.readableBytesView).base64EncodedString()
                                    )
                                )
                            )
                        }
                    }
                } catch {
                    why = "the run's terminal failed: \(error)"
                }
            } else {
                try? await connection.channel.close()
            }
        }
        // Told only if the controller did not end it first.
        if streams.withLock({ $0.removeValue(forKey: stream) }) != nil {
            if let why {
                logger.warning("A relayed terminal ended", metadata: ["stream": "\(stream)", "error": "\(why)"])
            }
            try? await send(TerminalRelays.line(AgentProtocol.ttyClose.name, AgentTTYClose(stream: stream, error: why)))
        }
    }

    /// Bytes from the client for stream `stream`.
    func input(_ stream: UInt64, base64: String) {
        guard let bytes = Data(base64Encoded: base64) else { return }
        let buffer = ByteBuffer(bytes: bytes)
        streams.withLock { s in
            guard var entry = s[stream] else { return }
            if let channel = entry.channel {
                channel.writeAndFlush(buffer, promise: nil)
            } else {
                entry.waiting.append(buffer)
                s[stream] = entry
            }
        }
    }

    /// The controller let go of the stream (its client went away): the run's terminal socket is closed, as
    /// a local client's going would close it.
    func close(_ stream: UInt64) {
        let entry = streams.withLock { $0.removeValue(forKey: stream) }
        entry?.channel?.close(promise: nil)
    }

    /// The link to the controller is gone: every relayed terminal lets go.
    func closeAll() {
        let all = streams.withLock { s in
            defer { s.removeAll() }
            return Array(s.values)
        }
        for entry in all { entry.channel?.close(promise: nil) }
    }
}
