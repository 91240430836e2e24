import Testing

@testable import AllotCore

/// Backfill, preemption, loans, quotas, budgets and preferences (issue: scheduling policy).
@Suite struct PolicyTests {
    /// One A100 node (or several), with the size factor off so that age alone orders jobs of a class.
    static func oneModel(nodes: Int = 1, gpus: Int = 8, tweak: (inout PoolConfig) -> Void = { _ in }) -> ClusterState {
        ClusterState.fixture(
            models: [.a100],
            nodes: (1...nodes).map { ("n\($0)", "A100", gpus, []) },
            tweak: { config in
                config.scheduler.sizeWeight = 0
                tweak(&config)
            }
        )
    }

    // MARK: Backfill

    @Test(arguments: [Scheduler.Policy.backfill, .allot])
    func blockedJobGetsAReservationFromRunningWalltimes(policy: Scheduler.Policy) {
        var s = Self.oneModel()
        s.submit(.training(6) { $0.walltime = 1000 }, at: 0)
        s.schedule(at: 0, policy: policy)
        let big = s.submit(.training(8), at: 10)
        let pass = s.schedule(at: 10, policy: policy)
        #expect(pass.reservation?.job == big)
        #expect(pass.reservation?.from == Instant(seconds: 1000))
        #expect(pass.reservation?.allocation?.gpuCount == 8)
    }

    @Test(arguments: [Scheduler.Policy.backfill, .allot])
    func shortJobsBackfillIntoReservedGPUsAndLongOnesDoNot(policy: Scheduler.Policy) {
        var s = Self.oneModel()
        s.submit(.training(4) { $0.walltime = 1000 }, at: 0)
        s.schedule(at: 0, policy: policy)
        let big = s.submit(.training(8), at: 10)
        // Ends at 10 + 500 < 1000: cannot delay the reservation.
        let short = s.submit(.training(2) { $0.walltime = 500 }, at: 11)
        // Ends at 10 + 5000 > 1000, and is not preemptible: must not take the reserved GPUs.
        let long = s.submit(
            .training(2) {
                $0.walltime = 5000; $0.preemptible = false
            },
            at: 12
        )
        let pass = s.schedule(at: 20, policy: policy)
        #expect(s.starts(pass).contains(short))
        #expect(!s.starts(pass).contains(long))
        #expect(pass.reason(for: long)?.blocker == .reserved(for: big, from: Instant(seconds: 1000)))
        if case .start(_, _, _, let loans)? = pass.decisions.first(where: { $0.jobID == short }) {
            #expect(loans.isEmpty, "a job that ends before the reservation borrows nothing")
        }
    }

    @Test func jobsWithoutWalltimeNeverBackfillIntoReservedGPUsUnderTheBaseline() {
        var s = Self.oneModel()
        s.submit(.training(6) { $0.walltime = 1000 }, at: 0)
        s.schedule(at: 0, policy: .backfill)
        let big = s.submit(.training(8), at: 10)
        let free = s.submit(.training(2), at: 11)
        let pass = s.schedule(at: 20, policy: .backfill)
        #expect(s.starts(pass).isEmpty)
        #expect(pass.reason(for: free)?.blocker == .reserved(for: big, from: Instant(seconds: 1000)))
    }

