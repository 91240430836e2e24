import Testing

@testable import AllotCore

@Suite struct PriorityTests {
    func order(_ s: ClusterState, at t: Double = 0) -> [JobID] {
        Scheduler().rankedPending(s, at: Instant(seconds: t)).map(\.id)
    }

    @Test func higherClassAlwaysGoesFirst() {
        var s = ClusterState.mixed()
        let old = s.submit(.training(1) { $0.priorityClass = "batch" }, at: 0)
        let young = s.submit(.training(1) { $0.priorityClass = "training" }, at: 500_000)
        #expect(order(s, at: 600_000) == [young, old])
    }

    @Test func inferenceGoesBeforeTrainingAtEqualClass() {
        var s = ClusterState.mixed()
        let t = s.submit(.training(1) { $0.priorityClass = "batch" }, at: 0)
        let i = s.submit(.inference(1) { $0.priorityClass = "batch" }, at: 10)
        #expect(order(s, at: 20) == [i, t])
    }

    @Test func olderJobsRankHigherAtEqualClass() {
        var s = ClusterState.mixed()
        let old = s.submit(.training(1), at: 0)
        let young = s.submit(.training(1), at: 100)
        #expect(order(s, at: 200) == [old, young])
        let scheduler = Scheduler()
        let now = Instant(seconds: 200)
        #expect(
            scheduler.priorityFactors(of: s.jobs[old]!, in: s, at: now).age
                > scheduler.priorityFactors(of: s.jobs[young]!, in: s, at: now).age
        )
    }

    @Test func heavyRecentUsageLowersATenantsPriority() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])])
        let hog = s.submit(.training(8, tenant: "hog"), at: 0)
        s.schedule(at: 0)
        s.finish(hog, at: 36_000)
        // Both submit at the same time; the tenant that used 80 GPU-hours goes second.
        let a = s.submit(.training(1, tenant: "hog"), at: 36_000)
        let b = s.submit(.training(1, tenant: "light"), at: 36_000)
        #expect(order(s, at: 36_001) == [b, a])
        let f = Scheduler().priorityFactors(of: s.jobs[a]!, in: s, at: Instant(seconds: 36_001))
        let g = Scheduler().priorityFactors(of: s.jobs[b]!, in: s, at: Instant(seconds: 36_001))
        #expect(f.fairshare < g.fairshare)
        #expect(g.fairshare == 1)
    }

    @Test func sharesWeighFairShare() {
        // Two tenants with equal usage; the one with more shares ranks higher.
        var s = ClusterState.fixture(
            nodes: [("n1", "A100", 8, [])],
            tenants: [Tenant(name: "big", shares: 4), Tenant(name: "small", shares: 1)]
        )
        let x = s.submit(.training(4, tenant: "big"), at: 0)
        let y = s.submit(.training(4, tenant: "small"), at: 0)
        s.schedule(at: 0)
        s.finish(x, at: 3600)
        s.finish(y, at: 3600)
        let a = s.submit(.training(1, tenant: "small"), at: 3600)
        let b = s.submit(.training(1, tenant: "big"), at: 3600)
        #expect(order(s, at: 3601) == [b, a])
    }

    @Test(arguments: [SizeFavor.small, .large])
    func sizeFactorFollowsTheSetting(favor: SizeFavor) {
        var settings = SchedulerSettings()
        settings.sizeFavor = favor
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, []), ("n2", "A100", 8, [])], settings: settings)
        let big = s.submit(.training(8), at: 0)
        let small = s.submit(.training(1), at: 0)
        #expect(order(s) == (favor == .small ? [small, big] : [big, small]))
    }

    @Test func fifoOrdersBySubmitTimeOnly() {
        var s = ClusterState.mixed()
        let a = s.submit(.training(1) { $0.priorityClass = "scavenger" }, at: 0)
        let b = s.submit(.inference(1), at: 1)
        #expect(Scheduler(policy: .fifo).rankedPending(s, at: Instant(seconds: 2)).map(\.id) == [a, b])
    }
}
