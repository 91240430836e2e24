import AllotCore
import Foundation

/// The messages between allotd (the controller) and a node agent (`allotd agent`), over mutual TLS, in the
/// control protocol's framing: JSON-RPC 2.0, one object per line. See docs/protocol.md, "Agent methods".
public enum AgentProtocol {
    /// The agent protocol's version (sent in `agent.register`).
    public static let version = 1
    public static let register = RPCMethod<AgentRegisterParams, AgentRegisterResult>("agent.register")
    public static let heartbeat = RPCNotification<AgentHeartbeat>("agent.heartbeat")
}

/// One GPU as an agent found it.
public struct AgentGPU: Codable, Sendable, Equatable {
    public var index: Int
    public var uuid: String?
    public var name: String?
    public var memoryMiB: Int?
    public var health: String
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case index, uuid, name, health, reason
        case memoryMiB = "memory_mib"
    }

    public init(
        index: Int,
        uuid: String? = nil,
        name: String? = nil,
        memoryMiB: Int? = nil,
        health: String = "healthy",
        reason: String? = nil
    ) {
        self.index = index
        self.uuid = uuid
        self.name = name
        self.memoryMiB = memoryMiB
        self.health = health
        self.reason = reason
    }
}

/// `agent.register` (agent → controller, a request): who the agent is and what its node has.
public struct AgentRegisterParams: Codable, Sendable {
    public var node: String
    public var protocolVersion: Int
    /// allot's version on the agent.
    public var agentVersion: String
    public var hostname: String
    public var gpus: [AgentGPU]
    public var cpus: Int?
    public var memoryGiB: Double?
    /// The controller epoch the agent last served, if any.
    public var lastEpoch: UInt64?
    /// The runs the agent holds (running, or ended and not yet acknowledged).
    public var runs: [AgentRunRef]?

    enum CodingKeys: String, CodingKey {
        case node, hostname, gpus, cpus, runs
        case protocolVersion = "protocol_version"
        case agentVersion = "agent_version"
        case memoryGiB = "memory_gib"
        case lastEpoch = "last_epoch"
    }

    public init(
        node: String,
        agentVersion: String,
        hostname: String,
        gpus: [AgentGPU],
        cpus: Int? = nil,
        memoryGiB: Double? = nil,
        lastEpoch: UInt64? = nil,
        runs: [AgentRunRef]? = nil
    ) {
        self.runs = runs
        self.node = node
        self.protocolVersion = AgentProtocol.version
        self.agentVersion = agentVersion
        self.hostname = hostname
        self.gpus = gpus
        self.cpus = cpus
        self.memoryGiB = memoryGiB
        self.lastEpoch = lastEpoch
    }
}

/// The answer to `agent.register`.
public struct AgentRegisterResult: Codable, Sendable {
    /// The controller's epoch: it changes each time allotd starts.
    public var epoch: UInt64
    /// How often each side sends `agent.heartbeat`, and after how long without one the other is lost.
    public var heartbeatIntervalSeconds: Double
    public var nodeTimeoutSeconds: Double
    /// Of the runs the agent holds, those the controller still assigns to this node: the agent kills the
    /// others at once (fencing) before it does anything else.
    public var keep: [AgentRunRef]

    enum CodingKeys: String, CodingKey {
        case epoch, keep
        case heartbeatIntervalSeconds = "heartbeat_interval_s"
        case nodeTimeoutSeconds = "node_timeout_s"
    }

    public init(epoch: UInt64, heartbeatIntervalSeconds: Double, nodeTimeoutSeconds: Double, keep: [AgentRunRef] = []) {
        self.keep = keep
        self.epoch = epoch
        self.heartbeatIntervalSeconds = heartbeatIntervalSeconds
        self.nodeTimeoutSeconds = nodeTimeoutSeconds
    }
}

/// `agent.heartbeat` (a notification, both ways).
public struct AgentHeartbeat: Codable, Sendable {
    /// Counts up on each side from 1 per link.
    public var seq: UInt64
    public var time: Double

