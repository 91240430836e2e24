import AllotCore
import Foundation

/// The messages between allotd (the controller) and a node agent (`allotd agent`), over mutual TLS, in the
/// control protocol's framing: JSON-RPC 2.0, one object per line. See docs/protocol.md, "Agent methods".
public enum AgentProtocol {
    /// The agent protocol's version (sent in `agent.register`).
    public static let version = 1
    public static let register = "agent.register"
    public static let heartbeat = "agent.heartbeat"
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
    /// The controller epoch the agent last served, if any (fencing, later).
    public var lastEpoch: UInt64?

    enum CodingKeys: String, CodingKey {
        case node, hostname, gpus, cpus
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
        lastEpoch: UInt64? = nil
    ) {
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

    enum CodingKeys: String, CodingKey {
        case epoch
        case heartbeatIntervalSeconds = "heartbeat_interval_s"
        case nodeTimeoutSeconds = "node_timeout_s"
    }

    public init(epoch: UInt64, heartbeatIntervalSeconds: Double, nodeTimeoutSeconds: Double) {
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
