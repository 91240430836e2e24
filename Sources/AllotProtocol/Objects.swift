import AllotCore

/// A job as `show`, `ls` and `watch` give it (docs/protocol.md, "Objects").
public struct JobObject: Codable, Sendable, Equatable {
    public struct Slice: Codable, Sendable, Equatable {
        public var node: String
        public var gpus: [Int]
        /// CPUs taken there (where the node declares its CPUs).
        public var cpus: Double?
        /// Memory taken there, in MiB (where the node declares its memory).
        public var memoryMiB: Int?

        enum CodingKeys: String, CodingKey {
            case node, gpus, cpus
            case memoryMiB = "memory_mib"
        }
    }

    /// A run that is over while the job went on (preempted, requeued).
    public struct Run: Codable, Sendable, Equatable {
        public var start: String
        public var end: String
        /// Where it ran, e.g. "a1[0-1]", and on which model.
        public var on: String?
        public var gpuModel: String?
        /// How it ended, e.g. "preempted by job 7; killed by signal 15".
        public var ended: String

        enum CodingKeys: String, CodingKey {
            case start, end, on, ended
            case gpuModel = "gpu_model"
        }
    }

    public var id: UInt64
    public var name: String
    public var state: String
    public var kind: String
    public var priorityClass: String
    public var tenant: String
    public var uid: UInt32
    public var user: String?
    public var gpus: Int
    /// For a share of one GPU: the share (0.25) — the one it runs with, else its compute share asked for;
    /// absent for whole GPUs.
    public var gpuShare: Double?
    /// For a share of one GPU: the GPU memory it takes, in MiB, when it asked for some.
    public var gpuMemoryMiB: Int?
    /// An elastic job: its most GPUs (`gpus` is its fewest), its step, and the GPUs its run has now.
    public var maxGPUs: Int?
    public var gpuStep: Int?
    public var gpusNow: Int?
    /// A training job's own speeds on GPU models, when it gave some.
    public var speeds: [String: Double]?
    /// For a MIG job: the profiles it accepts, cheapest first.
    public var mig: [String]?
    /// For a running MIG job: its instance, `1g.10gb@3` (profile and first memory slice).
    public var migInstance: String?
    /// What it waits for before its first start (`afterok:12,singleton`), when it has dependencies.
    public var dependency: String?
    /// Its node selection: the nodes it may use, those it must not, a condition on their labels.
    public var nodelist: String?
    public var exclude: String?
    public var constraint: String?
    /// Points off its priority score, when not 0.
    public var nice: Int?
    /// Who is told of its moments: a webhook, a mail address, and which moments.
    public var notify: String?
    public var mailUser: String?
    public var mailType: String?
    /// For a running interactive job (`allotctl run`), to its owner: the socket of its terminal.
    public var tty: String?
    /// For a running interactive job on an agent's node, to its owner: that node; its terminal is reached
    /// through allotd (`attach`).
    public var ttyNode: String?
    /// For a folded listing (`fold`): the indices of the array's waiting tasks this object stands for
    /// (`3-999`, `1,3,5-7`), when more than its own.
    public var arrayTasks: String?
    /// For a replica of a service: the service.
    public var service: String?
    /// For a task of a job array: the array's id and the task's index.
    public var arrayJobID: UInt64?
    public var arrayTaskID: Int?
    /// The CPUs asked for (absent: a share of each node in proportion to its GPUs).
    public var cpus: Double?
    /// The memory asked for, in MiB (absent: a share in proportion to its GPUs).
    public var memoryMiB: Int?
    public var gpuModel: String?
    public var node: String?
    public var gpuIndices: [Slice]
    public var submitTime: String
    public var startTime: String?
    /// When the current run last reported a checkpoint (`allotctl checkpoint`).
    public var lastCheckpoint: String?
    public var endTime: String?
    public var exitCode: Int32?
    public var reason: String?
    public var costUSD: Double
    /// GPU-hours used over all its runs (a share counts as its part of a GPU), in full precision.
    public var gpuHours: Double?
    /// Seconds it ran, over all its runs.
    public var ranSeconds: Double?
    public var walltimeSeconds: Double?
    public var preemptible: Bool
    public var loans: [String]
    public var placement: String?
    public var log: String?
    public var command: [String]?
    public var env: [String: String]?
    public var workdir: String?
    public var output: String?
    /// Earlier runs, oldest first (nil when there were none): `start_time` and `exit_code` are the current
    /// or last run's only, and absent while the job waits again.
    public var earlierRuns: [Run]?