    public init(seq: UInt64, time: Double) {
        self.seq = seq
        self.time = time
    }
}

/// What `nodes` shows of a node's agent.
public struct AgentObject: Codable, Sendable, Equatable {
    public var version: String
    public var hostname: String
    /// `up` (heartbeats arrive) or `down`.
    public var link: String
    public var lastHeartbeat: String?
    public var connectedSince: String?

    enum CodingKeys: String, CodingKey {
        case version, hostname, link
        case lastHeartbeat = "last_heartbeat"
        case connectedSince = "connected_since"
    }

    public init(version: String, hostname: String, link: String, lastHeartbeat: String?, connectedSince: String?) {
        self.version = version
        self.hostname = hostname
        self.link = link
        self.lastHeartbeat = lastHeartbeat
        self.connectedSince = connectedSince
    }
}

extension AgentProtocol {
    /// Controller → agent notifications: run a job, stop one, forget reported ends.
    public static let start = RPCNotification<AgentStartOrder>("agent.start")
    public static let stop = RPCNotification<AgentStopOrder>("agent.stop")
    public static let ack = RPCNotification<AgentAck>("agent.ack")
    /// Agent → controller notification: runs that started, or ended and how.
    public static let report = RPCNotification<AgentReport>("agent.report")
    /// Agent → controller notification: the node's GPUs changed health (`{"gpus": [AgentGPU]}`).
    public static let health = RPCNotification<AgentHealth>("agent.health")
    /// Controller → agent: read part of a job's log; the agent answers with `agent.log_data`.
    public static let logRead = RPCNotification<AgentLogRead>("agent.log_read")
    public static let logData = RPCNotification<AgentLogData>("agent.log_data")
}

/// A run an agent holds, named by job and run number (a job's allocation is (job, run) under one epoch).
public struct AgentRunRef: Codable, Sendable, Hashable {
    public var id: UInt64
    public var run: Int
    public init(id: UInt64, run: Int) {
        self.id = id
        self.run = run
    }
}

/// A job's GPUs on one node.
public struct AgentSlice: Codable, Sendable, Equatable {
    public var node: String
    public var gpus: [Int]
    public init(node: String, gpus: [Int]) {
        self.node = node
        self.gpus = gpus
    }
}

/// `agent.start`: run this job's run here. Idempotent: a run the agent already has is not started twice.
public struct AgentStartOrder: Codable, Sendable {
    public var seq: UInt64
    public var epoch: UInt64
    public var id: UInt64
    public var run: Int
    public var spec: JobSpec
    /// The job's GPUs, per node (the command runs on the first).
    public var slices: [AgentSlice]
    /// The MIG instance the job runs in (on the first slice's GPU), when it is a MIG job.
    public var mig: AgentMIG?

    public init(
        seq: UInt64,
        epoch: UInt64,
        id: UInt64,
        run: Int,
        spec: JobSpec,
        slices: [AgentSlice],
        mig: AgentMIG? = nil
    ) {
        self.seq = seq
        self.epoch = epoch
        self.id = id
        self.run = run
        self.spec = spec
        self.slices = slices
        self.mig = mig
    }
}

/// A MIG job's instance, in a start order: the agent makes it through NVML before the job starts (or finds
/// it in the node's static layout), gives the job only its `MIG-` device, and removes it when the run ends.
public struct AgentMIG: Codable, Sendable, Hashable {
    public var gpu: Int
    /// The profile (with its slices, so that the agent needs no profile table of its own).
    public var profile: MIGProfile
    /// The first memory slice.
    public var start: Int
    /// Whether the instance belongs to the node's static layout: found, never made or removed.
    public var layout: Bool

    public init(gpu: Int, profile: MIGProfile, start: Int, layout: Bool) {
        self.gpu = gpu
        self.profile = profile
        self.start = start
        self.layout = layout
    }
}