    @Test func allotLendsReservedGPUsToPreemptibleJobsAndTakesThemBack() {
        var s = Self.oneModel()
        let first = s.submit(.training(6) { $0.walltime = 1000 }, at: 0)
        s.schedule(at: 0)
        let big = s.submit(.training(8), at: 10)
        let borrower = s.submit(.training(2), at: 11)  // no walltime, preemptible (class training)
        let pass = s.schedule(at: 20)
        #expect(s.starts(pass) == [borrower])
        #expect(s.jobs[borrower]?.loans == [.reservation(for: big)])
        // When the first job ends, the reservation holder takes the loan back at once.
        s.finish(first, at: 800)
        let reclaim = s.schedule(at: 800)
        #expect(s.preemptions(reclaim).map(\.victim) == [borrower])
        #expect(s.preemptions(reclaim).first?.reason == .reservation)
        #expect(reclaim.reason(for: big)?.blocker == .waitingForPreemption(victims: 1))
        if case .preempt(_, _, let grace, _)? = reclaim.decisions.first {
            #expect(grace == s.config.preemption.loanGrace)
        }
        s.finish(borrower, code: 143, at: 805)
        let start = s.schedule(at: 805)
        #expect(s.starts(start) == [big], "the freed GPUs go to the job they were freed for")
        #expect(s.jobs[borrower]?.state == .pending)
    }

    // MARK: Preemption by class

    @Test func inferencePreemptsTheCheapestTrainingVictims() {
        var s = Self.oneModel(nodes: 1, gpus: 4)
        let batch = s.submit(.training(1) { $0.priorityClass = "batch" }, at: 0)
        let bigTraining = s.submit(.training(2), at: 0)
        let smallTraining = s.submit(.training(1), at: 0)
        s.schedule(at: 0)
        #expect(s.gpusInUse == 4)
        let serve = s.submit(.inference(1), at: 700)
        let pass = s.schedule(at: 700)
        // Lowest class first: the batch job, though every training job is older than the minimum runtime.
        #expect(s.preemptions(pass).map(\.victim) == [batch])
        #expect(s.preemptions(pass).first?.by == serve)
        #expect(s.preemptions(pass).first?.reason == .priority)
        _ = bigTraining
        _ = smallTraining
    }

    @Test func amongEqualClassesTheLeastWorkLostGoesAndCheckpointsCount() throws {
        var s = Self.oneModel(nodes: 1, gpus: 2)
        let old = s.submit(.training(1), at: 0)
        s.schedule(at: 0)
        let young = s.submit(.training(1), at: 1000)
        s.schedule(at: 1000)
        s.submit(.inference(1), at: 2000)
        // `young` has less work at risk (1,000 GPU-s against 2,000).
        #expect(s.preemptions(s.schedule(at: 2000)).map(\.victim) == [young])
        var t = Self.oneModel(nodes: 1, gpus: 2)
        let a = t.submit(.training(1), at: 0)
        t.schedule(at: 0)
        let b = t.submit(.training(1), at: 1000)
        t.schedule(at: 1000)
        // `a` checkpointed just now: it would lose almost nothing.
        try t.apply(Event(time: Instant(seconds: 1990), .jobCheckpointed(id: a)))
        t.submit(.inference(1), at: 2000)
        #expect(t.preemptions(t.schedule(at: 2000)).map(\.victim) == [a])
        _ = old
        _ = b
    }

    @Test func fewestVictimsWhenTheLossIsEqual() {
        var s = Self.oneModel(nodes: 1, gpus: 4)
        let one = s.submit(.training(2), at: 0)
        let two = s.submit(.training(1), at: 0)
        let three = s.submit(.training(1), at: 0)
        s.schedule(at: 0)
        s.submit(.inference(2), at: 1000)
        // Two 1-GPU jobs or one 2-GPU job lose the same GPU-seconds; one job is fewer.
        #expect(s.preemptions(s.schedule(at: 1000)).map(\.victim) == [one])
        _ = two
        _ = three
    }

    @Test func nonPreemptibleJobsAreNeverVictims() {
        var s = Self.oneModel(nodes: 1, gpus: 2)
        s.submit(.training(2) { $0.preemptible = false }, at: 0)
        s.schedule(at: 0)
        let serve = s.submit(.inference(1), at: 5000)
        let pass = s.schedule(at: 5000)
        #expect(s.preemptions(pass).isEmpty)
        #expect(pass.reason(for: serve)?.blocker == .insufficientGPUs(needed: 1, free: 0, largestBlock: 0))
    }

