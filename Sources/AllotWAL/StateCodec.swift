import AllotCore

/// The binary encoding of a state image, as snapshots store it (docs/wal-format.md).
enum StateCodec {
    /// The state schema version this build writes (2: jobs' placement notes, loans and checkpoints,
    /// preemption reasons, tenants' budget-window marks, and the event schema's version 2 parts; 3 and 4
    /// move with the event schema, whose versions they embed; 5: jobs' past runs, the event schema unchanged;
    /// 6: the stop reason of a job whose GPU failed, with event schema 5; 7: shares of GPUs, with event
    /// schema 7; 8: MIG, with event schema 8; 9: dependencies, with event schema 9; 10: node selection, nice
    /// and notifications, with event schema 10; 11: services, with event schema 11; 12: autoscaling by slots, with event schema 12; 13: the client's
    /// request id of a job, with event schema 13; 14: attained-service queues, with event schema 14; 15: a
    /// job's moves to faster GPUs, with event schema 15; 16: the `spill-over` placement rule, with event
    /// schema 16; 17: a job's own speeds per model, with event schema 17).
    static let version: UInt16 = 17

    static func encode(_ image: ClusterState.Image) -> [UInt8] {
        var w = BinaryWriter(capacity: 64 + image.jobs.count * 160)
        EventCodec.write(image.config, &w)
        w.f64(image.now.seconds)
        w.uvar(image.nextJobID.rawValue)
        w.array(image.nodes) { w, n in
            EventCodec.write(n.spec, &w)
            w.u8(EventCodec.index(n.state, in: EventCodec.nodeStates))
            w.optional(n.stateReason) { $0.string($1) }
            w.array(n.health) { $0.u8(EventCodec.index($1, in: EventCodec.healths)) }
            w.array(n.healthReason) { w, r in w.optional(r) { $0.string($1) } }
        }
        w.array(image.jobs) { w, j in write(j, &w) }
        w.array(image.tenantUsage) { w, pair in
            w.string(pair.0)
            write(pair.1.usage, &w)
            w.f64(pair.1.decayed.settled)
            w.f64(pair.1.decayed.rate)
            w.f64(pair.1.decayed.since.seconds)
            w.array(pair.1.marks.starts) { $0.f64($1.seconds) }
            w.array(pair.1.marks.spent) { $0.f64($1) }
        }
        w.array(image.modelUsage) { w, pair in
            w.string(pair.0)
            write(pair.1, &w)
        }
        w.array(image.kindUsage) { w, pair in
            w.string(pair.0.rawValue)
            write(pair.1, &w)
        }
        w.array(image.archived.sortedRows) { w, row in
            w.ivar(Int64(row.0.day))
            w.string(row.0.tenant)
            w.string(row.0.user)
            w.string(row.0.model)
            w.string(row.0.kind)
            w.uvar(row.1.jobs)
            w.f64(row.1.gpuSeconds)
            w.f64(row.1.usd)
            w.optional(row.0.service) { $0.string($1) }
        }
        w.uvar(image.archived.jobs)
        w.optional(image.archived.lastEnd) { $0.f64($1.seconds) }
        w.array(image.services) { w, s in
            EventCodec.write(s.spec, &w)
            w.uvar(s.replicas)
            w.f64(s.created.seconds)
            w.string(s.scaleReason)
            w.array(s.members) { $0.uvar($1.rawValue) }
            w.uvar(s.crashes)
            w.optional(s.restartAfter) { $0.f64($1.seconds) }
            w.optional(s.lastCrash) { $0.string($1) }
            w.uvar(s.generation)
            w.optional(s.rolloutHalted) { $0.string($1) }
        }
        return w.bytes
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, version: UInt16) throws(DecodeError) -> ClusterState.Image {
        guard version >= 1 && version <= Self.version else {
            throw DecodeError(
                offset: 0,
                message: "state version \(version) is newer than this allot reads (\(Self.version)); upgrade allot"
            )
        }
        var r = BinaryReader(bytes, version: version)
        let config = try EventCodec.readConfig(&r)
        let now = Instant(seconds: try r.f64())
        let next = JobID(try r.uvar())
        let nodes = try r.array { r throws(DecodeError) in
            ClusterState.Image.NodeImage(
                spec: try EventCodec.readNodeSpec(&r),
                state: try r.enumeration(EventCodec.nodeStates, "node state"),
                stateReason: try r.optional { r throws(DecodeError) in try r.string() },
                health: try r.array { r throws(DecodeError) in try r.enumeration(EventCodec.healths, "GPU health") },
                healthReason: try r.array { r throws(DecodeError) in
                    try r.optional { r throws(DecodeError) in try r.string() }
                }
            )
        }
        let jobs = try r.array { r throws(DecodeError) in try readJob(&r) }
        let tenants = try r.array { r throws(DecodeError) in
            let name = try r.string()
            let usage = try readUsage(&r)
            let decayed = DecayingUsage(settled: try r.f64(), rate: try r.f64(), since: Instant(seconds: try r.f64()))
            var marks = WindowMarks()
            if r.version >= 2 {
                let starts = try r.array { r throws(DecodeError) in Instant(seconds: try r.f64()) }
                let spent = try r.array { r throws(DecodeError) in try r.f64() }
                guard starts.count == 3, spent.count == 3 else {
                    throw DecodeError(offset: r.offset, message: "budget window marks of tenant \(name) are not three")
                }
                marks = WindowMarks(starts: starts, spent: spent)
            }
            return (name, TenantUsage(usage: usage, decayed: decayed, marks: marks))
        }
        let models = try r.array { r throws(DecodeError) in (try r.string(), try readUsage(&r)) }
        let kinds = try r.array { r throws(DecodeError) in
            let at = r.offset
            let name = try r.string()
            guard let kind = JobKind(rawValue: name) else {
                throw DecodeError(offset: at, message: "unknown job kind \"\(name)\"")
            }
            return (kind, try readUsage(&r))
        }
        var archived = ArchivedUsage()
        if r.version >= 10 {
            let rows = try r.array { r throws(DecodeError) in
                var key = ArchivedUsage.Key(
                    day: Int(clamping: try r.ivar()),
                    tenant: try r.string(),
                    user: try r.string(),
                    model: try r.string(),
                    kind: try r.string()
                )
                let totals = ArchivedUsage.Totals(
                    jobs: try r.count(max: Int(Int32.max)),
                    gpuSeconds: try r.f64(),
                    usd: try r.f64()
                )
                if r.version >= 11 { key.service = try r.optional { r throws(DecodeError) in try r.string() } }
                return (key, totals)
            }
            archived = ArchivedUsage(
                rows: rows,
                jobs: try r.count(max: Int.max >> 1),
                lastEnd: try r.optional { r throws(DecodeError) in Instant(seconds: try r.f64()) }
            )
        }
        var services: [InferenceService] = []
        if r.version >= 11 {
            services = try r.array { r throws(DecodeError) in
                InferenceService(
                    spec: try EventCodec.readServiceSpec(&r),
                    replicas: try r.count(max: ServiceSpec.maxReplicasLimit),
                    created: Instant(seconds: try r.f64()),
                    scaleReason: try r.string(),
                    members: try r.array { r throws(DecodeError) in JobID(try r.uvar()) },
                    crashes: try r.count(max: Int(Int32.max)),
                    restartAfter: try r.optional { r throws(DecodeError) in Instant(seconds: try r.f64()) },
                    lastCrash: try r.optional { r throws(DecodeError) in try r.string() },
                    generation: try r.count(max: Int(Int32.max)),
                    rolloutHalted: try r.optional { r throws(DecodeError) in try r.string() }
                )
            }
        }
        if r.remaining != 0 {
            throw DecodeError(offset: r.offset, message: "\(r.remaining) bytes left over after the state")
        }
        return ClusterState.Image(
            config: config,
            now: now,
            nextJobID: next,
            nodes: nodes,
            jobs: jobs,
            tenantUsage: tenants,
            modelUsage: models,
            kindUsage: kinds,
            archived: archived,
            services: services
        )
    }

