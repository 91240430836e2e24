import AllotCore

/// The binary encoding of events and the types inside them (docs/wal-format.md, payload version 1).
///
/// Enum values are numbered here, explicitly, so that reordering a Swift enum never changes the format.
public enum EventCodec {
    /// The payload version this build writes. Version 2 added: job preference, placement notes and loans on
    /// starts, preemption reasons, checkpoints, preemption settings, the inference reserve, borrowing
    /// limits, the over-budget penalty and inference-reserved nodes. Version 3: a job's output file.
    /// Version 4: when a run ended, on a finish recorded after it (it ended while allotd was down).
    /// Version 5: a job stopped because its GPU failed (event and stop reason). Version 7 (6 is skipped so
    /// that the event and state schemas share a number again): a job's share of a GPU, CPUs and memory, in
    /// its spec and its allocation. Version 8: MIG — models' profile tables, nodes' MIG mode and layout, a
    /// job's acceptable profiles and its instance. Version 9: a job's dependencies and its place in a job
    /// array. Version 10: a job's node selection, nice and notifications; a tenant's default webhook.
    /// Version 11: services (their events, and the service a job is a replica of). Version 12: an
    /// autoscaler sized by slots and the share of requests that may wait. Version 13: a job's client request
    /// id. Version 14: the scheduler's attained-service queues and starvation bound. Version 15: moves to
    /// faster GPUs (the `migration` preemption reason, GPUs held for a moving job, `max_moves`); elastic jobs
    /// (a job's most GPUs and step). Version 16: the `spill-over` placement rule; `loan_checkpoint_every`.
    /// Version 17: a training job's own speeds per GPU model.
    public static let version: UInt16 = 17

    static let nodeStates: [NodeState] = [.up, .draining, .drained, .down]
    static let healths: [GPUHealth] = [.healthy, .unhealthy]
    static let kinds: [JobKind] = [.training, .inference]
    static let sharings: [GPUSharing] = [.timeSlice, .mps, .off]
    static let migModes: [MIGMode] = [.off, .dynamic, .static]
    static let topologies: [Topology] = [.any, .singleNode, .nvlink]
    static let windows: [Budget.Window] = [.day, .week, .month]
    static let enforcements: [Budget.Enforcement] = [.soft, .hard]
    static let favors: [SizeFavor] = [.small, .large]
    static let jobStates: [JobState] = [
        .pending, .held, .running, .stopping, .completed, .failed, .cancelled, .timedOut,
    ]
    static let preemptionReasons: [PreemptionReason] = [
        .priority, .reservation, .inference, .quota, .service, .migration, .resize,
    ]
    static let rules: [PlacementNote.Rule] = [.cheapest, .soonest, .deadline, .firstFit, .spillOver]
    static let dependencyKinds: [Dependency.Kind] = [.after, .afterany, .afterok, .afternotok, .singleton]
    static let notifyEvents: [JobNotify.Event] = [.begin, .end, .fail, .preempt, .requeue]
    static let probeKinds: [Probe.Kind] = [.http, .tcp, .exec]

    static func index<T: Equatable>(_ v: T, in cases: [T]) -> UInt8 { UInt8(cases.firstIndex(of: v)!) }

    /// Encodes an event as a payload of the current version.
    public static func encode(_ event: Event) -> [UInt8] {
        var w = BinaryWriter()
        encode(event, into: &w)
        return w.bytes
    }

