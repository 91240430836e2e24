import AllotConfig
import AllotCore
import AllotEtcd
import AllotWAL
import Foundation
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Several controllers on etcd (docs/ha.md): each campaigns for the lead and follows the leader's log as a hot
/// standby, answering reads; the leader writes the log in etcd, fenced by its epoch; one that loses its lease
/// serves reads until etcd answers, then restarts (systemd starts it again, to campaign anew).
enum HA {
    private static let restarting = NIOLockedValueBox(false)

    /// This controller can no longer write (its lease ended, or etcd did not take its records): it serves
    /// reads until etcd answers again, then exits (status 75) to campaign anew — systemd starts it again, and
    /// it follows or leads with the state in etcd, which is the truth.
    static func restartWhenEtcdAnswers(_ client: EtcdClient, cluster: String, logger: Logger) {
        guard
            !restarting.withLockedValue({ was in
                defer { was = true }; return was
            })
        else { return }
        Task.detached {
            while true {
                try? await Task.sleep(for: .seconds(1))
                if (try? await client.range(from: Array("/allot/\(cluster)/".utf8), to: nil, limit: 1)) != nil {
                    logger.notice(
                        "etcd answers again: restarting to campaign (exit status 75)",
                        metadata: ["ha.cluster": "\(cluster)"]
                    )
                    exit(75)
                }
            }
        }
    }

    /// How the other controllers name this one: `[ha] name`, else the host's name.
    static func name(_ ha: HASettings) -> String { ha.name ?? ProcessInfo.processInfo.hostName }

