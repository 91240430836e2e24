import Testing

@testable import AllotCore

@Suite struct ApplyTests {
    @Test func submittedJobIsPendingAndHeldJobIsNot() {
        var s = ClusterState.mixed()
        let a = s.submit(.training(1))
        let b = s.submit(.training(1), held: true)
        #expect(s.jobs[a]?.state == .pending)
        #expect(s.jobs[b]?.state == .held)
        #expect(s.pendingJobs.ids == [a])
        #expect(s.nextJobID == JobID(3))
    }

    @Test func holdAndReleaseMoveBetweenHeldAndPending() throws {
        var s = ClusterState.mixed()
        let a = s.submit(.training(1))
        try s.apply(Event(time: .zero, .jobHeld(id: a)))
        #expect(s.jobs[a]?.state == .held)
        #expect(s.pendingJobs.isEmpty)
        try s.apply(Event(time: .zero, .jobReleased(id: a)))
        #expect(s.jobs[a]?.state == .pending)
    }

    @Test func refusedEventLeavesTheStateUnchanged() {
        var s = ClusterState.mixed()
        let a = s.submit(.training(2))
        s.schedule()
        let before = s
        // GPU already held by job a.
        let held = s.jobs[a]!.allocation!.slices[0]
        let b = JobID(99)
        #expect(throws: StateError.self) {
            try s.apply(Event(time: .zero, .jobStarted(id: b, allocation: Allocation(model: "H100", slices: [held]))))
        }
        #expect(s == before)
        s.submit(.training(2))
        let c = s.nextJobID.rawValue - 1
        let snapshot = s
        #expect(throws: StateError.self) {
            try s.apply(
                Event(time: .zero, .jobStarted(id: JobID(c), allocation: Allocation(model: "H100", slices: [held])))
            )
        }
        #expect(s == snapshot)
    }

    @Test(arguments: [
        ("wrong count", Allocation(model: "A100", slices: [.init(node: "a100-1", gpus: [0])])),
        ("wrong model", Allocation(model: "L4", slices: [.init(node: "a100-1", gpus: [0, 1])])),
        ("unknown node", Allocation(model: "A100", slices: [.init(node: "nope", gpus: [0, 1])])),
        ("GPU twice", Allocation(model: "A100", slices: [.init(node: "a100-1", gpus: [1, 1])])),
        ("no such GPU", Allocation(model: "A100", slices: [.init(node: "a100-1", gpus: [7, 8])])),
    ])
    func startRefusesAllocationsThatDoNotFit(_ label: String, _ allocation: Allocation) {
        var s = ClusterState.mixed()
        let a = s.submit(.training(2))
        #expect(throws: StateError.self, "\(label)") {
            try s.apply(Event(time: .zero, .jobStarted(id: a, allocation: allocation)))
        }
        #expect(s.jobs[a]?.state == .pending)
    }

    @Test func startRefusesTopologyViolations() {
        var s = ClusterState.mixed()
        let single = s.submit(.training(2) { $0.topology = .singleNode })
        let nv = s.submit(.training(2) { $0.topology = .nvlink })
        let split = Allocation(
            model: "A100",
            slices: [.init(node: "a100-1", gpus: [0]), .init(node: "a100-2", gpus: [0])]
        )
        #expect(throws: StateError.self) { try s.apply(Event(time: .zero, .jobStarted(id: single, allocation: split))) }
        let acrossIslands = Allocation(model: "H100", slices: [.init(node: "h100-1", gpus: [3, 4])])
        #expect(throws: StateError.self) {
            try s.apply(Event(time: .zero, .jobStarted(id: nv, allocation: acrossIslands)))
        }
        let noIslands = Allocation(model: "A100", slices: [.init(node: "a100-1", gpus: [0, 1])])
        #expect(throws: StateError.self) { try s.apply(Event(time: .zero, .jobStarted(id: nv, allocation: noIslands))) }
        let inIsland = Allocation(model: "H100", slices: [.init(node: "h100-1", gpus: [4, 5])])
        #expect(throws: Never.self) { try s.apply(Event(time: .zero, .jobStarted(id: nv, allocation: inIsland))) }
    }

    @Test func startRefusesUnhealthyGPUsAndDrainingNodes() throws {
        var s = ClusterState.mixed()
        let a = s.submit(.training(1))
        try s.apply(Event(time: .zero, .gpuHealthChanged(node: "a100-1", gpu: 0, health: .unhealthy, reason: "XID 79")))
        #expect(throws: StateError.self) {
            try s.apply(
                Event(
                    time: .zero,
                    .jobStarted(
                        id: a,
                        allocation: Allocation(model: "A100", slices: [.init(node: "a100-1", gpus: [0])])
                    )
                )
            )
        }
        try s.apply(Event(time: .zero, .nodeStateChanged(name: "a100-2", state: .draining, reason: "maintenance")))
        #expect(s.node(named: "a100-2")?.state == .drained, "an idle draining node is drained at once")
        #expect(throws: StateError.self) {
            try s.apply(
                Event(
                    time: .zero,
                    .jobStarted(
                        id: a,
                        allocation: Allocation(model: "A100", slices: [.init(node: "a100-2", gpus: [0])])
                    )
                )
            )
        }
    }

    @Test func drainingNodeBecomesDrainedWhenItsLastJobEnds() throws {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])])
        let a = s.submit(.training(4))
        s.schedule()
        try s.apply(Event(time: Instant(seconds: 1), .nodeStateChanged(name: "n1", state: .draining, reason: nil)))
        #expect(s.node(named: "n1")?.state == .draining)
        s.finish(a, at: 2)
        #expect(s.node(named: "n1")?.state == .drained)
    }

    @Test func exitCodeDecidesCompletedOrFailed() {
        var s = ClusterState.mixed()
        let ok = s.submit(.training(1))
        let bad = s.submit(.training(1))
        s.schedule()
        s.finish(ok, code: 0, at: 10)
        s.finish(bad, code: 3, at: 10)
        #expect(s.jobs[ok]?.state == .completed)
        #expect(s.jobs[bad]?.state == .failed)
        #expect(s.jobs[bad]?.note == "exit code 3")
        #expect(s.gpusInUse == 0)
    }

    @Test func preemptedJobReturnsToPendingKeepingItsSubmitTime() throws {
        var s = ClusterState.mixed()
        let victim = s.submit(.training(2), at: 5)
        let other = s.submit(.inference(1), at: 6)
        s.schedule(at: 10)
        try s.apply(Event(time: Instant(seconds: 20), .jobPreempted(id: victim, by: other, grace: 30)))
        #expect(s.jobs[victim]?.state == .stopping)
        #expect(s.jobs[victim]!.allocation != nil, "a stopping job keeps its GPUs until it exits")
        s.finish(victim, code: 143, at: 25)
        let job = s.jobs[victim]!
        #expect(job.state == .pending)
        #expect(job.submitTime == Instant(seconds: 5))
        #expect(job.preemptions == 1)
        #expect(job.allocation == nil)
        #expect(s.pendingJobs.contains(victim))
        #expect(job.pastRunSeconds == 15)
    }

    @Test func cancelEndsPendingAtOnceAndRunningAfterItsProcessExits() throws {
        var s = ClusterState.mixed()
        let pending = s.submit(.training(1), held: true)
        let running = s.submit(.training(1))
        s.schedule()
        try s.apply(Event(time: Instant(seconds: 1), .jobCancelled(id: pending, by: 1000, grace: 10)))
        #expect(s.jobs[pending]?.state == .cancelled)
        try s.apply(Event(time: Instant(seconds: 1), .jobCancelled(id: running, by: 1000, grace: 10)))
        #expect(s.jobs[running]?.state == .stopping)
        s.finish(running, code: 143, at: 3)
        #expect(s.jobs[running]?.state == .cancelled)
        #expect(throws: StateError.self) {
            try s.apply(Event(time: Instant(seconds: 4), .jobCancelled(id: running, by: nil, grace: 0)))
        }
    }

    @Test func walltimeStopEndsAsTimedOut() throws {
        var s = ClusterState.mixed()
        let a = s.submit(.training(1) { $0.walltime = 60 })
        s.schedule()
        try s.apply(Event(time: Instant(seconds: 60), .jobTimedOut(id: a, grace: 5)))
        s.finish(a, code: 143, at: 62)
        #expect(s.jobs[a]?.state == .timedOut)
    }

    @Test func nodeWithJobsCannotBeRemoved() throws {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, []), ("n2", "A100", 8, [])])
        let a = s.submit(.training(8))
        s.schedule()
        let busy = s.jobs[a]!.allocation!.slices[0].node
        #expect(throws: StateError.self) { try s.apply(Event(time: .zero, .nodeRemoved(name: busy))) }
        let idle = busy == "n1" ? "n2" : "n1"
        try s.apply(Event(time: .zero, .nodeRemoved(name: idle)))
        #expect(s.nodes.count == 1)
        #expect(s.node(named: busy)?.gpusInUse == 8)
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func configThatDropsAModelInUseIsRefused() {
        var s = ClusterState.mixed()
        var config = s.config
        config.gpuModels.removeAll { $0.name == "L4" }
        #expect(throws: StateError.self) { try s.apply(Event(time: .zero, .configApplied(config: config))) }
        config = s.config
        config.gpuModels.append(GPUModel(name: "B200", memoryGiB: 192, pricePerHour: 6, speed: 4))
        #expect(throws: Never.self) { try s.apply(Event(time: .zero, .configApplied(config: config))) }
    }

    @Test func accountingAccruesWhileRunningAndIsFinalAtTheEnd() throws {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])])  // $2/GPU-h
        let a = s.submit(.training(2, tenant: "research"))
        s.schedule(at: 0)
        try s.apply(Event(time: Instant(seconds: 1800), .clockTick))
        #expect(abs(s.jobs[a]!.costUSD(at: s.now) - 2.0) < 1e-9)  // 2 GPUs × 0.5 h × $2
        #expect(abs(s.tenantUsage["research"]!.usage.costUSD.value(at: s.now) - 2.0) < 1e-9)
        s.finish(a, at: 3600)
        let job = s.jobs[a]!
        #expect(job.pastGPUSeconds == 7200)
        #expect(abs(job.pastCostUSD - 4.0) < 1e-9)
        #expect(
            abs(s.modelUsage["A100"]!.costUSD.value(at: Instant(seconds: 99_999)) - 4.0) < 1e-9,
            "nothing accrues after the end"
        )
        #expect(s.kindUsage[.training]!.gpuSeconds.value(at: s.now) == 7200)
    }

    @Test func decayedUsageHalvesEachHalfLife() {
        var settings = SchedulerSettings()
        settings.fairshareHalfLife = 1000
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])], settings: settings)
        let a = s.submit(.training(1, tenant: "x"))
        s.schedule(at: 0)
        s.finish(a, at: 10)
        let u0 = s.decayedUsage(of: "x", at: Instant(seconds: 10))
        #expect(abs(u0 - 10) < 0.05, "10 GPU-seconds, decayed a little while they accrued")
        #expect(abs(s.decayedUsage(of: "x", at: Instant(seconds: 1010)) - u0 / 2) < 1e-9)
        #expect(abs(s.decayedUsage(of: "x", at: Instant(seconds: 2010)) - u0 / 4) < 1e-9)
    }

    @Test func eventsAndStateRoundTripThroughCodable() throws {
        var s = ClusterState.mixed()
        var log = s.nodes.isEmpty ? [] : [Event]()
        let a = s.submit(
            .training(3) {
                $0.environment = ["A": "1"]; $0.command = ["python", "train.py"]
            }
        )
        s.submit(.inference(1), held: true)
        let pass = s.schedule(at: 5)
        log.append(contentsOf: pass.events(at: Instant(seconds: 5)))
        try s.apply(
            Event(time: Instant(seconds: 6), .gpuHealthChanged(node: "l4-2", gpu: 1, health: .unhealthy, reason: "ECC"))
        )
        try s.apply(Event(time: Instant(seconds: 7), .jobPreempted(id: a, by: a, grace: 3)))
        let data = try JSONish.encode(s)
        let back = try JSONish.decode(ClusterState.self, data)
        #expect(back == s)
        #expect(back.invariantViolations().isEmpty)
        for e in log {
            #expect(try JSONish.decode(Event.self, try JSONish.encode(e)) == e)
        }
    }

    /// A preempted job keeps its run in its history; while it waits again it has no current run.
    @Test func aRequeuedJobKeepsItsEarlierRunsInItsHistory() throws {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, [])])
        let low = s.submit(.training(8))
        s.schedule()
        let high = s.submit(.inference(8), at: 700)
        s.scheduleAndSettle(at: 700)
        let job = try #require(s.jobs[low])
        #expect(job.state == .pending)
        #expect(job.history.count == 1)
        let run = try #require(job.history.first)
        #expect(run.start == Instant(seconds: 0) && run.end == Instant(seconds: 700))
        #expect(run.allocation?.model == "A100")
        #expect(run.ended.contains("preempted by job \(high)") && run.ended.contains("exit code 143"), "\(run.ended)")
    }
}