    static func encode(_ event: Event, into w: inout BinaryWriter) {
        w.f64(event.time.seconds)
        switch event.body {
        case .configApplied(let config):
            w.u8(1)
            write(config, &w)
        case .nodeAdded(let spec):
            w.u8(2)
            write(spec, &w)
        case .nodeRemoved(let name):
            w.u8(3)
            w.string(name)
        case .nodeStateChanged(let name, let state, let reason):
            w.u8(4)
            w.string(name)
            w.u8(index(state, in: nodeStates))
            w.optional(reason) { $0.string($1) }
        case .gpuHealthChanged(let node, let gpu, let health, let reason):
            w.u8(5)
            w.string(node)
            w.uvar(gpu)
            w.u8(index(health, in: healths))
            w.optional(reason) { $0.string($1) }
        case .jobSubmitted(let id, let spec, let held):
            w.u8(6)
            w.uvar(id.rawValue)
            write(spec, &w)
            w.bool(held)
        case .jobHeld(let id):
            w.u8(7)
            w.uvar(id.rawValue)
        case .jobReleased(let id):
            w.u8(8)
            w.uvar(id.rawValue)
        case .jobStarted(let id, let allocation, let note, let loans):
            w.u8(9)
            w.uvar(id.rawValue)
            write(allocation, &w)
            w.optional(note) { write($1, &$0) }
            w.array(loans) { write($1, &$0) }
        case .jobPreempted(let id, let by, let grace, let reason):
            w.u8(10)
            w.uvar(id.rawValue)
            w.uvar(by.rawValue)
            w.f64(grace)
            w.u8(index(reason, in: preemptionReasons))
        case .jobCheckpointed(let id):
            w.u8(16)
            w.uvar(id.rawValue)
        case .jobGPUsHeld(let id, let slices):
            w.u8(26)
            w.uvar(id.rawValue)
            w.array(slices) { w, slice in
                w.string(slice.node)
                w.array(slice.gpus) { $0.uvar($1) }
            }
        case .jobCancelled(let id, let by, let grace):
            w.u8(11)
            w.uvar(id.rawValue)
            w.optional(by) { $0.uvar(UInt64($1)) }
            w.f64(grace)
        case .jobTimedOut(let id, let grace):
            w.u8(12)
            w.uvar(id.rawValue)
            w.f64(grace)
        case .jobGPUFailed(let id, let reason, let grace):
            w.u8(17)
            w.uvar(id.rawValue)
            w.string(reason)
            w.f64(grace)
        case .jobFinished(let id, let exit, let endedAt):
            w.u8(13)
            w.uvar(id.rawValue)
            write(exit, &w)
            w.optional(endedAt) { $0.f64($1.seconds) }
        case .jobRequeued(let id, let reason):
            w.u8(14)
            w.uvar(id.rawValue)
            w.string(reason)
        case .clockTick:
            w.u8(15)
        case .jobsArchived(let ids):
            w.u8(20)
            w.array(ids) { $0.uvar($1.rawValue) }
        case .jobRequeueing(let id, let by, let grace):
            w.u8(19)
            w.uvar(id.rawValue)
            w.optional(by) { $0.uvar(UInt64($1)) }
            w.f64(grace)
        case .jobUpdated(let id, let spec, let by):
            w.u8(18)
            w.uvar(id.rawValue)
            write(spec, &w)
            w.optional(by) { $0.uvar(UInt64($1)) }
        case .serviceCreated(let spec, let replicas):
            w.u8(21)
            write(spec, &w)
            w.uvar(replicas)
        case .serviceScaled(let name, let replicas, let minReplicas, let maxReplicas, let reason):
            w.u8(22)
            w.string(name)
            w.uvar(replicas)
            w.uvar(minReplicas)
            w.uvar(maxReplicas)
            w.string(reason)
        case .serviceDeleted(let name, let by):
            w.u8(23)
            w.string(name)
            w.optional(by) { $0.uvar(UInt64($1)) }
        case .serviceUpdated(let spec, let replicas, let by):
            w.u8(24)
            write(spec, &w)
            w.uvar(replicas)
            w.optional(by) { $0.uvar(UInt64($1)) }
        case .serviceRolloutHalted(let name, let reason):
            w.u8(25)
            w.string(name)
            w.string(reason)
        }
    }

    static func write(_ s: ServiceSpec, _ w: inout BinaryWriter) {
        w.string(s.name)
        write(s.template, &w)
        w.uvar(s.minReplicas)
        w.uvar(s.maxReplicas)
        w.optional(s.port) { $0.uvar($1) }
        for probe in [s.ready, s.live] {
            w.optional(probe) { w, p in
                w.u8(index(p.kind, in: probeKinds))
                w.string(p.target)
            }
        }
        w.optional(s.autoscale) { w, a in
            w.f64(a.target)
            w.f64(a.window)
            w.f64(a.panicWindow)
            w.f64(a.downDelay)
            w.optional(a.zeroAfter) { $0.f64($1) }
            w.optional(a.metricsPath) { $0.string($1) }
            w.array(a.metrics) { $0.string($1) }
            w.optional(a.slots) { $0.uvar($1) }
            w.f64(a.waiting)
        }
    }

