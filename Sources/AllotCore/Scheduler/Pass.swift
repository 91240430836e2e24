/// One scheduling pass: the mutable working state while the policy walks the queue. Built and used by
/// ``Scheduler/schedule(_:at:)`` only.
struct Pass {
    let state: ClusterState
    let now: Instant
    let policy: Scheduler.Policy
    let lending: Scheduler.Lending
    /// Jobs that could start only on reserved GPUs inference is expected to need before they end: offered
    /// what is left of the reserve after the walk, in priority order (``Scheduler/Lending/forecast``).
    var deferredLoans: [Priority] = []
    /// The second round, for `deferredLoans`: what inference does not use now is lent.
    var lendingLeftovers = false
    let ctx: PassContext
    let classes: ClassTable
    let rows: [PendingQueue.Row]

    /// Free GPUs not held for anyone.
    var pool: FreePool
    /// `pool` without the GPUs held for the reservation, once there is one.
    var open: FreePool?
    var reservation: Reservation?
    /// Node position → GPUs of the reservation's allocation (free or busy).
    var reservedMasks: [Int: UInt64] = [:]
    var reservationEnd = Double.infinity
    /// This pass's whole-GPU starts before there was a reservation, with their expected ends: the
    /// reservation counts on their GPUs freeing like those of jobs already running.
    var startedEnds: [(end: Double, id: JobID, slices: [NodeMask])] = []
    /// GPUs of each model that jobs of this pass wait for (``fasterModelSoon(_:allowed:)``).
    var claimed: [Int: Int] = [:]
    /// Per model, the running jobs' expected ends (``endsOn(model:)``).
    var runningEnds: [Int: [(end: Double, gpus: Int)]] = [:]

    var decisions: [Decision] = []
    var pending: [PendingReason] = []
    /// memo[view][constraint * 3 + topology]: the smallest gang of that shape that found no room in that view
    /// (0: `open` or the whole pool before a reservation, 1: the whole pool after one).
    var memo: [[Int]]

    /// Thousandths of GPUs held by tenant (``RunView/milli``), counting this pass's starts: built the first
    /// time a quota needs it.
    var tenantMilli: [String: Int]?
    /// Non-preemptible use against quotas, counting this pass's starts: built the first time a quota needs it.
    private var firm: FirmUse?
    /// Estimated cost of this pass's starts, by tenant.
    var addedCost: [String: Double] = [:]
    private var committedCost: [String: Double]?
    /// GPUs of each model held by inference and by other jobs, counting this pass's starts: built the first
    /// time the inference reserve needs it.
    private var kindUse: KindUse?
    let reserve: [Int]
    /// Per interned tenant of the pending queue: its config (resolved once, not per job).
    let tenantConfig: [Tenant]
    let quotasInForce: Bool
    let anyHardBudget: Bool
    private var runningCache: [RunView]?
    var victimOrderCache: [Int]?
    /// ``victimOrder()`` restricted to elastic jobs (built once per pass; usually empty).
    var elasticOrderCache: [Int]?
    private var calculator: PriorityCalculator?
    /// Jobs told to stop in this pass.
    var victims: Set<JobID> = []
    /// GPUs of jobs stopping to make way for a job, by that job.
    var incoming: [JobID: [NodeMask]] = [:]
    /// Free GPUs held for a job by earlier preemptions, taken out of the pool for everyone else.
    var held: [JobID: [NodeMask]] = [:]
    var preemptionSearches = 0
    static let maxPreemptionSearches = 32
    /// Shared GPUs by model (built the first time a share job looks for room), with this pass's shares.
    private var sharedGPUs: [[NodeGPU]]?
    /// Thousandths of GPUs taken by this pass's share starts.
    var shareTaken: [NodeGPU: Int] = [:]
    /// The shared GPU held for the first share that found no room (``holdShare(for:allowed:)``).
    var shareHold: ShareHold?
    /// Whether the last ``shareOnSharedGPU(_:allowed:short:)`` passed over the held GPU while it had room.
    var passedShareHold = false
    /// The running and pending shares by what they ask (built the first time a share chooses a shared GPU).
    private var shareMix: [ShareAsk: Int]?
    /// ``shareNeeds(model:)`` by model.
    private var shareNeedCache: [Int: [(need: Int, count: Int)]] = [:]
    /// ``shareShortage(_:allowed:)`` by request shape, until the next start changes the room.
    var shortages: [ShareShape: String] = [:]
    /// The memory slices held for the first MIG job that found no room (``holdMIG(for:allowed:)``).
    var migHold: MIGHold?
    /// The owner of this pass's shares on each GPU (an MPS GPU serves one user).
    var shareOwner: [NodeGPU: UInt32] = [:]
    /// Memory slices taken on each GPU by this pass's MIG starts.
    var migTaken: [NodeGPU: UInt8] = [:]
    /// The nodes with MIG, by model (built the first time a MIG job looks for room).
    var migNodes: [[Int]]?
    /// Whether any GPU was shared when the pass began.
    let anySharedGPU: Bool
    /// Memo of ``ClusterState/hostNeverFits``, by request shape.
    var neverFits: [HostShape: Blocker?] = [:]
    /// Requests whose GPUs fit a view but whose CPUs and memory beside them did not, in this pass: the pool
    /// only shrinks as the pass starts jobs (a job that gives held GPUs back clears it), so the next job of
    /// the same shape fails too, without another look at every node.
    var noHostRoom: Set<HostRoomKey> = []
    /// The CPUs (thousandths) and memory (MiB) that jobs of CPUs only found no node for in this pass, as
    /// ``noHostRoom`` (cleared with it).
    var noHostOnlyRoom: [HostOnlyKey: [(cpu: Int, memory: Int)]] = [:]
    /// CPUs (thousandths) and memory (MiB) taken by this pass's starts, by node position.
    var hostTaken: [Int: (cpu: Int, memory: Int)] = [:]
    /// CPUs and memory the reservation's job needs on its nodes beyond what jobs ending before its start give
    /// back, by node position: a later job that would still run then may not take them (not even on loan, as
    /// preemptible jobs take reserved GPUs: taking them back is done by GPUs).
    var hostReserved: [Int: (cpu: Int, memory: Int)] = [:]
    /// While ``reserve(for:rank:allowed:)`` looks ahead: the CPUs and memory that jobs ending by then give
    /// back, by node position.
    var hostCredit: [Int: (cpu: Int, memory: Int)] = [:]

    /// The inference job placed on a dearer model rather than take loans of reserved model `from` back
    /// (``spillOverIsCheaper(_:reserved:allowed:)``): its note says so.
    var spillingOver: (job: JobID, from: Int)?

    /// The inference reserve's forecasts made in this pass, by model and horizon (in buckets).
    var forecasts: [Int: InferenceDemand.Forecast] = [:]

    init(
        state: ClusterState,
        now: Instant,
        policy: Scheduler.Policy,
        lending: Scheduler.Lending = .forecast
    ) {
        self.state = state
        self.now = now
        self.policy = policy
        self.lending = lending
        self.ctx = PassContext(state: state, policy: policy)
        self.classes = ClassTable(state: state)
        self.rows = state.pendingJobs.rows
        self.pool = state.freePool
        self.memo = [[Int]](repeating: [Int](repeating: .max, count: ctx.allowed.count * 3), count: 2)
        let reserve = policy == .allot ? state.inferenceReserve : []
        self.reserve = reserve.contains { $0 > 0 } ? reserve : []
        self.tenantConfig = state.pendingJobs.tenants.values.map { state.config.tenant(named: $0) }
        self.quotasInForce = policy == .allot && state.config.quotasInForce
        self.anyHardBudget = policy == .allot && state.config.tenants.contains { $0.budget?.enforcement == .hard }
        self.anySharedGPU = state.sharedGPUCount > 0
        for id in state.holding.sorted() {
            for slice in state.jobs[existing: id].heldGPUs {
                guard let ni = state.nodeIndex[slice.node] else { continue }
                let mask = slice.gpus.reduce(UInt64(0)) { $0 | (1 << UInt64($1)) } & pool.free[ni]
                if mask == 0 { continue }
                pool.take(node: ni, mask: mask)
                held[id, default: []].append(NodeMask(node: ni, mask: mask))
            }
        }
        if policy == .allot {
            for id in state.activeJobs {
                let job = state.jobs[existing: id]
                guard job.state == .stopping, case .preempted(let by, _)? = job.stopReason, by != id,
                    let a = job.allocation
                else {
                    continue
                }
                for slice in a.slices {
                    guard let ni = state.nodeIndex[slice.node] else { continue }
                    // Not the GPUs an elastic job shrinking for `by` keeps (held for itself).
                    let kept = job.heldGPUs.filter { $0.node == slice.node }.flatMap(\.gpus)
                    let mask = slice.gpus.filter { !kept.contains($0) }.reduce(UInt64(0)) { $0 | (1 << UInt64($1)) }
                    // (Also a slice of no GPU that gives CPUs or memory back: jobs are stopping for `by`.)
                    if mask != 0 || slice.cpuMilli != nil || slice.memoryMiB != nil {
                        incoming[by, default: []].append(NodeMask(node: ni, mask: mask))
                    }
                }
            }
        }
    }

