import AllotConfig
import AllotCore
import AllotProtocol
import AllotWAL
import CoreMetrics
import Foundation
import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Waits for the newest enqueued WAL ticket to become durable and tells the engine. One wait at a time:
/// group commit makes every earlier ticket durable with it.
final class DurabilityWatcher: Sendable {
    private let latest = Mutex<WriteAheadLog.Ticket?>(nil)
    private let signal: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() {
        (signal, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    func watch(_ ticket: WriteAheadLog.Ticket) {
        latest.withLock { $0 = ticket }
        continuation.yield()
    }

    func finish() { continuation.finish() }

    func run(wal: any EventLog, engine: EngineHandle) async {
        var done: UInt64 = 0
        for await _ in signal {
            guard let ticket = latest.withLock({ $0 }), ticket.lsn > done else { continue }
            do {
                done = try await wal.waitDurable(ticket)
                engine.send(.durable(done))
            } catch {
                engine.send(.walFailed(error))
                return
            }
        }
    }
}

/// Writes snapshots off the engine's task, once the state they hold is durable.
final class SnapshotWriter: Sendable {
    private let stream: AsyncStream<(ClusterState, WriteAheadLog.Ticket)>
    private let continuation: AsyncStream<(ClusterState, WriteAheadLog.Ticket)>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream()
    }

    func write(_ state: ClusterState, at ticket: WriteAheadLog.Ticket) { continuation.yield((state, ticket)) }
    func finish() { continuation.finish() }

    func run(wal: any EventLog, engine: EngineHandle) async {
        for await (state, ticket) in stream {
            do {
                _ = try await wal.waitDurable(ticket)
                try await wal.writeSnapshot(state, at: ticket.lsn)
                engine.send(.snapshotWritten(lsn: ticket.lsn, error: nil))
            } catch {
                engine.send(.snapshotWritten(lsn: ticket.lsn, error: "\(error)"))
            }
        }
    }
}
