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

/// Several controllers on etcd (docs/ha.md): each campaigns for the lead; the leader recovers the state from
/// the log in etcd and writes there, fenced by its epoch; one that loses its lease stops at once (systemd
/// starts it again, to follow).
enum HA {
    struct Led {
        var log: any EventLog
        var state: StateBox
        var lastLSN: UInt64
        var keepAlive: Task<Void, Never>
        /// Where to say the lead is lost (the engine, once it runs).
        var engine: NIOLockedValueBox<EngineHandle?>
    }

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

    /// Waits until this controller leads the cluster, then recovers from the log in etcd.
    static func lead(_ ha: HASettings, snapshotEveryRecords: Int, logger: Logger) async throws -> Led {
        let client = try client(ha)
        let prefix = "/allot/\(ha.cluster)/"
        let election = EtcdElection(client: client, prefix: prefix + "leader/")
        let log = EtcdLog(client: client, prefix: prefix + "log/")
        let name = ha.name ?? ProcessInfo.processInfo.hostName
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
            // leads (the fence already refuses its writes); it says so and serves reads until etcd answers.
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
                logger.critical("Lost the lead", metadata: ["ha.cluster": "\(cluster)", "reason": "\(why)"])
                engine.withLockedValue { $0 }?.send(
                    .walFailed(WALError(.failed, "this controller no longer leads cluster \(cluster): \(why)"))
                )
                restartWhenEtcdAnswers(client, cluster: cluster, logger: logger)
                return
            }
        }
        if let leader = try? await election.leader(), leader.keyString != candidacy.key {
            logger.notice(
                "Following: waiting to lead",
                metadata: [
                    "ha.cluster": "\(ha.cluster)", "ha.leader": "\(String(decoding: leader.value, as: UTF8.self))",
                ]
            )
        }
        let started = ContinuousClock.now
        let leading: EtcdElection.Candidacy
        do { leading = try await election.campaign(candidacy) } catch {
            keepAlive.cancel()
            throw StartupError(description: "[ha] the election failed: \(error)")
        }
        let recovered: (state: ClusterState, lastLSN: UInt64, snapshotLSN: UInt64)
        do { recovered = try await EtcdRecovery.recover(log) } catch {
            keepAlive.cancel()
            throw StartupError(description: "[ha] cannot read the log in etcd: \(error)", errno: EIO)
        }
        logger.notice(
            "Leading",
            metadata: [
                "ha.cluster": "\(ha.cluster)", "ha.name": "\(name)", "ha.epoch": "\(leading.epoch)",
                "wal.snapshot_lsn": "\(recovered.snapshotLSN)", "wal.last_lsn": "\(recovered.lastLSN)",
                "jobs": "\(recovered.state.jobs.count)", "waited": "\(ContinuousClock.now - started)",
            ]
        )
        let eventLog = EtcdEventLog(
            log: log,
            as: leading,
            lastLSN: recovered.lastLSN,
            snapshotLSN: recovered.snapshotLSN,
            snapshotEveryRecords: snapshotEveryRecords
        ) { restartWhenEtcdAnswers(client, cluster: cluster, logger: logger) }
        return Led(
            log: eventLog,
            state: StateBox(recovered.state),
            lastLSN: recovered.lastLSN,
            keepAlive: keepAlive,
            engine: engine
        )
    }
}