    // MARK: Lazily built views of the running jobs

    var running: [RunView] {
        mutating get {
            if let r = runningCache { return r }
            let r = state.runViews(at: now)
            runningCache = r
            return r
        }
    }

    /// A running job's priority, as if it were pending now (for "who goes first" between a pending job and
    /// the job holding a loan).
    mutating func priority(ofRunning id: JobID) -> Priority {
        if calculator == nil { calculator = PriorityCalculator(state: state, now: now, allot: policy == .allot) }
        let job = state.jobs[existing: id]
        // In place (its memo stays with it); it was made just above.
        guard let f = calculator?.factors(job) else { preconditionFailure("no priority calculator") }
        return Priority(
            classValue: f.classValue,
            kindRank: job.spec.kind == .inference ? 0 : 1,
            queue: Int32(f.queue),
            score: f.score,
            submitTime: job.submitTime.seconds,
            id: id
        )
    }

    /// Thousandths of GPUs a tenant holds, counting this pass's starts: a share counts its share, a MIG
    /// instance its price, as quotas count them.
    mutating func milliInUse(by tenant: String) -> Int {
        if tenantMilli == nil {
            var byTenant: [String: Int] = [:]
            for v in running { byTenant[v.tenant, default: 0] += v.milli }
            tenantMilli = byTenant
        }
        return tenantMilli![tenant, default: 0]
    }

    /// Adds thousandths of GPUs to a tenant's use in this pass (once its use is counted).
    mutating func addMilli(_ milli: Int, tenant: String) {
        if tenantMilli != nil { tenantMilli![tenant, default: 0] += milli }
    }

    /// Thousandths of GPUs a pending job would hold, as its quota counts it before it is placed: a share its
    /// smallest share on an allowed model, a MIG job its cheapest profile's price.
    func quotaMilli(_ row: PendingQueue.Row) -> Int {
        if !row.isShare && !row.isMIG { return row.gpus * 1000 }
        let allowed = ctx.usableModels(row)
        var least = Int.max
        for m in 0..<ctx.modelCount where allowed & (1 << UInt64(m)) != 0 {
            if row.isShare {
                let s = row.share(on: ctx.models[m])
                if s >= 0 { least = min(least, s) }
            } else if let spec = state.jobs[row.id]?.spec {
                for p in spec.migProfiles(on: ctx.models[m]) { least = min(least, MIGTable.priceMilli(p)) }
            }
        }
        return least == Int.max ? row.gpus * 1000 : least
    }

    /// Expected remaining cost of a tenant's running jobs.
    mutating func committed(by tenant: String) -> Double {
        if let committedCost { return committedCost[tenant, default: 0] }
        var c: [String: Double] = [:]
        for r in running where !r.stopping {
            c[r.tenant, default: 0] += r.costRate * max(0, r.expectedEnd - now.seconds)
        }
        committedCost = c
        return c[tenant, default: 0]
    }

    /// What inference is expected to need of reserved model `m` over the next `seconds`.
    mutating func forecast(model m: Int, for seconds: Seconds) -> InferenceDemand.Forecast {
        let span = Int((min(seconds, 86_400) / InferenceDemand.bucket).rounded(.up))
        let key = m * 1024 + span
        if let f = forecasts[key] { return f }
        let f = state.inferenceDemand.forecast(ctx.models[m].name, from: now, for: seconds, cap: reserve[m])
        forecasts[key] = f
        return f
    }

    mutating func use(of model: Int, inference: Bool) -> Int {
        let use = kindUse ?? KindUse(running, models: ctx.modelCount)
        kindUse = use
        return inference ? use.inference[model] : use.other[model]
    }

    mutating func addUse(of model: Int, inference: Bool, gpus: Int) {
        if kindUse == nil { kindUse = KindUse(running, models: ctx.modelCount) }
        kindUse?.add(gpus, model: model, inference: inference)
    }

    // MARK: Views

    /// `base` with `slices` added as free, where their nodes take jobs and their GPUs are healthy.
    func adding(_ slices: [NodeMask], to base: FreePool) -> FreePool {
        var p = base
        add(slices, to: &p)
        return p
    }

    /// Frees `slices`' GPUs in `pool` (those of nodes that take jobs, and healthy).
    func add(_ slices: [NodeMask], to pool: inout FreePool) {
        for s in slices {
            let node = state.nodes[s.node]
            guard node.schedulable else { continue }
            pool.setFree(node: s.node, mask: pool.free[s.node] | (s.mask & ~node.unhealthyMask))
        }
    }

    /// Whether a row's node selection admits node `i` (every node when it has none, or its constraint is
    /// not interned).
    @inline(__always) func admitted(_ row: PendingQueue.Row, node i: Int) -> Bool {
        row.constraint < 0 || ctx.nodeAllowed[Int(row.constraint)]?[i] ?? true
    }

    /// `view` without the free GPUs of the nodes a row's node selection does not admit (`view` itself when
    /// it selects no nodes): what every placement, hold, preemption and reservation for it looks at.
    func restricted(_ view: FreePool, for row: PendingQueue.Row) -> FreePool {
        ctx.nodeAllowed[Int(row.constraint)].map { view.keeping($0) } ?? view
    }

    /// The slices on nodes a row's node selection admits (all of them when it selects none).
    func admittedOnly(_ slices: [NodeMask], for row: PendingQueue.Row) -> [NodeMask] {
        ctx.nodeAllowed[Int(row.constraint)] == nil ? slices : slices.filter { admitted(row, node: $0.node) }
    }

    /// Takes GPUs from every view (a start, or GPUs held for a job waiting on preemptions).
    mutating func takeEverywhere(_ slices: [NodeMask]) {
        for s in slices {
            pool.take(node: s.node, mask: s.mask)
            open?.take(node: s.node, mask: s.mask)
        }
    }

    /// Gives back the held GPUs a job did not use (it started elsewhere, or could not start).
    mutating func release(heldFor id: JobID, except used: [NodeMask]) {
        guard let mine = held.removeValue(forKey: id) else { return }
        for s in mine {
            let keep = s.mask & ~(used.first { $0.node == s.node }?.mask ?? 0)
            if keep == 0 { continue }
            noHostRoom.removeAll()
            noHostOnlyRoom.removeAll()
            pool.setFree(node: s.node, mask: pool.free[s.node] | keep)
            if let o = open {
                open?.setFree(node: s.node, mask: o.free[s.node] | (keep & ~(reservedMasks[s.node] ?? 0)))
            }
        }
    }

    // MARK: The walk

    /// Walks the queue in priority order, each job through the stages (as Nomad's scheduler stack: feasibility,
    /// the models it may use, admission, selection, then preemption or a reservation), and after the walk
    /// lends what is left, extends elastic starts, grows elastic jobs and moves jobs to faster models.
    mutating func run(order: [Priority]) {
        var head: JobID?
        for (rank, p) in order.enumerated() {
            if let head {
                pending.append(PendingReason(id: p.id, rank: rank + 1, blocker: .behind(head)))
                continue
            }
            // Fast path for a long queue: nothing free, nothing more to decide for anyone (and the job's row
            // is not read: rows are visited in priority order, so each read would miss the cache).
            if p.gpus > 0 && exhausted(for: p.id) {
                let allowed = ctx.allowed[Int(p.constraint)]
                let gpus = Int(p.gpus)
                let blocker =
                    ctx.structuralBlocker(gpus: gpus, topology: p.topology, allowed: allowed, constraint: p.constraint)
                    ?? ctx.shortage(gpus, allowed: allowed, pool: pool)
                pending.append(PendingReason(id: p.id, rank: rank + 1, blocker: blocker))
                continue
            }
            let row = rows[p.slot]
            // The stages, each with one job: feasibility → models (rank) → admission → select → preempt or
            // reserve. A stage that decides the job's fate for this pass records why and ends its turn.
            let allowed = ctx.usableModels(row)
            if let b = feasibility(row, allowed: allowed) {
                pending.append(PendingReason(id: row.id, rank: rank + 1, blocker: b))
                release(heldFor: row.id, except: [])
                continue
            }
            var turn = Turn(row: row, priority: p, rank: rank + 1, allowed: allowed, classes: classes)
            models(&turn)
            guard let loans = admission(turn) else { continue }
            if reclaimForInference(turn) { continue }
            switch tryStart(row, allowed: turn.allowed, preemptible: turn.preemptible, loans: loans) {
            case .started: continue
            case .blocked(let blocker, let capacity):
                if preemptOrReserve(turn, blocker: blocker, capacity: capacity) && policy == .fifo { head = row.id }
            }
        }
        lendLeftovers()
        extendElasticStarts()
        growElastic()
        migrate()
    }

