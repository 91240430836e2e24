import AllotCore

/// Params of `service.create`.
public struct ServiceCreateParams: Codable, Sendable {
    public var name: String
    /// Each replica's job, as a submit's (its kind is inference whatever it says).
    public var job: JobRequest
    /// Replicas to start with (default: `min`, or 1).
    public var replicas: Int?
    public var min: Int?
    public var max: Int?
    /// The port every replica listens on; absent: a free port picked on each replica's node (`ALLOT_PORT`).
    public var port: Int?
    /// Checks: `http:/PATH`, `tcp`, `exec:CMD`.
    public var ready: String?
    public var live: String?
    /// How it follows its load: `target=4,window=60s,…` (docs/services.md).
    public var autoscale: String?

    public init(
        name: String,
        job: JobRequest,
        replicas: Int? = nil,
        min: Int? = nil,
        max: Int? = nil,
        port: Int? = nil,
        ready: String? = nil,
        live: String? = nil,
        autoscale: String? = nil
    ) {
        self.name = name
        self.job = job
        self.replicas = replicas
        self.min = min
        self.max = max
        self.port = port
        self.ready = ready
        self.live = live
        self.autoscale = autoscale
    }
}

/// Params naming one service.
public struct ServiceNameParams: Codable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

/// Params of `service.scale`: the replicas wanted from now on (the bounds widen to take them), and/or new
/// bounds (an autoscaled service sizes itself within them).
public struct ServiceScaleParams: Codable, Sendable {
    public var name: String
    public var replicas: Int?
    public var min: Int?
    public var max: Int?
    public init(name: String, replicas: Int? = nil, min: Int? = nil, max: Int? = nil) {
        self.name = name
        self.replicas = replicas
        self.min = min
        self.max = max
    }
}

/// Params of `service.demand`: the requests in flight for a service now, as a router in front of it sees
/// them (the only signal while it has no replica).
public struct ServiceDemandParams: Codable, Sendable {
    public var name: String
    public var requests: Double
    public init(name: String, requests: Double) {
        self.name = name
        self.requests = requests
    }
}

/// One replica of a service, as its runner sees it.
public struct ReplicaObject: Codable, Sendable, Equatable {
    /// Its job.
    public var id: UInt64
    /// The job's state.
    public var state: String
    public var node: String?
    /// Where it is reached: the node's address and the replica's port, once it runs.
    public var address: String?
    public var port: Int?
    /// Whether it serves: running and its readiness check passed (or it has none).
    public var ready: Bool
    /// Why it does not serve, or what its last check said.
    public var reason: String?
    /// It runs an older version of the service (a rollout replaces it).
    public var outdated: Bool?

    public init(
        id: UInt64,
        state: String,
        node: String? = nil,
        address: String? = nil,
        port: Int? = nil,
        ready: Bool,
        reason: String? = nil
    ) {
        self.id = id
        self.state = state
        self.node = node
        self.address = address
        self.port = port
        self.ready = ready
        self.reason = reason
    }
}

/// A service: what it runs, how many replicas it wants and has, and each replica.
public struct ServiceObject: Codable, Sendable, Equatable {
    public var name: String
    public var user: String
    public var uid: UInt32
    public var tenant: String
    public var command: [String]
    /// A replica's GPUs (a fraction for a share of one).
    public var gpus: Double
    public var gpuModels: [String]?
    public var mig: [String]?
    public var replicas: Int
    public var min: Int
    public var max: Int
    /// Replicas serving now.
    public var ready: Int
    public var port: Int?
    public var readyCheck: String?
    public var liveCheck: String?
    public var created: String
    /// Why it wants as many replicas as it does.
    public var scaleReason: String
    /// Crashes in a row, when replicas keep ending soon after they start, and how the last one ended.
    public var crashes: Int?
    public var lastCrash: String?
    /// When the next replica may start (a crash loop's back-off).
    public var restartAfter: String?
    public var members: [ReplicaObject]
    /// The cost rate of its running replicas, $/h.
    public var costPerHour: Double
    /// How it follows its load, and the load its autoscaler sees: the mean requests in flight over its
    /// window (absent before any sample).
    public var autoscale: String?
    public var load: Double?
    /// Its version (1, then one more at each update that changes its replicas' job), and a rollout in
    /// progress or stopped.
    public var generation: Int
    public var rollout: String?

    enum CodingKeys: String, CodingKey {
        case name, user, uid, tenant, command, gpus, mig, replicas, min, max, ready, port, created, crashes, members
        case gpuModels = "gpu_models"
        case readyCheck = "ready_check"
        case liveCheck = "live_check"
        case scaleReason = "scale_reason"
        case lastCrash = "last_crash"
        case restartAfter = "restart_after"
        case costPerHour = "cost_per_hour"
        case autoscale, load, generation, rollout
    }

    public init(
        name: String,
        user: String,
        uid: UInt32,
        tenant: String,
        command: [String],
        gpus: Double,
        gpuModels: [String]?,
        mig: [String]?,
        replicas: Int,
        min: Int,
        max: Int,
        ready: Int,
        port: Int?,
        readyCheck: String?,
        liveCheck: String?,
        created: String,
        scaleReason: String,
        crashes: Int?,
        lastCrash: String?,
        restartAfter: String?,
        members: [ReplicaObject],
        costPerHour: Double,
        generation: Int,
        rollout: String?,
        autoscale: String? = nil,
        load: Double? = nil
    ) {
        self.name = name
        self.user = user
        self.uid = uid
        self.tenant = tenant
        self.command = command
        self.gpus = gpus
        self.gpuModels = gpuModels
        self.mig = mig
        self.replicas = replicas
        self.min = min
        self.max = max
        self.ready = ready
        self.port = port
        self.readyCheck = readyCheck
        self.liveCheck = liveCheck
        self.created = created
        self.scaleReason = scaleReason
        self.crashes = crashes
        self.lastCrash = lastCrash
        self.restartAfter = restartAfter
        self.members = members
        self.costPerHour = costPerHour
        self.autoscale = autoscale
        self.load = load
        self.generation = generation
        self.rollout = rollout
    }
}

/// The ready replicas of a service: what a load balancer sends requests to.
public struct EndpointsResult: Codable, Sendable, Equatable {
    public struct Endpoint: Codable, Sendable, Equatable {
        public var job: UInt64
        public var node: String
        public var address: String
        public var port: Int

        public init(job: UInt64, node: String, address: String, port: Int) {
            self.job = job
            self.node = node
            self.address = address
            self.port = port
        }
    }

    public var service: String
    public var endpoints: [Endpoint]

    public init(service: String, endpoints: [Endpoint]) {
        self.service = service
        self.endpoints = endpoints
    }
}

extension Methods {
    public static let serviceCreate = RPCMethod<ServiceCreateParams, ServiceObject>("service.create")
    public static let serviceList = RPCMethod<NoParams, [ServiceObject]>("service.list")
    public static let serviceShow = RPCMethod<ServiceNameParams, ServiceObject>("service.show")
    public static let serviceScale = RPCMethod<ServiceScaleParams, ServiceObject>("service.scale")
    public static let serviceDelete = RPCMethod<ServiceNameParams, ServiceObject>("service.delete")
    public static let serviceEndpoints = RPCMethod<ServiceNameParams, EndpointsResult>("service.endpoints")
    public static let serviceDemand = RPCMethod<ServiceDemandParams, ServiceObject>("service.demand")
    /// A new definition of the service (as create's); a changed replica job rolls out one replica at a time.
    public static let serviceUpdate = RPCMethod<ServiceCreateParams, ServiceObject>("service.update")
}
