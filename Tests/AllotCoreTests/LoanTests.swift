import Testing

@testable import AllotCore

/// The inference reserve's loans: the demand forecast, who is lent first, and taking back vs spilling over
/// (issue: loans that survive bursts).
@Suite struct LoanTests {
    static let hour: Double = 3600
    static let day: Double = 86_400

    /// A demand history: `steps` are (time, GPUs in use from then on).
    static func demand(_ steps: [(Double, Int)], model: String = "A100") -> InferenceDemand {
        var d = InferenceDemand()
        var use = 0
        for (t, n) in steps {
            d.change(model: model, by: n - use, at: Instant(seconds: t))
            use = n
        }
        return d
    }

    @Test func forecastReadsTheSameHoursOfYesterday() {
        // Yesterday: 2 GPUs, 8 from 10:00 to 14:00, then 2 again; today 2 so far.
        let d = Self.demand([(0, 2), (10 * Self.hour, 8), (14 * Self.hour, 2)])
        let now = Instant(seconds: Self.day + 9 * Self.hour)
        let soon = d.forecast("A100", from: now, for: 1800, cap: 16)
        #expect(soon.peak == 2, "nothing rose yesterday between 9:00 and 9:30")
        let later = d.forecast("A100", from: now, for: 2 * Self.hour, cap: 16)
        #expect(later.peak == 8)
        #expect(later.basis == "the same hours yesterday")
        #expect(d.forecast("A100", from: now, for: 2 * Self.hour, cap: 6).peak == 6, "capped at the reserve")
    }

    @Test func forecastScalesYesterdayByTodaysLevel() {
        // Yesterday 2 then 8 at 10:00; today already 4 at 9:00 (twice yesterday's level).
        let d = Self.demand([
            (0, 2), (10 * Self.hour, 8), (14 * Self.hour, 2), (Self.day + 8 * Self.hour, 4),
        ])
        let f = d.forecast("A100", from: Instant(seconds: Self.day + 9 * Self.hour), for: 2 * Self.hour, cap: 64)
        #expect(f.peak == 16)
    }

    @Test func withoutHistoryOnlyTheTrendIsKnown() {
        // Half an hour of history: 2 GPUs, then 4 now.
        let d = Self.demand([(0, 2), (1200, 4)])
        let now = Instant(seconds: 1800)
        #expect(d.forecast("A100", from: now, for: 600, cap: 10).peak >= 4)
        let far = d.forecast("A100", from: now, for: 4 * Self.hour, cap: 10)
        #expect(far.peak == 10 && far.basis == nil, "beyond the trend's reach with no past day: all of it")
        #expect(d.forecast("L4", from: now, for: 600, cap: 3).peak == 0, "no inference ever on L4")
    }