    /// The client of the `[ha]` section's etcd.
    static func client(_ ha: HASettings) throws -> EtcdClient {
        var e = EtcdEndpoints(urls: ha.etcd)
        e.caFile = ha.ca
        e.certificateFile = ha.certificate
        e.keyFile = ha.key
        e.user = ha.user
        if let file = ha.passwordFile {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw StartupError(description: "[ha] password_file: cannot read \(file)")
            }
            e.password = text.trimmingCharacters(in: .newlines)
        }
        e.timeout = max(1, min(2, ha.leaseTTL / 3))
        do { return try EtcdClient(e) } catch { throw StartupError(description: "[ha] etcd: \(error.message)") }
    }

    /// A controller in the election: its lease kept alive, its candidacy entered, and the state the log in
    /// etcd held when it joined.
    struct Joined {
        var client: EtcdClient
        var election: EtcdElection
        var log: EtcdLog
        var candidacy: EtcdElection.Candidacy
        var cluster: String
        var name: String
        var state: StateBox
        var lastLSN: UInt64
        var snapshotLSN: UInt64
        /// Who leads now (nil: nobody, or this controller).
        var leader: String?
        var keepAlive: Task<Void, Never>
        /// Where to say the lease is lost (the engine, once it runs).
        var engine: NIOLockedValueBox<EngineHandle?>
        /// The log this controller writes once it leads (closed when allotd stops).
        var writing: NIOLockedValueBox<(any EventLog)?>
    }

    /// Enters the election and reads the state from the log in etcd: the controller starts as a hot standby
    /// (``followAndLead(_:handle:snapshotEveryRecords:logger:)`` keeps it up to date and takes the lead).
    static func join(_ ha: HASettings, logger: Logger) async throws -> Joined {
        let client = try client(ha)
        let prefix = "/allot/\(ha.cluster)/"
        let election = EtcdElection(client: client, prefix: prefix + "leader/")
        let log = EtcdLog(client: client, prefix: prefix + "log/")
        let name = Self.name(ha)
        let ttl = Int(ha.leaseTTL.rounded(.up))
        let lease: Int64
        let candidacy: EtcdElection.Candidacy
        do {
            lease = try await client.grantLease(ttl: ttl).id
            candidacy = try await election.enter(value: Array(name.utf8), lease: lease)
        } catch {
            throw StartupError(description: "[ha] cannot reach etcd (\(ha.etcd.joined(separator: ", "))): \(error)")
        }
        let engine = NIOLockedValueBox<EngineHandle?>(nil)
        let cluster = ha.cluster
        let keepAlive = Task.detached {
            // A third of the TTL apart: two missed in a row still keep it. Gone: this controller no longer
            // leads or stands (the fence already refuses its writes); it says so and serves reads until etcd
            // answers.
            var lastKept = ContinuousClock.now
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(ha.leaseTTL / 3))
                if Task.isCancelled { return }
                let why: String
                switch try? await client.keepAlive(lease: lease) {
                case let left? where left > 0:
                    lastKept = .now
                    continue
                case .some:
                    why = "its lease ended"
                case nil:
                    guard ContinuousClock.now - lastKept > .seconds(ha.leaseTTL) else { continue }
                    why = "etcd did not answer for the lease's TTL (\(ha.leaseTTL) s)"
                }
                logger.critical(
                    "Lost the lead or the place in the election",
                    metadata: ["ha.cluster": "\(cluster)", "reason": "\(why)"]
                )
                engine.withLockedValue { $0 }?.send(
                    .walFailed(WALError(.failed, "this controller no longer leads cluster \(cluster): \(why)"))
                )
                restartWhenEtcdAnswers(client, cluster: cluster, logger: logger)
                return
            }
        }
        let started = ContinuousClock.now
        let recovered: (state: ClusterState, lastLSN: UInt64, snapshotLSN: UInt64)
        do { recovered = try await EtcdRecovery.recover(log) } catch {
            keepAlive.cancel()
            throw StartupError(description: "[ha] cannot read the log in etcd: \(error)", errno: EIO)
        }
        let leader = (try? await election.leader()).flatMap {
            $0.keyString == candidacy.key ? nil : String(decoding: $0.value, as: UTF8.self)
        }
        logger.notice(
            "Joined the election",
            metadata: [
                "ha.cluster": "\(ha.cluster)", "ha.name": "\(name)", "ha.leader": "\(leader ?? "-")",
                "wal.snapshot_lsn": "\(recovered.snapshotLSN)", "wal.last_lsn": "\(recovered.lastLSN)",
                "jobs": "\(recovered.state.jobs.count)", "duration": "\(ContinuousClock.now - started)",
            ]
        )
        return Joined(
            client: client,
            election: election,
            log: log,
            candidacy: candidacy,
            cluster: ha.cluster,
            name: name,
            state: StateBox(recovered.state),
            lastLSN: recovered.lastLSN,
            snapshotLSN: recovered.snapshotLSN,
            leader: leader,
            keepAlive: keepAlive,
            engine: engine,
            writing: NIOLockedValueBox(nil)
        )
    }

    /// Keeps the engine's state up to date with the leader's log (a hot standby), tells it who leads, and
    /// when this controller wins the election reads the log to its end and hands the engine the lead.
    static func followAndLead(
        _ joined: Joined,
        handle: EngineHandle,
        snapshotEveryRecords: Int,
        logger: Logger,
        led: @escaping @Sendable () -> Void
    ) -> Task<Void, Never> {
        let cluster = joined.cluster
        return Task.detached {
            let position = NIOLockedValueBox((next: joined.lastLSN + 1, snapshot: joined.snapshotLSN))
            let follower = Task { await follow(joined.log, position: position, handle: handle, logger: logger) }
            let watcher = Task {
                var last: String?? = .none
                while !Task.isCancelled {
                    if let kv = try? await joined.election.leader() {
                        let name =
                            kv.keyString == joined.candidacy.key ? nil : String(decoding: kv.value, as: UTF8.self)
                        if last != .some(name) {
                            last = .some(name)
                            handle.send(.leaderIs(name))
                        }
                    }
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            let started = ContinuousClock.now
            let leading: EtcdElection.Candidacy
            do { leading = try await joined.election.campaign(joined.candidacy) } catch {
                follower.cancel()
                watcher.cancel()
                if Task.isCancelled { return }
                logger.critical("The election failed", metadata: ["error": "\(error)", "ha.cluster": "\(cluster)"])
                handle.send(.walFailed(WALError(.failed, "the election failed: \(error)")))
                restartWhenEtcdAnswers(joined.client, cluster: cluster, logger: logger)
                return
            }
            watcher.cancel()
            follower.cancel()
            await follower.value
            // Nobody else can append now (the fence): what is in etcd is the whole log. Read it to its end.
            do {
                try await catchUp(joined.log, position: position, handle: handle)
            } catch {
                logger.critical("Cannot read the log in etcd", metadata: ["error": "\(error)"])
                handle.send(.walFailed(WALError(.failed, "cannot read the log in etcd: \(error)")))
                restartWhenEtcdAnswers(joined.client, cluster: cluster, logger: logger)
                return
            }
            let (next, snapshot) = position.withLockedValue { $0 }
            let log = EtcdEventLog(
                log: joined.log,
                as: leading,
                lastLSN: next - 1,
                snapshotLSN: snapshot,
                snapshotEveryRecords: snapshotEveryRecords
            ) { restartWhenEtcdAnswers(joined.client, cluster: cluster, logger: logger) }
            joined.writing.withLockedValue { $0 = log }
            logger.info("Won the election", metadata: ["waited": "\(ContinuousClock.now - started)"])
            handle.send(.lead(Leading(log: log, lastLSN: next - 1, epoch: UInt64(leading.epoch), name: joined.name)))
            led()
        }
    }

    /// Applies the leader's records as they come, until cancelled; after a lost watch it follows again from
    /// where it was, and reads the snapshot again when the records it needs were truncated below one.
    private static func follow(
        _ log: EtcdLog,
        position: NIOLockedValueBox<(next: UInt64, snapshot: UInt64)>,
        handle: EngineHandle,
        logger: Logger
    ) async {
        while !Task.isCancelled {
            do {
                try await catchUp(log, position: position, handle: handle)
                for try await r in log.follow(from: position.withLockedValue { $0.next }) {
                    let next = position.withLockedValue { $0.next }
                    if r.lsn < next { continue }
                    guard r.lsn == next else { break }  // a gap: catch up again (from the snapshot if need be)
                    handle.send(.followed([try PortableLog.decode(r.payload)], through: r.lsn))
                    position.withLockedValue { $0.next = r.lsn + 1 }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("Following the log in etcd: retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// Reads and applies the records from the position to the log's end (the newest snapshot first when the
    /// records after the position are gone).
    private static func catchUp(
        _ log: EtcdLog,
        position: NIOLockedValueBox<(next: UInt64, snapshot: UInt64)>,
        handle: EngineHandle
    ) async throws {
        while true {
            var next = position.withLockedValue { $0.next }
            let batch = try await log.read(from: next, limit: 4096).records
            // Records gone (truncated below a newer snapshot): take the snapshot whole.
            let gone = batch.isEmpty ? try await log.snapshotLSN() >= next : batch[0].lsn != next
            if batch.isEmpty && !gone { return }
            if gone {
                let r = try await EtcdRecovery.recover(log)
                handle.send(.followedState(r.state, through: r.lastLSN))
                position.withLockedValue { $0 = (r.lastLSN + 1, r.snapshotLSN) }
                continue
            }
            let events = try EtcdRecovery.events(batch, from: &next)
            handle.send(.followed(events, through: next - 1))
            position.withLockedValue { $0.next = next }
        }
    }
}