    /// One pending job's turn in the walk: what the stages learn about it.
    struct Turn {
        let row: PendingQueue.Row
        let priority: Priority
        /// Its position in the queue, from 1.
        let rank: Int
        /// The GPU models it may start on in this pass (narrowed when it waits for a faster one).
        var allowed: UInt64
        /// Why it waits though a slower model has room: a faster one frees soon.
        var waitsForFaster: Blocker?
        let cls: ClassInfo
        let preemptible: Bool

        init(row: PendingQueue.Row, priority: Priority, rank: Int, allowed: UInt64, classes: ClassTable) {
            self.row = row
            self.priority = priority
            self.rank = rank
            self.allowed = allowed
            self.cls = classes.of(row)
            self.preemptible = classes.preemptible(row)
        }
    }

    /// Records why a job does not start in this pass.
    mutating func block(_ turn: Turn, _ b: Blocker) {
        pending.append(PendingReason(id: turn.row.id, rank: turn.rank, blocker: b))
    }

    /// Feasibility: what no amount of waiting changes in this pool (no model or node it may use, `allowed`,
    /// could ever hold it).
    mutating func feasibility(_ row: PendingQueue.Row, allowed: UInt64) -> Blocker? {
        if let b = ctx.structuralBlocker(
            gpus: row.gpus,
            topology: row.topology,
            allowed: allowed,
            constraint: row.constraint
        ) {
            return b
        }
        if ctx.tracksHost && (row.cpuMilli >= 0 || row.memoryMiB >= 0), let b = hostNeverFits(row, allowed: allowed) {
            return b
        }
        return nil
    }

    /// Models: a training job that would run much slower on what is free now waits for a faster model
    /// that frees soon (``fasterModelSoon(_:allowed:)``).
    mutating func models(_ turn: inout Turn) {
        let row = turn.row
        guard
            policy == .allot && row.kind == .training && !row.isShare && !row.isMIG && row.gpus > 0
                && (row.prefer == nil || row.prefer == .fastest), ctx.fastest.count > 1,
            let faster = fasterModelSoon(row, allowed: turn.allowed)
        else { return }
        turn.allowed = faster.mask
        turn.waitsForFaster = faster.why
    }

    /// Admission (policy allot): budgets and quotas.
    /// - Returns: the loans it would start on, or nil when it may not start now (recorded).
    mutating func admission(_ turn: Turn) -> [Loan]? {
        guard policy == .allot else { return [] }
        let row = turn.row
        if let b = hardBudgetBlocker(row, extraCost: 0) {
            block(turn, b)
            release(heldFor: row.id, except: [])
            return nil
        }
        switch quotaAdmission(row, preemptible: turn.preemptible) {
        case .blocked(let b):
            block(turn, b)
            release(heldFor: row.id, except: [])
            return nil
        case .loan(let l): return [l]
        case .free: return []
        }
    }

    /// Inference within the reserve of its cheapest model takes lent GPUs back there (a few seconds'
    /// notice), or the CPUs and memory lent beside free ones, rather than starting at once on a dearer model
    /// for its whole lifetime — unless a dearer model free now serves it for less than the loans would lose.
    /// - Returns: whether it did (the job then waits for them; recorded).
    mutating func reclaimForInference(_ turn: Turn) -> Bool {
        let row = turn.row
        guard
            policy == .allot && row.kind == .inference && !reserve.isEmpty && !row.isShare && !row.isMIG
                && row.gpus > 0
                && preemptionSearches < Self.maxPreemptionSearches,
            let m = cheapestReserved(row, allowed: turn.allowed),
            !startsNow(row, model: m) && held[row.id] == nil && incoming[row.id] == nil,
            !spillOverIsCheaper(row, reserved: m, allowed: turn.allowed),
            let count = countingSearch({
                $0.preempt(for: row, rank: turn.priority, allowed: 1 << UInt64(m), cls: turn.cls, reclaimOnly: true)
            })
        else { return false }
        block(turn, .waitingForPreemption(victims: count))
        holdReservation(for: row.id)
        return true
    }

    /// Preempt or reserve, for a job that could not start: it waits for jobs told to stop for it, or has
    /// some stopped (bounded per pass), or else records why it waits and holds what it will need (the
    /// pass's reservation, a shared GPU, a MIG slot).
    /// - Returns: whether it waits for capacity (nothing stopped for it).
    mutating func preemptOrReserve(_ turn: Turn, blocker: Blocker, capacity: Bool) -> Bool {
        let row = turn.row
        let allowed = turn.allowed
        // A MIG job waits for the jobs stopping for it, or looks for some (``preemptForMIG``).
        if row.isMIG && policy == .allot && capacity {
            if !incoming.isEmpty && incoming[row.id] != nil {
                block(turn, .waitingForPreemption(victims: stoppingFor(row.id).count))
                holdReservation(for: row.id)
                return false
            }
            if preemptionSearches < Self.maxPreemptionSearches,
                let count = countingSearch({
                    $0.preemptForMIG(row, rank: turn.priority, allowed: allowed, cls: turn.cls)
                })
            {
                block(turn, .waitingForPreemption(victims: count))
                holdReservation(for: row.id)
                return false
            }
        }
        // Waiting on jobs already told to stop for it?
        if !incoming.isEmpty, incoming[row.id] != nil, holdIfFits(row, allowed: allowed, with: incoming[row.id]!) {
            block(turn, .waitingForPreemption(victims: stoppingFor(row.id).count))
            holdReservation(for: row.id)
            return false
        }
        // Bounded: a pass over a long queue of blocked jobs stays cheap.
        if policy == .allot && capacity && !row.isMIG && (row.gpus > 0 || ctx.tracksHost)
            && preemptionSearches < Self.maxPreemptionSearches
        {
            preemptionSearches += 1
            if let count = preempt(for: row, rank: turn.priority, allowed: allowed, cls: turn.cls) {
                block(turn, .waitingForPreemption(victims: count))
                holdReservation(for: row.id)
                return false
            }
        }
        block(turn, capacity ? turn.waitsForFaster ?? blocker : blocker)
        if case .reserveNeeded = blocker { deferredLoans.append(turn.priority) }
        // A share reserves nothing: whole GPUs freeing later are not what it waits for (shared GPUs
        // are not counted on to free), and holding one would block whole-GPU jobs for a fraction.
        // A job of CPUs only reserves them (where nodes declare them): smaller jobs would otherwise take
        // every CPU as it frees, and it would never start.
        if capacity && reservation == nil && policy != .fifo && !row.isShare && !row.isMIG
            && (row.gpus > 0 || ctx.tracksHost)
        {
            reserve(for: row, rank: turn.priority, allowed: allowed)
        }
        // A share holds instead the shared GPU whose shares leave it room soonest: smaller shares
        // behind it would otherwise take every bit of room as it frees, and it would never start.
        if capacity && shareHold == nil && policy != .fifo && row.isShare { holdShare(for: row, allowed: allowed) }
        // (Not for CPUs or memory: slices held would not bring them.)
        if capacity && migHold == nil && policy != .fifo && row.isMIG, case .noMIGRoom = blocker {
            holdMIG(for: row, allowed: allowed)
        }
        return true
    }

    /// The second round of the inference reserve's loans: the jobs the walk deferred because inference is
    /// expected to need the reserve before they end get, in priority order, what is left of it (they may
    /// be taken back; GPUs idle meanwhile would help no one).
    mutating func lendLeftovers() {
        guard !deferredLoans.isEmpty else { return }
        lendingLeftovers = true
        var started: Set<JobID> = []
        /// What blocks the jobs that still cannot start.
        var still: [JobID: Blocker] = [:]
        for p in deferredLoans {
            let row = rows[p.slot]
            let allowed = ctx.usableModels(row)
            var loans: [Loan] = []
            if hardBudgetBlocker(row, extraCost: 0) != nil { continue }
            switch quotaAdmission(row, preemptible: true) {
            case .blocked: continue
            case .loan(let l): loans.append(l)
            case .free: break
            }
            switch tryStart(row, allowed: allowed, preemptible: true, loans: loans) {
            case .started: started.insert(row.id)
            case .blocked(let b, _): still[row.id] = b
            }
        }
        if started.isEmpty && still.isEmpty { return }
        pending.removeAll { started.contains($0.id) }
        for i in pending.indices { if let b = still[pending[i].id] { pending[i].blocker = b } }
    }