/// `agent.stop`: stop this run (its tree gets `signal`, then SIGKILL after `grace`).
public struct AgentStopOrder: Codable, Sendable {
    public var seq: UInt64
    public var epoch: UInt64
    public var id: UInt64
    public var run: Int
    public var grace: Double
    public var reason: String
    /// When the run stops to start again on GPUs held for it (a resize or move): its notice, the `ALLOT_*`
    /// lines the agent writes to the run's `ALLOT_RESIZE_FILE` before it signals it.
    public var resizeNotice: String?

    enum CodingKeys: String, CodingKey {
        case seq, epoch, id, run, grace, reason
        case resizeNotice = "resize_notice"
    }

    public init(
        seq: UInt64,
        epoch: UInt64,
        id: UInt64,
        run: Int,
        grace: Double,
        reason: String,
        resizeNotice: String? = nil
    ) {
        self.seq = seq
        self.epoch = epoch
        self.id = id
        self.run = run
        self.grace = grace
        self.reason = reason
        self.resizeNotice = resizeNotice
    }
}

/// One run's news in `agent.report`.
public struct AgentRunReport: Codable, Sendable, Equatable {
    public var id: UInt64
    public var run: Int
    /// `ended` (with how), or `failed_to_start` (with `error`).
    public var state: String
    public var exitCode: Int32?
    public var signal: Int32?
    public var error: String?
    /// Whether SIGKILL ended it after its grace period.
    public var killed: Bool?
    /// When it ended (Unix seconds, the supervisor's clock), if known.
    public var endedAt: Double?

    enum CodingKeys: String, CodingKey {
        case id, run, state, signal, error, killed
        case exitCode = "exit_code"
        case endedAt = "ended_at"
    }

    public init(
        id: UInt64,
        run: Int,
        state: String,
        exitCode: Int32? = nil,
        signal: Int32? = nil,
        error: String? = nil,
        killed: Bool? = nil,
        endedAt: Double? = nil
    ) {
        self.endedAt = endedAt
        self.id = id
        self.run = run
        self.state = state
        self.exitCode = exitCode
        self.signal = signal
        self.error = error
        self.killed = killed
    }
}

/// `agent.report`: runs that ended (sent again until acknowledged with `agent.ack`).
public struct AgentReport: Codable, Sendable {
    public var seq: UInt64
    public var runs: [AgentRunReport]

    public init(seq: UInt64, runs: [AgentRunReport]) {
        self.seq = seq
        self.runs = runs
    }
}

/// `agent.log_read`: up to `max` bytes of job `id`'s log from `offset`.
public struct AgentLogRead: Codable, Sendable {
    public var token: UInt64
    public var id: UInt64
    public var offset: Int
    public var max: Int
    public init(token: UInt64, id: UInt64, offset: Int, max: Int) {
        self.token = token
        self.id = id
        self.offset = offset
        self.max = max
    }
}

/// `agent.log_data`: the bytes read (base64), empty at the end of what is written so far.
public struct AgentLogData: Codable, Sendable {
    public var token: UInt64
    public var data: String
    /// Set when the log cannot be read at all.
    public var error: String?
    public init(token: UInt64, data: String, error: String? = nil) {
        self.token = token
        self.data = data
        self.error = error
    }
}

/// `agent.health`: every GPU of the node, as the agent's last check found them.
public struct AgentHealth: Codable, Sendable {
    public var gpus: [AgentGPU]
    public init(gpus: [AgentGPU]) { self.gpus = gpus }
}

/// `agent.ack`: the controller has made these ends durable; the agent may forget them.
public struct AgentAck: Codable, Sendable {
    public var runs: [AgentRunRef]
    public init(runs: [AgentRunRef]) { self.runs = runs }
}

extension AgentProtocol {
    /// Controller → agent: connect stream `stream` to run (`id`, `run`)'s terminal (an `allotctl run` on this
    /// node, relayed through the controller). Both ways after it: `agent.tty_data` (the terminal's frames,
    /// base64, untouched) and `agent.tty_close` (either side is done; the other lets go too).
    public static let ttyOpen = RPCNotification<AgentTTYOpen>("agent.tty_open")
    public static let ttyData = RPCNotification<AgentTTYData>("agent.tty_data")
    public static let ttyClose = RPCNotification<AgentTTYClose>("agent.tty_close")
}

