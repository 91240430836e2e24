import Testing

@testable import AllotCore

@Suite struct PlacementTests {
    func startedModel(_ pass: SchedulingPass, _ id: JobID) -> String? {
        for d in pass.decisions { if case .start(id, let a, _, _) = d { return a.model } }
        return nil
    }

    func allocation(_ pass: SchedulingPass, _ id: JobID) -> Allocation? {
        for d in pass.decisions { if case .start(id, let a, _, _) = d { return a } }
        return nil
    }

    @Test func inferenceGoesToTheCheapestModelThatFits() {
        var s = ClusterState.mixed()
        let a = s.submit(.inference(1))
        let pass = s.schedule()
        #expect(startedModel(pass, a) == "L4")
    }

    @Test func inferenceNeedingMoreMemoryGoesToTheCheapestModelWithIt() {
        var s = ClusterState.mixed()
        let a = s.submit(.inference(1) { $0.minGPUMemoryGiB = 40 })
        #expect(startedModel(s.schedule(), a) == "A100")
    }

    @Test func trainingGoesWhereItFinishesSoonest() {
        var s = ClusterState.mixed()
        let a = s.submit(.training(4))
        #expect(startedModel(s.schedule(), a) == "H100")
    }

    @Test func trainingTakesASlowerModelWhenTheFastOneIsFull() {
        var s = ClusterState.mixed()
        let big = s.submit(.training(16) { $0.gpuModels = ["H100"] })
        #expect(startedModel(s.schedule(), big) == "H100")
        let a = s.submit(.training(4))
        #expect(startedModel(s.schedule(), a) == "A100")
    }