    /// Runs a preemption search, counting it against the pass's bound.
    mutating func countingSearch(_ search: (inout Pass) -> Int?) -> Int? {
        preemptionSearches += 1
        return search(&self)
    }

    /// Whether the pass can decide nothing more for this job than "waiting for GPUs": none is free, none is
    /// held or coming for it, no preemption search is left, and the reservation is taken.
    func exhausted(for id: JobID) -> Bool {
        guard reservation != nil || policy == .fifo,
            policy != .allot || preemptionSearches >= Self.maxPreemptionSearches,
            pool.totalFreeGPUs == 0, !anySharedGPU, shareTaken.isEmpty, !state.nodeTraits.anyMIGNode
        else { return false }
        return (held.isEmpty || held[id] == nil) && (incoming.isEmpty || incoming[id] == nil)
    }

    /// The job's first model in its order, when that model has an inference reserve with room for it.
    mutating func cheapestReserved(_ row: PendingQueue.Row, allowed: UInt64) -> Int? {
        guard let m = ctx.order(for: row, now: now).first(where: { allowed & (1 << UInt64($0.model)) != 0 })?.model,
            m < reserve.count, reserve[m] > 0, use(of: m, inference: true) + row.gpus <= reserve[m]
        else { return nil }
        return m
    }

    /// Whether a job has room on model `m` now: its GPUs, and where nodes declare them, its CPUs and memory
    /// beside them.
    func startsNow(_ row: PendingQueue.Row, model m: Int) -> Bool {
        guard pool.fits(model: m, count: row.gpus, topology: row.topology) else { return false }
        guard ctx.tracksHost else { return true }
        var view = restricted(pool, for: row)
        return placeWithHost(row, model: m, view: &view) != nil
    }

    /// Seconds a job taken back needs to get back to where it was when it starts again (loading its
    /// checkpoint, warming up), on top of the work since its last checkpoint: what a reclaim is priced at.
    static let restartSeconds: Seconds = 60

    /// Whether an inference job that would take loans of reserved model `m` back is better placed on a
    /// dearer model free now: the extra price for its expected lifetime (its estimate, else the mean run of
    /// inference on `m`) is below what the loans it would take back lose — the work since their last
    /// checkpoint plus a restart, at their price. Only with `lending` `.forecast`.
    mutating func spillOverIsCheaper(_ row: PendingQueue.Row, reserved m: Int, allowed: UInt64) -> Bool {
        guard lending == .forecast else { return false }
        guard
            let d = ctx.order(for: row, now: now).first(where: {
                $0.model != m && allowed & (1 << UInt64($0.model)) != 0
                    && pool.fits(model: $0.model, count: row.gpus, topology: row.topology)
                    && ($0.model >= reserve.count || reserve[$0.model] == 0
                        || use(of: $0.model, inference: true) + row.gpus <= reserve[$0.model])
            })?.model
        else { return false }
        let name = ctx.models[m].name
        let life = row.estimate.isNaN ? (state.inferenceDemand.meanRun(name) ?? ctx.estimateDefault) : row.estimate
        let spill = max(0, ctx.models[d].pricePerHour - ctx.models[m].pricePerHour) * Double(row.gpus) * life / 3600
        let loan = Loan.inferenceReserve(model: name)
        var lost: [(perGPU: Double, gpus: Int)] = []
        for v in running where !v.stopping && v.model == m && v.gpus > 0 && v.loans.contains(loan) {
            let perGPUSecond = v.costRate / Double(v.gpus)
            lost.append((perGPUSecond * (v.risk / Double(v.gpus) + Self.restartSeconds), v.gpus))
        }
        lost.sort { $0.perGPU < $1.perGPU }
        var reclaim = 0.0
        var freed = 0
        for l in lost where freed < row.gpus {
            reclaim += l.perGPU * Double(l.gpus)
            freed += l.gpus
        }
        guard freed >= row.gpus && spill < reclaim else { return false }
        spillingOver = (row.id, m)
        return true
    }

    /// The jobs stopping to make way for a job: (id, when they must be gone).
    mutating func stoppingFor(_ id: JobID) -> [(JobID, Double)] {
        var out: [(JobID, Double)] = []
        for v in running where v.preemptedFor == id { out.append((v.id, v.expectedEnd)) }
        for case .preempt(let v, let by, let grace, _) in decisions where by == id {
            out.append((v, now.seconds + grace))
        }
        return out
    }

    /// A job waiting for its victims is the first blocked job: it holds the reservation (its GPUs are already
    /// held), expected when the last victim's grace ends, so that no later job is promised a start it
    /// could then lose to a requeued victim.
    mutating func holdReservation(for id: JobID) {
        guard reservation == nil else { return }
        let eta = stoppingFor(id).map(\.1).max() ?? now.seconds
        reservation = Reservation(job: id, from: Instant(seconds: eta), allocation: nil)
        reservationEnd = eta
    }

    enum StartOutcome {
        case started
        /// Not started: why, and whether for lack of GPUs (rather than cost or a rule).
        case blocked(Blocker, capacity: Bool)
    }

    /// Places and starts a job if it can start now.
    mutating func tryStart(_ row: PendingQueue.Row, allowed: UInt64, preemptible: Bool, loans: [Loan]) -> StartOutcome {
        if row.elastic && !held.isEmpty && startOnHeld(row, allowed: allowed, loans: loans) { return .started }
        let short = !row.walltime.isNaN && now.seconds + row.walltime <= reservationEnd
        if row.isMIG { return tryStartMIG(row, allowed: allowed, short: short, loans: loans) }
        if row.gpus == 0 { return tryStartHostOnly(row, allowed: allowed, preemptible: preemptible, loans: loans) }
        if row.isShare, let (m, gpu, note) = shareOnSharedGPU(row, allowed: allowed, short: short) {
            recordShare(row, model: m, gpu: gpu, note: note, loans: loans)
            return .started
        }
        let passedHold = row.isShare && passedShareHold
        let mayUseReserved = reservation == nil || short || (policy == .allot && preemptible)
        let key = Int(row.constraint) * 3 + row.topology.ordinal
        // "No room for n GPUs" holds for every job of the same models and topology that asks no more: not
        // for a share or a job with its own CPUs or memory, which fail for reasons of their own.
        // Nor for a job whose models were narrowed (its walltime, a faster model soon).
        let memoizable =
            row.maxCostUSD.isNaN && !row.isShare && row.cpuMilli < 0 && row.memoryMiB < 0
            && allowed == ctx.allowed[Int(row.constraint)]
        // View 0: the pool without the reservation's GPUs (the whole pool before there is a reservation);
        // view 1: the whole pool, for jobs that may use reserved GPUs.
        let viewCount = (reservation != nil && open != nil && mayUseReserved) ? 2 : 1
        var best: (Blocker, Bool)?
        for v in 0..<viewCount {
            let usesWholePool = v == 1 || open == nil
            let mine = held.isEmpty ? [] : (held[row.id] ?? [])
            if memoizable && row.gpus >= memo[v][key] && mine.isEmpty { continue }
            let outcome: Attempt
            let base = usesWholePool ? pool : open!
            outcome = attempt(
                row,
                allowed: allowed,
                preemptible: preemptible,
                view: restricted(mine.isEmpty ? base : adding(mine, to: base), for: row),
                wholePool: mine.isEmpty ? usesWholePool : nil
            )
            switch outcome {
            case .placed(let m, let slices, let note, var more):
                var all = loans
                // On reserved GPUs (also GPUs held for it that the reservation counts on): lent, unless it
                // ends before the reservation starts or it was placed without them.
                if reservation != nil && !short && (usesWholePool || (mayUseReserved && !mine.isEmpty)) {
                    let touches = slices.contains { (reservedMasks[$0.node] ?? 0) & $0.mask != 0 }
                    if touches { all.append(.reservation(for: reservation!.job)) }
                }
                more.removeAll { all.contains($0) }
                all.append(contentsOf: more)
                record(row, model: m, slices: slices, note: note, loans: all)
                return .started
            case .failed(let b, let capacity):
                if capacity && memoizable && mine.isEmpty { memo[v][key] = min(memo[v][key], row.gpus) }
                if best == nil || (best!.1 && !capacity) { best = (b, capacity) }
            }
        }
        // Held back by the reservation rather than by capacity?
        if let r = reservation, !mayUseReserved, open != nil, best?.1 ?? true,
            fitsAny(row, allowed: allowed, view: restricted(pool, for: row))
        {
            return .blocked(.reserved(for: r.job, from: r.from), capacity: false)
        }
        if passedHold, let h = shareHold, best?.1 ?? true {
            return .blocked(.reserved(for: h.job, from: Instant(seconds: h.from)), capacity: false)
        }
        if row.isShare, best.map({ b in if case .insufficientGPUs = b.0 { true } else { false } }) ?? true {
            return .blocked(.noShareRoom(detail: shareShortage(row, allowed: allowed)), capacity: true)
        }
        if let best { return .blocked(best.0, capacity: best.1) }
        return .blocked(ctx.shortage(row.gpus, allowed: allowed, pool: pool), capacity: true)
    }