    static func readServiceSpec(_ r: inout BinaryReader) throws(DecodeError) -> ServiceSpec {
        func probe(_ r: inout BinaryReader) throws(DecodeError) -> Probe? {
            try r.optional { r throws(DecodeError) in
                Probe(kind: try r.enumeration(probeKinds, "check kind"), target: try r.string())
            }
        }
        return ServiceSpec(
            name: try r.string(),
            template: try readJobSpec(&r),
            minReplicas: try r.count(max: ServiceSpec.maxReplicasLimit),
            maxReplicas: try r.count(max: ServiceSpec.maxReplicasLimit),
            port: try r.optional { r throws(DecodeError) in try r.count(max: 65_535) },
            ready: try probe(&r),
            live: try probe(&r),
            autoscale: try r.optional { r throws(DecodeError) in
                var a = Autoscale(target: try r.f64())
                a.window = try r.f64()
                a.panicWindow = try r.f64()
                a.downDelay = try r.f64()
                a.zeroAfter = try r.optional { r throws(DecodeError) in try r.f64() }
                a.metricsPath = try r.optional { r throws(DecodeError) in try r.string() }
                a.metrics = try r.array { r throws(DecodeError) in try r.string() }
                if r.version >= 12 {
                    a.slots = try r.optional { r throws(DecodeError) in try r.count(max: 100_000) }
                    a.waiting = try r.f64()
                }
                return a
            }
        )
    }

    /// Decodes a payload written with `version`.
    /// - Throws: ``DecodeError`` naming what was wrong and where in the payload.
    static func decode(_ bytes: UnsafeRawBufferPointer, version: UInt16) throws(DecodeError) -> Event {
        guard version >= 1 && version <= Self.version else {
            throw DecodeError(
                offset: 0,
                message: "payload version \(version) is newer than this allot reads (\(Self.version)); upgrade allot"
            )
        }
        var r = BinaryReader(bytes, version: version)
        let event = try decodeEvent(&r)
        if r.remaining != 0 {
            throw DecodeError(offset: r.offset, message: "\(r.remaining) bytes left over after the event")
        }
        return event
    }

    /// Decodes a payload held in an array (tests, tools).
    public static func decode(_ bytes: [UInt8], version: UInt16 = version) throws -> Event {
        try bytes.withUnsafeBytes { buf throws(DecodeError) in try decode(buf, version: version) }
    }

    static func decodeEvent(_ r: inout BinaryReader) throws(DecodeError) -> Event {
        let time = Instant(seconds: try r.f64())
        let kindOffset = r.offset
        let body: Event.Body
        switch try r.u8() {
        case 1: body = .configApplied(config: try readConfig(&r))
        case 2: body = .nodeAdded(spec: try readNodeSpec(&r))
        case 3: body = .nodeRemoved(name: try r.string())
        case 4:
            body = .nodeStateChanged(
                name: try r.string(),
                state: try r.enumeration(nodeStates, "node state"),
                reason: try r.optional { r throws(DecodeError) in try r.string() }
            )
        case 5:
            body = .gpuHealthChanged(
                node: try r.string(),
                gpu: try r.count(max: 1 << 16),
                health: try r.enumeration(healths, "GPU health"),
                reason: try r.optional { r throws(DecodeError) in try r.string() }
            )
        case 6: body = .jobSubmitted(id: JobID(try r.uvar()), spec: try readJobSpec(&r), held: try r.bool())
        case 7: body = .jobHeld(id: JobID(try r.uvar()))
        case 8: body = .jobReleased(id: JobID(try r.uvar()))
        case 9:
            let id = JobID(try r.uvar())
            let allocation = try readAllocation(&r)
            if r.version >= 2 {
                body = .jobStarted(
                    id: id,
                    allocation: allocation,
                    note: try r.optional { r throws(DecodeError) in try readNote(&r) },
                    loans: try r.array { r throws(DecodeError) in try readLoan(&r) }
                )
            } else {
                body = .jobStarted(id: id, allocation: allocation)
            }
        case 10:
            let id = JobID(try r.uvar())
            let by = JobID(try r.uvar())
            let grace = try r.f64()
            let reason = r.version >= 2 ? try r.enumeration(preemptionReasons, "preemption reason") : .priority
            body = .jobPreempted(id: id, by: by, grace: grace, reason: reason)
        case 11:
            body = .jobCancelled(
                id: JobID(try r.uvar()),
                by: try r.optional { r throws(DecodeError) in try uid(&r) },
                grace: try r.f64()
            )
        case 12: body = .jobTimedOut(id: JobID(try r.uvar()), grace: try r.f64())
        case 13:
            body = .jobFinished(
                id: JobID(try r.uvar()),
                exit: try readExit(&r),
                endedAt: r.version >= 4
                    ? try r.optional { r throws(DecodeError) in Instant(seconds: try r.f64()) } : nil
            )
        case 14: body = .jobRequeued(id: JobID(try r.uvar()), reason: try r.string())
        case 15: body = .clockTick
        case 16 where r.version >= 2: body = .jobCheckpointed(id: JobID(try r.uvar()))
        case 17 where r.version >= 5:
            body = .jobGPUFailed(id: JobID(try r.uvar()), reason: try r.string(), grace: try r.f64())
        case 18 where r.version >= 9:
            body = .jobUpdated(
                id: JobID(try r.uvar()),
                spec: try readJobSpec(&r),
                by: try r.optional { r throws(DecodeError) in try uid(&r) }
            )
        case 19 where r.version >= 10:
            body = .jobRequeueing(
                id: JobID(try r.uvar()),
                by: try r.optional { r throws(DecodeError) in try uid(&r) },
                grace: try r.f64()
            )
        case 20 where r.version >= 10:
            body = .jobsArchived(ids: try r.array { r throws(DecodeError) in JobID(try r.uvar()) })
        case 21 where r.version >= 11:
            body = .serviceCreated(
                spec: try readServiceSpec(&r),
                replicas: try r.count(max: ServiceSpec.maxReplicasLimit)
            )
        case 22 where r.version >= 11:
            body = .serviceScaled(
                name: try r.string(),
                replicas: try r.count(max: ServiceSpec.maxReplicasLimit),
                minReplicas: try r.count(max: ServiceSpec.maxReplicasLimit),
                maxReplicas: try r.count(max: ServiceSpec.maxReplicasLimit),
                reason: try r.string()
            )
        case 24 where r.version >= 11:
            body = .serviceUpdated(
                spec: try readServiceSpec(&r),
                replicas: try r.count(max: ServiceSpec.maxReplicasLimit),
                by: try r.optional { r throws(DecodeError) in try uid(&r) }
            )
        case 26 where r.version >= 15:
            body = .jobGPUsHeld(
                id: JobID(try r.uvar()),
                slices: try r.array { r throws(DecodeError) in
                    Allocation.Slice(
                        node: try r.string(),
                        gpus: try r.array { r throws(DecodeError) in try r.count(max: 1 << 16) }
                    )
                }
            )
        case 25 where r.version >= 11:
            body = .serviceRolloutHalted(name: try r.string(), reason: try r.string())
        case 23 where r.version >= 11:
            body = .serviceDeleted(name: try r.string(), by: try r.optional { r throws(DecodeError) in try uid(&r) })
        case let k: throw DecodeError(offset: kindOffset, message: "unknown event kind \(k)")
        }
        return Event(time: time, body)
    }

