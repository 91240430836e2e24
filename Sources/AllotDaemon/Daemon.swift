import AllotConfig
import AllotCore
import AllotEtcd
import AllotSystemd
import AllotWAL
import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// How allotd was asked to run (its command line).
public struct DaemonOptions: Sendable {
    public var configPath: String?
    public var stateDir: String?
    public var socket: String?
    public var repair = false
    /// Where to record every input given to the controller, with its clock reading (JSON lines).
    public var recordInputs: String?
    /// A listening socket handed over by systemd.
    public var inheritedSocket: Int32?

    public init(configPath: String?, stateDir: String? = nil, socket: String? = nil, repair: Bool = false) {
        self.configPath = configPath
        self.stateDir = stateDir
        self.socket = socket
        self.repair = repair
    }
}

extension DaemonOptions {
    /// The configuration file with the command line's overrides on top: at start and at every reload, so
    /// that a reload never sees `--state-dir` or `--socket` as a change.
    func loadConfig() throws(ConfigError) -> ConfigFile {
        let path = configPath ?? "/etc/allot/allotd.toml"
        var file = try ConfigFile.load(path: path)
        if let refusal = file.allotdRefusal(path: path, hostname: ProcessInfo.processInfo.hostName) { throw refusal }
        if let d = stateDir { file.daemon.stateDir = d }
        if let s = socket { file.daemon.socket = s }
        return file
    }
}

/// Why allotd could not start: a sentence for its log and standard error, and an errno for systemd.
public struct StartupError: Error, CustomStringConvertible {
    public var description: String
    /// `ERRNO=` for systemd: EINVAL (a bad configuration) unless said otherwise.
    public var errno: Int32 = EINVAL

    public init(description: String, errno: Int32 = EINVAL) {
        self.description = description
        self.errno = errno
    }
}

