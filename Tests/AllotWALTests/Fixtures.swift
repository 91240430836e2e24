import AllotCore
import Foundation

@testable import AllotWAL

/// A fresh temporary directory, removed after `body`.
func withTempDir<T>(_ body: (String) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-wal-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

func withTempDirAsync<T>(_ body: (String) async throws -> T) async throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-wal-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try await body(dir)
}

enum Sample {
    /// Settings are spelled out where the golden files hold them, so that a changed default does not
    /// change what the sample encodes.
    static let config: PoolConfig = {
        var c = PoolConfig(
            gpuModels: [
                GPUModel(name: "H100", memoryGiB: 80, pricePerHour: 4, speed: 2),
                GPUModel(name: "L4", memoryGiB: 24, pricePerHour: 0.6, speed: 0.35),
            ],
            tenants: [
                Tenant(
                    name: "research",
                    shares: 2,
                    gpuQuota: 8,
                    budget: Budget(usd: 100, window: .week, enforcement: .hard)
                )
            ]
        )
        c.preemption.minRuntime = 600  // the default when the golden files were written
        // The defaults when version 14 added them (older files read as these).
        c.scheduler.serviceQueues = [16 * 3600]
        c.scheduler.starvationFactor = 2
        c.scheduler.starvationMinimum = 1800
        c.preemption.maxMoves = 2  // the default when version 15 added it
        c.preemption.loanCheckpointEvery = 0  // logs before version 16 asked nothing of loans
        return c
    }()