    static func uid(_ r: inout BinaryReader) throws(DecodeError) -> UInt32 {
        let v = try r.uvar()
        guard v <= UInt64(UInt32.max) else { throw DecodeError(offset: r.offset, message: "uid \(v) is out of range") }
        return UInt32(v)
    }

    // MARK: Parts

    static func write(_ s: JobSpec, _ w: inout BinaryWriter) {
        w.string(s.name)
        w.string(s.tenant)
        w.uvar(UInt64(s.uid))
        w.optional(s.user) { $0.string($1) }
        w.u8(index(s.kind, in: kinds))
        w.optional(s.priorityClass) { $0.string($1) }
        w.uvar(s.gpus)
        w.array(s.gpuModels) { $0.string($1) }
        w.optional(s.minGPUMemoryGiB) { $0.f64($1) }
        w.u8(index(s.topology, in: topologies))
        w.optional(s.walltime) { $0.f64($1) }
        w.optional(s.estimate) { $0.f64($1) }
        w.optional(s.preemptible) { $0.bool($1) }
        w.optional(s.grace) { $0.f64($1) }
        w.optional(s.maxCostUSD) { $0.f64($1) }
        w.optional(s.prefer) { write($1, &$0) }
        w.array(s.command) { $0.string($1) }
        w.stringMap(s.environment)
        w.optional(s.workingDirectory) { $0.string($1) }
        w.optional(s.output) { $0.string($1) }
        w.optional(s.gpuShare) { $0.uvar($1) }
        w.optional(s.gpuMemoryMiB) { $0.uvar($1) }
        w.optional(s.cpuMilli) { $0.uvar($1) }
        w.optional(s.memoryMiB) { $0.uvar($1) }
        w.array(s.mig) { $0.string($1) }
        w.array(s.dependencies) { w, d in
            w.u8(index(d.kind, in: dependencyKinds))
            w.array(d.jobs) { $0.uvar($1.rawValue) }
        }
        w.optional(s.array) { w, a in
            w.uvar(a.array.rawValue)
            w.uvar(UInt64(a.index))
            w.uvar(UInt64(a.limit))
        }
        w.optional(s.nodes) { w, n in
            w.array(n.nodes) { $0.string($1) }
            w.array(n.exclude) { $0.string($1) }
            w.string(n.constraint)
        }
        w.ivar(Int64(s.nice))
        w.optional(s.notify) { w, n in
            w.optional(n.url) { $0.string($1) }
            w.optional(n.mailUser) { $0.string($1) }
            w.array(JobNotify.Event.allCases.filter { n.events.contains($0) }) { $0.u8(index($1, in: notifyEvents)) }
        }
        w.optional(s.interactive) { w, i in
            w.bool(i.pty)
            w.uvar(UInt64(i.rows))
            w.uvar(UInt64(i.cols))
        }
        w.optional(s.service) { $0.string($1) }
        w.optional(s.requestID) { $0.string($1) }
        w.optional(s.maxGPUs) { $0.uvar($1) }
        w.optional(s.gpuStep) { $0.uvar($1) }
        w.array(s.speeds.sorted { $0.key < $1.key }) { w, pair in
            w.string(pair.key)
            w.f64(pair.value)
        }
    }