/// `agent.tty_open`.
public struct AgentTTYOpen: Codable, Sendable {
    public var stream: UInt64
    public var id: UInt64
    public var run: Int
    public init(stream: UInt64, id: UInt64, run: Int) {
        self.stream = stream
        self.id = id
        self.run = run
    }
}

/// `agent.tty_data`: bytes of a relayed terminal stream, as base64.
public struct AgentTTYData: Codable, Sendable {
    public var stream: UInt64
    public var data: String
    public init(stream: UInt64, data: String) {
        self.stream = stream
        self.data = data
    }
}

/// `agent.tty_close`: the stream ended (`error`: why, when it did not end with its job).
public struct AgentTTYClose: Codable, Sendable {
    public var stream: UInt64
    public var error: String?
    public init(stream: UInt64, error: String? = nil) {
        self.stream = stream
        self.error = error
    }
}

extension AgentProtocol {
    /// Controller → agent: the checks of the service replicas this node runs, all of them each time (sent on
    /// registration and whenever they change). The node's runner checks its replicas, as allotd does its own.
    public static let checks = RPCNotification<AgentChecks>("agent.checks")
    /// Agent → controller: what the checks found, for the replicas whose answer changed (and every 2 s for
    /// those with metrics): port, readiness, a restart a liveness check asks for, requests in flight.
    public static let replicas = RPCNotification<AgentReplicas>("agent.replicas")
}

/// `agent.checks`.
public struct AgentChecks: Codable, Sendable, Equatable {
    public var replicas: [AgentReplicaChecks]
    public init(replicas: [AgentReplicaChecks]) { self.replicas = replicas }
}

/// One replica's checks: readiness, liveness, and the metrics that tell its requests in flight.
public struct AgentReplicaChecks: Codable, Sendable, Equatable {
    public var id: UInt64
    public var run: Int
    public var ready: Probe?
    public var live: Probe?
    /// The path of the replica's Prometheus page, and the series that add up to its requests in flight.
    public var metricsPath: String?
    public var series: [String]?
    /// Whom an exec check runs as: the replica's owner.
    public var user: String?

    enum CodingKeys: String, CodingKey {
        case id, run, ready, live, series, user
        case metricsPath = "metrics_path"
    }

    public init(
        id: UInt64,
        run: Int,
        ready: Probe?,
        live: Probe?,
        metricsPath: String?,
        series: [String]?,
        user: String?
    ) {
        self.user = user
        self.id = id
        self.run = run
        self.ready = ready
        self.live = live
        self.metricsPath = metricsPath
        self.series = series
    }
}

/// `agent.replicas`.
public struct AgentReplicas: Codable, Sendable, Equatable {
    public var replicas: [AgentReplicaState]
    public init(replicas: [AgentReplicaState]) { self.replicas = replicas }
}

/// What an agent's checks found of one replica.
public struct AgentReplicaState: Codable, Sendable, Equatable {
    public var id: UInt64
    public var run: Int
    /// The port it was given (`ALLOT_PORT`).
    public var port: Int?
    public var ready: Bool
    /// What the last failed check said.
    public var problem: String?
    /// Its liveness check failed too often: restart it (the controller decides), with this reason.
    public var restart: String?
    /// Requests in flight its metrics said at the last reading, if they were read.
    public var inFlight: Double?

    enum CodingKeys: String, CodingKey {
        case id, run, port, ready, problem, restart
        case inFlight = "in_flight"
    }

    public init(
        id: UInt64,
        run: Int,
        port: Int?,
        ready: Bool,
        problem: String? = nil,
        restart: String? = nil,
        inFlight: Double? = nil
    ) {
        self.id = id
        self.run = run
        self.port = port
        self.ready = ready
        self.problem = problem
        self.restart = restart
        self.inFlight = inFlight
    }
}
