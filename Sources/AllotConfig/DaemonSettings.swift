import AllotCore
import TOMLKit

/// The `[daemon]` section: where allotd keeps its state, where it listens, and its limits.
public struct DaemonSettings: Hashable, Sendable {
    public var stateDir = "/var/lib/allot"
    public var socket = "/run/allot/allotd.sock"
    /// File mode of the socket: 0666 lets every local user submit.
    public var socketMode: UInt32 = 0o666
    /// Members of this group are admins, as is root. Nil: root only.
    public var adminGroup: String? = "allot"
    public var maxMessageBytes = 1 << 20
    public var maxConnections = 1024
    public var idleTimeout: Seconds = 300
    /// Where job logs go by default; nil: `STATE_DIR/logs`.
    public var logDir: String?
    /// This host's name for local nodes; nil: the system's host name.
    public var hostname: String?
    /// A `host:port` for Prometheus metrics; nil: none.
    public var metricsListen: String?
    /// Nodes this daemon runs jobs on itself, besides those named like this host and those with
    /// `local = true`: names or patterns with `*` (`["*"]`: every node, a pool on one machine).
    public var localNodes: [String] = []
    /// The NVML library for `discover = "nvml"` (loaded with dlopen at run time).
    public var nvmlLibrary = "libnvidia-ml.so.1"
    /// nvidia-smi, the fallback where NVML cannot be loaded and for `discover = "nvidia-smi"`.
    public var nvidiaSMI = "/usr/bin/nvidia-smi"
    /// How often the health of discovered GPUs is checked.
    public var gpuCheckInterval: Seconds = 10
    /// What happens to a job whose GPU turns unhealthy.
    public var onGPUFailure: GPUFailureAction = .requeue
    /// What happens to a pending job whose dependency can never be met.
    public var onDependencyNeverMet: DependencyNeverMetAction = .cancel
    /// The first signal sent to a job told to stop (cancel, preemption, walltime); SIGKILL follows after
    /// its grace period.
    public var stopSignal: StopSignal = .term
    /// The mail transfer agent's sendmail, for jobs' `--mail-user` notices.
    public var sendmail = "/usr/sbin/sendmail"
    /// How long an interactive run (`allotctl run`) lives without its client before it gets SIGHUP.
    public var runHangup: Seconds = 10
    /// How long ended jobs stay in allotd's state (answered by `ls`, `show`, `why`) before they are archived
    /// (their records to STATE_DIR/archive, their use to summaries); infinity: never.
    public var jobRetention: Seconds = 7 * 86_400

    /// Whether allotd runs the jobs of a node itself.
    public func isLocal(_ node: NodeSpec, hostname: String) -> Bool {
        node.local || node.name == hostname || localNodes.contains { Glob.matches($0, node.name) }
    }

    public init() {}
}

/// How allotd finds a node's GPUs.
public enum GPUDiscovery: String, Sendable, Hashable, CaseIterable {
    /// NVML through dlopen, falling back to nvidia-smi.
    case nvml
    /// `nvidia-smi --query-gpu` only.
    case nvidiaSMI = "nvidia-smi"
}

/// The first signal a job gets when told to stop.
public enum StopSignal: String, Sendable, Hashable, CaseIterable {
    case term = "SIGTERM"
    case int = "SIGINT"
    case hup = "SIGHUP"
    case usr1 = "SIGUSR1"
    case usr2 = "SIGUSR2"
    case quit = "SIGQUIT"

    /// The signal's number on Linux.
    public var number: Int32 {
        switch self {
        case .term: 15
        case .int: 2
        case .hup: 1
        case .usr1: 10
        case .usr2: 12
        case .quit: 3
        }
    }
}

/// The `[cluster]` section: the TCP listener for node agents, its certificates, and how node loss is told.
public struct ClusterSettings: Hashable, Sendable {
    /// `host:port` agents connect to.
    public var listen: String
    /// The cluster CA's certificate, and this controller's certificate and key (from `allotctl ca`).
    public var ca = "/etc/allot/pki/ca.crt"
    public var certificate = "/etc/allot/pki/controller.crt"
    public var key = "/etc/allot/pki/controller.key"
    /// Heartbeats both ways this often; a node whose agent is silent for `nodeTimeout` is down.
    public var heartbeatInterval: Seconds = 2
    public var nodeTimeout: Seconds = 15
    public var onNodeLoss: NodeLossAction = .requeuePreemptible

    public init(listen: String) { self.listen = listen }
}

/// The `[ha]` section: several controllers on etcd, one leading (docs/ha.md).
public struct HASettings: Hashable, Sendable {
    /// etcd's client URLs.
    public var etcd: [String]
    /// The cluster's name in etcd: its keys are under `/allot/NAME/`.
    public var cluster = "default"
    /// This controller's name, as followers name the leader (default: the host name).
    public var name: String?
    /// The leader's lease: a controller silent this long loses the lead.
    public var leaseTTL: Seconds = 5
    /// Mutual TLS with etcd, and an etcd user.
    public var ca: String?
    public var certificate: String?
    public var key: String?
    public var user: String?
    public var passwordFile: String?

    public init(etcd: [String]) { self.etcd = etcd }
}

/// The `[wal]` section.
public struct WALSettings: Hashable, Sendable {
    public enum Sync: String, Sendable, CaseIterable { case always, batch, never }
    public var sync: Sync = .batch
    public var segmentBytes = 64 << 20
    public var snapshotEveryRecords = 100_000
    public var snapshotEveryBytes = 256 << 20

    public init() {}
}

/// `*` patterns over node and job names.
public enum Glob {
    public static func matches(_ pattern: String, _ name: String) -> Bool {
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 1 { return pattern == name }
        var rest = Substring(name)
        guard rest.hasPrefix(parts[0]) else { return false }
        rest = rest.dropFirst(parts[0].count)
        for part in parts.dropFirst().dropLast() where !part.isEmpty {
            guard let r = rest.range(of: part) else { return false }
            rest = rest[r.upperBound...]
        }
        return rest.hasSuffix(parts.last!) && rest.count >= parts.last!.count
    }
}

extension TableReader {
    /// A size in bytes: a number, or text such as `"64MiB"`, `"1 GiB"`, `"512k"`.
    mutating func bytes(_ key: String) throws(ConfigError) -> Int? {
        let expected = "a size such as 67108864, \"64MiB\" or \"1GiB\""
        guard let v = table[key] else {
            _ = try int(key)  // marks the key used; absent
            return nil
        }
        if let i = v.int {
            _ = try int(key)
            guard i > 0 else { throw error(key, "expected \(expected), got \(i)") }
            return i
        }
        guard let s = try string(key) else { return nil }
        if let n = ByteSize.parse(withUnit: s) { return n }
        if let n = Int(s.trimmingWhitespace()), n > 0 { return n }
        throw error(key, "expected \(expected), got \"\(s)\"")
    }
}