    static func readJobSpec(_ r: inout BinaryReader) throws(DecodeError) -> JobSpec {
        var spec = try readJobSpecUpToV6(&r)
        if r.version >= 7 {
            spec.gpuShare = try r.optional { r throws(DecodeError) in try r.count(max: 999) }
            spec.gpuMemoryMiB = try r.optional { r throws(DecodeError) in try r.count(max: 1 << 40) }
            spec.cpuMilli = try r.optional { r throws(DecodeError) in try r.count(max: 1 << 40) }
            spec.memoryMiB = try r.optional { r throws(DecodeError) in try r.count(max: 1 << 40) }
        }
        if r.version >= 8 { spec.mig = try r.array { r throws(DecodeError) in try r.string() } }
        if r.version >= 9 {
            spec.dependencies = try r.array { r throws(DecodeError) in
                Dependency(
                    try r.enumeration(dependencyKinds, "dependency"),
                    try r.array { r throws(DecodeError) in JobID(try r.uvar()) }
                )
            }
            spec.array = try r.optional { r throws(DecodeError) in
                ArrayTask(
                    array: JobID(try r.uvar()),
                    index: try r.count(max: ArrayIndices.maxIndex),
                    limit: try r.count(max: ArrayIndices.maxTasks)
                )
            }
        }
        if r.version >= 10 {
            spec.nodes = try r.optional { r throws(DecodeError) in
                NodeSelection(
                    nodes: try r.array { r throws(DecodeError) in try r.string() },
                    exclude: try r.array { r throws(DecodeError) in try r.string() },
                    constraint: try r.string()
                )
            }
            spec.nice = Int(clamping: try r.ivar())
            spec.notify = try r.optional { r throws(DecodeError) in
                JobNotify(
                    url: try r.optional { r throws(DecodeError) in try r.string() },
                    mailUser: try r.optional { r throws(DecodeError) in try r.string() },
                    events: Set(
                        try r.array { r throws(DecodeError) in try r.enumeration(notifyEvents, "notify event") }
                    )
                )
            }
            spec.interactive = try r.optional { r throws(DecodeError) in
                Interactive(pty: try r.bool(), rows: try r.count(max: 65535), cols: try r.count(max: 65535))
            }
        }
        if r.version >= 11 { spec.service = try r.optional { r throws(DecodeError) in try r.string() } }
        if r.version >= 13 { spec.requestID = try r.optional { r throws(DecodeError) in try r.string() } }
        if r.version >= 15 {
            spec.maxGPUs = try r.optional { r throws(DecodeError) in try r.count(max: 1 << 20) }
            spec.gpuStep = try r.optional { r throws(DecodeError) in try r.count(max: 1 << 20) }
        }
        if r.version >= 17 {
            let pairs = try r.array { r throws(DecodeError) in (try r.string(), try r.f64()) }
            spec.speeds = Dictionary(pairs) { _, last in last }
        }
        return spec
    }

    static func readJobSpecUpToV6(_ r: inout BinaryReader) throws(DecodeError) -> JobSpec {
        JobSpec(
            name: try r.string(),
            tenant: try r.string(),
            uid: try uid(&r),
            user: try r.optional { r throws(DecodeError) in try r.string() },
            kind: try r.enumeration(kinds, "job kind"),
            priorityClass: try r.optional { r throws(DecodeError) in try r.string() },
            gpus: try r.count(max: 1 << 20),
            gpuModels: try r.array { r throws(DecodeError) in try r.string() },
            minGPUMemoryGiB: try r.optional { r throws(DecodeError) in try r.f64() },
            topology: try r.enumeration(topologies, "topology"),
            walltime: try r.optional { r throws(DecodeError) in try r.f64() },
            estimate: try r.optional { r throws(DecodeError) in try r.f64() },
            preemptible: try r.optional { r throws(DecodeError) in try r.bool() },
            grace: try r.optional { r throws(DecodeError) in try r.f64() },
            maxCostUSD: try r.optional { r throws(DecodeError) in try r.f64() },
            prefer: r.version >= 2 ? try r.optional { r throws(DecodeError) in try readPreference(&r) } : nil,
            command: try r.array { r throws(DecodeError) in try r.string() },
            environment: try r.stringMap(),
            workingDirectory: try r.optional { r throws(DecodeError) in try r.string() },
            // Event and state codecs move to version 3 together.
            output: r.version >= 3 ? try r.optional { r throws(DecodeError) in try r.string() } : nil
        )
    }