    /// Issue 12, item 5: a job is not placed where it would outrun its walltime while a model that can meet
    /// it exists; it waits for that model, and `why` says so.
    @Test func trainingWaitsForAModelThatMeetsItsWalltime() {
        var s = ClusterState.mixed()
        let big = s.submit(.training(16) { $0.gpuModels = ["H100"] })
        #expect(startedModel(s.schedule(), big) == "H100")
        // 1h of reference work, walltime 1h: A100 (speed 1) meets it, L4 (0.35) would take ~2.9h.
        let a = s.submit(
            .training(16) {
                $0.walltime = 3600; $0.gpuModels = ["A100", "L4"]
            }
        )
        let blocker = s.submit(.training(16) { $0.gpuModels = ["A100"] })
        _ = blocker
        var pass = s.schedule()
        #expect(startedModel(pass, a) == "A100")
        // A100 full now: the next such job waits rather than run on L4 for a walltime it cannot meet.
        let b = s.submit(
            .training(4) {
                $0.walltime = 3600; $0.gpuModels = ["A100", "L4"]
            }
        )
        pass = s.schedule()
        #expect(startedModel(pass, b) == nil)
        let why = Scheduler(policy: .allot).explain(b, in: s)!.lines.joined(separator: "\n")
        #expect(why.contains("its walltime 1h00m rules out L4 (expected 2h51m"), "\(why)")
        #expect(why.contains("it waits for A100"), "\(why)")
        #expect(
            why.contains("L4: 16 free, largest block 4 — fits now, but it would outrun its walltime here"),
            "\(why)"
        )
        // Without a walltime it takes the slower model at once.
        let c = s.submit(.training(4) { $0.gpuModels = ["A100", "L4"] })
        #expect(startedModel(s.schedule(), c) == "L4")
    }

    /// When no model can meet the walltime the preference stands, and `why` and the probe say so.
    @Test func aWalltimeNoModelCanMeetIsReportedNotHidden() throws {
        var s = ClusterState.mixed()
        let spec = JobSpec.training(4) {
            $0.walltime = 600; $0.estimate = 7200; $0.gpuModels = ["A100", "L4"]
        }
        let fit = try #require(Scheduler.walltimeFit(for: spec, in: s))
        #expect(fit.inTime.isEmpty)
        #expect(fit.sentence.contains("the fastest, A100, is expected to take 2h"), "\(fit.sentence)")
        let a = s.submit(spec)
        #expect(startedModel(s.schedule(), a) == "A100")
        let why = Scheduler(policy: .allot).explain(a, in: s)!.lines.joined(separator: "\n")
        #expect(why.contains("longer than its walltime 10m"), "\(why)")
        // Every model meets a generous walltime: nothing to say. (With no estimate the walltime is the
        // estimate, in reference time: slower models would outrun it.)
        #expect(
            Scheduler.walltimeFit(
                for: .training(4) {
                    $0.walltime = 86_400; $0.estimate = 3600
                },
                in: s
            ) == nil
        )
        #expect(Scheduler.walltimeFit(for: .training(4) { $0.walltime = 86_400 }, in: s)?.late.map(\.model) == ["L4"])
    }

    /// Issue 12, item 7: a max cost below any price the pool could ever ask is a permanent blocker.
    @Test func aMaxCostBelowEveryPriceCanNeverBeMet() {
        let s = ClusterState.mixed()
        // 2 GPUs for 1h of reference work: cheapest is A100 at 2×$2×1h = $4; L4 2×$0.6×(1/0.35)h ≈ $3.43.
        let spec = JobSpec.training(2) {
            $0.estimate = 3600; $0.maxCostUSD = 1
        }
        guard
            case .maxCostBelowAnyPrice(let cheapest, let model, _, let limit)? =
                Scheduler.permanentBlocker(for: spec, in: s)
        else {
            Issue.record("expected a max-cost blocker")
            return
        }
        #expect(model == "L4" && abs(cheapest - 2 * 0.6 / 0.35) < 1e-9 && limit == 1)
        let sentence = Scheduler.permanentBlocker(for: spec, in: s)!.sentence(for: spec, in: s)
        #expect(sentence.contains("2×L4 for an expected 2h51m"), "\(sentence)")
        // A limit the cheapest placement meets is accepted, even when other models would exceed it.
        #expect(
            Scheduler.permanentBlocker(
                for: .training(2) {
                    $0.estimate = 3600; $0.maxCostUSD = 3.5
                },
                in: s
            ) == nil
        )
        // Models too small for the job do not count as its cheapest.
        let big = JobSpec.training(16) {
            $0.estimate = 3600; $0.maxCostUSD = 20; $0.topology = .singleNode
        }
        #expect(Scheduler.permanentBlocker(for: big, in: s) != nil)
    }

    @Test func equalSpeedTiesGoToTheCheaperModel() {
        let cheap = GPUModel(name: "cheap", memoryGiB: 80, pricePerHour: 1, speed: 1)
        let dear = GPUModel(name: "dear", memoryGiB: 80, pricePerHour: 3, speed: 1)
        var s = ClusterState.fixture(models: [dear, cheap], nodes: [("d", "dear", 8, []), ("c", "cheap", 8, [])])
        let a = s.submit(.training(2))
        #expect(startedModel(s.schedule(), a) == "cheap")
    }

    @Test func bestFitKeepsLargeHolesOpen() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, []), ("n2", "A100", 8, []), ("n3", "A100", 8, [])])
        let x = s.submit(.training(6))
        s.schedule()
        #expect(s.jobs[x]!.allocation!.slices.map(\.node) == ["n1"])
        // n1 has a hole of 2: a 2-GPU job fills it rather than opening an empty node.
        let y = s.submit(.training(2))
        s.schedule()
        #expect(s.jobs[y]!.allocation!.slices.map(\.node) == ["n1"])
        let z = s.submit(.training(4))
        s.schedule()
        #expect(s.jobs[z]!.allocation!.slices.map(\.node) == ["n2"])
        // n2 has 4 free and n3 8: a 3-GPU job goes to n2 and keeps n3 whole for a gang of 8.
        let w = s.submit(.training(3))
        s.schedule()
        #expect(s.jobs[w]!.allocation!.slices.map(\.node) == ["n2"])
        #expect(s.node(named: "n3")!.gpusInUse == 0)
    }

    @Test func gangSpansAsFewNodesAsPossible() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, []), ("n2", "A100", 8, []), ("n3", "A100", 8, [])])
        let small = s.submit(.training(3))
        s.schedule()
        let gang = s.submit(.training(13))
        s.schedule()
        let a = s.jobs[gang]!.allocation!
        #expect(a.gpuCount == 13)
        #expect(a.slices.count == 2, "8 on an empty node and 5 on the node with 5 free")
        #expect(s.jobs[small]!.allocation!.slices.count == 1)
        #expect(s.gpusInUse == 16)
    }

    @Test func gangIsAllOrNothing() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, []), ("n2", "A100", 8, [])])
        let filler = s.submit(.training(10))
        #expect(allocation(s.schedule(), filler)?.gpuCount == 10)
        let gang = s.submit(.training(8))
        let pass = s.schedule()
        #expect(allocation(pass, gang) == nil)
        #expect(s.gpusInUse == 10)
        #expect(pass.reason(for: gang)?.blocker == .insufficientGPUs(needed: 8, free: 6, largestBlock: 6))
    }

    @Test func singleNodeJobWaitsRatherThanSpanning() {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, []), ("n2", "A100", 8, [])])
        s.submit(.training(5) { $0.topology = .singleNode })
        s.submit(.training(5) { $0.topology = .singleNode })
        s.schedule()
        let c = s.submit(.training(4) { $0.topology = .singleNode })
        let pass = s.schedule()
        #expect(allocation(pass, c) == nil)
        #expect(pass.reason(for: c)?.blocker == .insufficientGPUs(needed: 4, free: 6, largestBlock: 3))
    }

    @Test func nvlinkJobStaysInsideOneIsland() {
        var s = ClusterState.fixture(nodes: [("h", "H100", 8, [[0, 1, 2, 3], [4, 5, 6, 7]])])
        let a = s.submit(.training(2) { $0.topology = .nvlink })
        let b = s.submit(.training(3) { $0.topology = .nvlink })
        let c = s.submit(.training(3) { $0.topology = .nvlink })
        let pass = s.schedule()
        // a takes 2 of one island; b fits in the other; c (3) fits in neither: 2 + 1 free.
        #expect(allocation(pass, a) != nil)
        #expect(allocation(pass, b) != nil)
        #expect(allocation(pass, c) == nil)
        for id in [a, b] {
            let gpus = Set(s.jobs[id]!.allocation!.slices[0].gpus)
            #expect(gpus.isSubset(of: [0, 1, 2, 3]) || gpus.isSubset(of: [4, 5, 6, 7]))
        }
    }

    @Test func nodeWithoutIslandsTakesNoNVLinkJobs() {
        var s = ClusterState.fixture(nodes: [("a", "A100", 8, [])])
        let a = s.submit(.training(2) { $0.topology = .nvlink })
        let pass = s.schedule()
        #expect(pass.reason(for: a)?.blocker == .exceedsNodeSize(needed: 2, largest: 0))
    }

    @Test func smallJobsPreferOneIslandOverSplittingTwo() {
        var s = ClusterState.fixture(nodes: [("h", "H100", 8, [[0, 1, 2, 3], [4, 5, 6, 7]])])
        let a = s.submit(.training(3))
        s.schedule()
        let b = s.submit(.training(2))
        s.schedule()
        // a sits in one island; b goes to the island where it fits (the other has only 1 free).
        let ga = Set(s.jobs[a]!.allocation!.slices[0].gpus)
        let gb = Set(s.jobs[b]!.allocation!.slices[0].gpus)
        #expect(ga.isSubset(of: [0, 1, 2, 3]))
        #expect(gb.isSubset(of: [4, 5, 6, 7]))
    }

    @Test func unhealthyGPUsAndUnschedulableNodesAreSkipped() throws {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 4, []), ("n2", "A100", 4, [])])
        try s.apply(Event(time: .zero, .gpuHealthChanged(node: "n1", gpu: 2, health: .unhealthy, reason: "XID 48")))
        try s.apply(Event(time: .zero, .nodeStateChanged(name: "n2", state: .down, reason: "unreachable")))
        let a = s.submit(.training(3))
        #expect(allocation(s.schedule(), a)?.slices == [.init(node: "n1", gpus: [0, 1, 3])])
        let b = s.submit(.training(1))
        #expect(allocation(s.schedule(), b) == nil)
    }

    @Test(arguments: [-1, 9, 64])
    func rejectsGPUCountsNoNodeCanHold(gpus: Int) {
        var s = ClusterState.fixture(nodes: [("n1", "A100", 8, []), ("n2", "A100", 8, [])])
        if gpus < 0 {
            #expect(throws: StateError.self) {
                try s.apply(Event(time: .zero, .jobSubmitted(id: 1, spec: .training(gpus), held: false)))
            }
            return
        }
        let a = s.submit(.training(gpus) { $0.topology = .singleNode })
        let pass = s.schedule()
        #expect(pass.reason(for: a)?.blocker == .exceedsNodeSize(needed: gpus, largest: 8))
        #expect(pass.reason(for: a)!.blocker.isPermanent)
    }

    @Test func gangLargerThanAnyModelsCapacityCanNeverStart() {
        var s = ClusterState.mixed()
        let a = s.submit(.training(20))  // 16 H100, 16 A100, 16 L4: no single model has 20
        let pass = s.schedule()
        #expect(pass.reason(for: a)?.blocker == .exceedsPool(needed: 20, total: 16))
    }

    @Test func constraintsThatMatchNoModelAreReported() {
        var s = ClusterState.mixed()
        let a = s.submit(.training(1) { $0.minGPUMemoryGiB = 200 })
        let b = s.submit(.training(1) { $0.gpuModels = ["B200"] })
        let pass = s.schedule()
        #expect(pass.reason(for: a)?.blocker == .noModelAllowed)
        #expect(pass.reason(for: b)?.blocker == .noModelAllowed)
    }

    @Test func maxCostKeepsAJobOffPlacementsAboveIt() {
        var s = ClusterState.mixed()
        // 1 GPU-hour of work: $2 on H100 (0.5 h × $4), $2 on A100, ~$1.71 on L4.
        let a = s.submit(.training(1, estimate: 3600) { $0.maxCostUSD = 1.9 })
        let pass = s.schedule()
        #expect(startedModel(pass, a) == "L4")
        var t = ClusterState.mixed()
        let b = t.submit(.training(1, estimate: 3600) { $0.maxCostUSD = 1.0 })
        let p2 = t.schedule()
        guard case .overMaxCost(let cheapest, let limit)? = p2.reason(for: b)?.blocker else {
            Issue.record("expected overMaxCost")
            return
        }
        #expect(abs(cheapest - 0.6 / 0.35) < 1e-9)
        #expect(limit == 1.0)
    }

    @Test func placementNoteSaysWhy() {
        var s = ClusterState.mixed()
        s.submit(.inference(1) { $0.estimate = 7200 })
        guard case .start(_, _, let note, _)? = s.schedule().decisions.first else {
            Issue.record("no decision")
            return
        }
        #expect(note.rule == .cheapest)
        #expect(note.model == "L4")
        #expect(abs(note.estimatedCostUSD - 1.2) < 1e-9)
        #expect(note.holesLeft == 3)
    }
}
