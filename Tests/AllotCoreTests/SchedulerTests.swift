import Testing

@testable import AllotCore

@Suite struct SchedulerTests {
    @Test func fifoStopsAtTheFirstJobThatCannotStart() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])])
        let first = s.submit(.training(6), at: 0)
        let blocked = s.submit(.training(4), at: 1)
        let small = s.submit(.training(1), at: 2)
        let pass = s.schedule(at: 3, policy: .fifo)
        #expect(pass.decisions.map(\.jobID) == [first])
        #expect(pass.reason(for: blocked)?.blocker == .insufficientGPUs(needed: 4, free: 2, largestBlock: 2))
        #expect(pass.reason(for: small)?.blocker == .behind(blocked))
    }

    @Test func allotLetsSmallerJobsPastOneThatCannotStart() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])])
        s.submit(.training(6), at: 0)
        s.schedule(at: 0)
        let blocked = s.submit(.training(4), at: 1)
        let small = s.submit(.training(1), at: 2)
        let pass = s.schedule(at: 3)
        #expect(pass.decisions.map(\.jobID).contains(small))
        #expect(pass.reason(for: blocked) != nil)
    }

    @Test func fifoSkipsJobsThatCanNeverStart() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])])
        let never = s.submit(.training(9), at: 0)
        let ok = s.submit(.training(1), at: 1)
        let pass = s.schedule(at: 2, policy: .fifo)
        #expect(pass.decisions.map(\.jobID) == [ok])
        #expect(pass.reason(for: never)?.blocker == .exceedsPool(needed: 9, total: 8))
    }

    @Test func everyPendingJobGetsADecisionOrAReason() {
        var s = ClusterState.mixed()
        for i in 0..<60 { s.submit(.training(1 + i % 9), at: Double(i)) }
        for i in 0..<10 { s.submit(.inference(1 + i % 2), at: Double(i)) }
        let pending = s.pendingJobs.ids
        let pass = Scheduler().schedule(s, at: Instant(seconds: 100))
        let covered = Set(pass.decisions.map(\.jobID)).union(pass.pending.map(\.id))
        #expect(covered == pending)
        #expect(Set(pass.decisions.map(\.jobID)).isDisjoint(with: pass.pending.map(\.id)))
        #expect(pass.pending.map(\.rank) == pass.pending.map(\.rank).sorted())
    }

    @Test func heldJobsAreNotScheduled() {
        var s = ClusterState.mixed()
        let h = s.submit(.training(1), held: true)
        let pass = s.schedule()
        #expect(pass.decisions.isEmpty)
        #expect(s.jobs[h]?.state == .held)
    }

    @Test func explanationNamesTheBlockerAndTheModels() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, []), ("l4", "L4", 4, [])])
        s.submit(.training(8) { $0.gpuModels = ["A100"] })
        s.schedule()
        let w = s.submit(
            .training(4) {
                $0.gpuModels = ["A100"]; $0.topology = .singleNode
            }
        )
        let e = Scheduler().explain(w, in: s)!
        #expect(e.state == .pending)
        let text = e.lines.joined(separator: "\n")
        #expect(text.contains("queue position 1 of 1"))
        #expect(text.contains("waiting for 4×A100 on one node: 0 allowed GPUs are free"))
        #expect(text.contains("L4: not among the requested models"))
        #expect(text.contains("A100: 0 free"))
    }

    @Test func explanationOfARunningJobSaysWhereAndWhatItCosts() throws {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])])
        let a = s.submit(.training(2, estimate: 7200))
        s.schedule(at: 0)
        try s.apply(Event(time: Instant(seconds: 3600), .clockTick))
        let text = Scheduler().explain(a, in: s)!.lines.joined(separator: "\n")
        #expect(text.contains("running on n1[0-1] (2×A100 at $2.00/GPU-h) since 1h00m ago"))
        #expect(text.contains("cost so far $4.00"))
    }

    @Test func passIsDeterministic() {
        var s = ClusterState.mixed()
        for i in 0..<200 {
            s.submit(i % 5 == 0 ? .inference(1) : .training(1 + i % 7, tenant: "t\(i % 3)"), at: Double(i))
        }
        let a = Scheduler().schedule(s, at: Instant(seconds: 300))
        let b = Scheduler().schedule(s, at: Instant(seconds: 300))
        #expect(a == b)
        #expect(!a.decisions.isEmpty)
    }

    /// Issue 12, item 6: `why` cites a reservation only to jobs that could use its GPUs, and gives every job
    /// waiting for GPUs an estimated start from a plan of the queue ahead of it.
    @Test func whyCitesOnlyCompetingReservationsAndEstimatesEveryStart() throws {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, []), ("l4", "L4", 4, [])])
        s.submit(
            .training(8) {
                $0.gpuModels = ["A100"]; $0.walltime = 3600
            }
        )
        s.submit(
            .training(4) {
                $0.gpuModels = ["L4"]; $0.walltime = 7200
            }
        )
        s.schedule()
        let x = s.submit(
            .training(8) {
                $0.gpuModels = ["A100"]; $0.walltime = 3600
            },
            at: 1
        )
        let z = s.submit(
            .training(8) {
                $0.gpuModels = ["A100"]; $0.walltime = 1800
            },
            at: 2
        )
        let y = s.submit(
            .training(4) {
                $0.gpuModels = ["L4"]; $0.walltime = 7200
            },
            at: 3
        )
        try s.apply(Event(time: Instant(seconds: 10), .clockTick))
        let sched = Scheduler()
        let pass = sched.schedule(s, at: s.now)
        // One of the two A100 jobs holds the reservation; the other waits behind it.
        let holder = try #require(pass.reservation?.job)
        #expect(holder == x || holder == z)
        let second = holder == x ? z : x
        let why = { (id: JobID) in sched.explain(id, in: s, pass: pass)!.lines.joined(separator: "\n") }
        // The L4 job does not compete for the A100s held for the holder.
        #expect(!why(y).contains("the first blocked job"), "\(why(y))")
        #expect(why(y).contains("estimated start: about 1970-01-01 02:00:00 UTC"), "\(why(y))")
        #expect(sched.explain(y, in: s, pass: pass)?.estimatedStart == Instant(seconds: 7200))
        // The second A100 job competes with the holder: told so.
        #expect(why(second).contains("the first blocked job, \(holder), holds n1[0-7]"), "\(why(second))")
        // It starts when the holder, started at 1h, reaches its walltime (z's is 30m, x's 1h).
        let after = holder == z ? "01:30:00" : "02:00:00"
        #expect(why(second).contains("estimated start: about 1970-01-01 \(after) UTC"), "\(why(second))")
        #expect(why(second).contains("the 1 job(s) ahead of it that wait for GPUs start first"), "\(why(second))")
    }

    /// When the minimum run time keeps a higher class from preempting, `why` says so and until when (counting
    /// only jobs whose stop would give it GPUs: not a young job of CPUs only beside them).
    @Test func whySaysWhenTheMinimumRunTimeHoldsPreemptionBack() throws {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])])
        s.submit(.training(8))
        let cpus = s.submit(.training(0) { $0.cpuMilli = 1000 })
        s.schedule()
        #expect(s.jobs[cpus]?.state == .running)
        let i = s.submit(.inference(2), at: 60)
        let pass = s.schedule(at: 60)
        #expect(pass.decisions.isEmpty)
        let text = Scheduler().explain(i, in: s, pass: pass)!.lines.joined(separator: "\n")
        #expect(
            text.contains(
                "preemption is held back: 1 lower-class job(s) on GPUs it could use are within the minimum run time (2m), the first until 1970-01-01 00:02:00 UTC"
            ),
            "\(text)"
        )
    }

    /// A tenant without a quota, where others have one, is told why all its GPUs are on loan.
    @Test func whyExplainsLoansOfATenantWithoutAQuota() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])], tenants: [Tenant(name: "research", gpuQuota: 4)])
        let j = s.submit(.training(2, tenant: "root") { $0.preemptible = true })
        s.schedule()
        let text = Scheduler().explain(j, in: s)!.lines.joined(separator: "\n")
        #expect(
            text.contains(
                "on loan: tenant root has no GPU quota (other tenants have), so every GPU it uses is borrowed"
            ),
            "\(text)"
        )
    }
}