/// allotd: recovers the state, then serves the control socket and runs the scheduler until SIGTERM.
public enum Daemon {
    /// Loads the configuration, takes the state directory, recovers, and serves until told to stop.
    /// - Throws: ``StartupError`` when it cannot start (bad config, locked or damaged state directory,
    ///   socket in use); services' errors after that.
    public static func run(_ options: DaemonOptions, logger: Logger) async throws {
        let file: ConfigFile
        do {
            file = try options.loadConfig()
        } catch {
            throw StartupError(description: "\(error)")
        }
        let settings = file.daemon
        // Before anything else: a second allotd pointed at a live daemon's socket stops here.
        if options.inheritedSocket == nil { try SocketFile.prepare(settings.socket) }
        do {
            try FileManager.default.createDirectory(atPath: settings.stateDir, withIntermediateDirectories: true)
        } catch {
            throw StartupError(
                description: "cannot create the state directory \(settings.stateDir): \(error)",
                errno: EIO
            )
        }
        System.keepBigBlocksMapped()
        var walOptions = WriteAheadLog.Options()
        walOptions.sync = WriteAheadLog.SyncPolicy(rawValue: file.wal.sync.rawValue) ?? .batch
        walOptions.segmentSize = file.wal.segmentBytes
        walOptions.snapshotEveryRecords = file.wal.snapshotEveryRecords
        walOptions.snapshotEveryBytes = file.wal.snapshotEveryBytes
        walOptions.repair = options.repair
        let wal: any EventLog
        let recovered: StateBox
        let lastLSN: UInt64
        var joined: HA.Joined?
        if let ha = file.ha {
            // Several controllers: enter the election and read the state from the log in etcd; follow the
            // leader's log (serving reads) until this controller leads, then write there.
            let j = try await HA.join(ha, logger: logger)
            (wal, recovered, lastLSN) = (NotLeading(), j.state, j.lastLSN)
            joined = j
        } else {
            let local = try recover(settings.stateDir, options: walOptions, logger: logger)
            (wal, recovered, lastLSN) = (local.0, local.1, local.2)
        }
        defer {
            joined?.keepAlive.cancel()
            joined?.writing.withLockedValue { $0 }?.close()
            wal.close()
        }

        let (commands, continuation) = AsyncStream<EngineCommand>.makeStream()
        let handle = EngineHandle(continuation: continuation)
        joined?.engine.withLockedValue { $0 = handle }
        let (leads, leading) = AsyncStream<Void>.makeStream()
        if joined == nil { leading.finish() }
        var following: Task<Void, Never>?
        if let joined {
            following = HA.followAndLead(
                joined,
                handle: handle,
                snapshotEveryRecords: file.wal.snapshotEveryRecords,
                logger: logger
            ) { leading.finish() }
        }
        defer { following?.cancel() }
        var metricsServer: MetricsServer?
        var metrics: DaemonMetrics?
        if let listen = settings.metricsListen {
            guard let (host, port) = HostPort.parse(listen) else {
                throw StartupError(
                    description:
                        "[daemon] metrics_listen: expected host:port such as \"127.0.0.1:9464\", got \"\(listen)\""
                )
            }
            let m = DaemonMetrics()
            (wal as? WriteAheadLog)?.observeWrites { t in
                m.walWrite.recordSeconds(t.writeSeconds)
                m.walSync.recordSeconds(t.syncSeconds)
                m.walBatchRecords.record(t.records)
            }
            metrics = m
            metricsServer = MetricsServer(host: host, port: port, metrics: m, engine: handle, logger: logger)
        }
        let engine = EngineService(
            recovered: recovered,
            lsn: lastLSN,
            config: file,
            source: options,
            wal: wal,
            handle: handle,
            commands: commands,
            logger: logger,
            metrics: metrics,
            following: joined.map { Engine.Following(leader: $0.leader, lsn: $0.lastLSN) }
        )
        var agentServer: AfterLeading<AgentServer>?
        if let cluster = file.cluster {
            do {
                let context = try ClusterTLS.serverContext(cluster)
                // Agents link to the leader only: a follower opens their port when it comes to lead.
                agentServer = AfterLeading(
                    leads: leads,
                    service: AgentServer(settings: cluster, context: context, engine: handle, logger: logger)
                )
            } catch {
                throw StartupError(description: "[cluster]: \(error)")
            }
        }
        var server = ControlServer(
            path: settings.socket,
            limits: .init(
                maxMessageBytes: settings.maxMessageBytes,
                maxConnections: settings.maxConnections,
                idleTimeout: settings.idleTimeout,
                socketMode: settings.socketMode
            ),
            engine: handle,
            logger: logger
        )
        server.inheritedSocket = options.inheritedSocket
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: engine),
                    .init(service: server),
                    .init(service: ReloadSignals(engine: handle)),
                ] + (metricsServer.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? [])
                    + (agentServer.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? []),
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
        if let joined {
            // Stopped on purpose: its lease goes now (with its key), so that another controller leads at once
            // instead of after the lease's TTL.
            joined.keepAlive.cancel()
            try? await joined.client.revoke(lease: joined.candidacy.lease)
            logger.notice("Left the election", metadata: ["ha.cluster": "\(file.ha?.cluster ?? "-")"])
        }
        logger.info("Stopped")
    }

    /// Opens the log and recovers the state. Only the returned box holds the recovered state, so that the
    /// engine has the one copy (a second reference would make its first change copy every job).
    static func recover(
        _ stateDir: String,
        options walOptions: WriteAheadLog.Options,
        logger: Logger
    ) throws -> (WriteAheadLog, StateBox, UInt64) {
        let started = ContinuousClock.now
        let wal: WriteAheadLog
        let report: RecoveryReport
        do {
            (wal, report) = try WriteAheadLog.open(directory: stateDir, options: walOptions)
        } catch {
            throw StartupError(description: "\(error)", errno: EIO)
        }
        logger.info(
            "Recovered",
            metadata: [
                "state_dir": "\(stateDir)", "wal.snapshot_lsn": "\(report.snapshotLSN)",
                "wal.last_lsn": "\(report.lastLSN)", "wal.replayed": "\(report.replayed)",
                "jobs": "\(report.state.jobs.count)", "duration": "\(ContinuousClock.now - started)",
            ]
        )
        for note in report.notes { logger.notice("Recovery note", metadata: ["note": "\(note)"]) }
        return (wal, StateBox(report.state), report.lastLSN)
    }
}