    @Test func youngJobsAreNotPreemptedByClassAndOftenPreemptedOnesAreProtected() throws {
        var s = Self.oneModel(nodes: 1, gpus: 1)
        let victim = s.submit(.training(1), at: 0)
        s.schedule(at: 0)
        s.submit(.inference(1), at: 100)
        #expect(s.preemptions(s.schedule(at: 100)).isEmpty, "younger than min_runtime (120 s)")
        #expect(s.preemptions(s.schedule(at: 121)).map(\.victim) == [victim])

        var p = Self.oneModel(nodes: 1, gpus: 1) {
            $0.preemption.maxPreemptions = 1; $0.preemption.minRuntime = 0
        }
        let job = p.submit(.training(1), at: 0)
        p.schedule(at: 0)
        let serve = p.submit(.inference(1), at: 10)
        p.scheduleAndSettle(at: 10)
        p.schedule(at: 10)  // the inference job starts
        p.finish(serve, at: 20)
        p.schedule(at: 20)  // the training job runs again
        #expect(p.jobs[job]?.state == .running)
        #expect(p.jobs[job]?.preemptions == 1)
        p.submit(.inference(1), at: 30)
        #expect(p.preemptions(p.schedule(at: 30)).isEmpty, "protected for an hour after a start")
        #expect(!p.preemptions(p.schedule(at: 20 + 3601)).isEmpty)
    }

    @Test func jobsStoppingForAPreemptorAreNotPreemptedAgainMeanwhile() {
        var s = Self.oneModel(nodes: 1, gpus: 2)
        s.submit(.training(2), at: 0)
        s.schedule(at: 0)
        s.submit(.inference(2), at: 1000)
        let first = s.schedule(at: 1000)
        #expect(s.preemptions(first).count == 1)
        // During the grace period, passes wait for the victim; they do not pick new ones.
        let again = s.schedule(at: 1010)
        #expect(s.preemptions(again).isEmpty)
        #expect(again.pending.first?.blocker == .waitingForPreemption(victims: 1))
    }

    // MARK: The inference reserve

    @Test func idleInferenceReserveIsLentToTrainingAndReclaimedAtOnce() {
        var s = ClusterState.fixture(models: [.l4], nodes: [("l1", "L4", 4, [])]) {
            $0.inferenceReserve = [InferenceReserve(gpuModel: "L4", gpus: 4)]
        }
        let train = s.submit(.training(2), at: 0)
        let noLoan = s.submit(.training(1) { $0.preemptible = false }, at: 0)
        let first = s.schedule(at: 0)
        #expect(s.starts(first) == [train])
        #expect(s.jobs[train]?.loans == [.inferenceReserve(model: "L4")])
        #expect(first.reason(for: noLoan)?.blocker == .mustBorrow(.inferenceReserve(model: "L4")))
        // Inference needs the GPUs: the loan goes at once, young as it is.
        s.submit(.inference(3), at: 1)
        let pass = s.schedule(at: 1)
        #expect(s.preemptions(pass).map(\.victim) == [train])
        #expect(s.preemptions(pass).first?.reason == .inference)
    }

    // MARK: Quotas