    static func write(_ s: NodeSpec, _ w: inout BinaryWriter) {
        w.string(s.name)
        w.string(s.gpuModel)
        w.uvar(s.gpus)
        w.array(s.nvlinkIslands) { w, island in w.array(island) { $0.uvar($1) } }
        w.optional(s.cpus) { $0.uvar($1) }
        w.optional(s.memoryGiB) { $0.f64($1) }
        w.stringMap(s.labels)
        w.bool(s.local)
        w.bool(s.inferenceReserved)
        w.u8(index(s.sharing, in: sharings))
        w.u8(index(s.mig, in: migModes))
        w.array(s.migLayout) { write($1, &$0) }
    }

    static func write(_ slot: MIGSlot, _ w: inout BinaryWriter) {
        w.string(slot.profile)
        w.uvar(slot.start)
    }

    static func readMIGSlot(_ r: inout BinaryReader) throws(DecodeError) -> MIGSlot {
        MIGSlot(profile: try r.string(), start: try r.count(max: 7))
    }

    static func readNodeSpec(_ r: inout BinaryReader) throws(DecodeError) -> NodeSpec {
        var spec = try readNodeSpecUpToV7(&r)
        if r.version >= 8 {
            spec.mig = try r.enumeration(migModes, "MIG mode")
            spec.migLayout = try r.array { r throws(DecodeError) in try readMIGSlot(&r) }
        }
        return spec
    }

    static func readNodeSpecUpToV7(_ r: inout BinaryReader) throws(DecodeError) -> NodeSpec {
        NodeSpec(
            name: try r.string(),
            gpuModel: try r.string(),
            gpus: try r.count(max: 1 << 16),
            nvlinkIslands: try r.array { r throws(DecodeError) in
                try r.array { r throws(DecodeError) in try r.count(max: 1 << 16) }
            },
            cpus: try r.optional { r throws(DecodeError) in try r.count(max: 1 << 30) },
            memoryGiB: try r.optional { r throws(DecodeError) in try r.f64() },
            labels: try r.stringMap(),
            local: try r.bool(),
            inferenceReserved: r.version >= 2 ? try r.bool() : false,
            sharing: r.version >= 7 ? try r.enumeration(sharings, "GPU sharing") : .timeSlice
        )
    }

    static func write(_ a: Allocation, _ w: inout BinaryWriter) {
        w.string(a.model)
        w.array(a.slices) { w, slice in
            w.string(slice.node)
            w.array(slice.gpus) { $0.uvar($1) }
            w.optional(slice.cpuMilli) { $0.uvar($1) }
            w.optional(slice.memoryMiB) { $0.uvar($1) }
        }
        w.optional(a.share) { $0.uvar($1) }
        w.optional(a.mig) { write($1, &$0) }
        w.optional(a.migMilli) { $0.uvar($1) }
    }

    static func readAllocation(_ r: inout BinaryReader) throws(DecodeError) -> Allocation {
        let a = try readAllocationUpToV7(&r)
        guard r.version >= 8 else { return a }
        let slot = try r.optional { r throws(DecodeError) in try readMIGSlot(&r) }
        let milli = try r.optional { r throws(DecodeError) in try r.count(max: 1000) }
        return Allocation(model: a.model, slices: a.slices, share: a.share, mig: slot, migMilli: milli)
    }

    static func readAllocationUpToV7(_ r: inout BinaryReader) throws(DecodeError) -> Allocation {
        Allocation(
            model: try r.string(),
            slices: try r.array { r throws(DecodeError) in
                Allocation.Slice(
                    node: try r.string(),
                    gpus: try r.array { r throws(DecodeError) in try r.count(max: 1 << 16) },
                    cpuMilli: r.version >= 7
                        ? try r.optional { r throws(DecodeError) in try r.count(max: 1 << 40) } : nil,
                    memoryMiB: r.version >= 7
                        ? try r.optional { r throws(DecodeError) in try r.count(max: 1 << 40) } : nil
                )
            },
            share: r.version >= 7 ? try r.optional { r throws(DecodeError) in try r.count(max: 999) } : nil
        )
    }

