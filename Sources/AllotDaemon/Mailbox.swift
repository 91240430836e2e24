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

/// What the engine's task is asked to do.
enum EngineCommand: Sendable {
    case call(Call, RPCID?, Caller, Outbox)
    case disconnected(UInt64)
    case tick
    case pass
    case durable(UInt64)
    case walFailed(WALError)
    case sighup
    case snapshotWritten(lsn: UInt64, error: String?)
    /// What the GPU watcher found.
    case gpus(Result<GPUInventory, GPUProbeError>)
    /// The control socket is listening.
    case listening
    /// A metrics scrape: bring the gauges up to date, then resume.
    case refreshMetrics(CheckedContinuation<Void, Never>)
    /// Node agents.
    case agentRegister(
        AgentRegisterParams,
        AgentLink,
        RPCID?,
        CheckedContinuation<Result<AgentRegisterResult, RPCError>, Never>
    )
    case agentReport(node: String, link: UInt64, AgentReport)
    /// What an agent's checks found of the replicas on its node.
    case agentReplicas(node: String, link: UInt64, AgentReplicas)
    case agentHealth(node: String, link: UInt64, AgentHealth)
    case agentHeartbeat(node: String, link: UInt64)
    case agentDisconnected(node: String, link: UInt64)
    /// A check of a service's replica answered (nil: it passed).
    case replicaChecked(id: JobID, run: Int, readiness: Bool, problem: String?)
    /// An autoscaled service's replicas' metrics were read: the requests in flight they add up to (nil when
    /// none could be read).
    case serviceScraped(String, requests: Double?)
    /// Several controllers (docs/ha.md): records of the leader's log, in order, for a follower to apply.
    case followed([Event], through: UInt64)
    /// The leader's newest snapshot, for a follower that fell behind it.
    case followedState(ClusterState, through: UInt64)
    /// Who leads now (a follower names it when it refuses a change).
    case leaderIs(String?)
    /// This controller won the election and has read the log to its end: it leads from now on.
    case lead(Leading)
}

/// What a follower needs to take the lead: the log it writes, where it ends, and its epoch.
struct Leading: Sendable {
    var log: any EventLog
    var lastLSN: UInt64
    var epoch: UInt64
    var name: String
}

/// The way into the engine, for every other task.
struct EngineHandle: Sendable {
    let continuation: AsyncStream<EngineCommand>.Continuation
    /// Clients' requests waiting in the mailbox, bounded: past the bound, connections wait before they
    /// read another request (back-pressure on clients). Internal commands (ticks, durability, agents' few
    /// messages) are not counted.
    let requests = MailboxBound(capacity: 4_096)

    func send(_ command: EngineCommand) { continuation.yield(command) }
    /// Sends a client's request once the mailbox has room for it.
    func send(request command: EngineCommand) async {
        await requests.enter()
        continuation.yield(command)
    }
    func finish() {
        continuation.finish()
        requests.open()
    }
}

/// A bound on what waits in the engine's mailbox: `enter` waits while `capacity` requests are in it;
/// the engine calls `leave` as it takes each one.
final class MailboxBound: Sendable {
    let capacity: Int
    private let state = Mutex<(inside: Int, waiting: [CheckedContinuation<Void, Never>], open: Bool)>((0, [], false))

    init(capacity: Int) { self.capacity = capacity }

    func enter() async {
        let admitted = state.withLock { s -> Bool in
            guard s.inside < capacity || s.open else { return false }
            s.inside += 1
            return true
        }
        if admitted { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.inside < capacity || s.open {
                    s.inside += 1
                    return true
                }
                s.waiting.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// One request left the mailbox: its place goes to the longest waiting one, if any.
    func leave() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if !s.waiting.isEmpty { return s.waiting.removeFirst() }  // the place passes on: `inside` unchanged
            s.inside = max(0, s.inside - 1)
            return nil
        }
        next?.resume()
    }

    /// No bound any more (shutting down): every waiting request goes through, and nobody waits again.
    func open() {
        let all = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open = true
            defer { s.waiting.removeAll() }
            return s.waiting
        }
        for c in all { c.resume() }
    }
}