    @Test func tenantsBorrowBeyondQuotaAndUnderQuotaTenantsReclaim() {
        var s = Self.oneModel(nodes: 1, gpus: 8) {
            $0.tenants = [Tenant(name: "a", gpuQuota: 4, borrowLimit: 4), Tenant(name: "b", gpuQuota: 4)]
        }
        let a1 = s.submit(.training(4, tenant: "a"), at: 0)
        let a2 = s.submit(.training(4, tenant: "a"), at: 0)
        let a3 = s.submit(.training(1, tenant: "a"), at: 0)
        let first = s.schedule(at: 0)
        #expect(Set(s.starts(first)) == [a1, a2])
        let borrowed = [a1, a2].first { !(s.jobs[$0]!.loans.isEmpty) }!
        #expect(s.jobs[borrowed]?.loans == [.quota(tenant: "a")])
        #expect(first.reason(for: a3)?.blocker == .overQuota(tenant: "a", inUse: 8, quota: 4, borrowLimit: 4))
        // A job of CPUs only borrows no GPU: a, at its borrowing limit, still runs one, and not on a loan.
        let cpus = s.submit(.training(0, tenant: "a") { $0.cpuMilli = 1000 }, at: 5)
        s.schedule(at: 5)
        #expect(s.jobs[cpus]?.state == .running && s.jobs[cpus]?.loans == [])
        // b is under its quota: it takes back what a borrowed, young as it is.
        let b = s.submit(.training(4, tenant: "b"), at: 10)
        let pass = s.schedule(at: 10)
        #expect(s.preemptions(pass).map(\.victim) == [borrowed])
        #expect(s.preemptions(pass).first?.reason == .quota)
        #expect(pass.reason(for: b)?.blocker == .waitingForPreemption(victims: 1))
    }

    @Test func quotasCountASharesPartOfItsGPUNotAWholeGPU() throws {
        var s = Self.oneModel(nodes: 1, gpus: 4) {
            $0.tenants = [Tenant(name: "a", gpuQuota: 2, borrowLimit: 1), Tenant(name: "b", gpuQuota: 2)]
        }
        // Eight quarters of a GPU are two GPUs' worth: within a's guarantee, none on a loan, none refused.
        let quarters = (0..<8).map { _ in
            s.submit(
                .inference(1, tenant: "a") {
                    $0.gpuShare = 250
                    $0.preemptible = false
                }
            )
        }
        s.schedule(at: 0)
        #expect(quarters.allSatisfy { s.jobs[$0]?.state == .running && s.jobs[$0]?.loans == [] })
        // A ninth quarter goes beyond the quota: a loan (it is preemptible), within the borrowing limit.
        let ninth = s.submit(
            .inference(1, tenant: "a") {
                $0.gpuShare = 250
                $0.preemptible = true
            },
            at: 1
        )
        s.schedule(at: 1)
        #expect(s.jobs[ninth]?.loans == [.quota(tenant: "a")])
        // A whole GPU more would take a to 3.25 GPUs, beyond 2 + 1.
        let whole = s.submit(.inference(1, tenant: "a"), at: 2)
        let pass = s.schedule(at: 2)
        #expect(pass.reason(for: whole)?.blocker == .overQuota(tenant: "a", inUse: 2.25, quota: 2, borrowLimit: 1))
        let why = try #require(Scheduler().explain(whole, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("tenant a uses 2.25 GPUs; its quota is 2"), "\(why)")
    }

    // MARK: Budgets

    @Test func hardBudgetStopsNewStartsAndSoftBudgetLowersPriority() throws {
        // $2/GPU-h; tenant a may spend $10 a day.
        var s = Self.oneModel(nodes: 1, gpus: 8) {
            $0.tenants = [
                Tenant(name: "a", budget: Budget(usd: 10, window: .day, enforcement: .hard)),
                Tenant(name: "b", budget: Budget(usd: 1, window: .day, enforcement: .soft)),
            ]
        }
        // 2 GPUs for 2 h expected: $8.
        let fits = s.submit(.training(2, tenant: "a", estimate: 7200) { $0.walltime = 7200 }, at: 0)
        // Another $8 would bring the projection to $16.
        let over = s.submit(.training(2, tenant: "a", estimate: 7200) { $0.walltime = 7200 }, at: 0)
        let pass = s.schedule(at: 0)
        #expect(s.starts(pass) == [fits])
        guard case .overBudget(let tenant, _, let limit, let window)? = pass.reason(for: over)?.blocker else {
            Issue.record("expected a budget blocker")
            return
        }
        #expect(tenant == "a" && limit == 10 && window == .day)
        // Tenant b is past its soft budget: its job goes after an equal job of another tenant.
        let bJob = s.submit(.training(1, tenant: "b"), at: 100)
        s.schedule(at: 100)
        s.finish(bJob, at: 3700)  // $2 spent: over b's $1
        let b2 = s.submit(.training(1, tenant: "b"), at: 3800)
        let c = s.submit(.training(1, tenant: "c"), at: 3800)
        let order = Scheduler().rankedPending(s, at: Instant(seconds: 3801)).map(\.id)
        #expect(order.firstIndex(of: c)! < order.firstIndex(of: b2)!)
    }

