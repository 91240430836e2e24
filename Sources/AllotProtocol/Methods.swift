import AllotCore

/// A method of the control protocol, typed: its name, its parameters and its result. allotd decodes a
/// request's parameters through it, allotctl sends and reads through it — one definition for both ends
/// (docs/protocol.md describes them; the job supervisor, in C, and allotctl's lean submit spell the two
/// they send by hand).
public struct RPCMethod<Params: Codable & Sendable, Result: Codable & Sendable>: Sendable {
    public let name: String

    public init(_ name: String) { self.name = name }
}

/// Every method of the control protocol.
public enum Methods {
    public static let hello = RPCMethod<HelloParams, HelloResult>("hello")
    public static let submit = RPCMethod<SubmitParams, SubmitResult>("submit")
    public static let submitMany = RPCMethod<SubmitManyParams, SubmitManyResult>("submit_many")
    public static let list = RPCMethod<ListParams, [JobObject]>("list")
    public static let show = RPCMethod<IDParams, JobObject>("show")
    public static let why = RPCMethod<IDParams, WhyResult>("why")
    public static let cancel = RPCMethod<IDsParams, ItemsResult>("cancel")
    public static let hold = RPCMethod<IDsParams, ItemsResult>("hold")
    public static let release = RPCMethod<IDsParams, ItemsResult>("release")
    /// Ended jobs back in the queue.
    public static let requeue = RPCMethod<IDsParams, ItemsResult>("requeue")
    /// Running jobs saved a checkpoint: the work before now survives a preemption, and a job that reports
    /// checkpoints is preempted for attained service only just after one.
    public static let checkpoint = RPCMethod<IDsParams, ItemsResult>("checkpoint")
    /// A pending job's request changed; a running job's walltime.
    public static let update = RPCMethod<UpdateParams, JobObject>("update")
    public static let logs = RPCMethod<LogsParams, LogsResult>("logs")
    public static let watch = RPCMethod<NoParams, WatchResult>("watch")
    /// A running interactive job's terminal on an agent's node, relayed: after the answer, the connection
    /// carries the terminal's frames both ways (as its socket would).
    public static let attach = RPCMethod<IDParams, AttachResult>("attach")
    public static let nodes = RPCMethod<NoParams, [NodeObject]>("nodes")
    public static let drain = RPCMethod<NodeParams, NodeObject>("drain")
    public static let resume = RPCMethod<NodeParams, NodeObject>("resume")
    public static let status = RPCMethod<NoParams, StatusResult>("status")
    /// What `allotctl top` draws: the pool GPU by GPU, the head of the queue and of the running jobs, the
    /// tenants' burn, recent loans and reclaims — bounded, whatever the queue's length.
    public static let top = RPCMethod<TopParams, TopResult>("top")
    public static let cost = RPCMethod<CostParams, CostResult>("cost")
    public static let reload = RPCMethod<NoParams, ReloadResult>("reload")
    /// An admin records the end of a job on a node allotd does not run.
    public static let jobFinished = RPCMethod<JobFinishedParams, JobObject>("job_finished")
    /// A job's supervisor says a run ended (its status file says how).
    public static let jobExited = RPCMethod<JobExitedParams, NoParams>("job_exited")
    /// The whole state (admin; `simulate --from-live`).
    public static let snapshot = RPCMethod<NoParams, ClusterState>("snapshot")
}

/// Params of `job_exited` (sent by a job's supervisor).
public struct JobExitedParams: Codable, Sendable {
    public var id: UInt64
    public var run: Int

    public init(id: UInt64, run: Int) {
        self.id = id
        self.run = run
    }
}

/// A notification allotd sends on a connection (no answer), typed: its name and its parameters.
public struct RPCNotification<Params: Codable & Sendable>: Sendable {
    public let name: String

    public init(_ name: String) { self.name = name }
}

/// Every notification of the control protocol.
public enum Notifications {
    /// A piece of a followed log (`logs --follow`).
    public static let logsData = RPCNotification<LogsData>("logs.data")
    /// A followed log is over: how its job ended.
    public static let logsEnd = RPCNotification<LogsEnd>("logs.end")
    /// Something happened to a job (`watch`).
    public static let watchEvent = RPCNotification<WatchEvent>("watch.event")
}