    enum CodingKeys: String, CodingKey {
        case id, name, state, kind, tenant, uid, user, gpus, node, reason, preemptible, loans, placement, log, command,
            env
        case workdir, output
        case priorityClass = "class"
        case gpuModel = "gpu_model"
        case gpuShare = "gpu_share"
        case gpuMemoryMiB = "gpu_memory_mib"
        case maxGPUs = "max_gpus"
        case gpuStep = "gpu_step"
        case gpusNow = "gpus_now"
        case speeds
        case mig
        case migInstance = "mig_instance"
        case dependency, nodelist, exclude, constraint, nice, notify, tty
        case ttyNode = "tty_node"
        case mailUser = "mail_user"
        case mailType = "mail_type"
        case service
        case arrayJobID = "array_job_id"
        case arrayTasks = "array_tasks"
        case arrayTaskID = "array_task_id"
        case cpus
        case memoryMiB = "memory_mib"
        case gpuIndices = "gpu_indices"
        case submitTime = "submit_time"
        case startTime = "start_time"
        case lastCheckpoint = "last_checkpoint"
        case endTime = "end_time"
        case exitCode = "exit_code"
        case costUSD = "cost_usd"
        case gpuHours = "gpu_hours"
        case ranSeconds = "ran_s"
        case walltimeSeconds = "walltime_s"
        case earlierRuns = "earlier_runs"
    }

    /// The wire form of a job.
    /// - Parameters:
    ///   - now: the time it is seen at (a running job's run time, GPU-hours and cost grow with it).
    ///   - reason: why it waits (from the latest pass) or how it ended.
    ///   - full: include command, environment and working directory (its owner and admins).
    ///   - log: its log file, when the daemon runs it.
    public init(_ job: Job, in state: ClusterState, at now: Instant, reason: String?, full: Bool, log: String?) {
        let spec = job.spec
        id = job.id.rawValue
        name = spec.name
        self.state = job.state.rawValue
        kind = spec.kind.rawValue
        priorityClass = state.priorityClass(of: spec).name
        tenant = spec.tenant
        uid = spec.uid
        user = spec.user
        gpus = spec.gpus
        gpuShare = (job.allocation?.share ?? spec.gpuShare).map { Double($0) / 1000 }
        gpuMemoryMiB = spec.gpuMemoryMiB
        if spec.isElastic {
            maxGPUs = spec.maxGPUs
            gpuStep = spec.gpuStep
            gpusNow = job.state.holdsGPUs ? job.allocation?.gpuCount : nil
        }
        speeds = spec.speeds.isEmpty ? nil : spec.speeds
        mig = spec.isMIG ? spec.mig : nil
        migInstance = job.allocation?.mig?.description
        dependency = spec.dependencies.isEmpty ? nil : Dependency.text(spec.dependencies)
        if let s = spec.nodes {
            nodelist = s.nodes.isEmpty ? nil : Hostlist.compress(s.nodes)
            exclude = s.exclude.isEmpty ? nil : Hostlist.compress(s.exclude)
            constraint = s.constraint.isEmpty ? nil : s.constraint
        }
        nice = spec.nice == 0 ? nil : spec.nice
        if let n = spec.notify {
            notify = n.url
            mailUser = n.mailUser
            mailType = n.eventText.isEmpty ? "none" : n.eventText
        }
        arrayJobID = spec.array?.array.rawValue
        arrayTaskID = spec.array?.index
        cpus = spec.cpuMilli.map { Double($0) / 1000 }
        memoryMiB = spec.memoryMiB
        let a = job.allocation
        gpuModel = a?.model ?? (spec.gpuModels.isEmpty ? nil : spec.gpuModels.joined(separator: ","))
        node = a.map { $0.nodeNames.joined(separator: "+") }
        gpuIndices =
            a?.slices.map {
                Slice(
                    node: $0.node,
                    gpus: $0.gpus,
                    cpus: $0.cpuMilli.map { Double($0) / 1000 },
                    memoryMiB: $0.memoryMiB
                )
            } ?? []
        submitTime = WireTime.format(job.submitTime.seconds)
        service = job.spec.service
        // A job waiting again (requeued) has no current run: its last one is in earlierRuns.
        let waiting = job.state == .pending || job.state == .held
        startTime = waiting ? nil : job.startTime.map { WireTime.format($0.seconds) }
        lastCheckpoint = job.checkpointThisRun.map { WireTime.format($0.seconds) }
        endTime = job.state.isTerminal ? job.endTime.map { WireTime.format($0.seconds) } : nil
        exitCode = waiting ? nil : job.exit?.shellCode
        let past = job.history
        earlierRuns =
            past.isEmpty
            ? nil
            : past.map {
                Run(
                    start: WireTime.format($0.start.seconds),
                    end: WireTime.format($0.end.seconds),
                    on: $0.allocation.map { "\($0)" },
                    gpuModel: $0.allocation?.model,
                    ended: $0.ended
                )
            }
        self.reason = reason
        // Not state.now, the time of the last event: an idle pool's running jobs would look frozen.
        let now = max(now, state.now)
        costUSD = job.costUSD(at: now)
        gpuHours = job.gpuSeconds(at: now) / 3600
        ranSeconds = job.runSeconds(at: now)
        walltimeSeconds = spec.walltime
        preemptible = state.isPreemptible(spec)
        loans = job.loans.map(\.description)
        placement = waiting ? nil : job.placement?.text(for: .init(job.spec))
        self.log = log
        if full {
            command = spec.command
            env = spec.environment
            workdir = spec.workingDirectory
            output = spec.output
        }
    }
}