    static func write(_ e: ExitStatus, _ w: inout BinaryWriter) {
        switch e {
        case .exited(let code):
            w.u8(0)
            w.ivar(Int64(code))
        case .signaled(let signal):
            w.u8(1)
            w.ivar(Int64(signal))
        case .lost(let reason):
            w.u8(2)
            w.string(reason)
        }
    }

    static func readExit(_ r: inout BinaryReader) throws(DecodeError) -> ExitStatus {
        let at = r.offset
        switch try r.u8() {
        case 0: return .exited(code: Int32(truncatingIfNeeded: try r.ivar()))
        case 1: return .signaled(signal: Int32(truncatingIfNeeded: try r.ivar()))
        case 2: return .lost(reason: try r.string())
        case let k: throw DecodeError(offset: at, message: "unknown exit status kind \(k)")
        }
    }

    static func write(_ c: PoolConfig, _ w: inout BinaryWriter) {
        w.array(c.gpuModels) { w, m in
            w.string(m.name)
            w.f64(m.memoryGiB)
            w.f64(m.pricePerHour)
            w.f64(m.speed)
        }
        w.array(c.priorityClasses) { w, p in
            w.string(p.name)
            w.ivar(Int64(p.value))
            w.bool(p.preempts)
            w.bool(p.preemptible)
        }
        w.array(c.tenants) { w, t in
            w.string(t.name)
            w.f64(t.shares)
            w.optional(t.gpuQuota) { $0.uvar($1) }
            w.optional(t.borrowLimit) { $0.uvar($1) }
            w.optional(t.budget) { w, b in
                w.f64(b.usd)
                w.u8(index(b.window, in: windows))
                w.u8(index(b.enforcement, in: enforcements))
            }
        }
        let s = c.scheduler
        w.f64(s.fairshareHalfLife)
        w.f64(s.ageWeight)
        w.f64(s.maxAge)
        w.f64(s.fairshareWeight)
        w.f64(s.sizeWeight)
        w.u8(index(s.sizeFavor, in: favors))
        w.f64(s.defaultGrace)
        w.f64(s.defaultEstimate)
        w.f64(s.interval)
        w.string(c.defaultTrainingClass)
        w.string(c.defaultInferenceClass)
        w.f64(s.overBudgetPenalty)
        let p = c.preemption
        w.f64(p.minRuntime)
        w.uvar(p.maxPreemptions)
        w.f64(p.protection)
        w.f64(p.loanGrace)
        w.array(c.inferenceReserve) { w, r in
            w.string(r.gpuModel)
            w.uvar(r.gpus)
        }
        w.array(c.gpuModels) { w, m in
            w.optional(m.mig) { w, table in
                w.array(table.profiles) { w, p in
                    w.string(p.name)
                    w.uvar(p.compute)
                    w.uvar(p.memorySlices)
                    w.f64(p.memoryGiB)
                    w.array(p.starts) { $0.uvar($1) }
                }
            }
        }
        w.array(s.serviceQueues) { $0.f64($1) }
        w.f64(s.starvationFactor)
        w.f64(s.starvationMinimum)
        w.uvar(c.preemption.maxMoves)
        w.f64(c.preemption.loanCheckpointEvery)
    }