    /// Every kind of event, in an order the state accepts.
    static let events: [Event] = {
        func at(_ t: Double, _ b: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_000_000 + t), b) }
        var spec = JobSpec(
            name: "train \"llama\"",
            tenant: "research",
            uid: 1000,
            user: "ada",
            kind: .training,
            priorityClass: "batch",
            gpus: 2,
            gpuModels: ["H100"],
            minGPUMemoryGiB: 40,
            topology: .nvlink,
            walltime: 7200,
            estimate: 3600,
            preemptible: true,
            grace: 60,
            maxCostUSD: 25.5,
            command: ["python3", "train.py", "--lr=0.1"],
            environment: ["B": "2", "A": "1", "ÜNICODE": "✓"],
            workingDirectory: "/home/ada"
        )
        spec.priorityClass = "batch"
        return [
            at(0, .configApplied(config: config)),
            at(
                0,
                .nodeAdded(
                    spec: NodeSpec(
                        name: "h1",
                        gpuModel: "H100",
                        gpus: 8,
                        nvlinkIslands: [[0, 1, 2, 3], [4, 5, 6, 7]],
                        cpus: 96,
                        memoryGiB: 1024.5,
                        labels: ["rack": "r1"],
                        local: true
                    )
                )
            ),
            at(0, .nodeAdded(spec: NodeSpec(name: "l1", gpuModel: "L4", gpus: 4))),
            at(1, .jobSubmitted(id: 1, spec: spec, held: false)),
            at(2, .jobSubmitted(id: 2, spec: JobSpec(tenant: "x", kind: .inference, gpus: 1), held: true)),
            at(3, .jobReleased(id: 2)),
            at(4, .jobHeld(id: 2)),
            at(
                5,
                .jobStarted(id: 1, allocation: Allocation(model: "H100", slices: [.init(node: "h1", gpus: [4, 5])]))
            ),
            at(6, .gpuHealthChanged(node: "l1", gpu: 3, health: .unhealthy, reason: "XID 79")),
            at(7, .jobPreempted(id: 1, by: 2, grace: 30)),
            at(8, .jobFinished(id: 1, exit: .signaled(signal: 15))),
            at(
                9,
                .jobStarted(id: 1, allocation: Allocation(model: "H100", slices: [.init(node: "h1", gpus: [0, 1])]))
            ),
            at(10, .jobTimedOut(id: 1, grace: 5)),
            at(11, .jobFinished(id: 1, exit: .exited(code: -1))),
            at(12, .jobSubmitted(id: 3, spec: JobSpec(tenant: "x", gpus: 1), held: false)),
            at(13, .jobStarted(id: 3, allocation: Allocation(model: "L4", slices: [.init(node: "l1", gpus: [0])]))),
            at(14, .jobRequeued(id: 3, reason: "node l1 lost")),
            at(15, .jobCancelled(id: 3, by: 1000, grace: 10)),
            at(16, .jobCancelled(id: 2, by: nil, grace: 0)),
            at(17, .nodeStateChanged(name: "l1", state: .draining, reason: "maintenance")),
            at(18, .jobSubmitted(id: 4, spec: JobSpec(tenant: "x", gpus: 1), held: false)),
            at(19, .jobStarted(id: 4, allocation: Allocation(model: "H100", slices: [.init(node: "h1", gpus: [7])]))),
            at(20, .jobFinished(id: 4, exit: .lost(reason: "supervisor vanished"))),
            at(21, .nodeRemoved(name: "l1")),
            at(22, .clockTick),
        ]
    }()

    /// Events using what format version 2 added: preferences, inference-reserved nodes, notes and loans on
    /// starts, preemption reasons, checkpoints, and the new config sections. They follow ``events``.
    static let eventsV2: [Event] = {
        func at(_ t: Double, _ b: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_000_100 + t), b) }
        var config = Self.config
        config.tenants[0].borrowLimit = 4
        config.inferenceReserve = [InferenceReserve(gpuModel: "L4", gpus: 2)]
        config.preemption.minRuntime = 120
        config.preemption.loanGrace = 3
        config.scheduler.overBudgetPenalty = 777
        let note = PlacementNote(
            rule: .deadline,
            model: "H100",
            expectedSeconds: 1800,
            estimatedCostUSD: 4.5,
            holesLeft: 3
        )
        return [
            at(0, .configApplied(config: config)),
            at(0, .nodeAdded(spec: NodeSpec(name: "l2", gpuModel: "L4", gpus: 2, inferenceReserved: true))),
            at(
                1,
                .jobSubmitted(
                    id: 5,
                    spec: JobSpec(tenant: "research", gpus: 1, prefer: .deadline(Instant(seconds: 1_800_009_000))),
                    held: false
                )
            ),
            at(
                2,
                .jobSubmitted(
                    id: 6,
                    spec: JobSpec(tenant: "x", kind: .inference, gpus: 1, prefer: .cheapest),
                    held: false
                )
            ),
            at(
                3,
                .jobStarted(
                    id: 5,
                    allocation: Allocation(model: "H100", slices: [.init(node: "h1", gpus: [2])]),
                    note: note,
                    loans: [.reservation(for: 6), .inferenceReserve(model: "L4"), .quota(tenant: "research")]
                )
            ),
            at(4, .jobCheckpointed(id: 5)),
            at(5, .jobPreempted(id: 5, by: 6, grace: 3, reason: .inference)),
        ]
    }()

    /// Events with the fields of format version 3: a job's own output file.
    static let eventsV3: [Event] = [
        Event(
            time: Instant(seconds: 1_800_000_200),
            .jobSubmitted(
                id: 7,
                spec: JobSpec(tenant: "research", gpus: 1, command: ["true"], output: "/home/ada/out.txt"),
                held: true
            )
        )
    ]

    /// Events with the fields of format version 4: a run that ended before its end was recorded.
    static let eventsV4: [Event] = {
        func at(_ t: Double, _ b: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_000_300 + t), b) }
        return [
            at(
                0,
                .jobSubmitted(id: 8, spec: JobSpec(tenant: "research", gpus: 1, command: ["sleep", "4"]), held: false)
            ),
            at(1, .jobStarted(id: 8, allocation: Allocation(model: "H100", slices: [.init(node: "h1", gpus: [3])]))),
            at(9, .jobFinished(id: 8, exit: .exited(code: 0), endedAt: Instant(seconds: 1_800_000_305))),
        ]
    }()

    /// Events of format version 5: a job stopped because its GPU failed, then requeued.
    static let eventsV5: [Event] = {
        func at(_ t: Double, _ b: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_000_400 + t), b) }
        return [
            at(
                0,
                .jobSubmitted(id: 9, spec: JobSpec(tenant: "research", gpus: 1, command: ["train"]), held: false)
            ),
            at(1, .jobStarted(id: 9, allocation: Allocation(model: "H100", slices: [.init(node: "h1", gpus: [6])]))),
            at(5, .jobGPUFailed(id: 9, reason: "GPU 6 of node h1 failed: Xid 79", grace: 30)),
            at(7, .jobRequeued(id: 9, reason: "GPU 6 of node h1 failed: Xid 79")),
        ]
    }()

    /// Events of format version 7: two shares of one GPU (0.25 and 0.5, one with CPUs and memory), one
    /// ending.
    static let eventsV7: [Event] = {
        func at(_ t: Double, _ b: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_000_500 + t), b) }
        func share(_ milli: Int) -> JobSpec {
            JobSpec(
                tenant: "research",
                kind: .inference,
                gpus: 1,
                gpuShare: milli,
                gpuMemoryMiB: milli == 500 ? 10240 : nil,
                cpuMilli: milli == 500 ? 2500 : nil,
                memoryMiB: milli == 500 ? 8192 : nil,
                command: ["serve"]
            )
        }
        let gpu = [Allocation.Slice(node: "h1", gpus: [7], cpuMilli: 2500, memoryMiB: 8192)]
        return [
            at(0, .nodeAdded(spec: NodeSpec(name: "m1", gpuModel: "L4", gpus: 2, sharing: .mps))),
            at(0, .jobSubmitted(id: 10, spec: share(250), held: false)),
            at(0, .jobSubmitted(id: 11, spec: share(500), held: false)),
            at(1, .jobStarted(id: 10, allocation: Allocation(model: "H100", slices: gpu, share: 250))),
            at(1, .jobStarted(id: 11, allocation: Allocation(model: "H100", slices: gpu, share: 500))),
            at(9, .jobFinished(id: 10, exit: .exited(code: 0), endedAt: nil)),
        ]
    }()

    /// Events of format version 8: MIG — H100s with NVIDIA's profile table, a dynamic and a static MIG node,
    /// two MIG jobs (one with a choice of profiles), one ending.
    static let eventsV8: [Event] = {
        func at(_ t: Double, _ b: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_000_600 + t), b) }
        var withMIG = config
        withMIG.gpuModels[0].mig = MIGTable.builtIn(forModel: "H100", memoryGiB: 80)
        func mig(_ profiles: [String]) -> JobSpec {
            JobSpec(tenant: "research", kind: .inference, gpus: 1, mig: profiles, command: ["serve"])
        }
        let layout = [MIGSlot(profile: "3g.40gb", start: 0), MIGSlot(profile: "3g.40gb", start: 4)]
        return [
            at(0, .configApplied(config: withMIG)),
            at(0, .nodeAdded(spec: NodeSpec(name: "g1", gpuModel: "H100", gpus: 2, mig: .dynamic))),
            at(0, .nodeAdded(spec: NodeSpec(name: "s1", gpuModel: "H100", gpus: 1, mig: .static, migLayout: layout))),
            at(0, .jobSubmitted(id: 12, spec: mig(["1g.10gb", "2g.20gb"]), held: false)),
            at(0, .jobSubmitted(id: 13, spec: mig(["3g.40gb"]), held: false)),
            at(0, .jobSubmitted(id: 14, spec: mig(["1g.10gb"]), held: false)),
            at(
                1,
                .jobStarted(
                    id: 12,
                    allocation: Allocation(
                        model: "H100",
                        slices: [.init(node: "g1", gpus: [0])],
                        mig: MIGSlot(profile: "1g.10gb", start: 6),
                        migMilli: 143
                    )
                )
            ),
            at(
                1,
                .jobStarted(
                    id: 14,
                    allocation: Allocation(
                        model: "H100",
                        slices: [.init(node: "g1", gpus: [0])],
                        mig: MIGSlot(profile: "1g.10gb", start: 5),
                        migMilli: 143
                    )
                )
            ),
            at(
                1,
                .jobStarted(
                    id: 13,
                    allocation: Allocation(
                        model: "H100",
                        slices: [.init(node: "s1", gpus: [0])],
                        mig: MIGSlot(profile: "3g.40gb", start: 4),
                        migMilli: 500
                    )
                )
            ),
            at(9, .jobFinished(id: 12, exit: .exited(code: 0), endedAt: nil)),
        ]
    }()

    /// Version 9: jobs with each kind of dependency, after the version-8 sample (job 12 completed, 13 and
    /// 14 run): 15 afterok:12 (met), 16 afterok:13 (waits), 17 afterany:13 and singleton, 18 afternotok:12
    /// (never met: cancelled by allot), 19 after:14 (met); 20–22 an array (indices 0, 5, 10) of at most two
    /// tasks at once; 16 updated to wait for 12 (met), and 12 (completed) requeued.
    static let eventsV9: [Event] = {
        func at(_ t: Double, _ b: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_000_700 + t), b) }
        func job(_ deps: [Dependency], name: String = "dep") -> JobSpec {
            JobSpec(name: name, tenant: "research", gpus: 1, command: ["train"], dependencies: deps)
        }
        return [
            at(0, .jobSubmitted(id: 15, spec: job([Dependency(.afterok, [12])]), held: false)),
            at(0, .jobSubmitted(id: 16, spec: job([Dependency(.afterok, [13])]), held: false)),
            at(0, .jobSubmitted(id: 17, spec: job([Dependency(.afterany, [13]), Dependency(.singleton)]), held: true)),
            at(0, .jobSubmitted(id: 18, spec: job([Dependency(.afternotok, [12])]), held: false)),
            at(1, .jobCancelled(id: 18, by: nil, grace: 0)),
            at(1, .jobSubmitted(id: 19, spec: job([Dependency(.after, [14, 13])], name: "x"), held: false)),
        ]
            + [0, 5, 10].enumerated().map { k, index in
                var task = job([], name: "sweep")
                task.array = ArrayTask(array: 20, index: index, limit: 2)
                return at(2, .jobSubmitted(id: JobID(20 + UInt64(k)), spec: task, held: false))
            } + [
                at(3, .jobUpdated(id: 16, spec: job([Dependency(.afterok, [12])], name: "renamed"), by: 1000)),
                at(4, .jobRequeued(id: 12, reason: "requeued by alice")),
            ]
    }()

    /// Version 10: a job with a node selection, a nice and notifications (23), one updated to select other
    /// nodes and be nicer (24), running job 13 told to stop and go back to the queue, and job 25, cancelled,
    /// archived.
    static let eventsV10: [Event] = {
        func at(_ t: Double, _ b: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_000_800 + t), b) }
        var selective = JobSpec(name: "sel", tenant: "research", gpus: 1, command: ["train"])
        selective.nodes = NodeSelection(nodes: ["h1", "h2"], exclude: [], constraint: "ib&zone=a|nvme")
        selective.nice = -50
        selective.notify = JobNotify(url: "http://hooks:8080/allot", mailUser: "a@b.org", events: [.end, .fail])
        var plain = JobSpec(name: "plain", tenant: "research", gpus: 1, command: ["train"])
        plain.notify = JobNotify(events: [])
        plain.interactive = Interactive(pty: true, rows: 50, cols: 132)
        var updated = plain
        updated.nodes = NodeSelection(exclude: ["h9"])
        updated.nice = 10_000
        return [
            at(0, .jobSubmitted(id: 23, spec: selective, held: true)),
            at(0, .jobSubmitted(id: 24, spec: plain, held: true)),
            at(1, .jobUpdated(id: 24, spec: updated, by: 0)),
            at(2, .jobRequeueing(id: 13, by: 1000, grace: 30)),
            at(3, .jobSubmitted(id: 25, spec: plain, held: false)),
            at(3, .jobCancelled(id: 25, by: 1000, grace: 0)),
            at(4, .jobsArchived(ids: [25])),
        ]
    }()

    /// Services (version 11): one created with both checks and a fixed port, a replica, a scale, a replica
    /// cancelled, and one created then deleted.
    static let eventsV11: [Event] = {
        func at(_ t: Double, _ b: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_000_900 + t), b) }
        var template = JobSpec(name: "llm", tenant: "research", uid: 1000, user: "alice", kind: .inference, gpus: 1)
        template.gpuShare = 250
        template.command = ["serve", "--port", "8000"]
        template.environment = ["ALLOT_PORT": "8000"]
        let llm = ServiceSpec(
            name: "llm",
            template: template,
            minReplicas: 1,
            maxReplicas: 4,
            port: 8000,
            ready: Probe(kind: .http, target: "/health"),
            live: Probe(kind: .exec, target: "curl -sf localhost:8000/ping"),
            autoscale: {
                var a = Autoscale(target: 4)
                a.downDelay = 300
                a.zeroAfter = 600
                a.metricsPath = "/metrics"
                return a
            }()
        )
        var replica = template
        replica.service = "llm"
        var llmV2 = llm
        llmV2.template.command = ["serve", "--port", "8000", "--v2"]
        let scratch = ServiceSpec(
            name: "scratch",
            template: template,
            minReplicas: 0,
            maxReplicas: 1,
            ready: Probe(kind: .tcp)
        )
        return [
            at(0, .serviceCreated(spec: llm, replicas: 2)),
            at(0, .jobSubmitted(id: 26, spec: replica, held: false)),
            at(0, .jobSubmitted(id: 27, spec: replica, held: false)),
            at(
                1,
                .serviceScaled(name: "llm", replicas: 1, minReplicas: 1, maxReplicas: 4, reason: "scaled to 1 by alice")
            ),
            at(1, .jobCancelled(id: 27, by: nil, grace: 0)),
            at(2, .serviceCreated(spec: scratch, replicas: 0)),
            at(3, .serviceDeleted(name: "scratch", by: 1000)),
            at(4, .serviceUpdated(spec: llmV2, replicas: 1, by: 1000)),
            at(5, .serviceRolloutHalted(name: "llm", reason: "version 2 never became ready")),
            at(6, .jobsArchived(ids: [27])),
        ]
    }()

    /// An autoscaler sized by slots (version 12).
    static let eventsV12: [Event] = {
        var template = JobSpec(name: "chat", tenant: "research", uid: 1000, user: "alice", kind: .inference, gpus: 1)
        template.command = ["serve"]
        let chat = ServiceSpec(
            name: "chat",
            template: template,
            minReplicas: 1,
            maxReplicas: 40,
            autoscale: Autoscale(slots: 8, waiting: 0.02)
        )
        return [Event(time: Instant(seconds: 1_800_001_000), .serviceCreated(spec: chat, replicas: 3))]
    }()

    static let eventsV13: [Event] = {
        var spec = JobSpec(name: "retried", tenant: "research", uid: 1000, user: "alice", gpus: 1)
        spec.command = ["train"]
        spec.requestID = "retry-7f3a"
        return [Event(time: Instant(seconds: 1_800_002_000), .jobSubmitted(id: 28, spec: spec, held: true))]
    }()

    /// Version 14: the config in force after the earlier samples, with three attained-service queues and its
    /// own starvation bound.
    static let eventsV14: [Event] = {
        let earlier =
            through(13)
        var config =
            earlier.compactMap { if case .configApplied(let c) = $0.body { c } else { nil } }.last ?? Self.config
        config.scheduler.serviceQueues = [3600, 36_000]
        config.scheduler.starvationFactor = 3
        config.scheduler.starvationMinimum = 600
        return [Event(time: Instant(seconds: 1_800_003_000), .configApplied(config: config))]
    }()

    /// Version 15: moves to faster GPUs and elastic jobs. With `max_moves = 1`, job 29 runs on an L4 of a new
    /// node, is moved (it stops, reason `migration`) and is held an H100 of another new node; job 30 runs on
    /// 2-8 GPUs in steps of 2.
    static let eventsV15: [Event] = {
        let earlier =
            through(14)
        var config =
            earlier.compactMap { if case .configApplied(let c) = $0.body { c } else { nil } }.last ?? Self.config
        config.preemption.maxMoves = 1
        var spec = JobSpec(name: "mover", tenant: "research", uid: 1000, user: "alice", gpus: 1)
        spec.command = ["train"]
        var elastic = spec
        elastic.name = "elastic"
        elastic.gpus = 2
        elastic.maxGPUs = 8
        elastic.gpuStep = 2
        func at(_ t: Double, _ body: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_004_000 + t), body) }
        return [
            at(0, .configApplied(config: config)),
            at(0, .nodeAdded(spec: NodeSpec(name: "mv-slow", gpuModel: "L4", gpus: 1))),
            at(0, .nodeAdded(spec: NodeSpec(name: "mv-fast", gpuModel: "H100", gpus: 2))),
            at(1, .jobSubmitted(id: 29, spec: spec, held: false)),
            at(
                2,
                .jobStarted(id: 29, allocation: Allocation(model: "L4", slices: [.init(node: "mv-slow", gpus: [0])]))
            ),
            at(600, .jobPreempted(id: 29, by: 29, grace: 30, reason: .migration)),
            at(600, .jobGPUsHeld(id: 29, slices: [.init(node: "mv-fast", gpus: [1])])),
            at(700, .jobSubmitted(id: 30, spec: elastic, held: true)),
        ]
    }()

    /// Version 16: an inference replica placed on a dearer model rather than take loans back (`spill-over`),
    /// and a config asking jobs on loans to checkpoint every 15 minutes.
    static let eventsV16: [Event] = {
        let earlier =
            through(15)
        var config =
            earlier.compactMap { if case .configApplied(let c) = $0.body { c } else { nil } }.last ?? Self.config
        config.preemption.loanCheckpointEvery = 900
        var spec = JobSpec(name: "spill", tenant: "research", uid: 1000, user: "alice", gpus: 1)
        spec.kind = .inference
        spec.command = ["serve"]
        func at(_ t: Double, _ body: Event.Body) -> Event { Event(time: Instant(seconds: 1_800_005_000 + t), body) }
        let note = PlacementNote(
            rule: .spillOver,
            model: "H100",
            expectedSeconds: 3600,
            estimatedCostUSD: 3,
            holesLeft: 0
        )
        return [
            at(0, .configApplied(config: config)),
            at(0, .jobSubmitted(id: 31, spec: spec, held: false)),
            at(
                1,
                .jobStarted(
                    id: 31,
                    allocation: Allocation(model: "H100", slices: [.init(node: "mv-fast", gpus: [0])]),
                    note: note,
                    loans: []
                )
            ),
        ]
    }()

    /// Version 17: a training job with speeds of its own on two models.
    static let eventsV17: [Event] = {
        var spec = JobSpec(name: "own-speeds", tenant: "research", uid: 1000, user: "alice", gpus: 2)
        spec.command = ["train"]
        spec.speeds = ["H100": 3.5, "L4": 0.25]
        return [Event(time: Instant(seconds: 1_800_006_000), .jobSubmitted(id: 32, spec: spec, held: false))]
    }()

    /// The sample events of every version up to `version`, oldest first (each version's sample builds on the
    /// earlier ones).
    static func through(_ version: Int) -> [Event] {
        // Closures, so that a version's sample, built from the earlier ones, does not read itself.
        let byVersion: [(Int, () -> [Event])] = [
            (1, { events }), (2, { eventsV2 }), (3, { eventsV3 }), (4, { eventsV4 }), (5, { eventsV5 }),
            (7, { eventsV7 }), (8, { eventsV8 }), (9, { eventsV9 }), (10, { eventsV10 }), (11, { eventsV11 }),
            (12, { eventsV12 }), (13, { eventsV13 }), (14, { eventsV14 }), (15, { eventsV15 }), (16, { eventsV16 }),
            (17, { eventsV17 }),
        ]
        return byVersion.filter { $0.0 <= version }.flatMap { $0.1() }
    }

    /// A submit event for job `id`.
    static func submit(_ id: UInt64) -> Event {
        Event(
            time: Instant(seconds: Double(id)),
            .jobSubmitted(id: JobID(id), spec: JobSpec(name: "j\(id)", tenant: "t\(id % 3)", gpus: 1), held: false)
        )
    }

    static var testdata: URL { Bundle.module.resourceURL!.appendingPathComponent("testdata") }
}

extension WriteAheadLog.Options {
    static func test(_ sync: WriteAheadLog.SyncPolicy = .always, segmentSize: Int = 64 << 20) -> Self {
        var o = Self()
        o.sync = sync
        o.segmentSize = segmentSize
        return o
    }
}

/// Flips one bit of a file.
func flipBit(_ path: String, at offset: Int, bit: Int = 0) throws {
    var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
    bytes[offset] ^= UInt8(1 << bit)
    try bytes.write(to: URL(fileURLWithPath: path))
}

func truncateFile(_ path: String, to size: Int) throws {
    let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    try h.truncate(atOffset: UInt64(size))
    try h.close()
}

func segmentPaths(_ dir: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: dir + "/wal").filter { $0.hasSuffix(".wal") }.sorted().map {
        dir + "/wal/" + $0
    }
}

func fileSize(_ path: String) throws -> Int {
    (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).intValue
}