    static func write(_ j: Job, _ w: inout BinaryWriter) {
        w.uvar(j.id.rawValue)
        EventCodec.write(j.spec, &w)
        w.u8(EventCodec.index(j.state, in: EventCodec.jobStates))
        w.f64(j.submitTime.seconds)
        w.optional(j.startTime) { $0.f64($1.seconds) }
        w.optional(j.firstStartTime) { $0.f64($1.seconds) }
        w.optional(j.endTime) { $0.f64($1.seconds) }
        w.optional(j.allocation) { EventCodec.write($1, &$0) }
        w.optional(j.stopReason) { w, reason in
            switch reason {
            case .preempted(let by, let reason):
                w.u8(0)
                w.uvar(by.rawValue)
                w.u8(EventCodec.index(reason, in: EventCodec.preemptionReasons))
            case .cancelled(let uid):
                w.u8(1)
                w.optional(uid) { $0.uvar(UInt64($1)) }
            case .walltime:
                w.u8(2)
            case .gpuFailed(let reason):
                w.u8(3)
                w.string(reason)
            case .requeued(let uid):
                w.u8(4)
                w.optional(uid) { $0.uvar(UInt64($1)) }
            }
        }
        w.optional(j.stopRequestedAt) { $0.f64($1.seconds) }
        w.optional(j.grace) { $0.f64($1) }
        w.optional(j.exit) { EventCodec.write($1, &$0) }
        w.optional(j.note) { $0.string($1) }
        w.optional(j.placement) { EventCodec.write($1, &$0) }
        w.array(j.loans) { EventCodec.write($1, &$0) }
        w.optional(j.lastCheckpoint) { $0.f64($1.seconds) }
        w.array(j.heldGPUs) { w, slice in
            w.string(slice.node)
            w.array(slice.gpus) { $0.uvar($1) }
        }
        w.uvar(j.runs)
        w.uvar(j.preemptions)
        w.f64(j.pastRunSeconds)
        w.f64(j.pastGPUSeconds)
        w.f64(j.pastCostUSD)
        w.f64(j.costRate)
        w.array(j.history) { w, past in
            w.f64(past.start.seconds)
            w.f64(past.end.seconds)
            w.optional(past.allocation) { EventCodec.write($1, &$0) }
            w.string(past.ended)
        }
        w.uvar(j.moves)
    }