    static func readConfig(_ r: inout BinaryReader) throws(DecodeError) -> PoolConfig {
        var c = PoolConfig()
        c.gpuModels = try r.array { r throws(DecodeError) in
            GPUModel(name: try r.string(), memoryGiB: try r.f64(), pricePerHour: try r.f64(), speed: try r.f64())
        }
        c.priorityClasses = try r.array { r throws(DecodeError) in
            PriorityClass(
                name: try r.string(),
                value: Int(try r.ivar()),
                preempts: try r.bool(),
                preemptible: try r.bool()
            )
        }
        c.tenants = try r.array { r throws(DecodeError) in
            Tenant(
                name: try r.string(),
                shares: try r.f64(),
                gpuQuota: try r.optional { r throws(DecodeError) in try r.count(max: Int(Int32.max)) },
                borrowLimit: r.version >= 2
                    ? try r.optional { r throws(DecodeError) in try r.count(max: Int(Int32.max)) } : nil,
                budget: try r.optional { r throws(DecodeError) in
                    Budget(
                        usd: try r.f64(),
                        window: try r.enumeration(windows, "budget window"),
                        enforcement: try r.enumeration(enforcements, "budget enforcement")
                    )
                }
            )
        }
        var s = SchedulerSettings()
        s.fairshareHalfLife = try r.f64()
        s.ageWeight = try r.f64()
        s.maxAge = try r.f64()
        s.fairshareWeight = try r.f64()
        s.sizeWeight = try r.f64()
        s.sizeFavor = try r.enumeration(favors, "size favour")
        s.defaultGrace = try r.f64()
        s.defaultEstimate = try r.f64()
        s.interval = try r.f64()
        c.scheduler = s
        c.defaultTrainingClass = try r.string()
        c.defaultInferenceClass = try r.string()
        if r.version >= 2 {
            c.scheduler.overBudgetPenalty = try r.f64()
            var p = PreemptionSettings()
            p.minRuntime = try r.f64()
            p.maxPreemptions = try r.count(max: 1 << 20)
            p.protection = try r.f64()
            p.loanGrace = try r.f64()
            c.preemption = p
            c.inferenceReserve = try r.array { r throws(DecodeError) in
                InferenceReserve(gpuModel: try r.string(), gpus: try r.count(max: 1 << 24))
            }
        } else {
            // Version 1 had no preemption settings: the rules were the defaults of then.
            c.preemption.minRuntime = 600
        }
        if r.version >= 8 {
            let tables = try r.array { r throws(DecodeError) in
                try r.optional { r throws(DecodeError) in
                    MIGTable(
                        profiles: try r.array { r throws(DecodeError) in
                            MIGProfile(
                                name: try r.string(),
                                compute: try r.count(max: MIGTable.computeSlices),
                                memorySlices: try r.count(max: MIGTable.memorySlices),
                                memoryGiB: try r.f64(),
                                starts: try r.array { r throws(DecodeError) in try r.count(max: 7) }
                            )
                        }
                    )
                }
            }
            guard tables.count == c.gpuModels.count else {
                throw DecodeError(
                    offset: r.offset,
                    message: "\(tables.count) MIG tables for \(c.gpuModels.count) GPU models"
                )
            }
            for (i, t) in tables.enumerated() { c.gpuModels[i].mig = t }
        }
        if r.version >= 14 {
            c.scheduler.serviceQueues = try r.array { r throws(DecodeError) in try r.f64() }
            c.scheduler.starvationFactor = try r.f64()
            c.scheduler.starvationMinimum = try r.f64()
        }
        if r.version >= 15 { c.preemption.maxMoves = try r.count(max: 1 << 20) }
        // Before 16 nobody was asked: 0 keeps an old log's meaning.
        c.preemption.loanCheckpointEvery = r.version >= 16 ? try r.f64() : 0
        return c
    }

    static func write(_ p: Preference, _ w: inout BinaryWriter) {
        switch p {
        case .cheapest: w.u8(0)
        case .fastest: w.u8(1)
        case .deadline(let t):
            w.u8(2)
            w.f64(t.seconds)
        }
    }

    static func readPreference(_ r: inout BinaryReader) throws(DecodeError) -> Preference {
        let at = r.offset
        switch try r.u8() {
        case 0: return .cheapest
        case 1: return .fastest
        case 2: return .deadline(Instant(seconds: try r.f64()))
        case let k: throw DecodeError(offset: at, message: "unknown preference \(k)")
        }
    }

    static func write(_ l: Loan, _ w: inout BinaryWriter) {
        switch l {
        case .reservation(let id):
            w.u8(0)
            w.uvar(id.rawValue)
        case .inferenceReserve(let model):
            w.u8(1)
            w.string(model)
        case .quota(let tenant):
            w.u8(2)
            w.string(tenant)
        }
    }

    static func readLoan(_ r: inout BinaryReader) throws(DecodeError) -> Loan {
        let at = r.offset
        switch try r.u8() {
        case 0: return .reservation(for: JobID(try r.uvar()))
        case 1: return .inferenceReserve(model: try r.string())
        case 2: return .quota(tenant: try r.string())
        case let k: throw DecodeError(offset: at, message: "unknown loan kind \(k)")
        }
    }

    static func write(_ n: PlacementNote, _ w: inout BinaryWriter) {
        w.u8(index(n.rule, in: rules))
        w.string(n.model)
        w.f64(n.expectedSeconds)
        w.f64(n.estimatedCostUSD)
        w.uvar(n.holesLeft)
    }

    static func readNote(_ r: inout BinaryReader) throws(DecodeError) -> PlacementNote {
        PlacementNote(
            rule: try r.enumeration(rules, "placement rule"),
            model: try r.string(),
            expectedSeconds: try r.f64(),
            estimatedCostUSD: try r.f64(),
            holesLeft: try r.count(max: 1 << 20)
        )
    }
}