    func fitsAny(_ row: PendingQueue.Row, allowed: UInt64, view: FreePool) -> Bool {
        for i in (allowed).setBits {
            if view.fits(model: i, count: row.gpus, topology: row.topology) { return true }
        }
        return false
    }

    enum Attempt {
        case placed(model: Int, slices: [NodeMask], note: PlacementNote, loans: [Loan])
        case failed(Blocker, capacity: Bool)
    }

    /// Tries the job's models in its preference order on a view: constraints, cost limit, inference reserve,
    /// hard budget, then room. Takes nothing.
    /// - Parameter wholePool: whether `view` is the whole pool or `open` (for ``noHostRoom``); nil when it is
    ///   neither (GPUs held for the job added).
    mutating func attempt(
        _ row: PendingQueue.Row,
        allowed: UInt64,
        preemptible: Bool,
        view: FreePool,
        wholePool: Bool? = nil
    ) -> Attempt {
        var cheapestOverLimit = Double.infinity
        var rule: Blocker?
        var anyRoom = false
        var hostShort: Blocker?
        for (m, ruleName) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            if row.isShare && row.share(on: ctx.models[m]) < 0 { continue }
            let seconds = ctx.expectedSeconds(row, model: m)
            let cost = ctx.models[m].pricePerHour * row.worth(on: ctx.models[m]) * seconds / 3600
            guard view.fits(model: m, count: row.gpus, topology: row.topology) else { continue }
            anyRoom = true
            if !row.maxCostUSD.isNaN, cost > row.maxCostUSD {
                cheapestOverLimit = min(cheapestOverLimit, cost)
                continue
            }
            var loans: [Loan] = []
            if policy == .allot && row.kind != .inference && m < reserve.count && reserve[m] > 0 {
                let others = use(of: m, inference: false)
                if others + row.gpus > ctx.capacity[m] - reserve[m] {
                    let loan = Loan.inferenceReserve(model: ctx.models[m].name)
                    if !preemptible {
                        if rule == nil { rule = .mustBorrow(loan) }
                        continue
                    }
                    if lending == .forecast && !lendingLeftovers {
                        // First to the jobs that are expected to end before inference is expected to need it.
                        let horizon = seconds
                        let f = forecast(model: m, for: horizon)
                        if others + row.gpus + f.peak > ctx.capacity[m] {
                            if rule == nil {
                                rule = .reserveNeeded(
                                    model: ctx.models[m].name,
                                    expectedGPUs: f.peak,
                                    reserve: reserve[m],
                                    within: horizon,
                                    basis: f.basis
                                )
                            }
                            continue
                        }
                    }
                    loans.append(loan)
                }
            }
            if policy == .allot, let b = hardBudgetBlocker(row, extraCost: cost) {
                if rule == nil { rule = b }
                continue
            }
            var p = view
            guard var slices = p.place(model: m, count: row.gpus, topology: row.topology) else { continue }
            if (ctx.tracksHost || (row.isShare && ctx.anyNodeWithoutShares))
                && !slices.allSatisfy({ accepts(row, node: $0.node, gpus: $0.mask.nonzeroBitCount) })
            {
                // The GPUs' best fit lacks CPUs or memory, or takes no shares: look among the nodes that do.
                p = view
                let key =
                    wholePool.map {
                        HostRoomKey(
                            shape: HostShape(row, allowed: 1 << UInt64(m)),
                            constraint: row.constraint,
                            wholePool: $0,
                            sparesReserved: sparesReservedHost(row)
                        )
                    }
                let known = key.map { !row.isShare && noHostRoom.contains($0) } ?? false
                guard !known, let placed = placeWithHost(row, model: m, view: &p) else {
                    if let key, !row.isShare { noHostRoom.insert(key) }
                    if ctx.tracksHost, hostShort == nil, let first = slices.first {
                        let need = hostNeed(row, node: first.node, gpus: row.gpus)
                        hostShort = .hostResources(needed: row.gpus, cpuMilli: need.cpu, memoryMiB: need.memory)
                    }
                    continue
                }
                slices = placed
            }
            // A share on a fresh GPU leaves the rest of that GPU; whole GPUs leave their nodes' free GPUs.
            let holes =
                row.isShare
                ? FractionPool.milli - row.share(on: ctx.models[m]) : slices.reduce(0) { $0 + p.freeCount($1.node) }
            let note = PlacementNote(
                rule: spillingOver.map { $0.job == row.id && $0.from != m } == true ? .spillOver : ruleName,
                model: ctx.models[m].name,
                expectedSeconds: seconds,
                estimatedCostUSD: cost,
                holesLeft: holes
            )
            return .placed(model: m, slices: slices, note: note, loans: loans)
        }
        if let rule { return .failed(rule, capacity: false) }
        if let hostShort { return .failed(hostShort, capacity: true) }
        if cheapestOverLimit.isFinite {
            return .failed(.overMaxCost(cheapestUSD: cheapestOverLimit, limitUSD: row.maxCostUSD), capacity: false)
        }
        _ = anyRoom
        return .failed(ctx.shortage(row.gpus, allowed: allowed, pool: view), capacity: true)
    }

    mutating func record(
        _ row: PendingQueue.Row,
        model m: Int,
        slices: [NodeMask],
        note: PlacementNote,
        loans: [Loan]
    ) {
        takeEverywhere(slices)
        release(heldFor: row.id, except: slices)
        if reservation == nil && !row.isShare && policy != .fifo {
            startedEnds.append((now.seconds + expectedRun(row, model: m), row.id, slices))
        }
        if row.isShare, let s = slices.first {
            // A share breaks a fresh GPU: later shares in this pass may fill the rest of it.
            let gpu = NodeGPU(node: s.node, gpu: s.mask.trailingZeroBitCount)
            if sharedGPUs == nil { sharedGPUs = state.sharedGPUs(models: ctx.modelCount) }
            if !sharedGPUs![m].contains(gpu) { sharedGPUs![m].append(gpu) }
        }
        decideStart(
            row,
            model: m,
            on: slices.map { ($0.node, $0.mask.bitIndices) },
            note: note,
            loans: loans,
            freshGPUs: true
        )
    }

    /// The start decision, and what it takes for the rest of the pass: shares, CPUs and memory, the tenant's
    /// GPUs and spend, and (for `freshGPUs`, not a share joining a shared GPU) its model's use by kind.
    mutating func decideStart(
        _ row: PendingQueue.Row,
        model m: Int,
        on slices: [(node: Int, gpus: [Int])],
        note: PlacementNote,
        loans: [Loan],
        freshGPUs: Bool,
        mig: (slot: MIGSlot, milli: Int)? = nil
    ) {
        let share = row.isShare ? row.share(on: ctx.models[m]) : nil
        if !shortages.isEmpty { shortages.removeAll(keepingCapacity: true) }
        if let share, let s = slices.first, let g = s.gpus.first {
            shareTaken[NodeGPU(node: s.node, gpu: g), default: 0] += share
            shareOwner[NodeGPU(node: s.node, gpu: g)] = row.uid
        }
        let worth = mig.map { Double($0.milli) / 1000 }
        let allocation = Allocation(
            model: ctx.models[m].name,
            slices: slices.map { hostSlice(row, node: $0.node, gpus: $0.gpus, worth: worth) },
            share: share,
            mig: mig?.slot,
            migMilli: mig?.milli
        )
        decisions.append(.start(row.id, on: allocation, why: note, loans: loans))
        let tenant = state.pendingJobs.tenants.values[Int(row.tenant)]
        let milli = mig?.milli ?? share ?? row.gpus * 1000
        addMilli(milli, tenant: tenant)
        if firm != nil && !classes.preemptible(row) {
            firm?.add(milli, tenant: tenant, quota: state.config.tenant(named: tenant).gpuQuota ?? 0)
        }
        addedCost[tenant, default: 0] += note.estimatedCostUSD
        if freshGPUs && policy == .allot && !reserve.isEmpty {
            addUse(of: m, inference: row.kind == .inference, gpus: row.gpus)
        }
    }

    /// When the job fits in the free GPUs plus those of jobs stopping for it (and, where nodes declare them,
    /// the CPUs and memory they give back), holds the free part for it and returns true.
    mutating func holdIfFits(_ row: PendingQueue.Row, allowed: UInt64, with extra: [NodeMask]) -> Bool {
        let view = restricted(adding(extra + (held[row.id] ?? []), to: pool), for: row)
        if ctx.tracksHost {
            let credit = stoppingCredit(for: row.id)
            for (m, _) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
                if holdWithHost(row, model: m, node: nil, view: view, credit: credit) { return true }
            }
            return false
        }
        for (m, _) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            var p = view
            guard let slices = p.place(model: m, count: row.gpus, topology: row.topology) else { continue }
            takeEverywhere(slices.map { NodeMask(node: $0.node, mask: $0.mask & pool.free[$0.node]) })
            return true
        }
        return false
    }

    // MARK: Admission

    /// The hard-budget blocker for a tenant, if starting this job (of estimated cost `extraCost`) would go
    /// past the budget: spent in the window, plus the expected remaining cost of its running jobs and of this
    /// pass's starts, plus this job.
    mutating func hardBudgetBlocker(_ row: PendingQueue.Row, extraCost: Double) -> Blocker? {
        guard anyHardBudget, let b = tenantConfig[Int(row.tenant)].budget, b.enforcement == .hard else { return nil }
        let tenant = state.pendingJobs.tenants.values[Int(row.tenant)]
        let spent = state.spent(by: tenant, in: b.window, at: now)
        let projected = spent + committed(by: tenant) + addedCost[tenant, default: 0] + extraCost
        if extraCost == 0 ? projected >= b.usd : projected > b.usd {
            return .overBudget(tenant: tenant, spentUSD: spent, limitUSD: b.usd, window: b.window)
        }
        return nil
    }

    enum QuotaAdmission {
        case free
        case loan(Loan)
        case blocked(Blocker)
    }

    /// GPUs a tenant's non-preemptible jobs hold.
    mutating func firmUse(by tenant: String) -> Int {
        firmLedger().byTenant[tenant, default: 0]
    }

    /// The non-preemptible use, built now if nothing needed it before.
    private mutating func firmLedger() -> FirmUse {
        if let firm { return firm }
        let built = FirmUse(running, state: state)
        firm = built
        return built
    }

    /// Whether a job's tenant is within its guarantee with it: a non-preemptible job counts against its
    /// tenant's non-preemptible use (the guarantee goes to those first), a preemptible one against all.
    mutating func withinQuota(_ row: PendingQueue.Row, tenant: String, preemptible: Bool) -> Bool {
        let quota = state.config.tenant(named: tenant).gpuQuota ?? 0
        return (preemptible ? milliInUse(by: tenant) : firmUse(by: tenant)) + quotaMilli(row) <= quota * 1000
    }

    /// Quotas are guarantees, and a tenant's guarantee goes first to its non-preemptible jobs. A tenant may
    /// use more than its quota (no more than its borrowing limit beyond it): a preemptible job then runs on a
    /// loan that a job within its guarantee can take back; a job that is not preemptible may go beyond only
    /// while such borrowing stays within the GPUs nobody is guaranteed, so every guarantee can still be met by
    /// taking loans back.
    mutating func quotaAdmission(_ row: PendingQueue.Row, preemptible: Bool) -> QuotaAdmission {
        // A job of CPUs only borrows no GPU: GPU quotas neither limit nor lend it.
        guard quotasInForce, row.gpus > 0 else { return .free }
        let tenant = state.pendingJobs.tenants.values[Int(row.tenant)]
        let t = tenantConfig[Int(row.tenant)]
        let quota = t.gpuQuota ?? 0
        let used = milliInUse(by: tenant)
        let need = quotaMilli(row)
        if let limit = t.borrowLimit, used + need > (quota + limit) * 1000 {
            return .blocked(
                .overQuota(tenant: tenant, inUse: Double(used) / 1000, quota: quota, borrowLimit: limit)
            )
        }
        if withinQuota(row, tenant: tenant, preemptible: preemptible) { return .free }
        let loan = Loan.quota(tenant: tenant)
        if preemptible { return .loan(loan) }
        let firm = firmUse(by: tenant)
        let more = max(0, firm + need - quota * 1000) - max(0, firm - quota * 1000)
        let ledger = firmLedger()
        return ledger.borrowedTotal + more <= ledger.unassigned ? .free : .blocked(.mustBorrow(loan))
    }
}