    @Test func stateRebuiltFromItsImageForecastsTheSame() throws {
        var s = Self.reservedPool()
        let a = s.submit(.inference(4), at: 10 * Self.hour)
        s.schedule(at: 10 * Self.hour)
        s.finish(a, at: 12 * Self.hour)
        let b = s.submit(.inference(2), at: 20 * Self.hour)
        s.schedule(at: 20 * Self.hour)
        _ = b
        let loaded = try ClusterState(image: s.image)
        let now = Instant(seconds: Self.day + 9 * Self.hour)
        for horizon: Seconds in [600, 3600, 4 * 3600, 30 * 3600] {
            #expect(
                loaded.inferenceDemand.forecast("A100", from: now, for: horizon, cap: 6)
                    == s.inferenceDemand.forecast("A100", from: now, for: horizon, cap: 6)
            )
        }
        #expect(loaded.inferenceDemand.inUse("A100") == 2)
        #expect(loaded.inferenceDemand.meanRun("A100") == 2 * Self.hour)
    }

    /// 8 A100s, 6 of them kept for inference, whose use yesterday rose to all 6 from 10:00 to 12:00.
    static func reservedPool(withYesterday: Bool = false) -> ClusterState {
        var s = ClusterState.fixture(models: [.a100, .h100], nodes: [("a1", "A100", 8, []), ("h1", "H100", 8, [])]) {
            $0.scheduler.sizeWeight = 0
            $0.inferenceReserve = [InferenceReserve(gpuModel: "A100", gpus: 6)]
        }
        if withYesterday {
            let serve = s.submit(.inference(6) { $0.gpuModels = ["A100"] }, at: 10 * hour)
            s.schedule(at: 10 * hour)
            s.finish(serve, at: 12 * hour)
        }
        return s
    }

    @Test func loansGoFirstToJobsThatEndBeforeInferenceIsExpectedBack() {
        let now = Self.day + 9.5 * Self.hour
        for lending in Scheduler.Lending.allCases {
            var s = Self.reservedPool(withYesterday: true)
            // Training fills the A100s but 2 of the reserve (H100s are not allowed to it).
            let filler = s.submit(.training(6) { $0.gpuModels = ["A100"] }, at: now - 100)
            s.schedule(at: now - 100, lending: lending)
            #expect(s.jobs[filler]?.state == .running)
            // The older job would run 10 hours, into inference's expected rise at 10:00; the younger one 20
            // minutes.
            let long = s.submit(.training(2, estimate: 10 * Self.hour) { $0.gpuModels = ["A100"] }, at: now - 50)
            let short = s.submit(.training(2, estimate: 1200) { $0.gpuModels = ["A100"] }, at: now - 10)
            let pass = s.schedule(at: now, lending: lending)
            switch lending {
            case .forecast:
                #expect(s.starts(pass) == [short])
                #expect(s.jobs[short]?.loans == [.inferenceReserve(model: "A100")])
                #expect(pass.reason(for: long)?.blocker.isReserveNeeded == false, "it waits for GPUs, not a rule")
            case .always:
                #expect(s.starts(pass) == [long], "first come, first lent")
            }
        }
    }

    @Test func jobsThatRunIntoTheForecastStillBorrowWhatNoOneElseWants() {
        let now = Self.day + 9.5 * Self.hour
        var s = Self.reservedPool(withYesterday: true)
        s.submit(.training(2) { $0.gpuModels = ["A100"] }, at: now - 100)
        s.schedule(at: now - 100)
        let long = s.submit(.training(2, estimate: 10 * Self.hour) { $0.gpuModels = ["A100"] }, at: now - 50)
        let pass = s.schedule(at: now)
        #expect(s.starts(pass) == [long], "reserved GPUs do not idle while a job that may borrow them waits")
        #expect(s.jobs[long]?.loans == [.inferenceReserve(model: "A100")])
        let why = Scheduler().explain(long, in: s)
        let loanLine = why?.lines.first { $0.hasPrefix("on loan") } ?? ""
        #expect(loanLine.contains("expected for 10h"), "\(why?.lines ?? [])")
        #expect(loanLine.contains("expected to need up to 6"), "\(loanLine)")
    }

    @Test func aJobThatWouldRunIntoTheForecastIsToldWhy() {
        let now = Self.day + 9.5 * Self.hour
        var s = Self.reservedPool(withYesterday: true)
        let long = s.submit(.training(2, estimate: 10 * Self.hour) { $0.gpuModels = ["A100"] }, at: now - 50)
        let blocker = Blocker.reserveNeeded(
            model: "A100",
            expectedGPUs: 6,
            reserve: 6,
            within: 10 * Self.hour,
            basis: "the same hours yesterday"
        )
        let text = blocker.sentence(for: s.jobs[long]!.spec, in: s)
        #expect(text.contains("inference is expected to need 6 of the 6 within the 10h"), "\(text)")
        #expect(text.contains("from the same hours yesterday"), "\(text)")
    }

    /// A loan of 2 A100s that started `ago` seconds before `now`, with the rest of the reserve taken by
    /// inference; then a 2-GPU replica with a 1-hour estimate arrives.
    static func burst(loanAge ago: Double) -> (ClusterState, loan: JobID, replica: JobID, now: Double) {
        var s = Self.reservedPool()
        let now = 50 * Self.hour
        let serve = s.submit(.inference(4) { $0.gpuModels = ["A100"] }, at: now - ago - 10)
        let fill = s.submit(.training(2) { $0.gpuModels = ["A100"] }, at: now - ago - 10)
        s.schedule(at: now - ago - 10)
        let loan = s.submit(.training(2) { $0.gpuModels = ["A100"] }, at: now - ago)
        s.schedule(at: now - ago)
        #expect(s.jobs[loan]?.loans == [.inferenceReserve(model: "A100")])
        _ = (serve, fill)
        let replica = s.submit(.inference(2) { $0.estimate = Self.hour }, at: now)
        return (s, loan, replica, now)
    }

    @Test func anInferenceShareTakesALoanBackAsAWholeReplicaDoes() {
        var s = Self.reservedPool()
        let now = 50 * Self.hour
        s.submit(.inference(4) { $0.gpuModels = ["A100"] }, at: now - 130)
        s.submit(.training(2) { $0.gpuModels = ["A100"] }, at: now - 130)
        s.schedule(at: now - 130)
        let loan = s.submit(.training(2) { $0.gpuModels = ["A100"] }, at: now - 120)
        s.schedule(at: now - 120)
        #expect(s.jobs[loan]?.loans == [.inferenceReserve(model: "A100")])
        // Half an A100 for inference: the young loan goes back (loan notice), not the training job that owns
        // its GPUs.
        let share = s.submit(
            .inference(1) {
                $0.gpuShare = 500; $0.gpuModels = ["A100"]
            },
            at: now
        )
        let pass = s.schedule(at: now)
        #expect(s.preemptions(pass).map(\.victim) == [loan])
        #expect(s.preemptions(pass).first?.reason == .inference)
        #expect(pass.reason(for: share)?.blocker == .waitingForPreemption(victims: 1))
    }

    @Test func aJobOnLoansIsToldWhatItBorrowsAndHowOftenToCheckpoint() {
        #expect(Loan.environment([], checkpointEvery: 600).isEmpty)
        #expect(
            Loan.environment([.inferenceReserve(model: "L4"), .quota(tenant: "research")], checkpointEvery: 599.5)
                == ["ALLOT_LOANS": "reserve:L4,quota:research", "ALLOT_CHECKPOINT_EVERY": "600"]
        )
        #expect(Loan.environment([.reservation(for: 42)], checkpointEvery: 0) == ["ALLOT_LOANS": "reservation:42"])
    }

    @Test func aYoungLoanIsTakenBack() {
        var (s, loan, replica, now) = Self.burst(loanAge: 120)
        let pass = s.schedule(at: now)
        #expect(s.preemptions(pass).map(\.victim) == [loan])
        #expect(s.preemptions(pass).first?.reason == .inference)
        #expect(!s.starts(pass).contains(replica))
    }

    @Test func aLoanWithHoursOfWorkAtRiskStaysAndTheReplicaSpillsOver() {
        // Ten hours without a checkpoint on 2 A100s ($2/h each): $40 at risk, against $4 more for an hour on
        // 2 H100s.
        var (s, loan, replica, now) = Self.burst(loanAge: 10 * Self.hour)
        let pass = s.schedule(at: now)
        #expect(s.preemptions(pass).isEmpty)
        #expect(s.starts(pass) == [replica])
        #expect(s.jobs[replica]?.allocation?.model == "H100")
        #expect(s.jobs[replica]?.placement?.rule == .spillOver)
        let why = Scheduler(policy: .allot).explain(replica, in: s, pass: pass)?.lines.joined(separator: "\n") ?? ""
        #expect(why.contains("H100: spill-over: its cheapest model's GPUs are lent"), "\(why)")
        #expect(s.jobs[loan]?.state == .running)
        // The rule it replaces took the loan back.
        var (t, loan2, _, now2) = Self.burst(loanAge: 10 * Self.hour)
        let old = t.schedule(at: now2, lending: .always)
        #expect(t.preemptions(old).map(\.victim) == [loan2])
    }
}

extension Blocker {
    var isReserveNeeded: Bool { if case .reserveNeeded = self { true } else { false } }
}
