import AllotProtocol
import Foundation
import NIOCore
import Synchronization

/// What a connection's writer does next.
enum Outgoing: Sendable {
    case line(Data)
    /// Copy a job's log to the client (and keep following it); the writer does it, so a slow reader only
    /// slows its own copy.
    case log(LogStream)
}

/// A `logs` stream: where the log is, and whether its job has ended (set by the engine).
final class LogStream: Sendable {
    let job: UInt64
    let path: String
    let offset: Int
    let follow: Bool
    private let end = Mutex<LogsEnd?>(nil)

    /// Set for a job on an agent's node: the log is read from the agent, over its link.
    let remote: AgentLink?

    init(job: UInt64, path: String, offset: Int, follow: Bool, remote: AgentLink? = nil) {
        self.job = job
        self.path = path
        self.offset = offset
        self.follow = follow
        self.remote = remote
    }

    /// How the stream ends, once the job has ended (or, without following, at once).
    var ended: LogsEnd? { end.withLock { $0 } }
    func jobEnded(_ e: LogsEnd) { end.withLock { $0 = e } }
}

/// What goes out on one connection: lines, in order, then a close. The engine never waits on it: a client
/// that stops reading has its connection closed once too much is queued for it.
final class Outbox: Sendable {
    /// The connection's number (for streams to forget it when it goes).
    let id: UInt64
    let limit: Int
    private let continuation: AsyncStream<Outgoing>.Continuation
    private let channel: any Channel
    private let queued = Atomic<Int>(0)
    /// Requests read and not yet answered.
    private let unanswered = Atomic<Int>(0)
    private let inputEnded = Atomic<Bool>(false)
    /// Whether a stream (watch, logs -f) is open: the idle timeout then does not apply.
    let streaming = Atomic<Bool>(false)

    init(id: UInt64, channel: any Channel, limit: Int = 16 << 20) {
        self.id = id
        self.limit = limit
        self.channel = channel
        (stream, continuation) = AsyncStream<Outgoing>.makeStream()
    }

    /// What the connection's writer reads.
    let stream: AsyncStream<Outgoing>

    /// Items handed to the connection's writer and not yet written by it.
    private let inWriter = Atomic<Int>(0)
    /// The last line written straight to the channel: the writer waits for it before the connection closes.
    private let lastDirect = Mutex<EventLoopFuture<Void>?>(nil)

    /// Queues a line. Returns false (and closes the connection) when the client has fallen too far behind:
    /// more than `limit` bytes were already waiting before this one.
    ///
    /// A line goes straight to the channel when nothing waits in the connection's writer ahead of it (an
    /// answer from the WAL writer's thread: one hop to the event loop instead of two); after a log copy, or
    /// a line the writer still holds, it goes through the writer, behind them.
    @discardableResult
    func send(_ line: Data) -> Bool {
        let before = queued.add(line.count, ordering: .relaxed).newValue - line.count
        if before > limit {
            close()
            return false
        }
        let direct = lastDirect.withLock { last -> Bool in
            guard inWriter.load(ordering: .acquiring) == 0 else { return false }
            let written = channel.writeAndFlush(ByteBuffer(bytes: line))
            written.whenComplete { [self] _ in self.written(line.count) }
            last = written
            return true
        }
        if !direct {
            inWriter.add(1, ordering: .releasing)
            continuation.yield(.line(line))
        }
        return true
    }

    /// Queues the answer to a request.
    func reply(_ line: Data) {
        send(line)
        if unanswered.subtract(1, ordering: .relaxed).newValue == 0 && inputEnded.load(ordering: .relaxed)
            && !streaming.load(ordering: .relaxed)
        {
            continuation.finish()
        }
    }

    func streamLog(_ stream: LogStream) {
        _ = lastDirect.withLock { _ in inWriter.add(1, ordering: .releasing) }
        continuation.yield(.log(stream))
    }

    /// Called by the connection's writer once it has written an item it took (handed it to the channel).
    func taken() { inWriter.subtract(1, ordering: .releasing) }

    /// Waits until the lines written straight to the channel are out.
    func drained() async {
        let last = lastDirect.withLock { $0 }
        try? await last?.get()
    }

    /// A request was read; its answer will come through ``reply(_:)``.
    func expectReply() { unanswered.add(1, ordering: .relaxed) }

    /// The client sent its last request: the writer ends once every answer is out (unless a stream is open).
    func clientDone() {
        inputEnded.store(true, ordering: .relaxed)
        if unanswered.load(ordering: .relaxed) == 0 && !streaming.load(ordering: .relaxed) { continuation.finish() }
    }

    /// Called by the connection's writer once a line is written.
    func written(_ bytes: Int) { queued.subtract(bytes, ordering: .relaxed) }

    /// Ends the writer and closes the connection now, even if its writer is stuck on a full socket.
    func close() {
        continuation.finish()
        channel.close(promise: nil)
    }

    /// Ends the writer after what is queued.
    func finish() { continuation.finish() }

    /// A log copy ended: the writer ends too if the client is done.
    func streamEnded() {
        streaming.store(false, ordering: .relaxed)
        if inputEnded.load(ordering: .relaxed) && unanswered.load(ordering: .relaxed) == 0 { continuation.finish() }
    }

    /// The daemon is stopping: streams end, and the writer ends once the answers still due are out.
    func shutdown() {
        stopping.store(true, ordering: .relaxed)
        inputEnded.store(true, ordering: .relaxed)
        streaming.store(false, ordering: .relaxed)
        if unanswered.load(ordering: .relaxed) == 0 { continuation.finish() }
    }

    /// Set once `attach` made the connection a relayed terminal: what the client sends is then bytes of
    /// the terminal, not requests.
    let relaying = Atomic<Bool>(false)

    /// Makes the connection a relayed terminal: it stops splitting its input into lines (the name of the
    /// line decoder in its pipeline is ``lineDecoderName``), then calls `then` (on the connection's event
    /// loop). The client sends nothing between its `attach` and the answer, so no byte is read as a line.
    func becomeRelay(then: @escaping @Sendable () -> Void) {
        relaying.store(true, ordering: .relaxed)
        streaming.store(true, ordering: .relaxed)
        channel.pipeline.removeHandler(name: Self.lineDecoderName).whenComplete { _ in then() }
    }

    static let lineDecoderName = "lines"

    /// Set when the daemon is stopping.
    let stopping = Atomic<Bool>(false)
}