/// What non-preemptible jobs hold against their tenants' quotas, in thousandths of GPUs.
struct FirmUse {
    /// Thousandths of GPUs held by non-preemptible jobs, by tenant.
    var byTenant: [String: Int] = [:]
    /// Non-preemptible thousandths beyond quotas, over all tenants.
    var borrowedTotal = 0
    /// Thousandths no tenant is guaranteed: total minus the sum of quotas.
    var unassigned = 0

    init(_ running: [RunView], state: ClusterState) {
        for r in running where !r.preemptible { byTenant[r.tenant, default: 0] += r.milli }
        var quotas = 0
        for t in state.config.tenants { quotas += t.gpuQuota ?? 0 }
        unassigned = max(0, state.totalGPUs - quotas) * 1000
        borrowedTotal = byTenant.reduce(0) {
            $0 + max(0, $1.value - (state.config.tenant(named: $1.key).gpuQuota ?? 0) * 1000)
        }
    }

    /// A start of `milli` thousandths of non-preemptible GPUs for a tenant with this quota (in GPUs).
    mutating func add(_ milli: Int, tenant: String, quota: Int) {
        let before = byTenant[tenant, default: 0]
        byTenant[tenant] = before + milli
        borrowedTotal += max(0, before + milli - quota * 1000) - max(0, before - quota * 1000)
    }
}

/// GPUs of each model held by inference jobs and by the others.
struct KindUse {
    var inference: [Int]
    var other: [Int]

    init(_ running: [RunView], models: Int) {
        inference = [Int](repeating: 0, count: models)
        other = inference
        for r in running {
            if r.kind == .inference { inference[r.model] += r.gpus } else { other[r.model] += r.gpus }
        }
    }

    mutating func add(_ gpus: Int, model: Int, inference isInference: Bool) {
        if isInference { inference[model] += gpus } else { other[model] += gpus }
    }
}

// MARK: Shares of GPUs

/// What a share job asks of one GPU: thousandths of its compute and MiB of its memory (0: none).
struct ShareAsk: Hashable, Sendable {
    var compute: Int
    var memoryMiB: Int
}

/// A shared GPU held for a share job that waits for room on it.
struct ShareHold: Hashable, Sendable {
    var job: JobID
    var gpu: NodeGPU
    var model: Int
    /// Thousandths of the GPU the job takes there.
    var share: Int
    /// When its shares are expected to have left the room (seconds; finite).
    var from: Double
    /// Thousandths of the GPU expected free beside it then: shares up to that may join the GPU now without
    /// delaying it (EASY backfill's extra room).
    var spare: Int
}