    @Test func budgetWindowsFollowTheCalendar() {
        let t = Instant(seconds: CivilTime.parse("2026-11-29 15:30:00")!)  // a Sunday
        #expect(CivilTime.format(Budget.Window.day.start(containing: t).seconds) == "2026-11-29 00:00:00")
        #expect(CivilTime.format(Budget.Window.week.start(containing: t).seconds) == "2026-11-23 00:00:00")
        #expect(CivilTime.format(Budget.Window.month.start(containing: t).seconds) == "2026-11-01 00:00:00")
        #expect(CivilTime.format(Budget.Window.month.end(containing: t).seconds) == "2026-12-01 00:00:00")
        #expect(CivilTime.format(Budget.Window.week.end(containing: t).seconds) == "2026-11-30 00:00:00")
    }

    @Test func spendingIsCountedPerWindow() {
        var s = Self.oneModel {
            $0.tenants = [Tenant(name: "a", budget: Budget(usd: 100, window: .day, enforcement: .soft))]
        }
        // One GPU ($2/h) from 23:00 on day 0 to 01:00 on day 1.
        let j = s.submit(.training(1, tenant: "a"), at: 82_800)
        s.schedule(at: 82_800)
        s.finish(j, at: 90_000)
        #expect(abs(s.spent(by: "a", in: .day, at: Instant(seconds: 90_000)) - 2) < 1e-9)
        #expect(abs(s.spent(by: "a", in: .month, at: Instant(seconds: 90_000)) - 4) < 1e-9)
        #expect(s.spent(by: "a", in: .day, at: Instant(seconds: 2 * 86_400 + 1)) == 0)
    }

    // MARK: Preferences

    @Test func preferenceChoosesBetweenMoneyAndTime() {
        // 1 reference hour of training: H100 0.5 h for $2, A100 1 h for $2, L4 2.9 h for $1.71.
        func model(_ prefer: Preference?) -> String? {
            var s = ClusterState.mixed()
            s.submit(.training(1, estimate: 3600) { $0.prefer = prefer })
            guard case .start(_, let a, _, _)? = s.schedule(at: 0).decisions.first else { return nil }
            return a.model
        }
        #expect(model(nil) == "H100")
        #expect(model(.fastest) == "H100")
        #expect(model(.cheapest) == "L4")
        #expect(model(.deadline(Instant(seconds: 7200))) == "H100", "L4 would finish after 2.9 h: too late")
        #expect(model(.deadline(Instant(seconds: 20_000))) == "L4")
    }

    // MARK: Explanations

    @Test func explanationListsBudgetQuotaAndReservation() {
        var s = Self.oneModel {
            $0.tenants = [Tenant(name: "a", gpuQuota: 2, budget: Budget(usd: 1000, window: .month, enforcement: .hard))]
        }
        s.submit(.training(6) { $0.walltime = 1000 }, at: 0)
        s.schedule(at: 0)
        let big = s.submit(.training(8, tenant: "a"), at: 10)
        let e = Scheduler().explain(big, in: s)!
        let text = e.lines.joined(separator: "\n")
        #expect(text.contains("reserved: expected to start by 1970-01-01 00:16:40 UTC"))
        #expect(e.estimatedStart == Instant(seconds: 1000))
        #expect(text.contains("budget of tenant a: $0.00 of $1,000.00 spent this month (hard)"))
        #expect(text.contains("quota of tenant a: 0 GPUs in use of 2 guaranteed"))
    }
}
