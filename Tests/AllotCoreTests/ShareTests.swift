import Testing

@testable import AllotCore

/// Shares of one GPU (`gpuShare`): placed, held, priced and freed by the state and the scheduler.
@Suite struct ShareTests {
    static func share(_ milli: Int, tenant: String = "t", _ tweak: (inout JobSpec) -> Void = { _ in }) -> JobSpec {
        JobSpec.inference(1, tenant: tenant) {
            $0.gpuShare = milli
            tweak(&$0)
        }
    }

    func allocation(_ s: ClusterState, _ id: JobID) -> Allocation? { s.jobs[id]?.allocation }

    @Test func fourQuartersFillOneGPUBeforeAFifthBreaksAnother() {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 2, [])])
        let ids = (0..<5).map { _ in s.submit(Self.share(250)) }
        s.schedule(at: 1)
        let gpus = ids.map { allocation(s, $0)!.slices[0].gpus[0] }
        #expect(gpus.filter { $0 == gpus[0] }.count == 4, "\(gpus)")
        #expect(Set(gpus).count == 2)
        let node = s.node(named: "l4-1")!
        #expect(node.shareUsed.sorted() == [250, 1000])
        #expect(node.holder == [nil, nil])
        #expect(node.gpusInUse == 2)
        #expect(s.invariantViolations().isEmpty)
        #expect(allocation(s, ids[0])!.description == "l4-1[\(gpus[0])]@0.25")
        // A whole-GPU job finds no free GPU: both are shared.
        let whole = s.submit(.inference(1))
        let pass = s.schedule(at: 2)
        #expect(s.jobs[whole]?.state == .pending)
        #expect(pass.reason(for: whole)?.blocker.waitsForGPUs == true)
    }

    /// `why` and `show` say what a share's start left of its GPU, not a count of thousandths as GPUs.
    @Test func aSharesPlacementNoteSaysWhatItLeftOfItsGPU() throws {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 2, [])])
        let first = s.submit(Self.share(250))
        s.schedule(at: 1)
        let second = s.submit(Self.share(500))
        let memory = s.submit(JobSpec.inference(1) { $0.gpuMemoryMiB = 6 * 1024 })
        s.schedule(at: 2)
        func note(_ id: JobID) throws -> String {
            let job = try #require(s.jobs[id])
            return try #require(job.placement).text(for: .init(job.spec))
        }
        #expect(try note(first).hasSuffix("leaves 0.75 of its GPU free"))
        #expect(try note(second).hasSuffix("leaves 0.25 of its GPU free"))
        // 6 GiB of an L4's 24 is a quarter: it fills the GPU the others share.
        #expect(try note(memory).hasSuffix("fills its GPU exactly"))
        let whole = s.submit(.inference(1))
        s.schedule(at: 3)
        #expect(try note(whole).hasSuffix("fills its nodes exactly"))
    }

    @Test func aShareFillsTheFullestSharedGPUThatHoldsIt() {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 4, [])])
        let half = s.submit(Self.share(500))
        s.schedule(at: 1)
        let quarter = s.submit(Self.share(250) { $0.gpuModels = ["L4"] })
        s.schedule(at: 2)
        // Two GPUs shared now only if the pass broke a fresh one; it must not.
        #expect(allocation(s, quarter)!.slices == allocation(s, half)!.slices)
        let big = s.submit(Self.share(300))
        s.schedule(at: 3)
        // 0.25 left on the shared GPU: 0.3 breaks a fresh GPU.
        #expect(allocation(s, big)!.slices != allocation(s, half)!.slices)
        let small = s.submit(Self.share(200))
        s.schedule(at: 4)
        // The fullest GPU with room: 0.25 left beats 0.7 left.
        #expect(allocation(s, small)!.slices == allocation(s, half)!.slices)
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aShareLeavesTheRoomThatTheSharesAskedForCanUse() {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 2, [])])
        let big = s.submit(Self.share(700))
        s.schedule(at: 1)
        let half = s.submit(Self.share(500))
        s.schedule(at: 2)
        #expect(allocation(s, big)!.slices != allocation(s, half)!.slices)
        // Room: 0.3 beside the 0.7, 0.5 beside the half; then a 0.2 share and five 0.3 shares. Best fit puts the
        // 0.2 in the 0.3 (0.1 left, lost to the 0.3 shares) and one 0.3 share starts; leaving 0.3 of the half's
        // GPU keeps a slot for two. (With the 0.3 shares fewer than the 0.5 and 0.7 ones, the half's room would
        // be worth more kept whole: FGD weighs by how many ask.)
        let small = s.submit(Self.share(200))
        let threes = (0..<5).map { _ in s.submit(Self.share(300)) }
        s.schedule(at: 3)
        #expect(allocation(s, small)!.slices == allocation(s, half)!.slices)
        #expect(threes.filter { s.jobs[$0]?.state == .running }.count == 2)
        #expect(s.node(named: "l4-1")!.shareUsed == [1000, 1000])
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aShareIsPricedByItsShareAndFreesItsGPUWhenTheLastShareEnds() throws {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 1, [])])
        let a = s.submit(Self.share(250))
        let b = s.submit(Self.share(750))
        s.schedule(at: 0)
        #expect(s.jobs[a]?.costRate == 0.6 * 0.25 / 3600)
        s.finish(a, at: 3600)
        #expect(abs(s.jobs[a]!.pastCostUSD - 0.15) < 1e-9)
        #expect(abs(s.jobs[a]!.pastGPUSeconds - 900) < 1e-9)
        #expect(s.node(named: "l4-1")!.shareUsed == [750])
        #expect(s.node(named: "l4-1")!.sharers == [[b]])
        #expect(s.node(named: "l4-1")!.gpusInUse == 1)
        s.finish(b, at: 7200)
        let node = s.node(named: "l4-1")!
        #expect(node.shareUsed == [0] && node.sharers == [[]] && node.usedMask == 0)
        #expect(
            abs(s.tenantUsage["t"]!.usage.costUSD.value(at: Instant(seconds: 7200)) - (0.15 + 0.6 * 0.75 * 2)) < 1e-9
        )
        #expect(s.tenantUsage["t"]!.usage.gpusInUse == 0)
        #expect(s.invariantViolations().isEmpty)
        let whole = s.submit(.inference(1))
        s.schedule(at: 7201)
        #expect(s.jobs[whole]?.state == .running)
    }

    @Test func theStateRefusesWhatDoesNotFit() throws {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 2, [])])
        let a = s.submit(Self.share(600))
        let b = s.submit(Self.share(500))
        let w = s.submit(.inference(1))
        let gpu0 = [Allocation.Slice(node: "l4-1", gpus: [0])]
        try s.apply(
            Event(time: .zero, .jobStarted(id: a, allocation: Allocation(model: "L4", slices: gpu0, share: 600)))
        )
        #expect(throws: StateError.self) {
            try s.apply(
                Event(time: .zero, .jobStarted(id: b, allocation: Allocation(model: "L4", slices: gpu0, share: 500)))
            )
        }
        #expect(throws: StateError.self) {
            try s.apply(Event(time: .zero, .jobStarted(id: w, allocation: Allocation(model: "L4", slices: gpu0))))
        }
        // A share job given a whole GPU, or a whole-GPU job given a share: refused.
        let gpu1 = [Allocation.Slice(node: "l4-1", gpus: [1])]
        #expect(throws: StateError.self) {
            try s.apply(Event(time: .zero, .jobStarted(id: b, allocation: Allocation(model: "L4", slices: gpu1))))
        }
        #expect(throws: StateError.self) {
            try s.apply(
                Event(time: .zero, .jobStarted(id: w, allocation: Allocation(model: "L4", slices: gpu1, share: 500)))
            )
        }
        #expect(s.invariantViolations().isEmpty)
        #expect(
            ClusterState.specProblems(Self.share(0)).first?.contains("between 0.001 and 0.999") == true
        )
        #expect(ClusterState.specProblems(Self.share(1000)).count == 1)
        #expect(
            ClusterState.specProblems(Self.share(500) { $0.gpus = 2 }).first?.contains("a share is of one GPU") == true
        )
    }

    @Test func sharesSurviveSnapshotsAndArePreemptedTogether() throws {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 1, [])])
        let a = s.submit(Self.share(250) { $0.priorityClass = "batch" })
        let b = s.submit(Self.share(500) { $0.priorityClass = "batch" })
        s.schedule(at: 0)
        let back = try ClusterState(image: s.image)
        #expect(back == s)
        #expect(back.node(named: "l4-1")!.sharers == [[a, b]])
        let data = try JSONish.encode(s)
        #expect(try JSONish.decode(ClusterState.self, data) == s)
        // A share that is not preemptible joins them: a whole-GPU job of a higher class could free the GPU
        // only by stopping it too, so it stops nobody in vain.
        let c = s.submit(Self.share(250) { $0.priorityClass = "inference" })
        s.schedule(at: 1)
        #expect(s.node(named: "l4-1")!.shareUsed == [1000])
        let urgent = s.submit(.inference(1) { $0.priorityClass = "inference" })
        let pass = s.schedule(at: 700)
        #expect(s.preemptions(pass).isEmpty)
        #expect(s.jobs[urgent]?.state == .pending)
        // Once it ends, the two preemptible shares are stopped together for the GPU.
        s.finish(c, at: 701)
        let next = s.scheduleAndSettle(at: 702)
        #expect(Set(s.preemptions(next).map(\.victim)) == [a, b])
        s.schedule(at: 703)
        #expect(s.jobs[urgent]?.state == .running)
        #expect(s.jobs[a]?.state == .pending && s.jobs[b]?.state == .pending)
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func anInferenceSharePreemptsTrainingForAFreshGPUWhenNoneHasRoom() {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 2, [])])
        let t1 = s.submit(.training(1))
        let t2 = s.submit(.training(1))
        s.schedule(at: 0)
        let serve = s.submit(Self.share(250))
        let pass = s.scheduleAndSettle(at: 700)
        #expect(s.preemptions(pass).count == 1)
        #expect([t1, t2].contains(s.preemptions(pass).first!.victim))
        s.schedule(at: 701)
        #expect(s.jobs[serve]?.state == .running)
        #expect(s.jobs[serve]?.allocation?.share == 250)
        // A second share fills the same GPU without stopping anyone.
        let more = s.submit(Self.share(500))
        let next = s.schedule(at: 702)
        #expect(s.preemptions(next).isEmpty)
        #expect(s.jobs[more]?.allocation?.slices == s.jobs[serve]?.allocation?.slices)
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aShareOfGPUMemoryTakesItsPartOfEachModelAndIsPricedByTheLargerShare() {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 1, []), ("h1", "H100", 1, [])])
        // 12 GiB of a 24 GiB L4: half of it, on the cheapest model that holds it.
        let half = s.submit(
            Self.share(1) {
                $0.gpuShare = nil; $0.gpuMemoryMiB = 12 * 1024
            }
        )
        s.schedule(at: 0)
        #expect(s.jobs[half]!.allocation!.model == "L4" && s.jobs[half]!.allocation!.share == 500)
        #expect(s.jobs[half]!.costRate == 0.6 * 0.5 / 3600)
        // A quarter of the compute and 2 GiB: the compute share is the larger.
        let quarter = s.submit(Self.share(250) { $0.gpuMemoryMiB = 2048 })
        s.schedule(at: 1)
        #expect(s.jobs[quarter]!.allocation!.share == 250)
        #expect(s.jobs[quarter]!.allocation!.slices == s.jobs[half]!.allocation!.slices)
        // 30 GiB does not fit an L4 at all: 0.375 of an H100.
        let big = s.submit(
            Self.share(1) {
                $0.gpuShare = nil; $0.gpuMemoryMiB = 30 * 1024
            }
        )
        s.schedule(at: 2)
        #expect(s.jobs[big]!.allocation!.model == "H100" && s.jobs[big]!.allocation!.share == 375)
        // More than any GPU has: it can never start.
        let huge = JobSpec.inference(1) { $0.gpuMemoryMiB = 100 * 1024 }
        #expect(Scheduler.permanentBlocker(for: huge, in: s) == .noModelAllowed)
        #expect(ClusterState.specProblems(.inference(2) { $0.gpuMemoryMiB = 1024 }).contains { $0.contains("one GPU") })
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func nodesWithoutSharingTakeNoSharesAndAnMPSGPUServesOneUser() throws {
        var s = ClusterState.fixture(nodes: [])
        let nodes = [
            NodeSpec(name: "whole", gpuModel: "L4", gpus: 1, sharing: .off),
            NodeSpec(name: "mps", gpuModel: "L4", gpus: 2, sharing: .mps),
        ]
        for n in nodes { try s.apply(Event(time: .zero, .nodeAdded(spec: n))) }
        // By GPUs the 1-GPU node fits a 1-GPU request best; it takes no shares.
        let alice = s.submit(Self.share(250) { $0.uid = 1000 })
        let bob = s.submit(Self.share(250) { $0.uid = 1001 })
        let alice2 = s.submit(Self.share(250) { $0.uid = 1000 })
        s.schedule(at: 0)
        let a = s.jobs[alice]!.allocation!.slices[0]
        #expect(a.node == "mps")
        // Another user's share does not join Alice's MPS GPU, even in the same pass; Alice's second does.
        #expect(s.jobs[bob]!.allocation!.slices[0].gpus != a.gpus)
        #expect(s.jobs[alice2]!.allocation!.slices == [a])
        // A third user finds no MPS GPU of their own: waiting, though 0.5 and 0.75 are free.
        let carol = s.submit(Self.share(250) { $0.uid = 1002 })
        s.schedule(at: 1)
        #expect(s.jobs[carol]!.state == .pending)
        // The whole-GPU node still serves whole GPUs.
        let whole = s.submit(.inference(1))
        let pass = s.schedule(at: 2)
        #expect(s.jobs[whole]?.allocation?.slices[0].node == "whole", "\(String(describing: pass.reason(for: whole)))")
        // The state refuses what the modes forbid.
        let gpu = [Allocation.Slice(node: "mps", gpus: a.gpus)]
        #expect(throws: StateError.self) {
            try s.apply(
                Event(time: .zero, .jobStarted(id: carol, allocation: Allocation(model: "L4", slices: gpu, share: 250)))
            )
        }
        #expect(s.invariantViolations().isEmpty)
        // A pool where no node takes shares refuses them at submit.
        var off = ClusterState.fixture(nodes: [])
        try off.apply(Event(time: .zero, .nodeAdded(spec: NodeSpec(name: "w", gpuModel: "L4", gpus: 1, sharing: .off))))
        #expect(Scheduler.permanentBlocker(for: Self.share(500), in: off) == .noModelAllowed)
    }

    @Test func aLargerShareHoldsItsGPUSoSmallerSharesBehindItCannotStarveIt() throws {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 1, [])])
        let quarters = [100.0, 200, 300, 400].map { e in s.submit(Self.share(250) { $0.estimate = e }) }
        s.schedule(at: 0)
        #expect(quarters.allSatisfy { s.jobs[$0]?.state == .running })
        let half = s.submit(Self.share(500), at: 10)
        let small = (0..<3).map { i in s.submit(Self.share(250), at: 11 + Double(i)) }
        s.schedule(at: 20)
        // A quarter ends early: its room is too small for the half, and the smaller shares behind it may
        // not take it, or they would take every quarter as it frees.
        s.finish(quarters[0], at: 50)
        var pass = s.schedule(at: 50)
        #expect(s.starts(pass).isEmpty, "\(s.starts(pass))")
        #expect(pass.holds.first?.job == half)
        #expect(pass.holds.first?.from == Instant(seconds: 200))
        #expect(pass.reason(for: small[0])?.blocker == .reserved(for: half, from: Instant(seconds: 200)))
        let why = try #require(Scheduler(policy: .allot).explain(half, in: s)).lines.joined(separator: "\n")
        #expect(why.contains("holds on l4-1[0]@0.5: expected to start by"), "\(why)")
        // A share that ends before the half needs the room may still use it.
        let brief = s.submit(Self.share(250) { $0.walltime = 60 }, at: 60)
        pass = s.schedule(at: 60)
        #expect(s.starts(pass) == [brief])
        s.finish(brief, at: 100)
        s.finish(quarters[1], at: 190)
        pass = s.schedule(at: 190)
        #expect(s.starts(pass) == [half])
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func aShareWithoutRoomIsToldTheLargestGap() throws {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 1, [])])
        s.submit(Self.share(750))
        s.schedule(at: 0)
        let memory = s.submit(.inference(1) { $0.gpuMemoryMiB = 10 * 1024 }, at: 1)
        let half = s.submit(Self.share(500), at: 2)
        let pass = s.schedule(at: 3)
        let gap = ": the largest gap is"
        #expect(
            pass.reason(for: memory)?.blocker
                == .noShareRoom(
                    detail: "no GPU has 10 GiB free\(gap) 6 GiB on l4-1 GPU 0, and no GPU it may use is free whole"
                )
        )
        #expect(pass.reason(for: half)?.blocker.waitsForGPUs == true)
        let why = try #require(Scheduler().explain(half, in: s)).lines.joined(separator: "\n")
        #expect(
            why.contains("waiting for room on a GPU: no GPU has room for 0.5 of it\(gap) 0.25 on l4-1 GPU 0"),
            "\(why)"
        )
    }

    @Test func roomAHeldGPUWillNotNeedIsOpenToSmallerShares() {
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 1, [])])
        let quarters = [100.0, 200, 200, 400].map { e in s.submit(Self.share(250) { $0.estimate = e }) }
        s.schedule(at: 0)
        let half = s.submit(Self.share(500), at: 10)
        let small = (0..<2).map { i in s.submit(Self.share(250), at: 11 + Double(i)) }
        s.finish(quarters[0], at: 50)
        // Two quarters end at 200: of the three quarters free then, the half needs two; one small share
        // may start now without delaying it.
        var pass = s.schedule(at: 50)
        #expect(s.starts(pass) == [small[0]], "\(s.starts(pass))")
        #expect(pass.holds.first?.job == half && pass.holds.first?.from == Instant(seconds: 200))
        s.finish(quarters[1], at: 200)
        s.finish(quarters[2], at: 200)
        pass = s.schedule(at: 200)
        #expect(s.starts(pass) == [half])
        #expect(s.invariantViolations().isEmpty)
    }

    @Test func randomSharesAndWholeJobsNeverOverfillAGPU() {
        var rng = SplitMix64(seed: 7)
        var s = ClusterState.fixture(nodes: [("l4-1", "L4", 4, []), ("l4-2", "L4", 4, []), ("a1", "A100", 2, [])])
        var started = 0
        var preempted = 0
        // Every tenth second: a share, a whole-GPU job, or an end; classes vary, so shares and whole jobs
        // preempt one another; victims exit at once.
        for step in 0..<400 {
            let t = Double(step * 10)
            let cls = ["batch", "training", "inference"][Int(rng.next() % 3)]
            switch rng.next() % 3 {
            case 0:
                let milli = [100, 250, 333, 500, 750][Int(rng.next() % 5)]
                s.submit(Self.share(milli) { $0.priorityClass = cls }, at: t)
            case 1:
                s.submit(.inference(1 + Int(rng.next() % 2)) { $0.priorityClass = cls }, at: t)
            default:
                let running = s.activeJobs.sorted().filter { s.jobs[$0]?.state == .running }
                if !running.isEmpty { s.finish(running[Int(rng.next() % UInt64(running.count))], at: t) }
            }
            let pass = s.scheduleAndSettle(at: t)
            started += s.starts(pass).count
            preempted += s.preemptions(pass).count
            #expect(s.invariantViolations().isEmpty, "step \(step): \(s.invariantViolations())")
            for node in s.nodes {
                let price = s.config.model(named: node.spec.gpuModel)!.pricePerHour / 3600
                for g in 0..<node.spec.gpus {
                    #expect(node.shareUsed[g] <= 1000)
                    #expect(node.shareUsed[g] == 0 || node.holder[g] == nil)
                    // The shares of a GPU pay for what they hold of it: never more than the whole GPU.
                    let paid = node.sharers[g].reduce(0.0) { $0 + s.jobs[$1]!.costRate }
                    #expect(abs(paid - price * Double(node.shareUsed[g]) / 1000) < 1e-12)
                }
            }
        }
        #expect(started > 100 && preempted > 5, "started \(started), preempted \(preempted)")
    }
}