extension Pass {
    /// The shared GPU with room for a share job, in the job's model order, whose room left the shares asked
    /// for can use best (``fragmentGrowth(room:taking:model:)``; then the fullest): shares fill GPUs that are
    /// already broken before they break a fresh one (the whole-GPU placement does that, in ``attempt``).
    /// Respects the job's models, cost limit and hard budget, and GPUs held for the reservation.
    mutating func shareOnSharedGPU(
        _ row: PendingQueue.Row,
        allowed: UInt64,
        short: Bool
    ) -> (model: Int, gpu: NodeGPU, note: PlacementNote)? {
        passedShareHold = false
        guard anySharedGPU || !shareTaken.isEmpty else { return nil }
        if sharedGPUs == nil { sharedGPUs = state.sharedGPUs(models: ctx.modelCount) }
        let mayUseReserved = reservation == nil || short
        // The GPU held for a larger share: room beyond what it needs is open to all; the rest only to a job
        // whose walltime ends before it is needed.
        let hold = shareHold.flatMap { h in
            h.job == row.id || (!row.walltime.isNaN && now.seconds + row.walltime <= h.from) ? nil : h.gpu
        }
        for (m, ruleName) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            let share = row.share(on: ctx.models[m])
            if share < 0 { continue }
            var best: (gpu: NodeGPU, room: Int, growth: Int)?
            for gpu in sharedGPUs![m] {
                let bit = UInt64(1) << UInt64(gpu.gpu)
                guard mayShare(row, gpu: gpu), mayUseReserved || (reservedMasks[gpu.node] ?? 0) & bit == 0 else {
                    continue
                }
                let room = shareRoom(gpu)
                guard room >= share else { continue }
                if gpu == hold && share > shareHold!.spare {
                    passedShareHold = true
                    continue
                }
                let growth = fragmentGrowth(room: room, taking: share, model: m)
                if best == nil
                    || (growth, room, gpu.node, gpu.gpu) < (best!.growth, best!.room, best!.gpu.node, best!.gpu.gpu)
                {
                    best = (gpu, room, growth)
                }
            }
            guard let best else { continue }
            let seconds = ctx.expectedSeconds(row, model: m)
            let cost = ctx.models[m].pricePerHour * Double(share) / 1000 * seconds / 3600
            if !row.maxCostUSD.isNaN, cost > row.maxCostUSD { continue }
            if policy == .allot, hardBudgetBlocker(row, extraCost: cost) != nil { continue }
            let note = PlacementNote(
                rule: ruleName,
                model: ctx.models[m].name,
                expectedSeconds: seconds,
                estimatedCostUSD: cost,
                holesLeft: best.room - share
            )
            if best.gpu == hold { shareHold!.spare -= share }
            return (m, best.gpu, note)
        }
        return nil
    }

    /// What a share that found no room lacks, for `why`: the most room on a shared GPU it may join, in its
    /// terms (GPU memory for a share of memory, else thousandths of a GPU).
    mutating func shareShortage(_ row: PendingQueue.Row, allowed: UInt64) -> String {
        // Every blocked share would walk every shared GPU again: shares of one shape are told the same.
        let shape = ShareShape(
            allowed: allowed,
            constraint: Int(row.constraint),
            share: row.share,
            gpuMemoryMiB: row.gpuMemoryMiB,
            cpuMilli: Int(row.cpuMilli),
            memoryMiB: Int(row.memoryMiB),
            uid: row.uid
        )
        if let known = shortages[shape] { return known }
        let text = findShareShortage(row, allowed: allowed)
        shortages[shape] = text
        return text
    }

    private mutating func findShareShortage(_ row: PendingQueue.Row, allowed: UInt64) -> String {
        if sharedGPUs == nil { sharedGPUs = state.sharedGPUs(models: ctx.modelCount) }
        let memory = row.share <= 0 && row.gpuMemoryMiB > 0
        var roomiest: (room: Int, gpu: NodeGPU, model: Int)?
        for (m, _) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            guard row.share(on: ctx.models[m]) >= 0 else { continue }
            for gpu in sharedGPUs![m] where mayShare(row, gpu: gpu) {
                let room = shareRoom(gpu)
                if roomiest == nil || room > roomiest!.room { roomiest = (room, gpu, m) }
            }
        }
        func gib(_ tenths: Int) -> String {
            tenths % 10 == 0 ? "\(tenths / 10) GiB" : "\(tenths / 10).\(tenths % 10) GiB"
        }
        let need =
            memory
            ? "no GPU has \(Fraction.mebibytes(row.gpuMemoryMiB)) free"
            : "no GPU has room for \(Fraction.text(Int(row.share))) of it"
        guard let r = roomiest else { return need + ", and every GPU it may use is taken whole or down" }
        let gap =
            memory
            ? gib(Int(Double(max(0, r.room)) * ctx.models[r.model].memoryGiB * 10 / 1000))
            : Fraction.text(max(0, r.room))
        let at = "\(state.nodes[r.gpu.node].name) GPU \(r.gpu.gpu)"
        return need + ": the largest gap is \(gap) on \(at), and no GPU it may use is free whole"
    }

    /// How much of a shared GPU's room the shares asked for could not use grows when `share` of it is taken:
    /// FGD's fragmentation (Weng et al., ATC'23) on one GPU, with the running and pending shares as the mix of
    /// requests to come. Room smaller than a shape's need is lost to that shape, weighted by how many ask for
    /// it. Best fit leaves 0.3 of a GPU's 0.5 to a 0.2 share where 0.1 of another's 0.3 would be lost to the
    /// 0.3 shares behind it; this keeps both 0.3 slots.
    mutating func fragmentGrowth(room: Int, taking share: Int, model m: Int) -> Int {
        let after = room - share
        var growth = 0
        for (need, count) in shareNeeds(model: m) {
            growth += count * ((after < need ? after : 0) - (room < need ? room : 0))
        }
        return growth
    }

    /// The thousandths of a GPU of `model` that the running and pending shares take, with how many take each.
    private mutating func shareNeeds(model m: Int) -> [(need: Int, count: Int)] {
        if let known = shareNeedCache[m] { return known }
        if shareMix == nil {
            var mix: [ShareAsk: Int] = [:]
            for row in rows where row.isShare {
                mix[ShareAsk(compute: row.share, memoryMiB: max(row.gpuMemoryMiB, 0)), default: 0] += 1
            }
            for v in running where v.share > 0 {
                guard let spec = state.jobs[v.id]?.spec else { continue }
                mix[ShareAsk(compute: spec.gpuShare ?? 0, memoryMiB: spec.gpuMemoryMiB ?? 0), default: 0] += 1
            }
            shareMix = mix
        }
        var needs: [Int: Int] = [:]
        for (ask, count) in shareMix! {
            let need = JobSpec.shareMilli(
                compute: ask.compute,
                memoryMiB: ask.memoryMiB,
                modelMemoryGiB: ctx.models[m].memoryGiB
            )
            if need > 0 { needs[need, default: 0] += count }
        }
        let out = needs.sorted { $0.key < $1.key }.map { (need: $0.key, count: $0.value) }
        shareNeedCache[m] = out
        return out
    }

    /// Thousandths of a shared GPU still free, counting this pass's shares.
    func shareRoom(_ gpu: NodeGPU) -> Int {
        1000 - state.nodes[gpu.node].shareUsed[gpu.gpu] - shareTaken[gpu, default: 0]
    }

    /// Whether a share job may join shared GPU `gpu` at all (room aside): its node is schedulable and admits
    /// it, the GPU is healthy and not held whole, the node has its CPUs and memory, and the GPU's sharing
    /// takes its user (an MPS GPU serves one user).
    func mayShare(_ row: PendingQueue.Row, gpu: NodeGPU) -> Bool {
        let node = state.nodes[gpu.node]
        return node.schedulable && admitted(row, node: gpu.node)
            && node.unhealthyMask & (UInt64(1) << UInt64(gpu.gpu)) == 0
            && node.holder[gpu.gpu] == nil
            && (!ctx.tracksHost || fitsHost(row, node: gpu.node, gpus: 1))
            && node.acceptsShare(uid: row.uid, onGPU: gpu.gpu, owners: { state.jobs[$0]?.spec.uid })
            && (node.spec.sharing != .mps || (shareOwner[gpu] ?? row.uid) == row.uid)
    }

    /// Holds, for a share job that found no room, the shared GPU its running shares are expected to leave
    /// room on soonest (their walltimes or estimates): later shares in this pass may join it only in the room
    /// it will not need then, or if they end before then (EASY backfill, on one GPU). A GPU that frees whole
    /// is no hold's business: the job goes before the jobs behind it for free GPUs anyway. Shares started in
    /// this pass are not counted on to end.
    mutating func holdShare(for row: PendingQueue.Row, allowed: UInt64) {
        if sharedGPUs == nil { sharedGPUs = state.sharedGPUs(models: ctx.modelCount) }
        var ends: [NodeGPU: [(end: Double, milli: Int)]] = [:]
        for v in running where v.share > 0 {
            guard let s = v.slices.first else { continue }
            let gpu = NodeGPU(node: s.node, gpu: s.mask.trailingZeroBitCount)
            ends[gpu, default: []].append((max(v.expectedEnd, now.seconds), v.share))
        }
        var best: ShareHold?
        for (m, _) in ctx.order(for: row, now: now) where allowed & (1 << UInt64(m)) != 0 {
            let share = row.share(on: ctx.models[m])
            if share < 0 { continue }
            for gpu in sharedGPUs![m] where mayShare(row, gpu: gpu) {
                var room = shareRoom(gpu)
                var at = now.seconds
                let sorted = (ends[gpu] ?? []).sorted { $0.end < $1.end }
                var k = 0
                while room < share && k < sorted.count {
                    room += sorted[k].milli
                    at = sorted[k].end
                    k += 1
                }
                guard room >= share, at.isFinite else { continue }
                // Shares expected to end by then leave their room too.
                while k < sorted.count && sorted[k].end <= at {
                    room += sorted[k].milli
                    k += 1
                }
                if best == nil || at < best!.from
                    || (at == best!.from && (gpu.node, gpu.gpu) < (best!.gpu.node, best!.gpu.gpu))
                {
                    best = ShareHold(job: row.id, gpu: gpu, model: m, share: share, from: at, spare: room - share)
                }
            }
        }
        shareHold = best
    }

    /// Starts a share job on a GPU already shared: it takes no free GPU.
    mutating func recordShare(_ row: PendingQueue.Row, model m: Int, gpu: NodeGPU, note: PlacementNote, loans: [Loan]) {
        release(heldFor: row.id, except: [])
        decideStart(row, model: m, on: [(gpu.node, [gpu.gpu])], note: note, loans: loans, freshGPUs: false)
    }
}