/// Hands the recovered state to the engine without keeping a reference to it.
final class StateBox: @unchecked Sendable {
    private var state: ClusterState?
    init(_ state: ClusterState) { self.state = state }
    /// The state; the box is empty after. Call once, from the engine's task.
    func take() -> ClusterState {
        defer { state = nil }
        return state ?? ClusterState()
    }
}

/// Runs the engine on its own task; on graceful shutdown it serves what is queued, makes it durable, and
/// returns (after the control server, which stops first).
struct EngineService: Service {
    let recovered: StateBox
    let lsn: UInt64
    let config: ConfigFile
    let source: DaemonOptions
    let wal: any EventLog
    let handle: EngineHandle
    let commands: AsyncStream<EngineCommand>
    let logger: Logger
    let metrics: DaemonMetrics?
    let following: Engine.Following?

    func run() async {
        let engine = Engine(
            recovered: recovered.take(),
            durableLSN: lsn,
            config: config,
            source: source,
            wal: wal,
            handle: handle,
            logger: logger,
            metrics: metrics,
            following: following
        )
        let handle = self.handle
        await withGracefulShutdownHandler {
            await engine.run(commands: commands)
        } onGracefulShutdown: {
            Systemd.notify("STOPPING=1", "STATUS=stopping: finishing requests, flushing the log")
            handle.finish()
        }
    }
}

/// A service that starts once this controller leads (at once with a single controller).
struct AfterLeading<S: Service>: Service {
    /// Ends when this controller leads.
    let leads: AsyncStream<Void>
    let service: S

    func run() async throws {
        for await _ in leads.cancelOnGracefulShutdown() {}
        if Task.isCancelled || Task.isShuttingDownGracefully { return }
        try await service.run()
    }
}

/// A follower's log: it writes nothing until it leads (then the engine takes the leader's log).
final class NotLeading: EventLog {
    func enqueue(_ events: [Event]) throws(WALError) -> WriteAheadLog.Ticket {
        throw WALError(.failed, "this controller follows: it writes the log only once it leads")
    }
    func waitDurable(_ ticket: WriteAheadLog.Ticket) async throws(WALError) -> UInt64 {
        throw WALError(.failed, "this controller follows: it writes the log only once it leads")
    }
    func whenDurable(_ ticket: WriteAheadLog.Ticket, _ then: @escaping @Sendable (Result<UInt64, WALError>) -> Void) {
        then(.failure(WALError(.failed, "this controller follows: it writes the log only once it leads")))
    }
    var lastLSN: UInt64 { 0 }
    var snapshotDue: Bool { false }
    func writeSnapshot(_ state: ClusterState, at lsn: UInt64) async throws {}
    func close() {}
}

/// SIGHUP: reload the configuration.
struct ReloadSignals: Service {
    let engine: EngineHandle

    func run() async {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            engine.send(.sighup)
        }
    }
}

// Short names in service-lifecycle's logs (the default would print the whole state).
extension EngineService: CustomStringConvertible {
    var description: String { "EngineService" }
}

extension ControlServer: CustomStringConvertible {
    var description: String { "ControlServer(\(path))" }
}

extension AfterLeading: CustomStringConvertible {
    var description: String { "AfterLeading(\(service))" }
}

extension ReloadSignals: CustomStringConvertible {
    var description: String { "ReloadSignals" }
}