/// A node as `nodes` gives it.
public struct NodeObject: Codable, Sendable, Equatable {
    public var name: String
    public var state: String
    public var reason: String?
    public var gpuModel: String
    public var gpus: Int
    public var gpusFree: Int
    public var gpusUnhealthy: [Int]
    public var local: Bool
    public var labels: [String: String]
    /// Each GPU: health and why, and what discovery found (UUID, model, memory). Absent for nodes that
    /// are all healthy and not discovered.
    public var gpuList: [GPUObject]?
    /// How the GPUs were found ("nvml", "nvidia-smi"), and why the last probe failed.
    public var discovery: String?
    public var discoveryProblem: String?
    /// The node's agent, for nodes run by one.
    public var agent: AgentObject?
    /// `dynamic` or `static` for a node with MIG (absent when off), and a static node's layout on every GPU.
    public var mig: String?
    public var migLayout: [String]?
    /// The CPUs the node declares and those its running jobs hold (absent where it declares none).
    public var cpus: Double?
    public var cpusUsed: Double?
    /// The memory the node declares and that its running jobs hold, in MiB (absent where it declares none).
    public var memoryMiB: Int?
    public var memoryUsedMiB: Int?

    enum CodingKeys: String, CodingKey {
        case name, state, reason, gpus, local, labels, discovery, agent, mig, cpus
        case migLayout = "mig_layout"
        case cpusUsed = "cpus_used"
        case memoryMiB = "memory_mib"
        case memoryUsedMiB = "memory_used_mib"
        case gpuList = "gpu_list"
        case discoveryProblem = "discovery_problem"
        case gpuModel = "gpu_model"
        case gpusFree = "gpus_free"
        case gpusUnhealthy = "gpus_unhealthy"
    }

    public init(_ node: Node, local: Bool) {
        name = node.name
        state = node.state.rawValue
        reason = node.stateReason
        gpuModel = node.spec.gpuModel
        gpus = node.spec.gpus
        gpusFree = node.schedulable ? node.freeMask.nonzeroBitCount : 0
        gpusUnhealthy = (0..<node.spec.gpus).filter { node.health[$0] != .healthy }
        self.local = local
        labels = node.spec.labels
        if let cap = node.cpuCapacity {
            cpus = Double(cap) / 1000
            cpusUsed = Double(node.cpuUsed) / 1000
        }
        if let cap = node.memoryCapacity {
            memoryMiB = cap
            memoryUsedMiB = node.memoryUsed
        }
        if node.spec.mig != .off {
            mig = node.spec.mig.rawValue
            if node.spec.mig == .static { migLayout = node.spec.migLayout.map(\.description) }
        }
        if node.unhealthyMask != 0 || node.spec.mig != .off {
            gpuList = (0..<node.spec.gpus).map {
                GPUObject(index: $0, health: node.health[$0].rawValue, reason: node.healthReason[$0])
            }
        }
    }
}

/// One GPU of a node.
public struct GPUObject: Codable, Sendable, Equatable {
    public var index: Int
    public var health: String
    public var reason: String?
    public var uuid: String?
    public var name: String?
    public var memoryMiB: Int?
    /// On a MIG node: the instances on this GPU, `3g.40gb@4 job 12` (static nodes list their free ones too).
    public var mig: [String]?
    /// The jobs on this GPU: its whole holder, or its shares and MIG instances.
    public var jobs: [UInt64]?
    /// The part of this GPU taken: 1 when held whole, the shares' sum (0.975) when shared, 0 when free.
    public var used: Double?

    enum CodingKeys: String, CodingKey {
        case index, health, reason, uuid, name, mig, jobs, used
        case memoryMiB = "memory_mib"
    }

    public init(
        index: Int,
        health: String,
        reason: String?,
        uuid: String? = nil,
        name: String? = nil,
        memoryMiB: Int? = nil
    ) {
        self.index = index
        self.health = health
        self.reason = reason
        self.uuid = uuid
        self.name = name
        self.memoryMiB = memoryMiB
    }
}

extension ExitStatus {
    /// The status a shell would report: the exit code, or 128 + the signal; nil when the job was lost.
    public var shellCode: Int32? {
        switch self {
        case .exited(let code): code
        case .signaled(let s): 128 + s
        case .lost: nil
        }
    }
}