// MARK: CPUs and memory

extension Pass {
    /// What a pending job takes of node `i`'s CPUs and memory with `k` of its GPUs there.
    /// (`worth`: the GPUs' worth it takes there when not its share or GPU count: a MIG instance's.)
    func hostNeed(_ row: PendingQueue.Row, node i: Int, gpus k: Int, worth: Double? = nil) -> (cpu: Int?, memory: Int?)
    {
        let r = state.nodes[i].hostResources(
            cpuMilli: row.cpuMilli >= 0 ? row.cpuMilli : nil,
            memoryMiB: row.memoryMiB >= 0 ? row.memoryMiB : nil,
            jobGPUs: row.gpus,
            gpus: k,
            worth: worth ?? (row.isShare ? row.worth(on: ctx.models[state.nodes[i].modelIndex]) : Double(k))
        )
        return (r.cpuMilli, r.memoryMiB)
    }

    /// Whether node `i` has a pending job's CPUs and memory free for `k` of its GPUs, counting this pass's
    /// starts (and `plus`, given back by jobs told to stop).
    func fitsHost(
        _ row: PendingQueue.Row,
        node i: Int,
        gpus k: Int,
        worth: Double? = nil,
        plus: (cpu: Int, memory: Int) = (0, 0)
    ) -> Bool {
        let need = hostNeed(row, node: i, gpus: k, worth: worth)
        var taken = passHostTaken(node: i)
        taken.cpu -= plus.cpu
        taken.memory -= plus.memory
        if let r = hostReserved[i], sparesReservedHost(row) {
            taken.cpu += r.cpu
            taken.memory += r.memory
        }
        return state.nodes[i].hostFits(
            cpu: need.cpu,
            memory: need.memory,
            extraCPU: taken.cpu,
            extraMemory: taken.memory
        )
    }

    /// CPUs and memory of node `i` taken by this pass's starts, less what ``hostCredit`` gives back.
    func passHostTaken(node i: Int) -> (cpu: Int, memory: Int) {
        var taken = hostTaken[i] ?? (0, 0)
        if let c = hostCredit[i] {
            taken.cpu -= c.cpu
            taken.memory -= c.memory
        }
        return taken
    }

    /// Whether a pending job must leave the reservation's CPUs and memory alone: it is not the reservation's
    /// job, and would still run when that starts.
    func sparesReservedHost(_ row: PendingQueue.Row) -> Bool {
        guard !hostReserved.isEmpty, let r = reservation, r.job != row.id else { return false }
        return row.walltime.isNaN || now.seconds + row.walltime > reservationEnd
    }

    /// Whether node `i` takes `k` of a pending job's GPUs: its CPUs and memory are free there, and a share
    /// finds the node taking shares.
    func accepts(_ row: PendingQueue.Row, node i: Int, gpus k: Int) -> Bool {
        admitted(row, node: i) && (!row.isShare || state.nodes[i].spec.sharing != .off)
            && fitsHost(row, node: i, gpus: k)
    }

    /// Places a gang only on nodes that accept it (CPUs, memory, shares): one node when one holds it (best fit on
    /// GPUs), else (topology `any`) the nodes with the most free GPUs first, each taking as many GPUs as its
    /// CPUs and memory allow. Takes the GPUs from `view`; nil (taking nothing) when no placement fits.
    func placeWithHost(_ row: PendingQueue.Row, model m: Int, view: inout FreePool) -> [NodeMask]? {
        let n = row.gpus
        var chosen: [NodeMask]?
        let v = view
        _ = v.forEachFitting(model: m, atLeast: n) { i in
            guard accepts(row, node: i, gpus: n), let mask = v.pick(node: i, count: n, nvlink: row.topology == .nvlink)
            else { return false }
            chosen = [NodeMask(node: i, mask: mask)]
            return true
        }
        if chosen == nil && row.topology == .any {
            let nodes = v.modelNodes[m].filter { v.freeCount($0) > 0 }.sorted {
                v.freeCount($0) != v.freeCount($1) ? v.freeCount($0) > v.freeCount($1) : $0 < $1
            }
            var left = n
            var out: [NodeMask] = []
            for i in nodes where left > 0 {
                var k = min(v.freeCount(i), left)
                while k > 0 && !accepts(row, node: i, gpus: k) { k -= 1 }
                guard k > 0, let mask = v.pick(node: i, count: k, nvlink: false) else { continue }
                out.append(NodeMask(node: i, mask: mask))
                left -= k
            }
            if left == 0 { chosen = out }
        }
        guard let chosen else { return nil }
        for s in chosen { view.take(node: s.node, mask: s.mask) }
        return chosen
    }

    /// A slice of an allocation, with what it takes of the node's CPUs and memory (counted for the rest of
    /// the pass).
    mutating func hostSlice(_ row: PendingQueue.Row, node i: Int, gpus: [Int], worth: Double? = nil) -> Allocation.Slice
    {
        let need = hostNeed(row, node: i, gpus: gpus.count, worth: worth)
        if need.cpu != nil || need.memory != nil {
            hostTaken[i, default: (0, 0)].cpu += need.cpu ?? 0
            hostTaken[i, default: (0, 0)].memory += need.memory ?? 0
        }
        return Allocation.Slice(node: state.nodes[i].name, gpus: gpus, cpuMilli: need.cpu, memoryMiB: need.memory)
    }
}

/// What decides where a share may go (its models, node selection, size, CPUs and memory, and user): shares
/// of one shape are told the same shortage.
struct ShareShape: Hashable {
    var allowed: UInt64
    var constraint: Int
    var share: Int
    var gpuMemoryMiB: Int
    var cpuMilli: Int
    var memoryMiB: Int
    var uid: UInt32
}

/// A request for CPUs and memory beside whole GPUs, on one model, in one view of a pass (``Pass/noHostRoom``).
struct HostRoomKey: Hashable {
    var shape: HostShape
    var constraint: Int32
    var wholePool: Bool
    var sparesReserved: Bool
}

/// The shape of a request for CPUs and memory, for memoizing what can never fit.
struct HostShape: Hashable {
    var cpuMilli: Int
    var memoryMiB: Int
    var gpus: Int
    var share: Int
    var topology: Topology
    var allowed: UInt64

    /// A pending job's request, on the models `allowed`.
    init(_ row: PendingQueue.Row, allowed: UInt64) {
        cpuMilli = row.cpuMilli
        memoryMiB = row.memoryMiB
        gpus = row.gpus
        share = row.share
        topology = row.topology
        self.allowed = allowed
    }
}

extension Pass {
    /// Whether no nodes could ever hold the job's CPUs and memory (memoized per request shape).
    mutating func hostNeverFits(_ row: PendingQueue.Row, allowed: UInt64) -> Blocker? {
        let shape = HostShape(row, allowed: allowed)
        if let known = neverFits[shape] { return known }
        let b = state.hostNeverFits(
            cpuMilli: row.cpuMilli >= 0 ? row.cpuMilli : nil,
            memoryMiB: row.memoryMiB >= 0 ? row.memoryMiB : nil,
            gpus: row.gpus,
            share: row.share,
            topology: row.topology,
            allowed: allowed
        )
        neverFits[shape] = b
        return b
    }
}