    static func readJob(_ r: inout BinaryReader) throws(DecodeError) -> Job {
        func time(_ r: inout BinaryReader) throws(DecodeError) -> Instant? {
            try r.optional { r throws(DecodeError) in Instant(seconds: try r.f64()) }
        }
        let id = JobID(try r.uvar())
        let spec = try EventCodec.readJobSpec(&r)
        let state = try r.enumeration(EventCodec.jobStates, "job state")
        let submitTime = Instant(seconds: try r.f64())
        var run = JobRun()
        run.startTime = try time(&r)
        run.firstStartTime = try time(&r)
        run.endTime = try time(&r)
        run.allocation = try r.optional { r throws(DecodeError) in try EventCodec.readAllocation(&r) }
        run.stopReason = try r.optional { r throws(DecodeError) in
            let at = r.offset
            switch try r.u8() {
            case 0:
                let by = JobID(try r.uvar())
                let reason =
                    r.version >= 2
                    ? try r.enumeration(EventCodec.preemptionReasons, "preemption reason") : .priority
                return .preempted(by: by, reason: reason)
            case 1: return .cancelled(by: try r.optional { r throws(DecodeError) in try EventCodec.uid(&r) })
            case 2: return .walltime
            case 3 where r.version >= 6: return .gpuFailed(reason: try r.string())
            case 4 where r.version >= 10:
                return .requeued(by: try r.optional { r throws(DecodeError) in try EventCodec.uid(&r) })
            case let k: throw DecodeError(offset: at, message: "unknown stop reason \(k)")
            }
        }
        run.stopRequestedAt = try time(&r)
        run.grace = try r.optional { r throws(DecodeError) in try r.f64() }
        run.exit = try r.optional { r throws(DecodeError) in try EventCodec.readExit(&r) }
        run.note = try r.optional { r throws(DecodeError) in try r.string() }
        if r.version >= 2 {
            run.placement = try r.optional { r throws(DecodeError) in try EventCodec.readNote(&r) }
            run.loans = try r.array { r throws(DecodeError) in try EventCodec.readLoan(&r) }
            run.lastCheckpoint = try time(&r)
            run.heldGPUs = try r.array { r throws(DecodeError) in
                Allocation.Slice(
                    node: try r.string(),
                    gpus: try r.array { r throws(DecodeError) in try r.count(max: 1 << 16) }
                )
            }
        }
        run.runs = try r.count(max: Int(Int32.max))
        run.preemptions = try r.count(max: Int(Int32.max))
        run.pastRunSeconds = try r.f64()
        run.pastGPUSeconds = try r.f64()
        run.pastCostUSD = try r.f64()
        run.costRate = try r.f64()
        if r.version >= 5 {
            run.history = try r.array { r throws(DecodeError) in
                PastRun(
                    start: Instant(seconds: try r.f64()),
                    end: Instant(seconds: try r.f64()),
                    allocation: try r.optional { r throws(DecodeError) in try EventCodec.readAllocation(&r) },
                    ended: try r.string()
                )
            }
        }
        if r.version >= 15 { run.moves = try r.count(max: Int(Int32.max)) }
        return Job(id: id, spec: spec, state: state, submitTime: submitTime, record: run)
    }

    static func write(_ u: Usage, _ w: inout BinaryWriter) {
        for a in [u.gpuSeconds, u.costUSD] {
            w.f64(a.settled)
            w.f64(a.rate)
            w.f64(a.since.seconds)
        }
        w.ivar(Int64(u.gpusInUse))
        w.ivar(Int64(u.jobsRunning))
    }

    static func readUsage(_ r: inout BinaryReader) throws(DecodeError) -> Usage {
        let g = Accrual(settled: try r.f64(), rate: try r.f64(), since: Instant(seconds: try r.f64()))
        let c = Accrual(settled: try r.f64(), rate: try r.f64(), since: Instant(seconds: try r.f64()))
        return Usage(gpuSeconds: g, costUSD: c, gpusInUse: Int(try r.ivar()), jobsRunning: Int(try r.ivar()))
    }
}
